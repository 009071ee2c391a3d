"""Pluggable feature extractors for FID / IS.

A feature extractor is an ``nn.Module`` that maps images ``[B, 3, H, W]`` in ``[0, 1]`` to a
:class:`FeatureOutput`: pooled features ``[B, D]`` (for FID) and optionally class logits
``[B, C]`` (for IS). Any module with that contract and the attributes below can be passed to the
bench (``--feature-extractor package.module:factory``). The contract itself (:class:`FeatureExtractor`,
:class:`FeatureOutput`) is in :mod:`movq.metrics.extractor`.
"""

from __future__ import annotations

import importlib
import os

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from movq.metrics.extractor import FeatureExtractor, FeatureOutput


class RandomFeatureExtractor(FeatureExtractor):
    """A small randomly initialised CNN (deterministic for a ``seed``), for tests and smoke runs.

    In ``[B, 3, H, W]`` in ``[0, 1]`` (resized to 64x64), out features ``[B, feature_dim]``, logits
    ``[B, num_classes]`` and spatial features ``[B, 128]`` (the first 2 channels of the last 8x8 map,
    flattened ``[H, W, C]`` as the Inception's). Its FID / IS / sFID values are meaningless as
    image-quality numbers.
    """

    spatial_dim = 2 * 8 * 8

    def __init__(self, feature_dim: int = 32, num_classes: int = 10, seed: int = 0) -> None:
        super().__init__()
        self.feature_dim, self.num_classes = feature_dim, num_classes
        self.description = f"random CNN (seed {seed}, {feature_dim}-d; test only, not a quality measure)"
        self.is_standard = False
        self.convs = nn.ModuleList(
            [nn.Conv2d(3, 16, 3, stride=2, padding=1), nn.Conv2d(16, 32, 3, stride=2, padding=1),
             nn.Conv2d(32, feature_dim, 3, stride=2, padding=1)]
        )
        self.fc = nn.Linear(feature_dim, num_classes)
        generator = torch.Generator().manual_seed(seed)
        with torch.no_grad():
            for p in self.parameters():
                p.copy_(torch.randn(p.shape, generator=generator) * (1.0 / max(1, p[0].numel()) ** 0.5))
        self.requires_grad_(False)
        self.eval()

    def forward(self, images: Tensor) -> FeatureOutput:
        x = F.interpolate(images.float() * 2 - 1, size=(64, 64), mode="bilinear", align_corners=False)
        for conv in self.convs:
            x = torch.tanh(conv(x))
        features = x.mean((2, 3))
        return FeatureOutput(features, self.fc(features), x[:, :2].permute(0, 2, 3, 1).flatten(1))


class CleanResized(FeatureExtractor):
    """Another extractor fed clean-fid's resize (:func:`movq.metrics.inception.clean_resize`, 299x299,
    back to ``[0, 1]``): ``--fid-mode clean`` for extractors other than the FID Inception (which
    applies clean-fid's own scaling itself). Same ``feature_dim`` / ``num_classes`` / ``spatial_dim``; never standard."""

    def __init__(self, inner: nn.Module) -> None:
        super().__init__()
        self.inner = inner
        self.feature_dim, self.num_classes = inner.feature_dim, inner.num_classes
        self.spatial_dim = getattr(inner, "spatial_dim", 0)
        self.description = f"{inner.description}, fed clean-fid's PIL-bicubic resize to 299"
        self.is_standard = False

    def forward(self, images: Tensor) -> FeatureOutput:
        from movq.metrics.inception import clean_resize

        return self.inner(clean_resize(images) / 255.0)


def build_feature_extractor(
    spec: str = "inception",
    weights: str | os.PathLike | None = None,
    device: torch.device | str | None = None,
    download: bool = True,
    fid_mode: str = "pytorch-fid",
) -> FeatureExtractor:
    """Make the feature extractor named by ``spec``, in eval mode on ``device``.

    ``"inception"``: the FID Inception-v3 (:func:`movq.metrics.inception.load_fid_inception`,
    ``weights`` a local file); ``"random"`` / ``"random:SEED"``: :class:`RandomFeatureExtractor`;
    ``"package.module:factory"``: ``factory()`` must return a :class:`FeatureExtractor`-like module.
    ``fid_mode`` (:data:`movq.metrics.inception.FID_MODES`): ``"pytorch-fid"`` (each extractor's own
    input handling) or ``"clean"`` (clean-fid's resize: set on the Inception, :class:`CleanResized`
    around any other extractor).
    """
    if fid_mode not in ("pytorch-fid", "clean"):
        raise ValueError(f"unknown FID mode {fid_mode!r}: use 'pytorch-fid' or 'clean'")
    if spec in ("inception", "inception-fid", "fid"):
        from movq.metrics.inception import load_fid_inception

        model: nn.Module = load_fid_inception(weights, download=download)
    elif spec == "random" or spec.startswith("random:"):
        model = RandomFeatureExtractor(seed=int(spec.split(":", 1)[1]) if ":" in spec else 0)
    elif ":" in spec:
        module_name, attr = spec.split(":", 1)
        model = getattr(importlib.import_module(module_name), attr)()
        for needed in ("feature_dim", "num_classes", "description"):
            if not hasattr(model, needed):
                raise TypeError(f"feature extractor {spec!r} lacks the attribute {needed!r}")
    else:
        raise ValueError(f"unknown feature extractor {spec!r}: use 'inception', 'random[:SEED]' or 'package.module:factory'")
    if fid_mode == "clean":
        if hasattr(model, "fid_mode"):
            model.fid_mode = "clean"
            described = model.description.replace("pytorch-fid preprocessing", "clean-fid preprocessing")
            model.description = described if described != model.description else f"{model.description}; clean-fid preprocessing"
        else:
            model = CleanResized(model)
    return model.to(device).eval()
