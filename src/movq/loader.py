"""``movq.load``: one entry point for preset names, saved folders and published checkpoints."""

from __future__ import annotations

import os
from pathlib import Path

import torch

from movq.codec import CONFIG_NAME, Codec
from movq.config import PRESETS, get_preset

DEFAULT_MODEL = "movqgan-tiny"
"""The codec the examples use when none is named."""


def load(
    name_or_path: str | os.PathLike,
    *,
    pretrained: bool = True,
    device: torch.device | str | None = None,
    dtype: torch.dtype | None = None,
) -> Codec:
    """Return a codec in eval mode on ``device`` with ``dtype``.

    ``name_or_path`` is a folder written by ``Codec.save_pretrained`` or a preset name
    (``movq.config.PRESETS``). With ``pretrained=False`` a preset name gives a randomly
    initialised codec (deterministic under ``torch.manual_seed``).
    """
    path = Path(name_or_path)
    if path.is_dir() and (path / CONFIG_NAME).is_file():
        return Codec.from_pretrained(path, device=device, dtype=dtype)
    name = str(name_or_path)
    if not pretrained:
        return Codec(get_preset(name)).to(device=device, dtype=dtype).eval()
    raise ValueError(
        f"{name!r} is neither a movq codec folder (with {CONFIG_NAME}) nor a known pretrained model; "
        f"presets for pretrained=False: {sorted(PRESETS)}"
    )
