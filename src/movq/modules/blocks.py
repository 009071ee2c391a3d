"""Building blocks shared by the encoder and decoder: ResNet block, self-attention, resampling.

Every block takes ``(x, zq=None)``: ``zq`` is the quantized latent that conditions the MoVQ
decoder's SpatialNorm layers and is ignored by plain GroupNorm. Module attribute names follow
the published checkpoints (``norm1``, ``conv1``, ``nin_shortcut``, ``q``/``k``/``v``/``proj_out``).
"""

from __future__ import annotations

import torch.nn.functional as F
from einops import rearrange
from torch import Tensor, nn

from movq.modules.norm import make_norm


class ResnetBlock(nn.Module):
    """Pre-activation ResNet block: norm-SiLU-conv3x3 twice, plus a 1x1 shortcut if channels change.

    In ``[B, in_channels, H, W]``, out ``[B, out_channels, H, W]``.
    """

    def __init__(
        self, in_channels: int, out_channels: int, dropout: float = 0.0, zq_channels: int | None = None
    ) -> None:
        super().__init__()
        self.norm1 = make_norm(in_channels, zq_channels)
        self.conv1 = nn.Conv2d(in_channels, out_channels, kernel_size=3, padding=1)
        self.norm2 = make_norm(out_channels, zq_channels)
        self.dropout = nn.Dropout(dropout)
        self.conv2 = nn.Conv2d(out_channels, out_channels, kernel_size=3, padding=1)
        self.nin_shortcut = (
            nn.Conv2d(in_channels, out_channels, kernel_size=1) if in_channels != out_channels else None
        )

    def forward(self, x: Tensor, zq: Tensor | None = None) -> Tensor:
        h = self.conv1(F.silu(self.norm1(x, zq)))
        h = self.conv2(self.dropout(F.silu(self.norm2(h, zq))))
        if self.nin_shortcut is not None:
            x = self.nin_shortcut(x)
        return x + h


class AttnBlock(nn.Module):
    """Single-head spatial self-attention with a residual connection.

    In and out ``[B, C, H, W]``. Uses ``F.scaled_dot_product_attention``, so no ``HW x HW``
    score matrix is built in Python (fused kernels pick the memory-efficient path).
    """

    def __init__(self, channels: int, zq_channels: int | None = None) -> None:
        super().__init__()
        self.norm = make_norm(channels, zq_channels)
        self.q = nn.Conv2d(channels, channels, kernel_size=1)
        self.k = nn.Conv2d(channels, channels, kernel_size=1)
        self.v = nn.Conv2d(channels, channels, kernel_size=1)
        self.proj_out = nn.Conv2d(channels, channels, kernel_size=1)

    def forward(self, x: Tensor, zq: Tensor | None = None) -> Tensor:
        height, width = x.shape[-2:]
        h = self.norm(x, zq)
        q, k, v = (rearrange(proj(h), "b c h w -> b 1 (h w) c") for proj in (self.q, self.k, self.v))
        h = F.scaled_dot_product_attention(q, k, v)
        h = rearrange(h, "b 1 (h w) c -> b c h w", h=height, w=width)
        return x + self.proj_out(h)


class Downsample(nn.Module):
    """Stride-2 3x3 convolution, padded one pixel on the right and bottom. Halves H and W."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, kernel_size=3, stride=2, padding=0)

    def forward(self, x: Tensor) -> Tensor:
        return self.conv(F.pad(x, (0, 1, 0, 1)))


class Upsample(nn.Module):
    """Nearest-neighbour x2 upsampling followed by a 3x3 convolution. Doubles H and W."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, kernel_size=3, padding=1)

    def forward(self, x: Tensor) -> Tensor:
        return self.conv(F.interpolate(x, scale_factor=2.0, mode="nearest"))
