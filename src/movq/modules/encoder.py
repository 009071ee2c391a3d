"""VQGAN convolutional encoder."""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch.nn.functional as F
from torch import Tensor, nn

from movq.modules.blocks import (
    MAGVIT2_NETWORKS,
    AttnBlock,
    Downsample,
    Level,
    MidBlock,
    ResnetBlock,
    level_has_attention,
    preferred_memory_format,
)
from movq.modules.norm import GroupNorm

if TYPE_CHECKING:
    from movq.config import CodecConfig


class Encoder(nn.Module):
    """Image ``[B, in_channels, H, W]`` in ``[-1, 1]`` -> latent ``[B, z_channels, H/f, W/f]``.

    ``f = 2 ** (len(ch_mult) - 1)``; H and W must be multiples of f. ``forward`` is
    ``global_stage(local_stage(x))``: the split lets tiling run the local stage in tiles. Runs in
    the device's preferred layout (:func:`~movq.modules.blocks.preferred_memory_format`); returns NCHW.
    """

    def __init__(self, config: CodecConfig) -> None:
        super().__init__()
        ch, dropout = config.ch, config.dropout
        network = getattr(config, "network", "taming")  # see CodecConfig.network
        maskgit, magvit2 = network == "maskgit", network in MAGVIT2_NETWORKS
        bias = not (maskgit or magvit2)
        kind = "avgpool" if maskgit else "conv_centered" if magvit2 else "conv"
        self.conv_in = nn.Conv2d(config.in_channels, ch, kernel_size=3, padding=1, bias=bias)
        self.down = nn.ModuleList()
        block_in = ch
        for i, mult in enumerate(config.ch_mult):
            block_out = ch * mult
            blocks, attns = [], []
            for _ in range(config.num_res_blocks):
                blocks.append(ResnetBlock(block_in, block_out, dropout, bias=bias, shortcut_from_output=maskgit))
                block_in = block_out
                if level_has_attention(config, i):
                    attns.append(AttnBlock(block_in))
            level = Level(blocks, attns)
            level.downsample = Downsample(block_in, kind) if i != len(config.ch_mult) - 1 else None
            self.down.append(level)
        if magvit2:  # num_res_blocks bias-free ResNet blocks, no attention
            self.mid: nn.Module = Level([ResnetBlock(block_in, block_in, dropout, bias=False)
                                         for _ in range(config.num_res_blocks)], [])
        else:
            self.mid = MidBlock(block_in, dropout, attention=config.mid_attention, bias=bias)
        self.norm_out = GroupNorm(block_in)
        kernel = 1 if maskgit or magvit2 else 3
        self.conv_out = nn.Conv2d(block_in, config.z_channels, kernel_size=kernel, padding=kernel // 2)

    @property
    def local_levels(self) -> int:
        """Levels, from full resolution, before the first one with attention: the part of the encoder
        whose outputs depend only on a neighbourhood of the input (runs in tiles on large images)."""
        return next((i for i, level in enumerate(self.down) if len(level.attn)), len(self.down))

    @property
    def local_scale(self) -> int:
        """Size of :meth:`local_stage`'s output relative to the latent grid (1: latent resolution)."""
        return 2 ** (len(self.down) - 1 - min(self.local_levels, len(self.down) - 1))

    def run_levels(self, h: Tensor, start: int, stop: int) -> Tensor:
        """Levels ``start .. stop - 1`` (0: full resolution), each followed by its downsampling."""
        for level in self.down[start:stop]:
            for layer in level.layers():  # not level(h): that would keep the level's input alive to its end
                h = layer(h)
            if level.downsample is not None:
                h = level.downsample(h)
        return h

    def local_stage(self, x: Tensor) -> Tensor:
        """``conv_in`` and the levels without attention: image ``[B, 3, H, W]`` -> features at
        ``local_scale`` times the latent resolution."""
        x = x.contiguous(memory_format=preferred_memory_format(x.device))
        return self.run_levels(self.conv_in(x), 0, self.local_levels)

    def global_stage(self, h: Tensor) -> Tensor:
        """The rest (levels with attention, mid block, output conv): features -> latent (NCHW)."""
        h = h.contiguous(memory_format=preferred_memory_format(h.device))
        h = self.mid(self.run_levels(h, self.local_levels, len(self.down)))
        return self.conv_out(F.silu(self.norm_out(h))).contiguous()

    def forward(self, x: Tensor) -> Tensor:
        return self.global_stage(self.local_stage(x))
