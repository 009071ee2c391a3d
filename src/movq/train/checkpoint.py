"""Checkpoints: ``OUT/checkpoints/step-NNNNNNNN/`` written atomically, ``OUT/last`` pointing at the newest.

A checkpoint folder holds ``state.pt`` (model, EMA, discriminator, optimizers, scheduler, step, data
position, RNG states of every rank) and ``train_config.json``. It is first written as a hidden
temporary folder and renamed into place only when complete; ``OUT/last`` is a symlink swapped by
``os.replace``. A write killed at any moment therefore leaves the previous checkpoint intact.
The EMA release weights go to ``OUT/config.json`` + ``OUT/model.safetensors`` so ``movq.load(OUT)`` works.
"""

from __future__ import annotations

import json
import os
import random
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch

STATE_NAME = "state.pt"
CONFIG_NAME = "train_config.json"


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def save_checkpoint(out: str | os.PathLike, step: int, state: dict[str, Any], config: dict[str, Any], keep_last: int) -> Path:
    """Write ``state`` as ``OUT/checkpoints/step-{step}``, point ``OUT/last`` at it, prune to ``keep_last``."""
    out = Path(out)
    root = out / "checkpoints"
    root.mkdir(parents=True, exist_ok=True)
    final = root / f"step-{step:08d}"
    tmp = root / f".tmp-step-{step:08d}-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    try:
        with open(tmp / STATE_NAME, "wb") as f:
            torch.save(state, f)
            f.flush()
            os.fsync(f.fileno())
        (tmp / CONFIG_NAME).write_text(json.dumps(config, indent=2) + "\n")
        if final.exists():
            shutil.rmtree(final)
        os.rename(tmp, final)
        _fsync_dir(root)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    link_tmp = out / f".last.{os.getpid()}.tmp"
    link_tmp.unlink(missing_ok=True)
    try:
        os.symlink(Path("checkpoints") / final.name, link_tmp, target_is_directory=True)
        os.replace(link_tmp, out / "last")
    except OSError:  # no symlinks (some Windows setups): resume falls back to the newest folder
        link_tmp.unlink(missing_ok=True)
    _prune(root, keep_last, keep=final)
    return final


def _prune(root: Path, keep_last: int, keep: Path) -> None:
    steps = sorted(p for p in root.glob("step-*") if p.is_dir())
    for old in steps[:-keep_last]:
        if old != keep:
            shutil.rmtree(old, ignore_errors=True)
    for stale in root.glob(".tmp-step-*"):  # leftovers of killed writes
        shutil.rmtree(stale, ignore_errors=True)


def latest_checkpoint(out: str | os.PathLike) -> Path | None:
    """The folder ``OUT/last`` points to, else the newest complete ``step-*`` folder, else None."""
    out = Path(out)
    last = out / "last"
    if (last / STATE_NAME).is_file():
        return last.resolve()
    steps = sorted(p for p in (out / "checkpoints").glob("step-*") if (p / STATE_NAME).is_file())
    return steps[-1] if steps else None


def load_checkpoint(path: str | os.PathLike) -> dict[str, Any]:
    """The ``state`` dict saved by :func:`save_checkpoint` (on CPU)."""
    return torch.load(Path(path) / STATE_NAME, map_location="cpu", weights_only=False)


def rng_state() -> dict[str, Any]:
    """Python, NumPy, torch CPU (and CUDA) generator states of this process."""
    state: dict[str, Any] = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
