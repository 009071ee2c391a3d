"""Normalisation layers: GroupNorm(32) as in VQGAN, and MoVQ's spatially conditional norm.

Both take an optional fused SiLU (``silu=True``), the activation that follows every norm of the
encoder and decoder. Without autograd (``torch.no_grad`` / ``inference_mode``) the modulation and
the activation run in place on the normalised map, so a norm + SiLU costs three passes over the
feature map instead of eight.

For tiled inference a norm can take its group statistics from outside (``shared_stats``, see
:class:`movq.tiling.SharedGroupStats`), so every tile of an image is normalised alike.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from movq.modules.derived import derived
from movq.modules.layout import blocks_view, broadcast_view, memory_format_of, nearest_factors

NUM_GROUPS = 32
EPS = 1e-6


class GroupStatsSource(Protocol):
    """Supplies (or records) the GroupNorm statistics of a norm layer during tiled inference."""

    def lookup(self, norm: nn.Module, f: Tensor) -> tuple[Tensor, Tensor] | None:
        """Per-channel ``(mean, rstd)``, float32 ``[B, C, 1, 1]``, to normalise ``f`` with, or
        ``None`` to use the statistics of ``f`` itself."""


def modulate(x: Tensor, scale: Tensor, shift: Tensor, *, out: Tensor | None = None) -> Tensor:
    """``x * scale + shift`` where ``scale`` / ``shift`` ``[B, C, h, w]`` (any strides) are resized to
    ``x``'s ``[B, C, H, W]`` by nearest neighbour (broadcast without copies when ``H / h`` and
    ``W / w`` are integers). ``scale`` / ``shift`` must already have ``x``'s dtype. Writes into
    ``out`` (which may be ``x`` itself) when given; returns a tensor in ``x``'s layout."""
    factors = nearest_factors(x, scale)
    if factors is None:  # sizes are not integer multiples: materialise the resized maps
        scale, shift = (F.interpolate(t, size=x.shape[-2:], mode="nearest") for t in (scale, shift))
        factors = (1, 1)
    layout = memory_format_of(x)
    scale, shift = broadcast_view(scale), broadcast_view(shift)
    if out is not None:
        view = blocks_view(out, factors)
        torch.addcmul(shift, blocks_view(x, factors), scale, out=view)
        return out
    view = torch.addcmul(shift, blocks_view(x, factors), scale)
    return view.flatten(4, 5).flatten(2, 3).contiguous(memory_format=layout)


def normalize(
    norm: nn.Module,
    f: Tensor,
    modulation: Callable[[torch.dtype], tuple[Tensor, Tensor]],
    silu: bool,
    affine: tuple[Tensor, Tensor] | None = None,
) -> Tensor:
    """``GroupNorm(f) * scale + shift``, then SiLU if ``silu``, where ``modulation(dtype)`` gives
    ``(scale, shift)`` ``[B, C, h, w]`` (nearest-resized to ``f``) in ``dtype``. ``affine``
    (GroupNorm's own weight and bias, for a per-channel modulation) lets the native kernel apply
    the modulation itself. Works in place without autograd, except while ``torch.compile`` /
    ``torch.export`` trace (the compilers fuse the out-of-place form themselves)."""
    inplace = not torch.is_grad_enabled() and not torch.compiler.is_compiling()
    source: GroupStatsSource | None = getattr(norm, "shared_stats", None)
    stats = source.lookup(norm, f) if source is not None else None
    if stats is not None:  # fold the given statistics into the modulation: one pass over f
        mean, rstd = stats
        scale, shift = modulation(torch.float32)
        scale = scale * rstd
        shift = shift - mean * scale
        target = torch.empty_like(f) if inplace else None
        out = modulate(f, scale.to(f.dtype), shift.to(f.dtype), out=target)
    elif affine is not None:
        out = F.group_norm(f, NUM_GROUPS, affine[0], affine[1], EPS)
    else:
        out = F.group_norm(f, NUM_GROUPS, eps=EPS)
        scale, shift = modulation(f.dtype)
        out = modulate(out, scale, shift, out=out if inplace else None)
    return F.silu(out, inplace=inplace) if silu else out


class SpatialNorm(nn.Module):
    """MoVQ's spatially conditional normalisation.

    ``out = GroupNorm(f) * conv_y(zq) + conv_b(zq)`` where ``zq`` (the quantized latent,
    ``[B, zq_channels, h, w]``) is resized to the size of ``f`` (``[B, channels, H, W]``) by
    nearest-neighbour interpolation; ``conv_y`` and ``conv_b`` are 1x1 convolutions.
    Output has the shape, dtype and memory layout of ``f``; ``silu=True`` applies SiLU to it.

    Computed as ``normalise(f) * scale + shift`` with ``scale = gamma * conv_y(zq)`` and
    ``shift = beta * conv_y(zq) + conv_b(zq)``: one matrix product at ``zq``'s resolution with the
    affine folded into it (a 1x1 convolution commutes with nearest resizing), broadcast over ``f``
    without building the upsampled maps when ``H / h`` and ``W / w`` are integers.
    """

    shared_stats: GroupStatsSource | None = None

    def __init__(self, channels: int, zq_channels: int) -> None:
        super().__init__()
        self.norm_layer = nn.GroupNorm(NUM_GROUPS, channels, eps=EPS, affine=True)
        self.conv_y = nn.Conv2d(zq_channels, channels, kernel_size=1)
        self.conv_b = nn.Conv2d(zq_channels, channels, kernel_size=1)

    def folded_weights(self, dtype: torch.dtype) -> tuple[Tensor, Tensor]:
        """Weight ``[2C, zq_channels]`` and bias ``[2C]`` in ``dtype`` mapping a position of ``zq`` to
        ``[scale, shift]`` (folded in float32, memoised for inference)."""
        params = (self.conv_y.weight, self.conv_y.bias, self.conv_b.weight, self.conv_b.bias,
                  self.norm_layer.weight, self.norm_layer.bias)

        def build() -> tuple[Tensor, Tensor]:
            wy, by, wb, bb, gamma, beta = (p.float().flatten(1) if p.ndim > 1 else p.float() for p in params)
            weight = torch.cat([gamma[:, None] * wy, beta[:, None] * wy + wb])
            bias = torch.cat([gamma * by, beta * by + bb])
            return weight.to(dtype), bias.to(dtype)

        return derived(self, f"folded:{dtype}", build, *params)

    def modulation(self, zq: Tensor, dtype: torch.dtype = torch.float32) -> tuple[Tensor, Tensor]:
        """``(scale, shift)``, each ``[B, channels, h, w]`` in ``dtype`` at the resolution of ``zq``
        (channels-last strided views of one ``[B, h, w, 2 * channels]`` product)."""
        weight, bias = self.folded_weights(dtype)
        both = F.linear(zq.to(dtype).permute(0, 2, 3, 1), weight, bias).permute(0, 3, 1, 2)
        return both[:, : weight.shape[0] // 2], both[:, weight.shape[0] // 2 :]

    def forward(self, f: Tensor, zq: Tensor, *, silu: bool = False) -> Tensor:
        return normalize(self, f, lambda dtype: self.modulation(zq, dtype), silu)


class GroupNorm(nn.GroupNorm):
    """GroupNorm(32, eps=1e-6) that accepts (and ignores) the conditioning ``zq`` argument.

    Lets the plain VQGAN decoder and the MoVQ decoder share one block implementation.
    In: ``[B, channels, H, W]``; out: same shape; ``silu=True`` applies SiLU to the output.
    """

    shared_stats: GroupStatsSource | None = None

    def __init__(self, channels: int) -> None:
        super().__init__(NUM_GROUPS, channels, eps=EPS, affine=True)

    def forward(self, f: Tensor, zq: Tensor | None = None, *, silu: bool = False) -> Tensor:  # noqa: ARG002
        def modulation(dtype: torch.dtype) -> tuple[Tensor, Tensor]:
            return self.weight.to(dtype)[None, :, None, None], self.bias.to(dtype)[None, :, None, None]

        return normalize(self, f, modulation, silu, affine=(self.weight, self.bias))


def make_norm(channels: int, zq_channels: int | None) -> nn.Module:
    """SpatialNorm when the block is conditioned on ``zq`` (``zq_channels`` given), else GroupNorm."""
    return GroupNorm(channels) if zq_channels is None else SpatialNorm(channels, zq_channels)
