"""Named UNet sizes for latent diffusion, independent of the latent size.

A preset gives the widths and depth; the latent side, channels and conditioning come from the data.
Attention is placed by level (``attention_levels``: level ``i`` works at ``side / 2**i``), so one
preset serves 8x8 latents (64 px, f=8) and 32x32 latents (256 px) alike.

| preset | channels x mult | res blocks | attention levels | params (4 latent ch, 8 classes) |
|---|---|---|---|---|
| ``unet-tiny`` | 32 x (1, 2) | 1 | 1 | 0.8M |
| ``unet-small`` | 64 x (1, 2, 2) | 2 | 1, 2 | 7.3M |
| ``unet-base`` | 128 x (1, 2, 3, 4) | 2 | 1, 2 | 88M |
"""

from __future__ import annotations

import difflib
from typing import Any

from movq.diffusion.unet import UNetConfig

UNET_PRESETS: dict[str, dict[str, Any]] = {
    "unet-tiny": {"channels": 32, "channel_mult": (1, 2), "num_res_blocks": 1, "attention_levels": (1,),
                  "head_channels": 32},
    "unet-small": {"channels": 64, "channel_mult": (1, 2, 2), "num_res_blocks": 2, "attention_levels": (1, 2),
                   "head_channels": 32},
    "unet-base": {"channels": 128, "channel_mult": (1, 2, 3, 4), "num_res_blocks": 2, "attention_levels": (1, 2),
                  "head_channels": 64},
}
DERIVED = ("in_channels", "sample_size", "num_classes", "cond_dim", "learn_sigma")
"""UNet fields that come from the data and the diffusion settings, never from a preset or overrides."""


def check_overrides(overrides: dict[str, Any]) -> None:
    """Refuse overrides of the :data:`DERIVED` fields, naming them."""
    clash = sorted(set(overrides) & set(DERIVED))
    if clash:
        raise ValueError(
            f"the UNet fields {clash} come from the data and the diffusion settings (latent shape, labels, "
            "--cond, --loss), not from the model overrides"
        )


def unet_config(preset: str, overrides: dict[str, Any] | None = None, **derived: Any) -> UNetConfig:
    """The :class:`UNetConfig` of ``preset`` with ``overrides`` (any UNetConfig field, or
    ``attention_levels``) and the ``derived`` fields (:data:`DERIVED`: latent channels and side,
    labels, conditioning width, learned variance). Errors name the preset and the field."""
    if preset not in UNET_PRESETS:
        close = difflib.get_close_matches(preset, UNET_PRESETS, n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise ValueError(f"unknown UNet preset {preset!r}{hint}; available: {', '.join(UNET_PRESETS)}")
    overrides = dict(overrides or {})
    check_overrides(overrides)
    values = {**UNET_PRESETS[preset], **overrides, **derived}
    levels = values.pop("attention_levels", ())
    if "attention_resolutions" not in overrides:
        depth = len(values["channel_mult"])
        sample_size = values["sample_size"]
        values["attention_resolutions"] = tuple(sample_size // 2**level for level in levels if level < depth)
    try:
        return UNetConfig.from_dict(values)
    except (TypeError, ValueError) as error:
        raise ValueError(f"UNet preset {preset!r} with {overrides or 'no overrides'}: {error}") from None
