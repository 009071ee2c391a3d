"""Hostile arguments to the codec API (``encode`` / ``decode`` / ``decode_latents`` / ``reconstruct`` /
``tokens_shape`` / ``movq.load``) and silent wrong results.

Each case asserts what movq promises (see ``helpers.expect_error`` / ``expect_ok``): a clear exception
naming what is accepted before any compute, or the right result.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image

import movq
from helpers import (
    HOSTILE_CONFIG,
    HostileCases,
    Work,
    describe,
    expect_error,
    expect_ok,
    hostile_ckpt_file,
    hostile_images,
    hostile_photos,
    hostile_preset_state,
    hostile_tiny,
    hostile_tiny_folder,
    movq_internal,
)
from movq import Codec

CASES = HostileCases()
add, case = CASES.add, CASES.case


A3 = "3-api"


def tiny_config(**over: Any) -> movq.CodecConfig:
    """:data:`helpers.HOSTILE_CONFIG` with ``over`` replaced (``quantizer=...``)."""
    return dataclasses.replace(HOSTILE_CONFIG, **over)


def enc(x: Any, codec: Callable[[], Codec] = hostile_photos, **kw: Any) -> Callable[[], Any]:
    return lambda: codec().encode(x() if callable(x) else x, **kw)


def _tokens_ok(shape: tuple[int, ...]) -> Callable[[Any], tuple[bool, str]]:
    def check(t: Any) -> tuple[bool, str]:
        ok = isinstance(t, torch.Tensor) and t.dtype == torch.long and tuple(t.shape) == shape
        return ok, f"tokens {describe(t)}"

    return check


def _same_tokens(reference: Callable[[], Any]) -> Callable[[Any], tuple[bool, str]]:
    def check(t: Any) -> tuple[bool, str]:
        ref = hostile_photos().encode(reference())
        return bool(
            torch.equal(t, ref)
        ), f"tokens {tuple(t.shape)} {'==' if torch.equal(t, ref) else '!='} reference"

    return check


def _gradient(mode: str, size: tuple[int, int] = (16, 16)) -> Image.Image:
    base = Image.linear_gradient("L").resize(size)
    if mode in ("1", "L", "P", "CMYK", "YCbCr", "RGB", "HSV", "LAB", "RGBX"):
        return base.convert(mode) if mode != "LAB" else Image.merge("LAB", (base, base, base))
    if mode in ("LA", "PA", "RGBA"):
        return base.convert(mode)
    if mode == "La":
        return base.convert("LA").convert("La")
    if mode == "RGBa":
        return base.convert("RGBA").convert("RGBa")
    if mode in ("I", "F"):
        return base.convert(mode)
    if mode in ("I;16", "I;16B"):
        return (
            Image.fromarray(np.asarray(base, np.uint16) * 257).convert(mode)
            if mode == "I;16"
            else Image.frombytes("I;16B", size, (np.asarray(base, np.uint16) * 257).astype(">u2").tobytes())
        )
    raise ValueError(mode)


for _mode in (
    "1",
    "L",
    "LA",
    "La",
    "P",
    "PA",
    "RGB",
    "RGBA",
    "RGBa",
    "CMYK",
    "YCbCr",
    "I",
    "I;16",
    "I;16B",
    "F",
    "HSV",
    "LAB",
    "RGBX",
):
    add(
        f"encode PIL mode {_mode} (16x16)",
        "LongTensor [1, 2, 2]",
        (lambda m=_mode: expect_ok(enc(lambda: _gradient(m)), _tokens_ok((1, 2, 2)))),
    )

add(
    "encode PIL I;16 gradient == its 8-bit L version",
    "same tokens (16-bit scaled, not clipped to white)",
    lambda: expect_ok(enc(lambda: _gradient("I;16")), _same_tokens(lambda: _gradient("L"))),
)
add(
    "encode PIL F image containing NaN",
    "ValueError: NaN",
    lambda: expect_error(
        enc(lambda: Image.fromarray(np.full((16, 16), np.nan, np.float32))), contains=("nan",)
    ),
)
add(
    "encode PIL F image containing inf",
    "ValueError: inf",
    lambda: expect_error(
        enc(lambda: Image.fromarray(np.full((16, 16), np.inf, np.float32))), contains=("inf",)
    ),
)
add(
    "encode PIL 0x0 image",
    "ValueError: empty image",
    lambda: expect_error(enc(lambda: Image.new("RGB", (0, 0))), contains=("empty",)),
)
add(
    "encode PIL 15x16 (not a multiple of 8)",
    "ValueError naming nearest sizes / pad=True",
    lambda: expect_error(enc(lambda: Image.new("RGB", (15, 16))), contains=("pad=true",)),
)
add(
    "encode PIL 1x1 with pad=True",
    "LongTensor [1, 1, 1]",
    lambda: expect_ok(enc(lambda: Image.new("RGB", (1, 1)), pad=True), _tokens_ok((1, 1, 1))),
)
add(
    "encode list of PIL images of different sizes",
    "ValueError listing sizes",
    lambda: expect_error(
        enc(lambda: [Image.new("RGB", (16, 16)), Image.new("RGB", (24, 16))]), contains=("same size",)
    ),
)
add(
    "encode list of PIL images of different modes",
    "LongTensor [2, 2, 2]",
    lambda: expect_ok(
        enc(lambda: [Image.new("RGB", (16, 16)), Image.new("P", (16, 16))]), _tokens_ok((2, 2, 2))
    ),
)
add("encode an empty list", "ValueError: empty batch", lambda: expect_error(enc([]), contains=("empty",)))
add(
    "encode list of tensors",
    "TypeError: only PIL images in a list",
    lambda: expect_error(enc(lambda: [torch.zeros(3, 16, 16)]), (TypeError,)),
)
add(
    "encode list of numpy arrays",
    "TypeError",
    lambda: expect_error(enc(lambda: [np.zeros((16, 16, 3), np.uint8)]), (TypeError,)),
)
add(
    "encode None",
    "TypeError naming accepted inputs",
    lambda: expect_error(enc(None), (TypeError,), contains=("PIL",)),
)
add(
    "encode a file path string",
    "TypeError naming accepted inputs",
    lambda: expect_error(enc("photo.jpg"), (TypeError,), contains=("PIL",)),
)
add("encode bytes", "TypeError", lambda: expect_error(enc(b"\xff\xd8"), (TypeError,)))
add(
    "encode a nested Python list of floats",
    "TypeError",
    lambda: expect_error(enc([[[0.0] * 16] * 16] * 3), (TypeError,)),
)
add(
    "encode a generator of PIL images",
    "TypeError",
    lambda: expect_error(enc(lambda: (Image.new("RGB", (16, 16)) for _ in range(2))), (TypeError,)),
)




@case("encode a closed PIL image", "ValueError")
def _closed_pil() -> tuple[bool, str]:
    path = Work.new("img") / "ok.png"
    Image.new("RGB", (16, 16)).save(path)
    im = Image.open(path)
    im.close()
    return expect_error(enc(im), (ValueError,), allow_deep=True)


# numpy
for _label, _arr, _exc, _cont in (
    ("float32 HWC in [0,1]", lambda: np.zeros((16, 16, 3), np.float32), TypeError, ("uint8",)),
    ("float64 HWC", lambda: np.zeros((16, 16, 3)), TypeError, ("uint8",)),
    ("int64 HWC", lambda: np.zeros((16, 16, 3), np.int64), TypeError, ("uint8",)),
    ("uint16 HWC", lambda: np.zeros((16, 16, 3), np.uint16), TypeError, ("uint8",)),
    ("bool HWC", lambda: np.zeros((16, 16, 3), bool), TypeError, ("uint8",)),
    ("object array", lambda: np.empty((16, 16, 3), object), TypeError, ("uint8",)),
    ("HW (2-D gray)", lambda: np.zeros((16, 16), np.uint8), ValueError, ("HWC",)),
    ("5-D", lambda: np.zeros((1, 1, 16, 16, 3), np.uint8), ValueError, ("HWC",)),
    ("1 channel HWC", lambda: np.zeros((16, 16, 1), np.uint8), ValueError, ("3",)),
    ("4 channels HWC (RGBA)", lambda: np.zeros((16, 16, 4), np.uint8), ValueError, ("3",)),
    ("CHW order (3,16,16)", lambda: np.zeros((3, 16, 16), np.uint8), ValueError, ("HWC",)),
    ("0-size BHWC", lambda: np.zeros((0, 16, 16, 3), np.uint8), ValueError, ("empty",)),
    ("0-height HWC", lambda: np.zeros((0, 16, 3), np.uint8), ValueError, ("empty",)),
):
    add(
        f"encode numpy {_label}",
        f"{_exc.__name__} naming what is accepted",
        (lambda a=_arr, e=_exc, c=_cont: expect_error(enc(a), (e,), contains=c)),
    )
add(
    "encode numpy uint8 BHWC batch of 2",
    "LongTensor [2, 2, 2]",
    lambda: expect_ok(enc(lambda: np.zeros((2, 16, 16, 3), np.uint8)), _tokens_ok((2, 2, 2))),
)
add(
    "encode non-contiguous numpy (every 2nd pixel)",
    "same tokens as the contiguous copy",
    lambda: expect_ok(
        enc(lambda: np.asarray(_gradient("RGB", (32, 32)))[::2, ::2]),
        _same_tokens(lambda: np.ascontiguousarray(np.asarray(_gradient("RGB", (32, 32)))[::2, ::2])),
    ),
)
add(
    "encode numpy with negative strides (np.flip)",
    "same tokens as the flipped copy",
    lambda: expect_ok(
        enc(lambda: np.flip(np.asarray(_gradient("RGB")), 1)),
        _same_tokens(lambda: np.ascontiguousarray(np.flip(np.asarray(_gradient("RGB")), 1))),
    ),
)

# tensors
_G = lambda: torch.from_numpy(np.asarray(_gradient("RGB"))).permute(2, 0, 1).float() / 127.5 - 1  # noqa: E731
for _label, _t, _exc, _cont in (
    ("float out of range (max 1.5)", lambda: torch.full((3, 16, 16), 1.5), ValueError, ("[-1, 1]",)),
    ("float in [0, 255]", lambda: torch.full((3, 16, 16), 200.0), ValueError, ("uint8",)),
    ("float with NaN", lambda: torch.full((3, 16, 16), float("nan")), ValueError, ("nan",)),
    ("float with +inf", lambda: torch.full((3, 16, 16), float("inf")), ValueError, ("inf",)),
    ("float with -inf", lambda: torch.full((3, 16, 16), float("-inf")), ValueError, ("inf",)),
    ("int32", lambda: torch.zeros(3, 16, 16, dtype=torch.int32), TypeError, ("uint8",)),
    ("int64", lambda: torch.zeros(3, 16, 16, dtype=torch.long), TypeError, ("uint8",)),
    ("bool", lambda: torch.zeros(3, 16, 16, dtype=torch.bool), TypeError, ("uint8",)),
    ("complex64", lambda: torch.zeros(3, 16, 16, dtype=torch.complex64), TypeError, ("float",)),
    ("meta device", lambda: torch.zeros(3, 16, 16, device="meta"), ValueError, ("meta",)),
    ("0-size batch", lambda: torch.zeros(0, 3, 16, 16), ValueError, ("empty",)),
    ("0 height", lambda: torch.zeros(1, 3, 0, 16), ValueError, ("empty",)),
    ("1 channel", lambda: torch.zeros(1, 1, 16, 16), ValueError, ("3",)),
    ("4 channels", lambda: torch.zeros(1, 4, 16, 16), ValueError, ("3",)),
    ("2-D", lambda: torch.zeros(16, 16), ValueError, ("CHW",)),
    ("5-D", lambda: torch.zeros(1, 1, 3, 16, 16), ValueError, ("CHW",)),
    ("HWC layout float (16,16,3)", lambda: torch.zeros(16, 16, 3), ValueError, ("3",)),
):
    add(
        f"encode tensor {_label}",
        f"{getattr(_exc, '__name__', 'ValueError/TypeError')} before any compute",
        (lambda t=_t, e=_exc, c=_cont: expect_error(enc(t), e if isinstance(e, tuple) else (e,), contains=c)),
    )
for _label, _t in (
    ("uint8", lambda: ((_G() + 1) * 127.5).round().to(torch.uint8)),
    ("float16", lambda: _G().half()),
    ("bfloat16", lambda: _G().bfloat16()),
    ("float64", lambda: _G().double()),
    ("non-contiguous (transposed twice)", lambda: _G().transpose(1, 2).contiguous().transpose(1, 2)),
    ("channels_last", lambda: _G()[None].contiguous(memory_format=torch.channels_last)),
    ("requires_grad", lambda: _G().requires_grad_()),
    ("slightly outside [-1, 1] (1.0005, within tolerance)", lambda: _G() * 1.0005),
):
    add(
        f"encode tensor {_label}",
        "same tokens as the float32 tensor",
        (
            lambda t=_t: expect_ok(
                enc(t),
                lambda r: (
                    lambda ref: (
                        bool((r == ref).float().mean() >= 0.75),
                        f"tokens {tuple(r.shape)}, {int((r == ref).sum())}/{ref.numel()} equal to float32's",
                    )
                )(hostile_photos().encode(_G())),
            )
        ),
    )

# decode
_TOK = lambda: torch.randint(0, 1024, (1, 2, 2))  # noqa: E731
for _label, _t, _exc, _cont in (
    ("float tokens", lambda: _TOK().float(), TypeError, ("integer",)),
    ("bool tokens", lambda: torch.zeros(1, 2, 2, dtype=torch.bool), TypeError, ("integer",)),
    ("complex tokens", lambda: torch.zeros(1, 2, 2, dtype=torch.complex64), TypeError, ("integer",)),
    ("id = codebook_size (1024)", lambda: torch.full((1, 2, 2), 1024), ValueError, ("[0, 1024)",)),
    ("negative id", lambda: torch.full((1, 2, 2), -1), ValueError, ("[0, 1024)",)),
    ("int64 max id", lambda: torch.full((1, 2, 2), 2**63 - 1), ValueError, ("[0, 1024)",)),
    ("1-D tokens", lambda: torch.zeros(4, dtype=torch.long), ValueError, ("shape",)),
    ("2-D tokens (no batch axis)", lambda: torch.zeros(2, 2, dtype=torch.long), ValueError, ("batch",)),
    (
        "4-D tokens for a single-codebook codec",
        lambda: torch.zeros(1, 1, 2, 2, dtype=torch.long),
        ValueError,
        ("shape",),
    ),
    ("meta tokens", lambda: torch.zeros(1, 2, 2, dtype=torch.long, device="meta"), ValueError, ("meta",)),
    ("empty batch (0,2,2)", lambda: torch.zeros(0, 2, 2, dtype=torch.long), ValueError, ("empty",)),
    ("empty grid (1,0,0)", lambda: torch.zeros(1, 0, 0, dtype=torch.long), ValueError, ("empty",)),
    ("numpy tokens", lambda: np.zeros((1, 2, 2), np.int64), TypeError, ("tensor",)),
    ("list tokens", lambda: [[[0, 1], [2, 3]]], TypeError, ("tensor",)),
):
    add(
        f"decode {_label}",
        f"{_exc.__name__} before any compute",
        (lambda t=_t, e=_exc, c=_cont: expect_error(lambda: hostile_photos().decode(t()), (e,), contains=c)),
    )
for _label, _dtype in (("int32", torch.int32), ("int16", torch.int16), ("uint8 (ids < 256)", torch.uint8)):
    add(
        f"decode {_label} tokens",
        "same image as int64 tokens",
        (
            lambda d=_dtype: expect_ok(
                lambda: hostile_photos().decode(torch.tensor([[[1, 2], [3, 200]]]).to(d)),
                lambda r: (
                    torch.equal(r, hostile_photos().decode(torch.tensor([[[1, 2], [3, 200]]]))),
                    f"{describe(r)}",
                ),
            )
        ),
    )
add(
    "decode non-contiguous tokens (transposed)",
    "image [1, 3, 16, 16]",
    lambda: expect_ok(
        lambda: hostile_photos().decode(_TOK().transpose(1, 2)),
        lambda r: (tuple(r.shape) == (1, 3, 16, 16), describe(r)),
    ),
)

# decode_latents / encode_latents
for _label, _t, _exc, _cont in (
    ("3 channels (codec has 4)", lambda: torch.zeros(1, 3, 2, 2), ValueError, ("4",)),
    ("NaN", lambda: torch.full((1, 4, 2, 2), float("nan")), ValueError, ("nan",)),
    ("inf", lambda: torch.full((1, 4, 2, 2), float("inf")), ValueError, ("inf",)),
    ("0-size", lambda: torch.zeros(0, 4, 2, 2), ValueError, ("shape",)),
    ("meta", lambda: torch.zeros(1, 4, 2, 2, device="meta"), ValueError, ("meta",)),
    ("int tensor", lambda: torch.zeros(1, 4, 2, 2, dtype=torch.long), TypeError, ("float",)),
    ("3-D (no batch)", lambda: torch.zeros(4, 2, 2), (TypeError, ValueError), ("[B",)),
    ("numpy array", lambda: np.zeros((1, 4, 2, 2), np.float32), TypeError, ("tensor",)),
):
    add(
        f"decode_latents {_label}",
        "ValueError/TypeError before any compute",
        (
            lambda t=_t, e=_exc, c=_cont: expect_error(
                lambda: hostile_photos().decode_latents(t()), e if isinstance(e, tuple) else (e,), contains=c
            )
        ),
    )
add(
    "decode_latents float16 latents",
    "image [1, 3, 16, 16] float32",
    lambda: expect_ok(
        lambda: hostile_photos().decode_latents(torch.zeros(1, 4, 2, 2, dtype=torch.float16)),
        lambda r: (r.dtype == torch.float32 and tuple(r.shape) == (1, 3, 16, 16), describe(r)),
    ),
)
add(
    "encode_latents tensor with NaN",
    "ValueError: NaN",
    lambda: expect_error(
        lambda: hostile_photos().encode_latents(torch.full((1, 3, 16, 16), float("nan"))), contains=("nan",)
    ),
)
add(
    "encode_latents -> decode_latents(quantize=True) round trip",
    "image [1, 3, 16, 16]",
    lambda: expect_ok(
        lambda: hostile_photos().decode_latents(hostile_photos().encode_latents(_G()), quantize=True),
        lambda r: (tuple(r.shape) == (1, 3, 16, 16), describe(r)),
    ),
)

# reconstruct keeps the input's form
for _label, _x, _check in (
    (
        "PIL P 20x20 with pad=True",
        lambda: _gradient("P", (20, 20)),
        lambda r: (isinstance(r, Image.Image) and r.size == (20, 20) and r.mode == "RGB", describe(r)),
    ),
    (
        "numpy uint8 HWC",
        lambda: np.asarray(_gradient("RGB")),
        lambda r: (
            isinstance(r, np.ndarray) and r.dtype == np.uint8 and r.shape == (16, 16, 3),
            describe(r),
        ),
    ),
    (
        "uint8 tensor CHW",
        lambda: torch.zeros(3, 16, 16, dtype=torch.uint8),
        lambda r: (r.dtype == torch.uint8 and tuple(r.shape) == (3, 16, 16), describe(r)),
    ),
    (
        "float16 tensor BCHW",
        lambda: _G()[None].half(),
        lambda r: (r.dtype == torch.float16 and tuple(r.shape) == (1, 3, 16, 16), describe(r)),
    ),
    (
        "list of 2 PIL",
        lambda: [_gradient("RGB"), _gradient("L")],
        lambda r: (isinstance(r, list) and len(r) == 2, f"list of {len(r)}"),
    ),
):
    add(
        f"reconstruct {_label}",
        "same kind, size and dtype as the input",
        (lambda x=_x, c=_check: expect_ok(lambda: hostile_photos().reconstruct(x(), pad=True), c)),
    )
add(
    "tokens_shape(12, 16)",
    "ValueError: not a multiple of 8",
    lambda: expect_error(lambda: hostile_photos().tokens_shape(12, 16), contains=("multiple",)),
)


@case(
    "decode [B, h, w] tokens on a residual-quantizer codec (needs [B, depth, h, w])",
    "ValueError naming the shape",
)
def _residual_tokens() -> tuple[bool, str]:
    from movq.config import ResidualConfig

    torch.manual_seed(0)
    codec = Codec(tiny_config(quantizer=ResidualConfig(codebook_size=32, depth=2))).eval()
    return expect_error(lambda: codec.decode(torch.zeros(1, 4, 4, dtype=torch.long)), contains=("depth",))


@case(
    "save_pretrained into a path that is an existing file",
    "an error naming the path (nothing half-written)",
)
def _save_into_file() -> tuple[bool, str]:
    path = Work.new("save") / "model.ckpt"
    path.write_bytes(b"x")
    return expect_error(
        lambda: hostile_tiny().save_pretrained(path), (OSError, ValueError), contains=("model.ckpt",), allow_deep=True
    )


@case("DVAE decode id >= vocab_size", "ValueError naming the range")
def _dvae_range() -> tuple[bool, str]:
    DVAE, DVAEConfig = movq_internal("DVAE"), movq_internal("DVAEConfig")

    torch.manual_seed(0)
    model = DVAE(DVAEConfig(n_hid=16, n_init=8, vocab_size=32)).eval()
    return expect_error(lambda: model.decode(torch.full((1, 2, 2), 32)), contains=("[0, 32)",))


# load arguments
_LOAD = "ValueError/FileNotFoundError/TypeError, clear"
for _label, _call, _exc, _cont in (
    (
        "unknown name 'sber-movqgan-67'",
        lambda: movq.load("sber-movqgan-67"),
        ValueError,
        ("did you mean 'sber-movqgan-67m'",),
    ),
    (
        "unknown name 'movqgan-tiny-photo'",
        lambda: movq.load("movqgan-tiny-photo"),
        ValueError,
        ("did you mean",),
    ),
    (
        "unknown preset with pretrained=False",
        lambda: movq.load("movqgan-67", pretrained=False),
        ValueError,
        ("did you mean",),
    ),
    (
        "a preset name with pretrained=True",
        lambda: movq.load("movqgan-tiny"),
        ValueError,
        ("pretrained=false",),
    ),
    (
        "preset name + a different preset=",
        lambda: movq.load("movqgan-tiny", pretrained=False, preset="movqgan-67m"),
        ValueError,
        ("conflicting",),
    ),
    (
        "pretrained=False with ema=True",
        lambda: movq.load("movqgan-tiny", pretrained=False, ema=True),
        ValueError,
        ("ema",),
    ),
    (
        "preset= with a save_pretrained folder",
        lambda: movq.load(hostile_tiny_folder(), preset="movqgan-tiny"),
        ValueError,
        ("preset",),
    ),
    (
        "ema=True with a save_pretrained folder",
        lambda: movq.load(hostile_tiny_folder(), ema=True),
        ValueError,
        ("ema",),
    ),
    (
        "preset= with another registered model",
        lambda: movq.load("sber-movqgan-67m", preset="movqgan-102m"),
        ValueError,
        ("preset",),
    ),
    (
        "preset= with the package model",
        lambda: movq.load("movqgan-tiny-photos", preset="movqgan-tiny"),
        ValueError,
        ("preset",),
    ),
    (
        "unknown preset= with a checkpoint file",
        lambda: movq.load(hostile_ckpt_file(), preset="movqgan-tinyy"),
        ValueError,
        ("did you mean",),
    ),
    (
        "wrong preset= for a checkpoint file",
        lambda: movq.load(hostile_ckpt_file(), preset="movqgan-67m"),
        ValueError,
        ("tiny.ckpt", "shape"),
    ),
    ("ema=True on a checkpoint without EMA", lambda: movq.load(hostile_ckpt_file(), ema=True), ValueError, ("ema",)),
    (
        "missing file 'nope.ckpt'",
        lambda: movq.load(str(Work.root / "nope.ckpt")),
        FileNotFoundError,
        ("nope.ckpt",),
    ),
    (
        "missing folder 'nope/sub'",
        lambda: movq.load(str(Work.root / "nope" / "sub")),
        FileNotFoundError,
        ("nope",),
    ),
    ("an empty folder", lambda: movq.load(Work.new("empty")), FileNotFoundError, ("config.json",)),
    ("a folder of images", lambda: movq.load(hostile_images()), FileNotFoundError, ("photo0.jpg",)),
    ("an image file", lambda: movq.load(sorted(hostile_images().iterdir())[0]), ValueError, (".jpg",)),
    (
        "Hub model offline (local_files_only=True)",
        lambda: movq.load("sber-movqgan-67m", local_files_only=True),
        FileNotFoundError,
        ("sber-movqgan-67m", "offline"),
    ),
    (
        "URL model offline (HF_HUB_OFFLINE)",
        lambda: _offline(lambda: movq.load("dalle-dvae")),
        FileNotFoundError,
        ("dalle-dvae",),
    ),
):
    add(
        f"load: {_label}",
        f"{getattr(_exc, '__name__', 'TypeError/ValueError')} saying what is accepted",
        (lambda c=_call, e=_exc, k=_cont: expect_error(c, e if isinstance(e, tuple) else (e,), contains=k)),
    )


def _offline(fn: Callable[[], Any]) -> Any:
    old = os.environ.get("HF_HUB_OFFLINE")
    os.environ["HF_HUB_OFFLINE"] = "1"
    try:
        return fn()
    finally:
        if old is None:
            del os.environ["HF_HUB_OFFLINE"]
        else:
            os.environ["HF_HUB_OFFLINE"] = old


# ---- silent wrong results


@case("load(folder, pretrained=False): the architecture, fresh weights", "same config, different weights")
def _pretrained_false_folder() -> tuple[bool, str]:
    def check(c: Codec) -> tuple[bool, str]:
        same_cfg = c.config.to_dict() == hostile_tiny().config.to_dict()
        differ = not torch.equal(c.decoder.conv_out.weight, hostile_tiny().decoder.conv_out.weight)
        return (
            same_cfg and differ,
            f"config {'same' if same_cfg else 'DIFFERS'}, weights {'fresh' if differ else 'LOADED (ignored pretrained=False)'}",
        )

    return expect_ok(lambda: movq.load(hostile_tiny_folder(), pretrained=False), check)


@case("load(checkpoint file, pretrained=False)", "fresh weights of the inferred architecture")
def _pretrained_false_file() -> tuple[bool, str]:
    return expect_ok(
        lambda: movq.load(hostile_ckpt_file(), pretrained=False),
        lambda c: (
            not torch.equal(c.decoder.conv_out.weight, hostile_preset_state()["decoder.conv_out.weight"]),
            f"{c.config.name}, fresh weights",
        ),
    )


def _ema_ckpt() -> Path:
    path = Work.new("ema") / "ema.ckpt"
    state = dict(hostile_preset_state())
    state["model_ema.decoderconv_outweight"] = torch.full_like(state["decoder.conv_out.weight"], 0.5)
    state["model_ema.decay"] = torch.tensor(0.999)
    torch.save({"state_dict": state}, path)
    return path


for _ema, _want in ((None, 0.5), (True, 0.5), (False, None)):
    add(
        f"load(ckpt with model_ema.*, ema={_ema})",
        "EMA weights" if _want else "raw weights",
        (
            lambda e=_ema, w=_want: expect_ok(
                lambda: movq.load(_ema_ckpt(), ema=e),
                lambda c: (
                    bool((c.decoder.conv_out.weight == 0.5).all()) == (w is not None),
                    f"conv_out {'= EMA 0.5' if (c.decoder.conv_out.weight == 0.5).all() else '= raw'}",
                ),
            )
        ),
    )
add(
    "load(..., dtype=torch.bfloat16)",
    "codec in bfloat16",
    lambda: expect_ok(
        lambda: movq.load(hostile_tiny_folder(), dtype=torch.bfloat16),
        lambda c: (c.dtype == torch.bfloat16, str(c.dtype)),
    ),
)
add(
    "load() returns eval mode",
    "training is False everywhere",
    lambda: expect_ok(
        lambda: movq.load(hostile_tiny_folder()), lambda c: (not any(m.training for m in c.modules()), "eval")
    ),
)




@case("reconstruct a 16-bit PIL photo-like image", "not all white; close to the 8-bit version")
def _recon16() -> tuple[bool, str]:
    with Image.open(sorted(hostile_images().iterdir())[0]) as im:
        gray8 = im.convert("L").resize((32, 32))
    gray16 = Image.fromarray(np.asarray(gray8, np.uint16) * 257)
    return expect_ok(
        lambda: hostile_photos().reconstruct(gray16),
        lambda r: (
            lambda a, b: (
                abs(a.mean() - b.mean()) < 10 and a.mean() < 250,
                f"mean {a.mean():.0f} vs 8-bit {b.mean():.0f}",
            )
        )(np.asarray(r, float), np.asarray(hostile_photos().reconstruct(gray8), float)),
    )


@case(
    "load a .ckpt of a movq codec with FSQ (config saved in the state dict)",
    "same tokens as the original codec",
)
def _fsq_roundtrip() -> tuple[bool, str]:
    from movq.config import FSQConfig

    torch.manual_seed(0)
    codec = Codec(tiny_config(embed_dim=3, quantizer=FSQConfig(levels=(5, 4, 3)))).eval()
    path = Work.new("fsq") / "fsq.pt"
    torch.save(codec.state_dict(), path)
    x = torch.rand(1, 3, 16, 16) * 2 - 1
    return expect_ok(
        lambda: movq.load(path), lambda c: (torch.equal(c.encode(x), codec.encode(x)), "identical tokens")
    )


@pytest.mark.parametrize("hostile", CASES.params())
def test_hostile_input(hostile, hostile_work):
    hostile.check()
