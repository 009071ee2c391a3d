"""LPIPS as a per-image metric, backed by :func:`movq.perceptual.load_lpips` (imported lazily)."""

from __future__ import annotations

import os

import torch
from torch import Tensor, nn


class LPIPSMetric(nn.Module):
    """Per-image LPIPS distance between two batches ``[B, 3, H, W]`` in ``[0, 1]`` -> ``[B]`` float64.

    ``net`` is ``"alex"`` (the usual metric backbone) or ``"vgg"``; ``weights`` is a local state
    dict path (see :func:`movq.perceptual.load_lpips` for the lookup order when it is ``None``).
    Weights are never downloaded: when none of those places has them, construction raises
    ``RuntimeError`` saying where it looked and how to provide them. ``description``
    names the weights actually used (report it next to the numbers: the shift-tolerant variant is
    not the standard LPIPS).
    """

    def __init__(self, net: str = "alex", weights: str | os.PathLike | None = None) -> None:
        super().__init__()
        try:
            from movq.perceptual import load_lpips
        except ImportError as err:  # pragma: no cover - depends on the installed tree
            raise RuntimeError(f"LPIPS needs movq.perceptual.load_lpips, which could not be imported: {err}") from err
        try:
            self.model = load_lpips(net=net, weights=weights)
        except Exception as err:
            raise RuntimeError(
                f"could not load LPIPS ({net}) weights: {err} (movq-bench: --lpips-weights PATH)"
            ) from err
        self.model.eval()
        variant = getattr(self.model, "variant", "unknown")
        source = getattr(self.model, "source", "unknown")
        self.description = f"LPIPS-{net} ({variant}; weights: {source})"
        self.is_standard = variant == "standard"

    @torch.no_grad()
    def forward(self, x: Tensor, y: Tensor) -> Tensor:
        device = next(self.model.parameters()).device
        out = self.model(x.to(device).float() * 2 - 1, y.to(device).float() * 2 - 1)
        return out.reshape(out.shape[0], -1).mean(1).double()
