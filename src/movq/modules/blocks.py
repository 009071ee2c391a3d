"""Building blocks shared by the encoder and decoder: ResNet block, self-attention, resampling,
the mid block and the resolution level that groups them.

Every block takes ``(x, zq=None)``: ``zq`` is the quantized latent that conditions the MoVQ
decoder's SpatialNorm layers and is ignored by plain GroupNorm. Module attribute names follow
the published checkpoints (``norm1``, ``conv1``, ``nin_shortcut``, ``q``/``k``/``v``/``proj_out``).
For eager CPU inference :mod:`movq.modules.cpu_engine` runs the same computation with fused kernels.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING, Literal

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import Tensor, nn

from movq.modules.norm import make_norm

if TYPE_CHECKING:
    from movq.config import CodecConfig


MAGVIT2_NETWORKS = ("magvit2", "simvq")
"""``CodecConfig.network`` values of Open-MAGVIT2's network (``"simvq"``: the same without adaptive norms)."""


def preferred_memory_format(device: torch.device) -> torch.memory_format:
    """The layout the encoder and decoder run in on ``device``: channels-last on CPU (where oneDNN
    convolutions run 1.3-2x faster on it, and every other op keeps it), NCHW elsewhere (CUDA's
    ``group_norm`` converts to NCHW). The blocks keep the layout of their input."""
    return torch.channels_last if device.type == "cpu" else torch.contiguous_format


class ResnetBlock(nn.Module):
    """Pre-activation ResNet block: norm-SiLU-conv3x3 twice, plus a 1x1 shortcut if channels change.

    In ``[B, in_channels, H, W]``, out ``[B, out_channels, H, W]``. ``bias=False`` leaves the biases
    out of the three convolutions (MaskGIT's VQGAN). ``shortcut_from_output=True`` is MaskGIT's block
    (from its JAX original): when the channels change, the 1x1 shortcut ``out -> out`` is applied to
    the block's own output ``h``, ``h + nin_shortcut(h)``, instead of to the input.
    """

    def __init__(
        self, in_channels: int, out_channels: int, dropout: float = 0.0, zq_channels: int | None = None,
        bias: bool = True, shortcut_from_output: bool = False,
    ) -> None:
        super().__init__()
        self.shortcut_from_output = shortcut_from_output
        self.norm1 = make_norm(in_channels, zq_channels)
        self.conv1 = nn.Conv2d(in_channels, out_channels, kernel_size=3, padding=1, bias=bias)
        self.norm2 = make_norm(out_channels, zq_channels)
        self.dropout = nn.Dropout(dropout)
        self.conv2 = nn.Conv2d(out_channels, out_channels, kernel_size=3, padding=1, bias=bias)
        shortcut_in = out_channels if shortcut_from_output else in_channels
        self.nin_shortcut = (
            nn.Conv2d(shortcut_in, out_channels, kernel_size=1, bias=bias) if in_channels != out_channels else None
        )

    def forward(self, x: Tensor, zq: Tensor | None = None) -> Tensor:
        h = self.conv1(F.silu(self.norm1(x, zq)))
        h = self.conv2(self.dropout(F.silu(self.norm2(h, zq))))
        if self.nin_shortcut is not None:
            x = self.nin_shortcut(h if self.shortcut_from_output else x)
        return x + h


class AttnBlock(nn.Module):
    """Single-head spatial self-attention with a residual connection.

    In and out ``[B, C, H, W]``: ``x + proj_out(attention(q, k, v))`` with ``q``, ``k``, ``v`` 1x1
    convolutions of the normalised ``x`` and softmax attention over the ``H * W`` positions
    (``F.scaled_dot_product_attention``, which never builds the whole score matrix on CPU).
    """

    def __init__(self, channels: int, zq_channels: int | None = None) -> None:
        super().__init__()
        self.norm = make_norm(channels, zq_channels)
        self.q = nn.Conv2d(channels, channels, kernel_size=1)
        self.k = nn.Conv2d(channels, channels, kernel_size=1)
        self.v = nn.Conv2d(channels, channels, kernel_size=1)
        self.proj_out = nn.Conv2d(channels, channels, kernel_size=1)

    def forward(self, x: Tensor, zq: Tensor | None = None) -> Tensor:
        batch, channels, height, width = x.shape
        h = self.norm(x, zq)
        # [B, C, H, W] -> [B, 1, H*W, C]: one head, one token per position
        q, k, v = (proj(h).flatten(2).transpose(1, 2)[:, None] for proj in (self.q, self.k, self.v))
        h = F.scaled_dot_product_attention(q, k, v)
        h = h[:, 0].transpose(1, 2).reshape(batch, channels, height, width)
        return x + self.proj_out(h)


class Downsample(nn.Module):
    """Halves H and W. ``kind="conv"`` (taming): stride-2 3x3 convolution, padded one pixel on the
    right and bottom; ``kind="conv_centered"`` (Open-MAGVIT2): the same convolution padded one pixel
    on every side; ``kind="avgpool"`` (MaskGIT's VQGAN): 2x2 average pooling, no weights."""

    KINDS = ("conv", "conv_centered", "avgpool")

    def __init__(self, channels: int, kind: Literal["conv", "conv_centered", "avgpool"] = "conv") -> None:
        super().__init__()
        if kind not in self.KINDS:
            raise ValueError(f"Downsample kind must be one of {self.KINDS}, got {kind!r}")
        self.kind = kind
        padding = 1 if kind == "conv_centered" else 0
        self.conv = None if kind == "avgpool" else nn.Conv2d(channels, channels, kernel_size=3, stride=2, padding=padding)

    def forward(self, x: Tensor) -> Tensor:
        if self.conv is None:
            return F.avg_pool2d(x, kernel_size=2, stride=2)
        if self.kind == "conv_centered":
            return self.conv(x)
        return self.conv(F.pad(x, (0, 1, 0, 1)))


class Upsample(nn.Module):
    """Doubles H and W. ``kind="nearest"`` (taming): nearest-neighbour x2 upsampling followed by a 3x3
    convolution; ``kind="depth_to_space"`` (Open-MAGVIT2): a 3x3 convolution to ``4 * channels``,
    then depth-to-space in DCR order (output channel ``c`` at sub-pixel ``(i, j)`` is input channel
    ``(2 i + j) * channels + c``; ``F.pixel_shuffle`` uses the other order, ``4 c + 2 i + j``)."""

    KINDS = ("nearest", "depth_to_space")

    def __init__(self, channels: int, kind: Literal["nearest", "depth_to_space"] = "nearest") -> None:
        super().__init__()
        if kind not in self.KINDS:
            raise ValueError(f"Upsample kind must be one of {self.KINDS}, got {kind!r}")
        self.kind = kind
        out_channels = 4 * channels if kind == "depth_to_space" else channels
        self.conv = nn.Conv2d(channels, out_channels, kernel_size=3, padding=1)

    def forward(self, x: Tensor) -> Tensor:
        if self.kind == "depth_to_space":
            return rearrange(self.conv(x), "b (i j c) h w -> b c (h i) (w j)", i=2, j=2)
        return self.conv(F.interpolate(x, scale_factor=2.0, mode="nearest"))


class MidBlock(nn.Module):
    """ResNet - attention - ResNet at the lowest resolution. In and out ``[B, C, h, w]``.

    ``attention=False`` leaves the attention out (``attn_1`` is ``None``): ResNet - ResNet, as
    diffusers' ``mid_block_add_attention=False`` (aMUSEd's VQ); ``bias=False``: bias-free ResNet
    convolutions (MaskGIT's VQGAN).
    """

    def __init__(
        self, channels: int, dropout: float, zq_channels: int | None = None, attention: bool = True,
        bias: bool = True,
    ) -> None:
        super().__init__()
        self.block_1 = ResnetBlock(channels, channels, dropout, zq_channels, bias=bias)
        self.attn_1 = AttnBlock(channels, zq_channels) if attention else None
        self.block_2 = ResnetBlock(channels, channels, dropout, zq_channels, bias=bias)

    def forward(self, x: Tensor, zq: Tensor | None = None) -> Tensor:
        h = self.block_1(x, zq)
        if self.attn_1 is not None:
            h = self.attn_1(h, zq)
        return self.block_2(h, zq)


class Level(nn.Module):
    """One resolution level: ``block`` (ResNet blocks), ``attn`` (optional, one per block) and a
    resampling layer (``downsample`` in the encoder, ``upsample`` in the decoder), set by the owner."""

    def __init__(self, blocks: list[ResnetBlock], attns: list[AttnBlock]) -> None:
        super().__init__()
        self.block = nn.ModuleList(blocks)
        self.attn = nn.ModuleList(attns)

    def layers(self) -> Iterator[nn.Module]:
        """The blocks in run order: each ResNet block, then its attention block if the level has them."""
        for i, block in enumerate(self.block):
            yield block
            if len(self.attn):
                yield self.attn[i]

    def forward(self, x: Tensor, zq: Tensor | None = None) -> Tensor:
        for layer in self.layers():
            x = layer(x, zq)
        return x


def level_has_attention(config: CodecConfig, level: int) -> bool:
    """Whether resolution level ``level`` (0 = full size) has attention blocks."""
    return config.resolution // 2**level in config.attn_resolutions
