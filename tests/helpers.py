"""Helpers shared by several test files (the fixtures built on them are in ``conftest.py``).

Test files import these (``from helpers import tiny_codec``), never private names of other test files.
"""

from __future__ import annotations

import dataclasses
import os
import sys
import types
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image

from movq import Codec, CodecConfig, get_preset
from movq.config import VQConfig
from movq.train.config import CodecTrainConfig

SRC = str(Path(__file__).resolve().parents[1] / "src")
"""This checkout's ``src`` folder (what subprocesses must import)."""

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


def benchmark_module(name: str) -> types.ModuleType:
    """The script ``benchmarks/<name>.py`` imported as a module (benchmarks are measurements, not part of
    the package), cached in ``sys.modules`` under its name."""
    if name not in sys.modules:
        import importlib.util

        spec = importlib.util.spec_from_file_location(name, BENCHMARKS / f"{name}.py")
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return sys.modules[name]

# ------------------------------------------------------------------ codecs

SMALL_2X = CodecConfig(ch=32, ch_mult=(1, 2), num_res_blocks=1, attn_resolutions=(), resolution=8,
                       quantizer=VQConfig(codebook_size=64))
"""A 2x-downsampling codec small enough for CPU tests (``tiny_codec(config=SMALL_2X)``)."""


def tiny_codec(seed: int = 0, config: CodecConfig | None = None, **fields: Any) -> Codec:
    """An eval-mode :class:`Codec` with random weights drawn after ``torch.manual_seed(seed)``:
    ``config`` (default: the ``movqgan-tiny`` preset) with ``fields`` replaced (``quantizer=...``)."""
    torch.manual_seed(seed)
    config = dataclasses.replace(config or get_preset("movqgan-tiny"), **fields)
    return Codec(CodecConfig.from_dict(config.to_dict())).eval()


# ------------------------------------------------------------------ movq-bench

BENCH_IMAGES = Path(__file__).resolve().parents[1].parent / "shared" / "images" / "val"
BENCH_PHOTOS = ["065_tuxpaint-dat_mossy_bark.jpg", "020_matplotlib_grace_hopper.jpg", "060_tuxpaint-dat_burnt_bark.jpg"]
BENCH_FAST = ["--resolution", "64", "--batch-size", "2", "--feature-extractor", "random", "--no-progress", "--threads", "1"]
"""movq-bench flags for quick CPU runs."""


def bench_photos() -> list[Path]:
    """Three real photos from the shared image folder (the test is skipped when it is absent)."""
    paths = [BENCH_IMAGES / name for name in BENCH_PHOTOS]
    if not all(p.is_file() for p in paths):
        pytest.skip(f"real photos not found under {BENCH_IMAGES} (the shared image folder is absent)")
    return paths


# ------------------------------------------------------------------ movq-tokenize

TOKENIZE_MODEL = "movqgan-tiny-photos"
TOKENIZE_RES = 32
TOKENIZE_FAST = ["--resolution", str(TOKENIZE_RES), "--batch-size", "3", "--shard-size", "2", "--num-workers", "0",
                 "--no-progress", "--threads", "1"]
"""movq-tokenize flags for quick CPU runs."""


def smooth_image(seed: int, size: tuple[int, int]) -> Image.Image:
    """A ``size`` (width, height) RGB image of smooth colour waves plus noise, different per ``seed``."""
    rng = np.random.default_rng(seed)
    w, h = size
    yy, xx = np.mgrid[0:h, 0:w]
    base = np.stack([np.sin(xx / (5 + seed) + c) * np.cos(yy / (7 + c)) for c in range(3)], -1)
    pixels = (base * 100 + 128 + rng.normal(0, 20, (h, w, 3))).clip(0, 255).astype(np.uint8)
    return Image.fromarray(pixels)


def token_files(out: Path) -> dict[str, bytes]:
    """``{relative path: bytes}`` of a movq-tokenize output folder's shards, index and summary (not meta.json)."""
    names = sorted(p for p in out.rglob("*") if p.is_file() and p.suffix in (".safetensors", ".json", ".jsonl"))
    return {p.relative_to(out).as_posix(): p.read_bytes() for p in names if p.name != "meta.json"}


# ------------------------------------------------------------------ movq-train

TRAIN_CODEC = {"ch": 32, "ch_mult": [1, 2], "attn_resolutions": [], "resolution": 16}
"""``--codec`` overrides of a codec small enough to train on CPU in seconds."""


def make_images(root: Path, n: int = 6) -> Path:
    """Smooth random colour images (sizes vary) in a nested folder."""
    rng = np.random.default_rng(0)
    (root / "sub").mkdir(parents=True, exist_ok=True)
    for i in range(n):
        small = rng.integers(0, 255, (4, 5, 3), dtype=np.uint8)
        img = Image.fromarray(small).resize((40 + 3 * i, 32), Image.BICUBIC)
        img.save(root / ("sub" if i % 2 else "") / f"img{i}.png")
    return root


def tiny_train_config(data: Path, out: Path, **kw: Any) -> CodecTrainConfig:
    """A :class:`CodecTrainConfig` of a few CPU steps of :data:`TRAIN_CODEC` at 16 px; ``kw`` override fields."""
    base = dict(
        data=str(data), out=str(out), codec=TRAIN_CODEC, resolution=16, batch_size=2, max_steps=4,
        perceptual_net="none", num_workers=0, warmup_steps=1, lr=1e-3, log_every=1, save_every=2,
        image_every=2, progress=False, disc_start=2, amp="none", disc_ndf=8, disc_layers=2,
    )
    base.update(kw)
    return CodecTrainConfig(**base)


# ------------------------------------------------------------------ hostile pickles


class RunsCode:
    """A pickle payload that would create ``marker`` when unpickled."""

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def save_as_foreign_module(module: torch.nn.Module, module_name: str, class_name: str, path, legacy: bool = False) -> None:
    """``torch.save`` a whole module whose class lives in a package that is NOT importable at load time
    (like OpenAI's ``dall_e``): the loader must rebuild it without importing anything. ``legacy``:
    PyTorch's pre-1.6 (non-zip) container, the one OpenAI's published files use."""
    fake = types.ModuleType(module_name)
    cls = type(class_name, (type(module),), {"__module__": module_name})
    setattr(fake, class_name, cls)
    package = module_name.split(".")[0]
    sys.modules[package] = types.ModuleType(package)
    sys.modules[module_name] = fake
    try:
        module.__class__ = cls
        with warnings.catch_warnings():  # the legacy saver warns that it cannot find the class's source
            warnings.simplefilter("ignore")
            torch.save(module, path, _use_new_zipfile_serialization=not legacy)
    finally:
        del sys.modules[module_name], sys.modules[package]
