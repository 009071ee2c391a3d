"""Image metrics: PSNR, SSIM, MS-SSIM, L1, LPIPS, FID, sFID, IS and precision / recall.

Everything here is importable without the ``movq-bench`` CLI, and heavy dependencies (scipy,
pytorch-msssim, the Inception network, LPIPS) are imported only when first used:

>>> from movq.metrics import psnr, frechet_distance, MomentAccumulator
>>> psnr(x, y)                       # x, y: float [B, 3, H, W] in [0, 1] -> [B]

Per-image metrics take images in ``[0, 1]``. FID / IS work on features from a pluggable
:class:`~movq.metrics.features.FeatureExtractor` (the standard FID Inception-v3 by default) and
are accumulated with streaming, mergeable statistics (:mod:`movq.metrics.accumulators`).
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS: dict[str, str] = {
    # per-image metrics
    "psnr": "movq.metrics.image",
    "ssim": "movq.metrics.image",
    "ssim_skimage": "movq.metrics.image",
    "ms_ssim": "movq.metrics.image",
    "l1": "movq.metrics.image",
    "to_unit_range": "movq.metrics.image",
    "LPIPSMetric": "movq.metrics.lpips",
    # distribution metrics
    "frechet_distance": "movq.metrics.frechet",
    "fid_from_moments": "movq.metrics.frechet",
    "inception_score": "movq.metrics.inception_score",
    "inception_score_from_posteriors": "movq.metrics.inception_score",
    "precision_recall": "movq.metrics.precision_recall",
    "manifold_radii": "movq.metrics.precision_recall",
    # streaming statistics
    "MomentAccumulator": "movq.metrics.accumulators",
    "MeanAccumulator": "movq.metrics.accumulators",
    "PosteriorAccumulator": "movq.metrics.accumulators",
    # feature extractors
    "FeatureExtractor": "movq.metrics.extractor",
    "FeatureOutput": "movq.metrics.extractor",
    "RandomFeatureExtractor": "movq.metrics.features",
    "build_feature_extractor": "movq.metrics.features",
    "FIDInceptionV3": "movq.metrics.inception",
    "load_fid_inception": "movq.metrics.inception",
    "clean_resize": "movq.metrics.inception",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'movq.metrics' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
