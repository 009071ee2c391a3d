"""Normalisation layers: GroupNorm(32) as in VQGAN, and MoVQ's spatially conditional norm."""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

NUM_GROUPS = 32
EPS = 1e-6


class SpatialNorm(nn.Module):
    """MoVQ's spatially conditional normalisation.

    ``out = GroupNorm(f) * conv_y(zq) + conv_b(zq)`` where ``zq`` (the quantized latent,
    ``[B, zq_channels, h, w]``) is resized to the size of ``f`` (``[B, channels, H, W]``) by
    nearest-neighbour interpolation; ``conv_y`` and ``conv_b`` are 1x1 convolutions.
    Output has the shape of ``f``.
    """

    def __init__(self, channels: int, zq_channels: int) -> None:
        super().__init__()
        self.norm_layer = nn.GroupNorm(NUM_GROUPS, channels, eps=EPS, affine=True)
        self.conv_y = nn.Conv2d(zq_channels, channels, kernel_size=1)
        self.conv_b = nn.Conv2d(zq_channels, channels, kernel_size=1)

    def forward(self, f: Tensor, zq: Tensor) -> Tensor:
        zq = F.interpolate(zq, size=f.shape[-2:], mode="nearest")
        return self.norm_layer(f) * self.conv_y(zq) + self.conv_b(zq)


class GroupNorm(nn.GroupNorm):
    """GroupNorm(32, eps=1e-6) that accepts (and ignores) the conditioning ``zq`` argument.

    Lets the plain VQGAN decoder and the MoVQ decoder share one block implementation.
    In: ``[B, channels, H, W]``; out: same shape.
    """

    def __init__(self, channels: int) -> None:
        super().__init__(NUM_GROUPS, channels, eps=EPS, affine=True)

    def forward(self, f: Tensor, zq: Tensor | None = None) -> Tensor:  # noqa: ARG002
        return super().forward(f)


def make_norm(channels: int, zq_channels: int | None) -> nn.Module:
    """SpatialNorm when the block is conditioned on ``zq`` (``zq_channels`` given), else GroupNorm."""
    return GroupNorm(channels) if zq_channels is None else SpatialNorm(channels, zq_channels)
