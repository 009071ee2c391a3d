"""Normalisation layers: GroupNorm(32) as in VQGAN, and MoVQ's spatially conditional norm.

Both take an optional fused SiLU (``silu=True``), the activation that follows every norm of the
encoder and decoder. Without autograd (``torch.no_grad`` / ``inference_mode``) the modulation and
the activation run in place on the normalised map, so a norm + SiLU costs three passes over the
feature map instead of eight.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from movq.modules.layout import blocks_view, broadcast_view, memory_format_of, nearest_factors

NUM_GROUPS = 32
EPS = 1e-6


class SpatialNorm(nn.Module):
    """MoVQ's spatially conditional normalisation.

    ``out = GroupNorm(f) * conv_y(zq) + conv_b(zq)`` where ``zq`` (the quantized latent,
    ``[B, zq_channels, h, w]``) is resized to the size of ``f`` (``[B, channels, H, W]``) by
    nearest-neighbour interpolation; ``conv_y`` and ``conv_b`` are 1x1 convolutions.
    Output has the shape, dtype and memory layout of ``f``; ``silu=True`` applies SiLU to it.

    Computed as ``normalise(f) * scale + shift`` with ``scale = gamma * conv_y(zq)`` and
    ``shift = beta * conv_y(zq) + conv_b(zq)`` evaluated at ``zq``'s resolution in float32 (a 1x1
    convolution commutes with nearest resizing), then broadcast over ``f`` without building the
    upsampled maps when ``H / h`` and ``W / w`` are integers.
    """

    def __init__(self, channels: int, zq_channels: int) -> None:
        super().__init__()
        self.norm_layer = nn.GroupNorm(NUM_GROUPS, channels, eps=EPS, affine=True)
        self.conv_y = nn.Conv2d(zq_channels, channels, kernel_size=1)
        self.conv_b = nn.Conv2d(zq_channels, channels, kernel_size=1)

    def modulation(self, zq: Tensor) -> tuple[Tensor, Tensor]:
        """``(scale, shift)``, each float32 ``[B, channels, h, w]`` at the resolution of ``zq``."""
        weight = torch.cat([self.conv_y.weight, self.conv_b.weight]).float()
        bias = torch.cat([self.conv_y.bias, self.conv_b.bias]).float()
        y, b = F.conv2d(zq.float(), weight, bias).chunk(2, dim=1)
        gamma = self.norm_layer.weight.float()[:, None, None]
        beta = self.norm_layer.bias.float()[:, None, None]
        return y * gamma, torch.addcmul(b, y, beta)

    def forward(self, f: Tensor, zq: Tensor, *, silu: bool = False) -> Tensor:
        inplace = not torch.is_grad_enabled()
        layout = memory_format_of(f)
        scale, shift = (t.to(f.dtype).contiguous(memory_format=layout) for t in self.modulation(zq))
        out = F.group_norm(f, NUM_GROUPS, eps=self.norm_layer.eps)
        factors = nearest_factors(f, zq)
        if factors is None:  # sizes are not integer multiples: materialise the resized maps
            size = f.shape[-2:]
            scale, shift = (F.interpolate(t, size=size, mode="nearest") for t in (scale, shift))
            out = out.mul_(scale).add_(shift) if inplace else torch.addcmul(shift, out, scale)
        elif inplace:
            view = blocks_view(out, factors)
            torch.addcmul(broadcast_view(shift), view, broadcast_view(scale), out=view)
        else:
            view = torch.addcmul(broadcast_view(shift), blocks_view(out, factors), broadcast_view(scale))
            out = view.flatten(4, 5).flatten(2, 3).contiguous(memory_format=layout)
        return F.silu(out, inplace=inplace) if silu else out


class GroupNorm(nn.GroupNorm):
    """GroupNorm(32, eps=1e-6) that accepts (and ignores) the conditioning ``zq`` argument.

    Lets the plain VQGAN decoder and the MoVQ decoder share one block implementation.
    In: ``[B, channels, H, W]``; out: same shape; ``silu=True`` applies SiLU to the output.
    """

    def __init__(self, channels: int) -> None:
        super().__init__(NUM_GROUPS, channels, eps=EPS, affine=True)

    def forward(self, f: Tensor, zq: Tensor | None = None, *, silu: bool = False) -> Tensor:  # noqa: ARG002
        out = super().forward(f)
        return F.silu(out, inplace=not torch.is_grad_enabled()) if silu else out


def make_norm(channels: int, zq_channels: int | None) -> nn.Module:
    """SpatialNorm when the block is conditioned on ``zq`` (``zq_channels`` given), else GroupNorm."""
    return GroupNorm(channels) if zq_channels is None else SpatialNorm(channels, zq_channels)
