"""Building blocks shared by the encoder and decoder: ResNet block, self-attention, resampling,
the mid block and the resolution level that groups them.

Every block takes ``(x, zq=None)``: ``zq`` is the quantized latent that conditions the MoVQ
decoder's SpatialNorm layers and is ignored by plain GroupNorm. Module attribute names follow
the published checkpoints (``norm1``, ``conv1``, ``nin_shortcut``, ``q``/``k``/``v``/``proj_out``).
Blocks keep the memory layout of their input (see :mod:`movq.modules.layout`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from movq.modules.attention import attention
from movq.modules.derived import derived
from movq.modules.layout import blocks_view, memory_format_of
from movq.modules.norm import make_norm
from movq.modules.prepacked import conv, conv2d

if TYPE_CHECKING:
    from movq.config import CodecConfig


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
        h = conv(self.conv1, self.norm1(x, zq, silu=True))
        shortcut = x if self.nin_shortcut is None else conv(self.nin_shortcut, x)
        return conv(self.conv2, self.dropout(self.norm2(h, zq, silu=True)), residual=shortcut)


class AttnBlock(nn.Module):
    """Single-head spatial self-attention with a residual connection.

    In and out ``[B, C, H, W]``. ``q``, ``k``, ``v`` come from one 1x1 convolution with the three
    weights stacked, attention runs through :func:`movq.modules.attention.attention` (SDPA, or
    chunked oneDNN products on CPU inference; the ``HW x HW`` score matrix is never built whole),
    and the output projection adds the residual (fused into the convolution on CPU inference, see
    :mod:`movq.modules.prepacked`).
    """

    def __init__(self, channels: int, zq_channels: int | None = None) -> None:
        super().__init__()
        self.norm = make_norm(channels, zq_channels)
        self.q = nn.Conv2d(channels, channels, kernel_size=1)
        self.k = nn.Conv2d(channels, channels, kernel_size=1)
        self.v = nn.Conv2d(channels, channels, kernel_size=1)
        self.proj_out = nn.Conv2d(channels, channels, kernel_size=1)

    def qkv_weights(self) -> tuple[Tensor, Tensor]:
        """``q``, ``k``, ``v`` stacked: weight ``[3C, C, 1, 1]`` and bias ``[3C]`` (memoised for inference)."""
        params = (self.q.weight, self.k.weight, self.v.weight, self.q.bias, self.k.bias, self.v.bias)
        return derived(self, "qkv", lambda: (torch.cat(params[:3]), torch.cat(params[3:])), *params)

    def forward(self, x: Tensor, zq: Tensor | None = None) -> Tensor:
        batch, channels, height, width = x.shape
        qkv = conv2d(self.norm(x, zq), *self.qkv_weights(), owner=self)
        tokens = qkv.permute(0, 2, 3, 1).reshape(batch, height * width, 3 * channels)  # a view if channels-last
        h = attention(*tokens.chunk(3, dim=-1))
        h = h.reshape(batch, height, width, channels).permute(0, 3, 1, 2)
        return conv(self.proj_out, h.contiguous(memory_format=memory_format_of(x)), residual=x)


class Downsample(nn.Module):
    """Stride-2 3x3 convolution, padded one pixel on the right and bottom. Halves H and W."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, kernel_size=3, stride=2, padding=0)

    def forward(self, x: Tensor) -> Tensor:
        return conv(self.conv, F.pad(x, (0, 1, 0, 1)))


# Nearest x2 upsampling followed by a 3x3 convolution (padding 1) equals, for each of the four
# output phases (a, b) = (row % 2, column % 2), a 2x2 convolution of the small input: along each
# axis, phase 0 reads input rows (i-1, i) with taps (w0, w1 + w2) and phase 1 reads (i, i+1) with
# (w0 + w1, w2). PHASE_TAPS[a] maps the 3 taps of the kernel to the 2 taps of phase a.
PHASE_TAPS = torch.tensor([[[1.0, 0.0, 0.0], [0.0, 1.0, 1.0]], [[1.0, 1.0, 0.0], [0.0, 0.0, 1.0]]])


class Upsample(nn.Module):
    """Nearest-neighbour x2 upsampling followed by a 3x3 convolution. Doubles H and W.

    Computed without building the upsampled input: one 2x2 convolution with ``4 * channels``
    outputs (one set per output phase, 4/9 of the multiply-adds), whose phases are interleaved
    into the output.
    """

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, kernel_size=3, padding=1)

    def phase_weights(self) -> tuple[Tensor, Tensor]:
        """Weight ``[4 * C, C, 2, 2]`` and bias ``[4 * C]`` of the phase convolution, phases ``(a, b)``
        in the order (0, 0), (0, 1), (1, 0), (1, 1) (memoised for inference)."""
        weight, bias = self.conv.weight, self.conv.bias

        def build() -> tuple[Tensor, Tensor]:
            taps = PHASE_TAPS.to(weight.device, weight.dtype)
            phases = torch.einsum("apk,oikl,bql->aboipq", taps, weight, taps)
            return phases.flatten(0, 2), bias.repeat(4)

        return derived(self, "phases", build, weight, bias)

    def forward(self, x: Tensor) -> Tensor:
        batch, channels, height, width = x.shape
        weight, bias = self.phase_weights()
        y = conv2d(x, weight, bias, owner=self, padding=1)  # [B, 4C, H+1, W+1]
        out = torch.empty(
            (batch, channels, 2 * height, 2 * width), dtype=y.dtype, device=y.device, memory_format=memory_format_of(x)
        )
        view = blocks_view(out, (2, 2))  # [B, C, H, 2, W, 2]
        for index, phase in enumerate(y.split(channels, dim=1)):
            a, b = divmod(index, 2)
            view[:, :, :, a, :, b] = phase[:, :, a : a + height, b : b + width]
        return out


class MidBlock(nn.Module):
    """ResNet - attention - ResNet at the lowest resolution. In and out ``[B, C, h, w]``."""

    def __init__(self, channels: int, dropout: float, zq_channels: int | None = None) -> None:
        super().__init__()
        self.block_1 = ResnetBlock(channels, channels, dropout, zq_channels)
        self.attn_1 = AttnBlock(channels, zq_channels)
        self.block_2 = ResnetBlock(channels, channels, dropout, zq_channels)

    def forward(self, x: Tensor, zq: Tensor | None = None) -> Tensor:
        return self.block_2(self.attn_1(self.block_1(x, zq), zq), zq)


class Level(nn.Module):
    """One resolution level: ``block`` (ResNet blocks), ``attn`` (optional, one per block) and a
    resampling layer (``downsample`` in the encoder, ``upsample`` in the decoder), set by the owner."""

    def __init__(self, blocks: list[ResnetBlock], attns: list[AttnBlock]) -> None:
        super().__init__()
        self.block = nn.ModuleList(blocks)
        self.attn = nn.ModuleList(attns)

    def forward(self, x: Tensor, zq: Tensor | None = None) -> Tensor:
        for i, block in enumerate(self.block):
            x = block(x, zq)
            if len(self.attn):
                x = self.attn[i](x, zq)
        return x


def level_has_attention(config: CodecConfig, level: int) -> bool:
    """Whether resolution level ``level`` (0 = full size) has attention blocks."""
    return config.resolution // 2**level in config.attn_resolutions
