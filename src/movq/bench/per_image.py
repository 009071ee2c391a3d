"""The bench's per-image path: reconstruct a batch, then every per-image metric of
:data:`~movq.bench.metric_table.METRICS` (PSNR, SSIM, MS-SSIM, L1, LPIPS) on it.

``movq-bench`` and the training evaluation (:mod:`movq.bench.evaluate`) both call these, so their
numbers for the same images and codec are the same.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from torch import Tensor

from movq.bench.metric_table import METRICS
from movq.metrics import image as image_metrics


def reconstruct(codec: Any, real: Tensor) -> tuple[Tensor, Tensor]:
    """``real`` ``[B, 3, H, W]`` in ``[0, 1]`` (8-bit images / 255) -> ``(tokens, recon)``: the
    codec's tokens (a multi-scale codec's maps concatenated coarse to fine, ``[B, L]``) and its reconstruction ``[B, 3, H, W]`` in ``[0, 1]``, rounded to 8 bits as a
    saved PNG. ``codec`` is anything with ``encode`` / ``decode`` (a :class:`~movq.Codec`, a dVAE)."""
    tokens = codec.encode(real * 2 - 1)
    recon = image_metrics.to_unit_range(codec.decode(tokens))
    return (codec.flat_tokens(tokens) if hasattr(codec, "flat_tokens") else tokens), recon


def per_image_metrics(real: Tensor, recon: Tensor, metrics: Iterable[str], lpips: Any = None) -> dict[str, Tensor]:
    """``{metric: [B] float64}`` for the per-image ``metrics`` among the given names (others are
    left out), images ``[B, 3, H, W]`` in ``[0, 1]``. ``lpips`` computes the LPIPS metrics: a
    :class:`~movq.metrics.lpips.LPIPSMetric` for ``"lpips"``, or ``{metric: LPIPSMetric}`` (``lpips``,
    ``lpips_alex``, ``lpips_vgg``); asking for one without its network is a ``ValueError``."""
    networks = lpips if isinstance(lpips, Mapping) else {"lpips": lpips}
    out: dict[str, Tensor] = {}
    for metric in metrics:
        spec = METRICS[metric]
        if spec.kind != "per_image":
            continue
        if spec.fn is None and networks.get(metric) is None:
            raise ValueError(f"{metric} needs a loaded network (lpips=LPIPSMetric(...))")
        fn = getattr(image_metrics, spec.fn) if spec.fn is not None else networks[metric]
        out[metric] = fn(real, recon)
    return out
