"""Settings of a ``movq-tokenize`` run and the checks that run before any compute."""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch

from movq.atomic import check_writable_dir
from movq.devices import resolve_device
from movq.dtypes import DTYPES, dtype_names

LATENT_DTYPES = dtype_names(torch.float16, torch.bfloat16)  # what --latents stores


class TokenizeError(ValueError):
    """A user-facing error (bad arguments, data, output folder); the CLI prints it as one line, exit code 2."""


def default_workers() -> int:
    """Decoding processes by default: one per CPU core beyond the main process, at most 8."""
    return max(1, min(8, (os.cpu_count() or 2) - 1))


@dataclass
class TokenizeConfig:
    """Everything a run needs (the CLI fills it from its arguments).

    ``dtype`` is the encoder's compute dtype; ``latent_dtype`` the stored dtype of ``latents`` runs.
    ``device=None`` (or ``"auto"``) picks CUDA when available. ``threads`` sets ``torch.set_num_threads``.
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
    """Raise :class:`TokenizeError` for numbers out of range, an unknown or absent device
    (:func:`movq.devices.resolve_device`), an unwritable ``out`` (created if missing)."""
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
    try:
        resolve_device(cfg.device)
        check_writable_dir(cfg.out)
    except ValueError as err:
        raise TokenizeError(str(err)) from None
