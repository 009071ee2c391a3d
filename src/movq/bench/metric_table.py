"""The bench's metrics, each described once: everything else (statistics, dispatch, validation, CLI
help and choices, report headers, digits and definitions) derives from :data:`METRICS`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal


@dataclass(frozen=True)
class MetricSpec:
    """One metric of ``movq-bench``.

    ``kind`` is ``"per_image"`` (a value per image, averaged: computed by ``fn``, a function name of
    :mod:`movq.metrics.image` taking ``real, recon`` ``[B, 3, H, W]`` in ``[0, 1]`` and returning
    ``[B]``; ``None`` when a loaded network computes it, as for LPIPS) or ``"distribution"`` (from
    feature statistics of whole sets: FID, IS). ``header`` (with the better direction), ``digits``
    and ``definition`` are what the report prints. ``lpips_net`` fixes the LPIPS network of an LPIPS
    metric (``None``: not one, or ``lpips``, which follows ``--lpips-net``).
    """

    name: str
    kind: Literal["per_image", "distribution"]
    header: str
    digits: int
    definition: str
    fn: str | None = None
    lpips_net: Literal["alex", "vgg"] | None = None


METRICS: dict[str, MetricSpec] = {
    spec.name: spec
    for spec in (
        MetricSpec(
            "fid", "distribution", "FID ↓", 3,
            "Frechet distance between feature Gaussians of the originals and of their reconstructions "
            "(float64, scipy sqrtm); biased upward for small sets (needs thousands of images to compare with papers)",
        ),
        MetricSpec(
            "is", "distribution", "IS ↑", 3,
            "Inception Score of the reconstructions, one split, 1008-way softmax of the logits without the classifier's "
            "bias, as published IS (is_real: of the originals)",
        ),
        MetricSpec("ssim", "per_image", "SSIM ↑", 4,
                   "mean over images of SSIM (pytorch-msssim: Gaussian window 11, sigma 1.5, data range 1)", "ssim"),
        MetricSpec("ssim_skimage", "per_image", "SSIM (skimage) ↑", 4,
                   "mean over images of SSIM as scikit-image's structural_similarity(data_range=1, channel_axis=-1): "
                   "7x7 uniform window, sample covariance", "ssim_skimage"),
        MetricSpec("ms_ssim", "per_image", "MS-SSIM ↑", 4, "mean over images of MS-SSIM (pytorch-msssim, 5 scales)",
                   "ms_ssim"),
        MetricSpec("psnr", "per_image", "PSNR ↑", 2,
                   "mean over images of 10*log10(1/MSE) on [0,1] RGB (capped at 100 dB)", "psnr"),
        MetricSpec("l1", "per_image", "L1 ↓", 4, "mean absolute error on [0,1] RGB", "l1"),
        MetricSpec("lpips", "per_image", "LPIPS ↓", 4, "mean over images of LPIPS distance (network: --lpips-net)"),
        MetricSpec("lpips_alex", "per_image", "LPIPS-Alex ↓", 4, "mean over images of LPIPS distance, AlexNet",
                   lpips_net="alex"),
        MetricSpec("lpips_vgg", "per_image", "LPIPS-VGG ↓", 4, "mean over images of LPIPS distance, VGG16", lpips_net="vgg"),
    )
}
PER_IMAGE = tuple(name for name, spec in METRICS.items() if spec.kind == "per_image")
DEFAULT_METRICS = ("fid", "ssim", "psnr", "l1")
CHOICES = ",".join(METRICS)
"""The accepted ``--metrics`` names, comma-separated (for help and error messages)."""


def normalise_metrics(text: str) -> list[str]:
    """``"FID, ssim,ms-ssim"`` -> ``["fid", "ssim", "ms_ssim"]`` (lower case, de-duplicated, order kept)."""
    return list(dict.fromkeys(m.strip().lower().replace("-", "_") for m in text.split(",") if m.strip()))


def check_metrics(names: list[str]) -> None:
    """``ValueError`` naming the unknown metrics (or an empty list) and the accepted names."""
    unknown = [m for m in names if m not in METRICS]
    if unknown or not names:
        raise ValueError(f"unknown metrics {unknown}; choose from {CHOICES}")
