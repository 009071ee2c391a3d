"""Settings of a ``movq-tokenize`` run and the checks that run before any compute."""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Annotated, Literal

import torch

from movq.atomic import check_writable_dir
from movq.devices import resolve_device
from movq.dtypes import DTypeName, dtype_names
from movq.strict import NonNegativeInt, PositiveInt, Range, StrictConfig

LATENT_DTYPES = dtype_names(torch.float16, torch.bfloat16)  # what --latents stores
LatentDTypeName = Literal[tuple(LATENT_DTYPES)]  # type: ignore[valid-type]
"""A name of :data:`LATENT_DTYPES` (a config field's hint)."""
AugmentName = Literal["none", "flip", "ten-crop"]
"""``--augment`` modes (:data:`movq.image_files.AUGMENTATIONS`)."""
DEFAULT_CROP_RANGE = 1.1


class TokenizeError(ValueError):
    """A user-facing error (bad arguments, data, output folder); the CLI prints it as one line, exit code 2."""


def default_workers() -> int:
    """Decoding processes by default: one per CPU core beyond the main process, at most 8."""
    return max(1, min(8, (os.cpu_count() or 2) - 1))


@dataclass
class TokenizeConfig(StrictConfig):
    """Everything a run needs (the CLI fills it from its arguments); every field is checked against
    its hint on construction (:class:`movq.strict.ConfigError` naming it).

    ``dtype`` is the encoder's compute dtype; ``latent_dtype`` the stored dtype of ``latents`` runs.
    ``device=None`` (or ``"auto"``) picks CUDA when available. ``threads`` sets ``torch.set_num_threads`` (``None``: 1 on the CPU, see
    :data:`movq.tokenize.runner.CPU_THREADS`; the device's default elsewhere).
    ``augment`` stores several views of each image (``[n_aug, *grid]`` per item, see
    :class:`movq.image_files.Augment`); ``crop_range`` is the ``ten-crop`` centre crop's size over ``resolution``.
    ``image_column`` / ``caption_column`` / ``label_column`` name the columns of a manifest, parquet file or
    Hugging Face dataset (``None``: the defaults of :mod:`movq.tokenize.sources`); ``split`` is the
    split of ``hf://datasets/...`` data.
    """

    model: str
    data: str
    out: str
    resolution: PositiveInt = 256
    latents: bool = False
    latent_dtype: LatentDTypeName = "float16"
    batch_size: PositiveInt = 32
    shard_size: PositiveInt = 4096
    num_workers: NonNegativeInt | None = None
    dtype: DTypeName = "float32"
    device: str | None = None
    threads: PositiveInt | None = None
    progress: bool = True
    augment: AugmentName = "none"
    crop_range: Annotated[float, Range(1, 4)] = DEFAULT_CROP_RANGE
    image_column: str | None = None
    caption_column: str | None = None
    label_column: str | None = None
    split: str | None = None

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.crop_range != DEFAULT_CROP_RANGE and self.augment != "ten-crop":
            raise TokenizeError(f"--crop-range {self.crop_range:g} needs --augment ten-crop (it sizes the ten-crop's "
                                "centre crop)")

    @property
    def workers(self) -> int:
        return default_workers() if self.num_workers is None else self.num_workers


def check_settings(cfg: TokenizeConfig) -> None:
    """Raise :class:`TokenizeError` for an unknown or absent device (:func:`movq.devices.resolve_device`)
    or an unwritable ``out`` (created if missing); the fields' types and bounds are checked by
    :class:`TokenizeConfig` itself."""
    try:
        resolve_device(cfg.device)
        check_writable_dir(cfg.out)
    except ValueError as err:
        raise TokenizeError(str(err)) from None
