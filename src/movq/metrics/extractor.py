"""The feature-extractor contract of FID / IS: an ``nn.Module`` from images ``[B, 3, H, W]`` in ``[0, 1]``
to a :class:`FeatureOutput`. The FID Inception (:mod:`movq.metrics.inception`) and the test extractor
(:mod:`movq.metrics.features`) implement it; :func:`movq.metrics.features.build_feature_extractor` picks one.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor, nn


@dataclass
class FeatureOutput:
    """``features`` ``[B, D]`` float32 (FID space), ``logits`` ``[B, C]`` or ``None`` (no classifier head: no IS)
    and ``spatial`` ``[B, S]`` or ``None``: the spatial features of sFID (an early feature map, flattened)."""

    features: Tensor
    logits: Tensor | None
    spatial: Tensor | None = None


class FeatureExtractor(nn.Module):
    """Base class: images ``[B, 3, H, W]`` float in ``[0, 1]`` -> :class:`FeatureOutput`.

    Attributes: ``feature_dim`` (D), ``num_classes`` (C, or ``None`` without logits), ``spatial_dim``
    (S, 0 when the extractor gives no spatial features: no sFID),
    ``description`` (what network and weights - printed with the results), ``is_standard``
    (``True`` only for the reference FID Inception weights; numbers from anything else must be
    labelled as such).
    """

    feature_dim: int = 0
    num_classes: int | None = None
    spatial_dim: int = 0
    description: str = "custom feature extractor"
    is_standard: bool = False

    def forward(self, images: Tensor) -> FeatureOutput:  # pragma: no cover - abstract
        raise NotImplementedError
