"""Normalisation layers: GroupNorm(32) as in VQGAN, and MoVQ's spatially conditional norm.

For tiled inference a norm can take its group statistics from outside (``shared_stats``, see
:class:`movq.tiling.SharedGroupStats`), so every tile of an image is normalised alike: both layers
normalise through :func:`group_norm`, which honours it.
"""

from __future__ import annotations

from typing import Protocol

import torch.nn.functional as F
from torch import Tensor, nn

NUM_GROUPS = 32
EPS = 1e-6


class GroupStatsSource(Protocol):
    """Supplies (or records) the GroupNorm statistics of a norm layer during tiled inference."""

    def lookup(self, norm: nn.Module, f: Tensor) -> tuple[Tensor, Tensor] | None:
        """Per-channel ``(mean, rstd)``, float32 ``[B, C, 1, 1]``, to normalise ``f`` with, or
        ``None`` to use the statistics of ``f`` itself."""


def shared_stats_of(norm: nn.Module, f: Tensor) -> tuple[Tensor, Tensor] | None:
    """The ``(mean, rstd)`` that ``norm.shared_stats`` (installed by tiling) gives for ``f``, else ``None``."""
    source: GroupStatsSource | None = getattr(norm, "shared_stats", None)
    return None if source is None else source.lookup(norm, f)


def group_norm(norm: nn.Module, f: Tensor, weight: Tensor, bias: Tensor) -> Tensor:
    """``F.group_norm(f, 32, weight, bias, eps=1e-6)`` for ``f`` ``[B, C, H, W]``; while tiling gives
    ``norm`` image-wide statistics, ``(f - mean) * rstd * weight + bias`` with those instead."""
    stats = shared_stats_of(norm, f)
    if stats is None:
        return F.group_norm(f, NUM_GROUPS, weight, bias, EPS)
    mean, rstd = stats
    scale = rstd * weight.float()[:, None, None]
    shift = bias.float()[:, None, None] - mean * scale
    return f * scale.to(f.dtype) + shift.to(f.dtype)


class GroupNorm(nn.GroupNorm):
    """GroupNorm(32, eps=1e-6) that accepts (and ignores) the conditioning ``zq`` argument.

    Lets the plain VQGAN decoder and the MoVQ decoder share one block implementation.
    In: ``[B, channels, H, W]``; out: same shape.
    """

    shared_stats: GroupStatsSource | None = None

    def __init__(self, channels: int) -> None:
        super().__init__(NUM_GROUPS, channels, eps=EPS, affine=True)

    def forward(self, f: Tensor, zq: Tensor | None = None) -> Tensor:  # noqa: ARG002
        return group_norm(self, f, self.weight, self.bias)


class SpatialNorm(nn.Module):
    """MoVQ's spatially conditional normalisation.

    ``out = GroupNorm(f) * conv_y(zq) + conv_b(zq)`` where ``zq`` (the quantized latent,
    ``[B, zq_channels, h, w]``) is resized to the size of ``f`` (``[B, channels, H, W]``) by
    nearest-neighbour interpolation; ``conv_y`` and ``conv_b`` are 1x1 convolutions.
    Output has the shape and dtype of ``f``.
    """

    shared_stats: GroupStatsSource | None = None

    def __init__(self, channels: int, zq_channels: int) -> None:
        super().__init__()
        self.norm_layer = nn.GroupNorm(NUM_GROUPS, channels, eps=EPS, affine=True)
        self.conv_y = nn.Conv2d(zq_channels, channels, kernel_size=1)
        self.conv_b = nn.Conv2d(zq_channels, channels, kernel_size=1)

    def forward(self, f: Tensor, zq: Tensor) -> Tensor:
        zq = F.interpolate(zq, size=f.shape[-2:], mode="nearest")
        normed = group_norm(self, f, self.norm_layer.weight, self.norm_layer.bias)
        return normed * self.conv_y(zq) + self.conv_b(zq)


def make_norm(channels: int, zq_channels: int | None) -> nn.Module:
    """SpatialNorm when the block is conditioned on ``zq`` (``zq_channels`` given), else GroupNorm."""
    return GroupNorm(channels) if zq_channels is None else SpatialNorm(channels, zq_channels)


class AdaptiveGroupNorm(nn.Module):
    """Open-MAGVIT2's adaptive group norm (TencentARC/SEED-Voken ``improved_model.py``): GroupNorm(32)
    without affine parameters, then a per-image, per-channel scale and shift read from the global
    statistics of a style map.

    ``out = GroupNorm(x) * gamma(sqrt(var(style) + eps)) + beta(mean(style))`` with ``x``
    ``[B, channels, H, W]``, ``style`` ``[B, style_channels, h, w]`` (the decoder's quantized latent),
    ``mean`` / ``var`` over ``h * w`` (``var`` unbiased, as ``Tensor.var`` computes it in the original),
    ``gamma`` and ``beta`` linear layers ``style_channels -> channels``. Output has ``x``'s shape.
    """

    def __init__(self, style_channels: int, channels: int) -> None:
        super().__init__()
        self.channels = channels
        self.gamma = nn.Linear(style_channels, channels)
        self.beta = nn.Linear(style_channels, channels)

    def forward(self, x: Tensor, style: Tensor) -> Tensor:
        flat = style.flatten(2)  # [B, style_channels, h * w]
        scale = self.gamma((flat.var(dim=-1) + EPS).sqrt())[:, :, None, None]
        shift = self.beta(flat.mean(dim=-1))[:, :, None, None]
        return F.group_norm(x, NUM_GROUPS, eps=EPS) * scale + shift
