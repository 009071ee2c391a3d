"""Settings of a ``movq-tokenize`` run and the checks that run before any compute."""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

import torch

DTYPES = {"float32": torch.float32, "fp32": torch.float32, "bfloat16": torch.bfloat16, "bf16": torch.bfloat16,
          "float16": torch.float16, "fp16": torch.float16}
LATENT_DTYPES = {"float16": torch.float16, "fp16": torch.float16, "bfloat16": torch.bfloat16, "bf16": torch.bfloat16}


class TokenizeError(ValueError):
    """A user-facing error (bad arguments, data, output folder); the CLI prints it as one line, exit code 2."""


def default_workers() -> int:
    """Decoding processes by default: one per CPU core beyond the main process, at most 8."""
    return max(1, min(8, (os.cpu_count() or 2) - 1))


@dataclass
class TokenizeConfig:
    """Everything a run needs (the CLI fills it from its arguments).

    ``dtype`` is the encoder's compute dtype; ``latent_dtype`` the stored dtype of ``latents`` runs.
    ``device=None`` picks CUDA when available. ``threads`` sets ``torch.set_num_threads``.
    """

    model: str
    data: str
    out: str
    resolution: int = 256
    latents: bool = False
    latent_dtype: str = "float16"
    batch_size: int = 32
    shard_size: int = 4096
    num_workers: int | None = None
    dtype: str = "float32"
    device: str | None = None
    threads: int | None = None
    progress: bool = True

    @property
    def workers(self) -> int:
        return default_workers() if self.num_workers is None else self.num_workers


def check_settings(cfg: TokenizeConfig) -> None:
    """Raise :class:`TokenizeError` for numbers out of range, an unknown or absent device, an unwritable ``out``."""
    for name, value, low in (("--batch-size", cfg.batch_size, 1), ("--shard-size", cfg.shard_size, 1),
                             ("--resolution", cfg.resolution, 1), ("--num-workers", cfg.workers, 0)):
        if value < low:
            raise TokenizeError(f"{name} must be >= {low}, got {value}")
    if cfg.threads is not None and cfg.threads < 1:
        raise TokenizeError(f"--threads must be >= 1, got {cfg.threads}")
    if cfg.dtype not in DTYPES:
        raise TokenizeError(f"unknown --dtype {cfg.dtype!r}; choose from {sorted(DTYPES)}")
    if cfg.latent_dtype not in LATENT_DTYPES:
        raise TokenizeError(f"unknown --latent-dtype {cfg.latent_dtype!r}; choose from {sorted(LATENT_DTYPES)}")
    check_device(cfg.device)
    check_writable(cfg.out)


def check_device(name: str | None) -> None:
    """``None``, ``cpu``, or an available ``cuda[:i]`` / ``mps``; anything else is a :class:`TokenizeError`."""
    if name is None:
        return
    try:
        device = torch.device(name)
    except (RuntimeError, ValueError):
        raise TokenizeError(f"--device {name!r} is not a device; use cpu, cuda, cuda:1 or mps") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise TokenizeError(f"--device {name}: no CUDA GPU is available (torch.cuda.is_available() is False)")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise TokenizeError(f"--device {name}: only {torch.cuda.device_count()} CUDA device(s) are visible")
    elif device.type == "mps":
        if not torch.backends.mps.is_available():
            raise TokenizeError(f"--device {name}: MPS is not available on this machine")
    elif device.type != "cpu":
        raise TokenizeError(f"--device {name}: only cpu, cuda and mps are supported")


def check_writable(out: str) -> None:
    """Create the folder ``out`` if needed and make sure a file can be written in it."""
    path = Path(out)
    if path.exists() and not path.is_dir():
        raise TokenizeError(f"--out {out} is a file, not a folder")
    try:
        path.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=path):
            pass
    except OSError as err:
        raise TokenizeError(f"--out {out} is not writable ({err.strerror or err})") from None
