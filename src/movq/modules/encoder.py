"""VQGAN convolutional encoder."""

from __future__ import annotations

from torch import Tensor, nn

from movq.config import CodecConfig
from movq.modules.blocks import AttnBlock, Downsample, ResnetBlock
from movq.modules.layout import preferred_memory_format
from movq.modules.norm import GroupNorm
from movq.modules.prepacked import conv


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


class Encoder(nn.Module):
    """Image ``[B, in_channels, H, W]`` in ``[-1, 1]`` -> latent ``[B, z_channels, H/f, W/f]``.

    ``f = 2 ** (len(ch_mult) - 1)``; H and W must be multiples of f. Runs in the device's
    preferred layout (:func:`~movq.modules.layout.preferred_memory_format`); returns NCHW.
    """

    def __init__(self, config: CodecConfig) -> None:
        super().__init__()
        ch, dropout = config.ch, config.dropout
        self.conv_in = nn.Conv2d(config.in_channels, ch, kernel_size=3, padding=1)
        self.down = nn.ModuleList()
        block_in = ch
        for i, mult in enumerate(config.ch_mult):
            block_out = ch * mult
            blocks, attns = [], []
            for _ in range(config.num_res_blocks):
                blocks.append(ResnetBlock(block_in, block_out, dropout))
                block_in = block_out
                if level_has_attention(config, i):
                    attns.append(AttnBlock(block_in))
            level = Level(blocks, attns)
            level.downsample = Downsample(block_in) if i != len(config.ch_mult) - 1 else None
            self.down.append(level)
        self.mid = MidBlock(block_in, dropout)
        self.norm_out = GroupNorm(block_in)
        self.conv_out = nn.Conv2d(block_in, config.z_channels, kernel_size=3, padding=1)

    @property
    def local_levels(self) -> int:
        """Levels, from full resolution, before the first one with attention: the part of the encoder
        whose outputs depend only on a neighbourhood of the input (runs in tiles on large images)."""
        return next((i for i, level in enumerate(self.down) if len(level.attn)), len(self.down))

    @property
    def local_scale(self) -> int:
        """Size of :meth:`local_stage`'s output relative to the latent grid (1: latent resolution)."""
        return 2 ** (len(self.down) - 1 - min(self.local_levels, len(self.down) - 1))

    def local_stage(self, x: Tensor) -> Tensor:
        """``conv_in`` and the levels without attention: image ``[B, 3, H, W]`` -> features at
        ``local_scale`` times the latent resolution."""
        h = conv(self.conv_in, x.contiguous(memory_format=preferred_memory_format(x.device)))
        for level in self.down[: self.local_levels]:
            h = level(h)
            if level.downsample is not None:
                h = level.downsample(h)
        return h

    def global_stage(self, h: Tensor) -> Tensor:
        """The rest (levels with attention, mid block, output conv): features -> latent (NCHW)."""
        h = h.contiguous(memory_format=preferred_memory_format(h.device))
        for level in self.down[self.local_levels :]:
            h = level(h)
            if level.downsample is not None:
                h = level.downsample(h)
        h = self.mid(h)
        return conv(self.conv_out, self.norm_out(h, silu=True)).contiguous()

    def forward(self, x: Tensor) -> Tensor:
        return self.global_stage(self.local_stage(x))
