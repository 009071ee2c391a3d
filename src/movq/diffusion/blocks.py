"""Building blocks of the ADM-style UNet: timestep embedding, residual block with scale-shift
norm, multi-head self-attention. Resampling reuses :mod:`movq.modules.blocks`."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import Tensor, nn

NORM_GROUPS = 32


def timestep_embedding(t: Tensor, dim: int, max_period: float = 10000.0) -> Tensor:
    """Sinusoidal embedding of (possibly fractional) timesteps ``[B]`` -> ``[B, dim]`` float32:
    ``[cos(t f_i), sin(t f_i)]`` with frequencies ``f_i = max_period ** (-i / (dim / 2))``."""
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, dtype=torch.float32, device=t.device) / half)
    args = t.float()[:, None] * freqs[None]
    emb = torch.cat([torch.cos(args), torch.sin(args)], dim=-1)
    return F.pad(emb, (0, dim % 2))


def zero_module(module: nn.Module) -> nn.Module:
    """Zero every parameter of ``module`` (output layers start as the identity of the residual)."""
    for param in module.parameters():
        nn.init.zeros_(param)
    return module


class ResBlock(nn.Module):
    """Residual block conditioned on an embedding by scale-shift norm (ADM).

    In ``x`` ``[B, in_channels, H, W]`` and ``emb`` ``[B, emb_channels]``; out
    ``[B, out_channels, H, W]``: ``skip(x) + conv(drop(SiLU(GN(h) * (1 + scale) + shift)))`` with
    ``h = conv(SiLU(GN(x)))`` and ``(scale, shift)`` a linear map of ``SiLU(emb)``. The last conv
    starts at zero, so a new block is the identity.
    """

    def __init__(self, in_channels: int, out_channels: int, emb_channels: int, dropout: float = 0.0) -> None:
        super().__init__()
        self.norm1 = nn.GroupNorm(NORM_GROUPS, in_channels)
        self.conv1 = nn.Conv2d(in_channels, out_channels, kernel_size=3, padding=1)
        self.emb_proj = nn.Linear(emb_channels, 2 * out_channels)
        self.norm2 = nn.GroupNorm(NORM_GROUPS, out_channels)
        self.dropout = nn.Dropout(dropout)
        self.conv2 = zero_module(nn.Conv2d(out_channels, out_channels, kernel_size=3, padding=1))
        self.skip = (
            nn.Conv2d(in_channels, out_channels, kernel_size=1)
            if in_channels != out_channels
            else nn.Identity()
        )

    def forward(self, x: Tensor, emb: Tensor) -> Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        scale, shift = self.emb_proj(F.silu(emb)).to(h.dtype)[:, :, None, None].chunk(2, dim=1)
        h = self.norm2(h) * (1.0 + scale) + shift
        h = self.conv2(self.dropout(F.silu(h)))
        return self.skip(x) + h


class AttentionBlock(nn.Module):
    """Multi-head self-attention over the ``H * W`` positions, with a residual connection.

    In and out ``[B, channels, H, W]``; ``channels / head_channels`` heads; GroupNorm before, a
    zero-initialised output projection after; ``F.scaled_dot_product_attention`` inside.
    """

    def __init__(self, channels: int, head_channels: int) -> None:
        super().__init__()
        self.heads = channels // head_channels
        self.norm = nn.GroupNorm(NORM_GROUPS, channels)
        self.qkv = nn.Conv2d(channels, 3 * channels, kernel_size=1)
        self.proj = zero_module(nn.Conv2d(channels, channels, kernel_size=1))

    def forward(self, x: Tensor) -> Tensor:
        height, width = x.shape[-2:]
        q, k, v = rearrange(
            self.qkv(self.norm(x)), "b (three n d) h w -> three b n (h w) d", three=3, n=self.heads
        )
        h = F.scaled_dot_product_attention(q, k, v)
        return x + self.proj(rearrange(h, "b n (h w) d -> b (n d) h w", h=height, w=width))


class EmbedSequential(nn.Sequential):
    """``nn.Sequential`` that passes the embedding to the :class:`ResBlock` layers: ``(x, emb) -> x``."""

    def forward(self, x: Tensor, emb: Tensor) -> Tensor:  # type: ignore[override]
        for layer in self:
            x = layer(x, emb) if isinstance(layer, ResBlock) else layer(x)
        return x
