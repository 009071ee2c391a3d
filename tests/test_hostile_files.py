"""Hostile files: checkpoints that could run code (malicious pickles in every container movq reads),
corrupt / truncated / wrong-type checkpoints, configs and images.

Each case builds one hostile input and asserts what movq promises for it (see ``helpers.expect_error``):
a ValueError / TypeError / FileNotFoundError raised by movq naming the file and what was wrong, never
code execution, never a raw traceback from torch / PIL / safetensors.
"""

from __future__ import annotations

import ast
import copy
import json
import os
import pickle
import shutil
import struct
import subprocess
import sys
import time
import zipfile
from collections.abc import Callable
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image

import movq
from helpers import (
    NOTHING_RUNS,
    SRC,
    HostileCases,
    Pickle,
    RunsCode,
    Work,
    expect_error,
    expect_ok,
    hostile_preset_state,
    hostile_tiny,
    hostile_tiny_folder,
    hostile_tiny_state,
    jpeg_bytes,
    movq_internal,
    png_with_size,
    save_as_foreign_module,
    short,
    torch_zip,
)

CASES = HostileCases()
add, case = CASES.add, CASES.case




def evil_os_system_p0(marker: Path) -> bytes:
    """The classic protocol-0 pickle ``os.system("touch MARKER")``."""
    return f"cos\nsystem\n(S'touch {marker}'\ntR.".encode()


@cache
def dalle_parts() -> tuple[torch.nn.Module, torch.nn.Module]:
    """The encoder and decoder of a small random DALL-E dVAE."""
    DVAE, DVAEConfig = movq_internal("DVAE"), movq_internal("DVAEConfig")
    torch.manual_seed(2)
    config = DVAEConfig(n_hid=16, n_init=8, vocab_size=32)
    return DVAE(config).encoder, DVAE(config).decoder


def dalle_folder(legacy: bool = False, evil_in: str | None = None, marker: Path | None = None) -> Path:
    """A folder with DALL-E style ``encoder.pkl`` + ``decoder.pkl`` (pickled module objects); with
    ``evil_in`` the named part carries a :class:`RunsCode` attribute."""
    folder = Work.new("dalle")
    for part, module in zip(("encoder", "decoder"), dalle_parts()):
        module = copy.deepcopy(module)
        if evil_in == part:
            module.payload = RunsCode(marker)  # type: ignore[assignment]
        save_as_foreign_module(module, f"dall_e_audit.{part}", part.title(), folder / f"{part}.pkl", legacy)
    return folder


def _evil_checkpoint(
    suffix: str, wrap: Callable[[RunsCode], Any], legacy: bool = False
) -> Callable[[], tuple[bool, str]]:
    def run() -> tuple[bool, str]:
        folder = Work.new("evil")
        path = folder / f"model{suffix}"
        torch.save(wrap(RunsCode(Work.marker("ckpt"))), path, _use_new_zipfile_serialization=not legacy)
        return expect_error(
            lambda: movq.load(path), (ValueError, pickle.UnpicklingError), contains=(path.name,)
        )

    return run


for _suffix in (".ckpt", ".pt", ".pth", ".bin"):
    add(
        f"torch.save'd pickle with os.system, {_suffix}",
        NOTHING_RUNS,
        _evil_checkpoint(_suffix, lambda e: {"encoder.conv_in.weight": torch.zeros(1), "x": e}),
    )
add(
    "Lightning dict {'state_dict': ..., 'callbacks': Evil}",
    NOTHING_RUNS,
    _evil_checkpoint(".ckpt", lambda e: {"state_dict": hostile_tiny_state(), "callbacks": {"cb": e}}),
)
add("Evil object as the whole checkpoint (.pt)", NOTHING_RUNS, _evil_checkpoint(".pt", lambda e: e))
add(
    "Evil inside state_dict values (legacy container .pth)",
    NOTHING_RUNS,
    _evil_checkpoint(".pth", lambda e: {"state_dict": {"encoder.conv_in.weight": e}}, legacy=True),
)
add(
    "Evil as whole object, legacy container (.ckpt)",
    NOTHING_RUNS,
    _evil_checkpoint(".ckpt", lambda e: e, legacy=True),
)


@case("plain pickle.dumps (protocol 2) with os.system, .pt", NOTHING_RUNS)
def _plain_pickle() -> tuple[bool, str]:
    path = Work.new("evil") / "model.pt"
    path.write_bytes(pickle.dumps({"state_dict": RunsCode(Work.marker("plain"))}, protocol=2))
    return expect_error(lambda: movq.load(path), (ValueError, pickle.UnpicklingError), contains=("model.pt",))


@case("protocol-0 'cos\\nsystem' pickle, .bin", NOTHING_RUNS)
def _p0_pickle() -> tuple[bool, str]:
    path = Work.new("evil") / "pytorch_model.bin"
    path.write_bytes(evil_os_system_p0(Work.marker("p0")))
    return expect_error(
        lambda: movq.load(path), (ValueError, pickle.UnpicklingError), contains=("pytorch_model.bin",)
    )


@case("INST opcode calling os.system, .pt", NOTHING_RUNS)
def _inst_pickle() -> tuple[bool, str]:
    path = Work.new("evil") / "model.pt"
    path.write_bytes(f"(S'touch {Work.marker('inst')}'\nios\nsystem\n.".encode())
    return expect_error(lambda: movq.load(path), (ValueError, pickle.UnpicklingError), contains=("model.pt",))


@case("builtins.eval via STACK_GLOBAL/REDUCE, .ckpt", NOTHING_RUNS)
def _eval_pickle() -> tuple[bool, str]:
    path = Work.new("evil") / "model.ckpt"
    code = f"__import__('os').system('touch {Work.marker('eval')}')"
    path.write_bytes(Pickle().glob("builtins", "eval").str(code).raw(b"\x85R").done())
    return expect_error(
        lambda: movq.load(path), (ValueError, pickle.UnpicklingError), contains=("model.ckpt",)
    )


@case("torch.load(weights_only=False) smuggled as a global call", NOTHING_RUNS)
def _torch_load_pickle() -> tuple[bool, str]:
    folder = Work.new("evil")
    inner = folder / "inner.pt"
    torch.save(RunsCode(Work.marker("inner")), inner)
    path = folder / "model.pt"
    path.write_bytes(
        Pickle()
        .glob("torch", "load")
        .str(str(inner))
        .raw(b"}X\x0c\x00\x00\x00weights_only\x89s")
        .raw(b"\x86R")
        .done()
    )
    return expect_error(lambda: movq.load(path), (ValueError, pickle.UnpicklingError), contains=("model.pt",))


@case("OrderedDict rebuilder fed an Evil, .pt", NOTHING_RUNS)
def _ordered_dict_pickle() -> tuple[bool, str]:
    path = Work.new("evil") / "model.pt"
    path.write_bytes(
        pickle.dumps({"a": __import__("collections").OrderedDict(x=RunsCode(Work.marker("od")))}, protocol=2)
    )
    return expect_error(lambda: movq.load(path), (ValueError, pickle.UnpicklingError), contains=("model.pt",))


@case("DALL-E encoder.pkl + decoder.pkl, both Evil (zip)", NOTHING_RUNS)
def _dalle_evil_zip() -> tuple[bool, str]:
    folder = Work.new("dalle-evil")
    for name in ("encoder.pkl", "decoder.pkl"):
        torch.save(RunsCode(Work.marker("dalle")), folder / name)
    return expect_error(
        lambda: movq.load(folder), (ValueError, pickle.UnpicklingError), contains=("encoder.pkl",)
    )


@case("DALL-E encoder.pkl + decoder.pkl, both Evil (legacy container)", NOTHING_RUNS)
def _dalle_evil_legacy() -> tuple[bool, str]:
    folder = Work.new("dalle-evil")
    for name in ("encoder.pkl", "decoder.pkl"):
        torch.save(RunsCode(Work.marker("dalle-legacy")), folder / name, _use_new_zipfile_serialization=False)
    return expect_error(
        lambda: movq.load(folder), (ValueError, pickle.UnpicklingError), contains=("encoder.pkl",)
    )


for _legacy in (False, True):
    for _part in ("encoder", "decoder"):
        add(
            f"DALL-E real module with Evil attribute in {_part}.pkl ({'legacy' if _legacy else 'zip'})",
            NOTHING_RUNS,
            (
                lambda legacy=_legacy, part=_part: expect_error(
                    lambda: movq.load(dalle_folder(legacy, part, Work.marker(f"dalle-{part}"))),
                    (ValueError, pickle.UnpicklingError),
                    contains=(f"{part}.pkl",),
                )
            ),
        )


@case("legacy container: Evil in the sys_info header pickle", NOTHING_RUNS)
def _legacy_header() -> tuple[bool, str]:
    path = Work.new("evil") / "model.ckpt"
    magic, version = 0x1950A86A20F9469CFC6C, 1001
    parts = [
        pickle.dumps(magic, protocol=2),
        pickle.dumps(version, protocol=2),
        pickle.dumps(RunsCode(Work.marker("sysinfo")), protocol=2),
    ]
    path.write_bytes(b"".join(parts))
    return expect_error(
        lambda: movq.load(path), (ValueError, pickle.UnpicklingError), contains=("model.ckpt",)
    )


@case("legacy container: Evil as the storage-key list", NOTHING_RUNS)
def _legacy_keys() -> tuple[bool, str]:
    path = Work.new("evil") / "model.ckpt"
    magic, version = 0x1950A86A20F9469CFC6C, 1001
    parts = [magic, version, {"little_endian": True, "protocol_version": 1001}, {"a": 1}]
    path.write_bytes(
        b"".join(pickle.dumps(p, protocol=2) for p in parts)
        + pickle.dumps(RunsCode(Work.marker("keys")), protocol=2)
    )
    return expect_error(
        lambda: movq.load(path), (ValueError, pickle.UnpicklingError), contains=("model.ckpt",)
    )


@case("diffusers folder whose diffusion_pytorch_model.bin is Evil", NOTHING_RUNS)
def _diffusers_bin_evil() -> tuple[bool, str]:
    config_to_diffusers = movq_internal("config_to_diffusers")

    folder = Work.new("diffusers-evil")
    (folder / "config.json").write_text(json.dumps(config_to_diffusers(hostile_tiny().config)))
    torch.save({"x": RunsCode(Work.marker("diffusers"))}, folder / "diffusion_pytorch_model.bin")
    return expect_error(
        lambda: movq.load(folder),
        (ValueError, pickle.UnpicklingError),
        contains=("diffusion_pytorch_model.bin",),
    )


@case("torch.save(codec.state_dict()) with Evil in _metadata", NOTHING_RUNS)
def _metadata_evil() -> tuple[bool, str]:
    path = Work.new("evil") / "codec.pt"
    state = hostile_tiny().state_dict()
    state._metadata[""]["movq_config"] = RunsCode(Work.marker("metadata"))  # type: ignore[attr-defined]
    torch.save(state, path)
    return expect_error(lambda: movq.load(path), (ValueError, pickle.UnpicklingError), contains=("codec.pt",))


@case("pickle renamed to .safetensors", "refused as not safetensors, names the file")
def _pickle_as_safetensors() -> tuple[bool, str]:
    path = Work.new("evil") / "model.safetensors"
    torch.save({"x": RunsCode(Work.marker("st"))}, path)
    return expect_error(lambda: movq.load(path), contains=("model.safetensors",))


@case("pickle as a save_pretrained folder's model.safetensors", "refused, names the file")
def _pickle_in_folder() -> tuple[bool, str]:
    folder = Work.new("folder-evil")
    shutil.copy(hostile_tiny_folder() / "config.json", folder / "config.json")
    torch.save({"x": RunsCode(Work.marker("folder"))}, folder / "model.safetensors")
    return expect_error(lambda: movq.load(folder), contains=("model.safetensors",))


@case("pickle as a t2i model folder's model.safetensors", "refused, names the file")
def _pickle_in_t2i() -> tuple[bool, str]:
    T2IConfig, T2ITransformer = movq_internal("T2IConfig"), movq_internal("T2ITransformer")

    folder = Work.new("t2i-evil")
    (folder / "config.json").write_text(json.dumps(T2IConfig().to_dict()))
    torch.save({"x": RunsCode(Work.marker("t2i"))}, folder / "model.safetensors")
    return expect_error(lambda: T2ITransformer.from_pretrained(folder), contains=("model.safetensors",))


@case("pickle as a diffusion UNet folder's ema.safetensors", "refused, names the file")
def _pickle_in_unet() -> tuple[bool, str]:
    UNet, UNetConfig = movq_internal("UNet"), movq_internal("UNetConfig")

    folder = Work.new("unet-evil")
    (folder / "config.json").write_text(json.dumps(UNetConfig().to_dict()))
    torch.save({"x": RunsCode(Work.marker("unet"))}, folder / "ema.safetensors")
    torch.save({"x": RunsCode(Work.marker("unet"))}, folder / "model.safetensors")
    return expect_error(lambda: UNet.from_pretrained(folder), contains=("safetensors",))






@case("training state.pt that is Evil (checkpoint.load_checkpoint)", NOTHING_RUNS)
def _state_evil() -> tuple[bool, str]:
    CheckpointError, load_checkpoint = movq_internal("CheckpointError"), movq_internal("load_checkpoint")

    folder = Work.new("ckpt") / "step-00000001"
    folder.mkdir()
    torch.save({"step": 1, "x": RunsCode(Work.marker("state"))}, folder / "state.pt")
    return expect_error(lambda: load_checkpoint(folder), (CheckpointError,), contains=("state.pt",))


@case("bench --cache shard file that is Evil (ShardCache.load)", "not run; the shard is recomputed")
def _cache_evil() -> tuple[bool, str]:
    ShardCache = movq_internal("ShardCache")

    folder = Work.new("cache")
    cache_ = ShardCache(folder, {"k": 1}, 0, 1)
    cache_.folder.mkdir(parents=True)
    torch.save({"done": RunsCode(Work.marker("cache"))}, cache_.path)
    return expect_ok(cache_.load, lambda r: (r is None, f"load() -> {r!r} (recomputed)"))


@case(
    "static check: every torch.load in src/movq has weights_only=True; no pickle.load, np.load(allow_pickle=True)",
    "only safe readers in the source",
)
def _static_loads() -> tuple[bool, str]:
    bad, loads, jit = [], 0, []
    package = Path(SRC) / "movq"
    for file in sorted(package.rglob("*.py")):
        for node in ast.walk(ast.parse(file.read_text())):
            if not isinstance(node, ast.Call):
                continue
            name = ast.unparse(node.func)
            where = f"{file.relative_to(package)}:{node.lineno}"
            keywords = {k.arg: ast.unparse(k.value) for k in node.keywords}
            if name == "torch.load":
                loads += 1
                if keywords.get("weights_only") != "True":
                    bad.append(f"{where} torch.load without weights_only=True")
            elif name == "torch.jit.load":
                jit.append(where)
            elif name in ("pickle.load", "pickle.loads", "pickle.Unpickler", "dill.load", "cloudpickle.load"):
                bad.append(f"{where} {name}")
            elif name.endswith("np.load") and keywords.get("allow_pickle") == "True":
                bad.append(f"{where} np.load(allow_pickle=True)")
    note = (
        f"{loads} torch.load calls, all weights_only=True; torch.jit.load (TorchScript, no Python) at {jit}"
    )
    return (not bad, note if not bad else "; ".join(bad))


@case(
    "crafted DALL-E pickle: tensor view outside its storage",
    "CheckpointReadError naming the file, no crash",
)
def _oob_view() -> tuple[bool, str]:
    folder = Work.new("dalle-oob")
    p = Pickle().glob("dall_e_x", "Encoder").raw(b")\x81")  # an inert module instance
    p.raw(b"}").str("_parameters").raw(b"}").str("blocks.input.w")  # state {"_parameters": {name: tensor}}
    p.glob("torch._utils", "_rebuild_tensor_v2").raw(b"(")  # (storage, offset, size, stride, grad, hooks)
    p.raw(b"(").str("storage").glob("torch", "FloatStorage").str("0").str("cpu").int(4).raw(b"tQ")  # 4 floats
    p.int(0).int(2**20).raw(b"\x85").int(1).raw(b"\x85").raw(b"\x89").glob("collections", "OrderedDict").raw(
        b")R"
    )
    p.raw(b"tR").raw(b"ssb")  # a 2**20-element view of a 4-element storage
    raw = torch_zip(p.done(), {"0": b"\x00" * 16})
    for name in ("encoder.pkl", "decoder.pkl"):
        (folder / name).write_bytes(raw)
    return expect_error(lambda: movq.load(folder), contains=("encoder.pkl",))


@case("crafted legacy container declaring a 4 TB storage in a 200-byte file", "refused before allocating")
def _legacy_huge_storage() -> tuple[bool, str]:
    path = Work.new("evil") / "encoder.pkl"
    magic, version = 0x1950A86A20F9469CFC6C, 1001
    head = b"".join(pickle.dumps(x, protocol=2) for x in (magic, version, {"little_endian": True}))
    body = Pickle().glob("dall_e_x", "Encoder").raw(b")\x81}X\x01\x00\x00\x00w(X\x07\x00\x00\x00storage")
    body.glob("torch", "FloatStorage").str("0").str("cpu").int(2**40).raw(b"N").raw(b"tQs").raw(b"b")
    path.write_bytes(head + body.done() + pickle.dumps(["0"], protocol=2))
    return expect_error(lambda: movq_internal("load_state_file")(path), contains=("encoder.pkl",))




# ============================================================================ 2. corrupt / wrong-type files

A2 = "2-files"
NAMES_FILE = "ValueError/FileNotFoundError naming the file"


def _bad_file(
    name: str,
    content: bytes | Callable[[Path], None],
    contains: tuple[str, ...] | None = None,
    load: Callable[[Path], Any] = lambda p: movq.load(p),
) -> Callable[[], tuple[bool, str]]:
    def run() -> tuple[bool, str]:
        path = Work.new("bad") / name
        if callable(content):
            content(path)
        else:
            path.write_bytes(content)
        return expect_error(lambda: load(path), contains=contains if contains is not None else (path.name,))

    return run


def _safetensors_bytes() -> bytes:
    from safetensors.torch import save

    return save(hostile_tiny_state())


add("empty .safetensors (0 bytes)", NAMES_FILE, _bad_file("model.safetensors", b""))
add(
    "truncated .safetensors (half)",
    NAMES_FILE,
    _bad_file(
        "model.safetensors", lambda p: p.write_bytes(_safetensors_bytes()[: len(_safetensors_bytes()) // 2])
    ),
)
add(
    ".safetensors with a header claiming 2**62 bytes",
    NAMES_FILE,
    _bad_file("model.safetensors", struct.pack("<Q", 2**62) + b"{}"),
)
add(
    ".safetensors with a non-JSON header",
    NAMES_FILE,
    _bad_file("model.safetensors", struct.pack("<Q", 8) + b"notjson!" + b"\0" * 16),
)
add(
    ".safetensors with offsets past the end",
    NAMES_FILE,
    _bad_file(
        "model.safetensors",
        (lambda h: struct.pack("<Q", len(h)) + h)(
            json.dumps({"w": {"dtype": "F32", "shape": [1000], "data_offsets": [0, 4000]}}).encode()
        )
        + b"\0" * 8,
    ),
)
add("random bytes .safetensors", NAMES_FILE, _bad_file("model.safetensors", os.urandom(4096)))
add("empty .ckpt (0 bytes)", NAMES_FILE, _bad_file("model.ckpt", b""))
add("random bytes .pt", NAMES_FILE, _bad_file("model.pt", os.urandom(4096)))
add(
    "truncated torch zip .ckpt",
    NAMES_FILE,
    _bad_file(
        "model.ckpt",
        lambda p: (torch.save(hostile_tiny_state(), p), p.write_bytes(p.read_bytes()[: p.stat().st_size // 2])),
    ),
)
add(
    "zip with no data.pkl, .pt",
    NAMES_FILE,
    _bad_file("model.pt", lambda p: zipfile.ZipFile(p, "w").writestr("x.txt", "hi")),
)
add(
    "truncated legacy container .pth",
    NAMES_FILE,
    _bad_file(
        "model.pth",
        lambda p: (
            torch.save(hostile_tiny_state(), p, _use_new_zipfile_serialization=False),
            p.write_bytes(p.read_bytes()[:-100]),
        ),
    ),
)
for _label, _obj in (
    ("a list", [1, 2, 3]),
    ("an int", 7),
    ("None", None),
    ("a string", "weights"),
    ("a bare tensor", torch.zeros(3)),
    ("a dict of non-tensors", {"a": 1, "b": "x"}),
    ("Lightning dict with state_dict=None", {"state_dict": None, "epoch": 3}),
    ("an empty dict", {}),
):
    add(
        f".ckpt holding {_label}",
        "ValueError naming the file and what it holds",
        _bad_file("model.ckpt", (lambda obj: lambda p: torch.save(obj, p))(_obj)),
    )
add(
    "checkpoint whose shapes match no architecture",
    "ValueError naming the file: no architecture fits",
    _bad_file(
        "model.pt",
        lambda p: torch.save({**hostile_preset_state(), "encoder.conv_in.weight": torch.zeros(7, 3, 3, 3)}, p),
    ),
)
add(
    "checkpoint with keys missing, preset= given",
    "strict error listing the missing keys",
    _bad_file(
        "model.pt",
        lambda p: torch.save({k: v for k, v in hostile_preset_state().items() if "decoder.up.0" not in k}, p),
        load=lambda p: movq.load(p, preset="movqgan-tiny"),
        contains=("model.pt", "missing"),
    ),
)
add(
    "checkpoint with an extra key, preset= given",
    "strict error listing the unexpected key",
    _bad_file(
        "model.pt",
        lambda p: torch.save({**hostile_preset_state(), "encoder.evil": torch.zeros(1)}, p),
        load=lambda p: movq.load(p, preset="movqgan-tiny"),
        contains=("model.pt", "encoder.evil"),
    ),
)
add(
    "file with unknown suffix .onnx",
    "ValueError naming accepted suffixes",
    _bad_file("model.onnx", b"\0" * 10, contains=("model.onnx", ".ckpt")),
)
add(
    "folder named model.ckpt (a directory)",
    "FileNotFoundError: not a codec folder",
    _bad_file("model.ckpt", lambda p: p.mkdir(), contains=("model.ckpt",)),
)




# ---- config.json of a save_pretrained folder


def _config_case(
    mutate: Callable[[dict], Any] | str | bytes,
    contains: tuple[str, ...] = ("config.json",),
    pretrained: bool = True,
) -> Callable[[], tuple[bool, str]]:
    def run() -> tuple[bool, str]:
        folder = Work.new("cfg")
        shutil.copy(hostile_tiny_folder() / "model.safetensors", folder / "model.safetensors")
        if isinstance(mutate, bytes):
            (folder / "config.json").write_bytes(mutate)
        elif isinstance(mutate, str):
            (folder / "config.json").write_text(mutate)
        else:
            data = hostile_tiny().config.to_dict()
            data = mutate(data) or data
            (folder / "config.json").write_text(json.dumps(data))
        return expect_error(lambda: movq.load(folder, pretrained=pretrained), contains=contains)

    return run


def _set(**kv: Any) -> Callable[[dict], None]:
    def apply(d: dict) -> None:
        for k, v in kv.items():
            if "." in k:
                outer, inner = k.split(".")
                d[outer][inner] = v
            else:
                d[k] = v

    return apply


for _label, _mut, _cont in (
    ("empty", "", ("config.json", "empty")),
    ("whitespace only", "  \n\t", ("config.json",)),
    ("a JSON list", "[1, 2]", ("config.json", "list")),
    ("a JSON string", '"movq"', ("config.json",)),
    ("JSON null", "null", ("config.json",)),
    ("invalid JSON", "{'ch': 32,}", ("config.json", "JSON")),
    ("not UTF-8", b"\xff\xfe\x00{\x00}", ("config.json",)),
    ("unknown field 'chh'", _set(chh=32), ("config.json", "chh", "did you mean")),
    ("ch as a string '32'", _set(ch="32"), ("config.json", "'ch'")),
    ("ch = 32.0 (float)", _set(ch=32.0), ("config.json", "'ch'")),
    ("ch = true (bool)", _set(ch=True), ("config.json", "'ch'")),
    ("ch = 0", _set(ch=0), ("config.json", "'ch'")),
    ("ch = 33 (not a multiple of 32)", _set(ch=33), ("config.json", "ch")),
    ("ch_mult = []", _set(ch_mult=[]), ("config.json", "ch_mult")),
    ("ch_mult = [0, 2]", _set(ch_mult=[0, 2]), ("config.json", "ch_mult")),
    ("ch_mult = '12'", _set(ch_mult="12"), ("config.json", "ch_mult")),
    ("num_res_blocks = -1", _set(num_res_blocks=-1), ("config.json", "num_res_blocks")),
    ("resolution = 0", _set(resolution=0), ("config.json", "resolution")),
    ("embed_dim = 0", _set(embed_dim=0), ("config.json", "embed_dim")),
    ("norm = 'batch'", _set(norm="batch"), ("config.json", "norm")),
    (
        "scaling_factor = NaN (JSON NaN literal)",
        _set(scaling_factor=float("nan")),
        ("config.json", "scaling_factor"),
    ),
    ("scaling_factor = 0", _set(scaling_factor=0), ("config.json", "scaling_factor")),
    ("dropout = 1.5", _set(dropout=1.5), ("config.json", "dropout")),
    ("quantizer kind 'vqq'", _set(**{"quantizer.kind": "vqq"}), ("config.json", "vqq", "did you mean")),
    ("quantizer codebook_size = 0", _set(**{"quantizer.codebook_size": 0}), ("config.json", "codebook_size")),
    ("quantizer = 'vq' (a string)", _set(quantizer="vq"), ("config.json", "quantizer")),
    ("attn_resolutions = ['16']", _set(attn_resolutions=["16"]), ("config.json", "attn_resolutions")),
):
    add(
        f"config.json: {_label}",
        "ConfigError naming file, field, value, accepted",
        _config_case(_mut, _cont),
    )


def _huge_config(field: str, value: Any) -> Callable[[], tuple[bool, str]]:
    def mutate(d: dict) -> None:
        _set(**{field: value})(d)

    return _config_case(mutate, ("config.json",), pretrained=False)






add(
    "config.json valid but model.safetensors missing",
    "FileNotFoundError naming model.safetensors",
    lambda: (
        lambda f: (
            shutil.copy(hostile_tiny_folder() / "config.json", f / "config.json"),
            expect_error(lambda: movq.load(f), contains=("model.safetensors",)),
        )[1]
    )(Work.new("cfg")),
)
add(
    "config.json from another architecture than the weights",
    "ValueError naming model.safetensors and the keys",
    _config_case(_set(num_res_blocks=1, ch_mult=[1, 2, 2]), ("model.safetensors",)),
)
add(
    "config.json is a directory",
    "FileNotFoundError: not a codec folder",
    lambda: (
        lambda f: (
            (f / "config.json").mkdir(),
            shutil.copy(hostile_tiny_folder() / "model.safetensors", f / "model.safetensors"),
            expect_error(lambda: movq.load(f), contains=(str(f.name),)),
        )[2]
    )(Work.new("cfg")),
)


# ---- diffusers folders


def _diffusers_case(
    config: Any, contains: tuple[str, ...] = ("config.json",), pretrained: bool = False
) -> Callable[[], tuple[bool, str]]:
    def run() -> tuple[bool, str]:
        folder = Work.new("diffusers")
        (folder / "config.json").write_text(json.dumps(config) if not isinstance(config, str) else config)
        (folder / "diffusion_pytorch_model.safetensors").write_bytes(_safetensors_bytes())
        return expect_error(lambda: movq.load(folder, pretrained=pretrained), contains=contains)

    return run


_VQ = {
    "_class_name": "VQModel",
    "block_out_channels": [32, 64],
    "down_block_types": ["DownEncoderBlock2D"] * 2,
    "up_block_types": ["UpDecoderBlock2D"] * 2,
    "latent_channels": 4,
    "num_vq_embeddings": 64,
    "norm_type": "spatial",
}
for _label, _cfg in (
    ("_class_name UNet2DModel", {**_VQ, "_class_name": "UNet2DModel"}),
    ("block_out_channels = 64 (not a list)", {**_VQ, "block_out_channels": 64}),
    ("block_out_channels = ['a', 'b']", {**_VQ, "block_out_channels": ["a", "b"]}),
    ("down_block_types = [1, 2]", {**_VQ, "down_block_types": [1, 2]}),
    ("latent_channels = 'four'", {**_VQ, "latent_channels": "four"}),
    ("norm_num_groups = 16", {**_VQ, "norm_num_groups": 16}),
    ("act_fn = 'relu'", {**_VQ, "act_fn": "relu"}),
    ("config.json is a JSON list", [1, 2]),
):
    add(
        f"diffusers folder: {_label}",
        "ConfigError naming config.json and the field",
        _diffusers_case(_cfg),
    )
add(
    "diffusers folder: valid config, weights of another model",
    "ValueError naming the weights file",
    _diffusers_case(
        {**_VQ, "layers_per_block": 1}, ("diffusion_pytorch_model.safetensors",), pretrained=True
    ),
)


@case("diffusers folder: config.json without weights", "FileNotFoundError naming what is missing")
def _diffusers_no_weights() -> tuple[bool, str]:
    folder = Work.new("diffusers")
    (folder / "config.json").write_text(json.dumps(_VQ))
    return expect_error(lambda: movq.load(folder), contains=("diffusion_pytorch_model",))


# ---- image files (read by movq.image_files, as the bench / training / examples do)


def _open(path: Path) -> Any:
    load_preprocessed = movq_internal("load_preprocessed")

    return load_preprocessed(path, 16)


def _image_file_error(name: str, content: bytes) -> Callable[[], tuple[bool, str]]:
    """Unreadable image files: the reader's error (bench and training skip such files and report them)."""

    def run() -> tuple[bool, str]:
        path = Work.new("img") / name
        path.write_bytes(content)
        ImageRecord, load_image = movq_internal("ImageRecord"), movq_internal("load_image")

        loaded = load_image(ImageRecord(str(path), name, "all"), 0, 16)
        ok = loaded.pixels is None and bool(loaded.error)
        return (
            ok,
            f"bench load_image -> skipped: {short(loaded.error, 90)}"
            if ok
            else "decoded garbage as an image",
        )

    return run


_TRUNC = jpeg_bytes((64, 48))
add(
    "truncated JPEG (half the bytes)",
    "skipped by the reader with the reason",
    _image_file_error("cut.jpg", _TRUNC[: len(_TRUNC) // 2]),
)
add("zero-byte PNG", "skipped with the reason", _image_file_error("empty.png", b""))
add(
    "text file named .jpg",
    "skipped with the reason",
    _image_file_error("notes.jpg", b"this is text, not a JPEG\n" * 10),
)
add(
    "PNG header claiming 100000x100000 (decompression bomb)",
    "skipped (PIL's bomb guard), nothing allocated",
    _image_file_error("bomb.png", png_with_size(100_000, 100_000)),
)
add(
    "PNG header claiming 10000x10000 without data",
    "skipped (truncated)",
    _image_file_error("hdr.png", png_with_size(10_000, 10_000)),
)
add("GIF header only", "skipped with the reason", _image_file_error("x.gif", b"GIF89a\x10\x00\x10\x00"))


@case(
    "real 12000x12000 1-bit PNG (between PIL's warning and error limits)",
    "read or skipped, bounded memory, no crash",
    slow=True,
)
def _real_bomb() -> tuple[bool, str]:
    path = Work.new("img") / "bomb.png"
    Image.new("1", (12000, 12000), 1).save(path, optimize=True)
    start = time.perf_counter()
    result = expect_ok(
        lambda: _open(path),
        lambda r: (
            tuple(r[0].shape) == (3, 16, 16) and int(r[0].min()) == 255,
            f"uint8 {tuple(r[0].shape)}, white as expected",
        ),
    )
    return result[0], result[1] + f", {time.perf_counter() - start:.1f}s"




def _pixel(path_or_image: Path | Image.Image) -> tuple[int, ...]:
    open_rgb = movq_internal("open_rgb")

    image = open_rgb(path_or_image) if isinstance(path_or_image, Path) else path_or_image
    return image.getpixel((0, 0))


@case("16-bit grayscale PNG (value 32768 = mid-gray)", "read as gray ~128, not white")
def _png16() -> tuple[bool, str]:
    path = Work.new("img") / "g16.png"
    Image.fromarray(np.full((8, 8), 32768, np.uint16)).save(path)
    return expect_ok(
        lambda: _pixel(path),
        lambda px: (all(120 <= v <= 136 for v in px), f"pixel {px} (mode {Image.open(path).mode})"),
    )


@case("16-bit grayscale PNG, dark (value 1000 of 65535)", "read as ~4, not 255")
def _png16_dark() -> tuple[bool, str]:
    path = Work.new("img") / "g16.png"
    Image.fromarray(np.full((8, 8), 1000, np.uint16)).save(path)
    return expect_ok(lambda: _pixel(path), lambda px: (all(v <= 6 for v in px), f"pixel {px}"))


@case("palette PNG with a transparent index", "transparent pixels composited on white")
def _palette_transparency() -> tuple[bool, str]:
    path = Work.new("img") / "p.png"
    im = Image.new("P", (8, 8), 0)
    im.putpalette([0, 0, 0, 255, 0, 0] + [0] * 762)
    im.putpixel((1, 0), 1)
    im.save(path, transparency=0)
    open_rgb = movq_internal("open_rgb")

    return expect_ok(
        lambda: open_rgb(path),
        lambda r: (
            r.getpixel((0, 0)) == (255, 255, 255) and r.getpixel((1, 0)) == (255, 0, 0),
            f"transparent -> {r.getpixel((0, 0))}, opaque red -> {r.getpixel((1, 0))}",
        ),
    )


@case("RGBA PNG, fully transparent black", "white")
def _rgba_png() -> tuple[bool, str]:
    path = Work.new("img") / "a.png"
    Image.new("RGBA", (8, 8), (0, 0, 0, 0)).save(path)
    return expect_ok(lambda: _pixel(path), lambda px: (px == (255, 255, 255), f"pixel {px}"))


@case("LA PNG, half-transparent black", "mid-gray ~128")
def _la_png() -> tuple[bool, str]:
    path = Work.new("img") / "la.png"
    Image.new("LA", (8, 8), (0, 128)).save(path)
    return expect_ok(lambda: _pixel(path), lambda px: (all(120 <= v <= 135 for v in px), f"pixel {px}"))


@case("CMYK JPEG (pure cyan)", "converted to RGB cyan-ish")
def _cmyk() -> tuple[bool, str]:
    path = Work.new("img") / "cmyk.jpg"
    Image.new("CMYK", (8, 8), (255, 0, 0, 0)).save(path, quality=95)
    return expect_ok(
        lambda: _pixel(path), lambda px: (px[0] < 40 and px[1] > 200 and px[2] > 200, f"pixel {px}")
    )


@case("EXIF-rotated JPEG (orientation 6, stored 40x20)", "rotated: 20x40")
def _exif() -> tuple[bool, str]:
    path = Work.new("img") / "rot.jpg"
    im = Image.new("RGB", (40, 20), (200, 10, 10))
    exif = Image.Exif()
    exif[0x0112] = 6
    im.save(path, exif=exif)
    open_rgb = movq_internal("open_rgb")

    return expect_ok(lambda: open_rgb(path), lambda r: (r.size == (20, 40), f"size {r.size}"))


@case("JPEG with a corrupt EXIF block", "read (orientation ignored) or skipped, no traceback")
def _bad_exif() -> tuple[bool, str]:
    path = Work.new("img") / "badexif.jpg"
    Image.new("RGB", (16, 16), (1, 2, 3)).save(path, exif=b"Exif\x00\x00MM\x00*\x00\x00\x00\x08\xff\xff")
    ImageRecord, load_image = movq_internal("ImageRecord"), movq_internal("load_image")

    return expect_ok(
        lambda: load_image(ImageRecord(str(path), "b.jpg", "all"), 0, 16),
        lambda r: (True, "read" if r.pixels is not None else f"skipped: {short(r.error, 80)}"),
    )


@case("animated GIF", "first frame read")
def _gif() -> tuple[bool, str]:
    path = Work.new("img") / "anim.gif"
    frames = [Image.new("RGB", (8, 8), c) for c in ((255, 0, 0), (0, 255, 0))]
    frames[0].save(path, save_all=True, append_images=frames[1:])
    return expect_ok(lambda: _pixel(path), lambda px: (px[0] > 200 and px[1] < 60, f"pixel {px}"))


@case("1x1 PNG at --resolution 16", "upscaled and counted")
def _tiny_png() -> tuple[bool, str]:
    path = Work.new("img") / "dot.png"
    Image.new("RGB", (1, 1), (9, 9, 9)).save(path)
    return expect_ok(
        lambda: _open(path),
        lambda r: (r[1] and tuple(r[0].shape) == (3, 16, 16), f"upscaled={r[1]} {tuple(r[0].shape)}"),
    )


@case("t2i model folder: config.json invalid JSON", "ConfigError naming the file")
def _t2i_cfg() -> tuple[bool, str]:
    T2ITransformer = movq_internal("T2ITransformer")

    folder = Work.new("t2i")
    (folder / "config.json").write_text("{nope")
    (folder / "model.safetensors").write_bytes(_safetensors_bytes())
    return expect_error(lambda: T2ITransformer.from_pretrained(folder), contains=("config.json",))




@case("movq.load of a t2i model folder", "ConfigError: not a codec config, names the file")
def _load_t2i_folder() -> tuple[bool, str]:
    T2IConfig = movq_internal("T2IConfig")

    folder = Work.new("t2i")
    (folder / "config.json").write_text(json.dumps(T2IConfig().to_dict()))
    (folder / "model.safetensors").write_bytes(_safetensors_bytes())
    return expect_error(lambda: movq.load(folder), contains=("config.json",))


@pytest.mark.parametrize("hostile", CASES.params())
def test_hostile_input(hostile, hostile_work):
    hostile.check()


# Every reader of the project, given a FIFO where it expects a file: refused, naming the path, without
# blocking (must-hold 3 of the generator/token-data audit). The cases run in one child process, each
# under an alarm, so that a reader that blocks fails its case instead of hanging the suite.
FIFO_READERS = {
    "codec checkpoint": ("x.ckpt", "movq.load(FIFO)"),
    "checkpoint file": ("x.pt", "from movq.hub.safe_load import load_state_file; load_state_file(FIFO)"),
    "pickled modules": ("x.pkl", "from movq.hub.safe_load import load_pickled_modules; load_pickled_modules(FIFO)"),
    "codec weights": ("model.safetensors", "import shutil, tempfile; d = Path(tempfile.mkdtemp()); "
                      "movq.load('movqgan-tiny', pretrained=False).save_pretrained(d); "
                      "shutil.copy(d / 'config.json', FIFO.parent); movq.load(FIFO.parent)"),
    "image": ("x.png", "from movq.image_files import open_rgb; open_rgb(FIFO)"),
    "LPIPS weights": ("lpips.pth", "from movq.metrics.lpips import load_lpips; load_lpips('alex', weights=FIFO)"),
    "FID Inception weights": ("inception.pth",
                              "from movq.metrics.inception import load_inception_file; load_inception_file(FIFO)"),
    "JSON config": ("config.json", "from movq.strict import read_json_object; read_json_object(FIFO)"),
    "diffusion.json": ("diffusion.json",
                       "from movq.diffusion import GaussianDiffusion; GaussianDiffusion.from_pretrained(FIFO.parent)"),
    "diffusion release": ("latent_diffusion.json",
                          "from movq.diffusion.pipeline import read_release_info; read_release_info(FIFO.parent)"),
    "UNet EMA weights": ("ema.safetensors", "(FIFO.parent / 'config.json').write_text('{}'); "
                         "from movq.diffusion.unet import UNet; UNet.from_pretrained(FIFO.parent)"),
    "--cond file": ("cond.safetensors", "from movq.diffusion.data import load_cond_file; load_cond_file(FIFO, 4)"),
    "token meta.json": ("meta.json", "from movq.tokenize.dataset import TokenDataset; TokenDataset(FIFO.parent)"),
    "tokenize manifest": ("m.jsonl", "from movq.tokenize.sources import discover_sources; discover_sources(FIFO)"),
    "tokenize tar": ("s.tar", "from movq.tokenize.sources import discover_sources; discover_sources(FIFO)"),
    "t2i tokenizer.json": ("tokenizer.json", "from movq.t2i.text import HFTokenizer; HFTokenizer(FIFO)"),
}


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs named pipes")
def test_every_file_reader_refuses_a_fifo_naming_it(tmp_path):
    import subprocess
    import sys

    cases = {}
    for n, (label, (name, call)) in enumerate(FIFO_READERS.items()):
        folder = tmp_path / f"case{n}"
        folder.mkdir()
        os.mkfifo(folder / name)
        cases[label] = (str(folder / name), call)
    script = (
        "import json, signal, sys\nfrom pathlib import Path\nimport movq\n"
        "def alarm(*_):\n    raise TimeoutError('blocked reading the FIFO')\n"
        "signal.signal(signal.SIGALRM, alarm)\nresults = {}\n"
        "for label, (path, call) in json.loads(sys.argv[1]).items():\n"
        "    signal.alarm(5)\n"
        "    try:\n        exec(call, {'FIFO': Path(path), 'Path': Path, 'movq': movq})\n        results[label] = 'no error'\n"
        "    except TimeoutError as e:\n        results[label] = 'TIMEOUT ' + str(e)\n"
        "    except Exception as e:\n        results[label] = type(e).__name__ + ': ' + str(e)\n"
        "    signal.alarm(0)\n"
        "print(json.dumps(results))\n"
    )
    proc = subprocess.run([sys.executable, "-c", script, json.dumps(cases)], capture_output=True, text=True,
                          timeout=300, env={**os.environ, "PYTHONPATH": str(SRC)})
    assert proc.returncode == 0, proc.stderr[-2000:]
    results = json.loads(proc.stdout.strip().splitlines()[-1])
    wrong = {label: message for label, message in results.items()
             if cases[label][0] not in message or "not a regular file" not in message}
    assert not wrong, wrong


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs named pipes")
def test_config_and_cond_files_that_are_fifos_are_refused_not_read(tmp_path):
    """A FIFO (or device) as a JSON config file or a --cond file would block the read forever: refused
    with the path named. Run in a child process so that an unfixed version fails by timeout."""
    config, cond = tmp_path / "config.json", tmp_path / "cond.safetensors"
    os.mkfifo(config)
    os.mkfifo(cond)
    script = (
        "import sys\n"
        "from movq.strict import ConfigError, read_json_object\n"
        "from movq.diffusion.data import load_cond_file\n"
        "try:\n    read_json_object(sys.argv[1])\nexcept ConfigError as e:\n    print('config:', e)\n"
        "try:\n    load_cond_file(sys.argv[2], 4)\nexcept ValueError as e:\n    print('cond:', e)\n"
    )
    proc = subprocess.run([sys.executable, "-c", script, str(config), str(cond)], capture_output=True, text=True,
                          timeout=60)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert f"config: {config} is not a regular file" in proc.stdout
    assert f"cond: {cond} is not a regular file" in proc.stdout and "--cond expects" in proc.stdout


# Every output is written under a temporary name and renamed into place (README "Nothing half-written"):
# all of src/movq writes through movq.atomic.atomic_write, except these files, whose own scheme is stated.
WRITES_IN_PLACE = {
    "atomic.py": "the one place: a temporary file beside the target, then os.replace",
    "train/checkpoint.py": "a checkpoint folder is filled under .tmp-step-* and renamed into place",
    "train/logs.py::CSVLog": "log.csv is an append-only log, cut back to the checkpoint's step on --resume",
    "hub/download.py": "a download goes to *.incomplete and is renamed into place",
}
MOVQ_SAVERS = ("cache.save", "self.save", "self.loop.save", "self.stage.save")
"""movq's own save methods (a bench cache, a training loop's checkpoint): they write through the above."""


def _unprotected_writes(file: Path) -> list[str]:
    """``LINE`` or ``NAME:LINE`` (NAME: the top-level class or function holding it) of each call in ``file``
    that writes a file outside a callback passed to ``atomic_write``."""
    tree = ast.parse(file.read_text())
    functions = {n.name: n for n in ast.walk(tree) if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))}
    protected: set[int] = set()
    for call in ast.walk(tree):
        if isinstance(call, ast.Call) and ast.unparse(call.func).split(".")[-1] == "atomic_write" and len(call.args) > 1:
            callback = call.args[1]
            callback = functions.get(callback.id, callback) if isinstance(callback, ast.Name) else callback
            protected.update(id(node) for node in ast.walk(callback))
            for inner in ast.walk(callback):  # a helper the callback calls writes to the temporary file too
                if isinstance(inner, ast.Call) and isinstance(inner.func, ast.Name) and inner.func.id in functions:
                    protected.update(id(node) for node in ast.walk(functions[inner.func.id]))
    in_memory = {target.id for node in ast.walk(tree) if isinstance(node, ast.Assign)
                 and isinstance(node.value, ast.Call) and ast.unparse(node.value.func) == "io.BytesIO"
                 for target in node.targets if isinstance(target, ast.Name)}
    lines = []
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call) or id(node) in protected:
            continue
        name = ast.unparse(node.func)
        if node.args and isinstance(node.args[0], ast.Name) and node.args[0].id in in_memory:
            continue  # written to an io.BytesIO, not to a file
        mode = node.args[1] if len(node.args) > 1 else next((k.value for k in node.keywords if k.arg == "mode"), None)
        if (
            (name == "open" and mode is not None and any(c in ast.unparse(mode) for c in "wax"))
            or name in ("torch.save", "save_file", "json.dump", "np.save")
            or (name.split(".")[-1] in ("write_text", "write_bytes", "save", "savefig") and "." in name
                and not name.startswith(("torch.", "json.")) and name not in MOVQ_SAVERS)
        ):
            owner = next((top.name for top in tree.body if isinstance(top, (ast.ClassDef, ast.FunctionDef))
                          and top.lineno <= node.lineno <= top.end_lineno), None)
            lines.append(f"{owner}:{node.lineno}" if owner else str(node.lineno))
    return lines


def test_every_output_is_written_through_movq_atomic():
    package = Path(SRC) / "movq"
    found = set()
    for file in sorted(package.rglob("*.py")):
        name = file.relative_to(package).as_posix()
        for where in _unprotected_writes(file):
            if name not in WRITES_IN_PLACE and f"{name}::{where.split(':')[0]}" not in WRITES_IN_PLACE:
                found.add(f"{name}::{where}")
    assert not found, f"files written in place (use movq.atomic.atomic_write): {sorted(found)}"
    assert _unprotected_writes(package / "train" / "checkpoint.py")  # the scan sees writes where there are some


def _hostile_image(kind: str, folder: Path) -> Path:
    """A 16 x 32 image file that a naive reader gets wrong: a 16-bit gray PNG (white), a JPEG stored
    landscape with EXIF orientation 6 (not rotated), a PNG of transparent red (red instead of white)."""
    if kind == "16-bit gray":
        Image.fromarray(np.full((16, 32), 32768, np.uint16)).save(folder / "g16.png")
        return folder / "g16.png"
    if kind == "EXIF rotated":
        array = np.zeros((16, 32, 3), np.uint8)
        array[:, 16:] = 255  # dark left half, bright right half as stored
        exif = Image.Exif()
        exif[0x0112] = 6  # shown rotated 90 degrees: dark top, bright bottom
        Image.fromarray(array).save(folder / "rot.jpg", exif=exif.tobytes(), quality=100)
        return folder / "rot.jpg"
    Image.new("RGBA", (32, 16), (255, 0, 0, 0)).save(folder / "clear.png")
    return folder / "clear.png"


@pytest.mark.parametrize("kind", ["16-bit gray", "EXIF rotated", "transparent"])
def test_bench_and_tokenize_read_images_as_movq_image_files_does(tmp_path, kind):
    """movq-bench and movq-tokenize decode an image file into the very pixels of movq.image_files (16-bit
    scaled, EXIF orientation applied, transparency on white); training: test_train_reliability, the
    examples: test_hostile_examples."""
    from movq.tokenize.decode import decode_item
    from movq.tokenize.sources import SourceItem

    path = _hostile_image(kind, tmp_path)
    expected, _ = movq_internal("load_preprocessed")(path, 16)
    ImageRecord, load_image = movq_internal("ImageRecord"), movq_internal("load_image")
    bench = load_image(ImageRecord(str(path), path.name, "all"), 0, 16).pixels
    tokenize = decode_item(SourceItem(path.name, path=str(path)), 0, 16).pixels
    assert torch.equal(bench, expected) and torch.equal(tokenize, expected)
    pixels = expected.float()
    if kind == "16-bit gray":
        assert abs(pixels.mean().item() - 128) < 2
    elif kind == "EXIF rotated":
        assert pixels[:, :6].mean() < 30 and pixels[:, 10:].mean() > 225  # the shown (portrait) image's middle
    else:
        assert bool((expected == 255).all())


def test_a_codec_folder_with_nan_weights_is_refused_naming_the_file(tmp_path):
    from safetensors.torch import load_file, save_file

    hostile_tiny().save_pretrained(tmp_path)
    state = load_file(tmp_path / "model.safetensors")
    state["decoder.conv_out.weight"][0] = float("inf")
    save_file(state, tmp_path / "model.safetensors")
    with pytest.raises(ValueError, match=r"model.safetensors.*NaN or inf.*decoder.conv_out.weight"):
        movq.load(tmp_path)


@pytest.mark.parametrize("opcodes", [
    b"\x80\x04\x95" + (2**63 - 1).to_bytes(8, "little"),  # FRAME of 2^63 - 1 bytes
    b"\x80\x04\x8e" + (2**62).to_bytes(8, "little"),  # BINBYTES8 of 2^62 bytes
    b"\x80\x04\x96" + (2**63 - 1).to_bytes(8, "little"),  # BYTEARRAY8
    b"\x80\x04\x8d" + (2**40).to_bytes(8, "little"),  # BINUNICODE8 of a terabyte
], ids=["FRAME", "BINBYTES8", "BYTEARRAY8", "BINUNICODE8"])
def test_a_pickle_length_field_claiming_exabytes_is_a_read_error_naming_the_file(tmp_path, opcodes):
    """About 2% of random 300-byte files are pickles whose length field claims more memory than exists:
    torch.load and the restricted unpickler raise a bare OverflowError or MemoryError, which used to reach
    the user without the file's name (found by `bench --lpips-weights garbage file`, whose bytes are random)."""
    from movq.hub.safe_load import CheckpointReadError, load_state_file

    path = tmp_path / "garbage.pth"
    path.write_bytes(opcodes + bytes(300 - len(opcodes)))
    with pytest.raises(CheckpointReadError, match=f"cannot read {path}"):
        load_state_file(path)
