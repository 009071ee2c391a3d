"""VQGAN / MoVQ convolutional decoder."""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch.nn.functional as F
from torch import Tensor, nn

from movq.modules.blocks import (
    MAGVIT2_NETWORKS,
    AttnBlock,
    Level,
    MidBlock,
    ResnetBlock,
    Upsample,
    level_has_attention,
    preferred_memory_format,
)
from movq.modules.norm import AdaptiveGroupNorm, make_norm

if TYPE_CHECKING:
    from movq.config import CodecConfig


class Decoder(nn.Module):
    """Latent ``[B, z_channels, h, w]`` -> image ``[B, out_channels, h*f, w*f]`` (about ``[-1, 1]``).

    With ``config.norm == "spatial"`` (MoVQ) every normalisation is a SpatialNorm conditioned on
    ``zq``, the quantized latent ``[B, embed_dim, h, w]``, which must then be passed to ``forward``;
    with ``"group"`` (VQGAN) ``zq`` is ignored. ``forward`` is ``local_stage(global_stage(z, zq), zq)``:
    the split lets tiling run the local stage in tiles. Runs in the device's preferred layout
    (:func:`~movq.modules.blocks.preferred_memory_format`); returns NCHW. Open-MAGVIT2's decoder
    (``network="magvit2"``) modulates every level with :class:`~movq.modules.norm.AdaptiveGroupNorm`
    layers (``adaptive``, by resolution level) read from the whole latent ``z``: all its levels are
    global.
    """

    def __init__(self, config: CodecConfig) -> None:
        super().__init__()
        ch, dropout = config.ch, config.dropout
        network = getattr(config, "network", "taming")  # see CodecConfig.network
        maskgit, magvit2 = network == "maskgit", network in MAGVIT2_NETWORKS
        bias = not (maskgit or magvit2)
        zq_channels = config.embed_dim if config.norm == "spatial" else None
        self.conditioned = zq_channels is not None
        block_in = ch * config.ch_mult[-1]
        self.conv_in = nn.Conv2d(config.z_channels, block_in, kernel_size=3, padding=1)
        if magvit2:  # num_res_blocks bias-free ResNet blocks, no attention
            self.mid: nn.Module = Level([ResnetBlock(block_in, block_in, dropout, bias=False)
                                         for _ in range(config.num_res_blocks)], [])
        else:
            self.mid = MidBlock(block_in, dropout, zq_channels, attention=config.mid_attention, bias=bias)
        levels: list[Level] = []
        adaptive: list[AdaptiveGroupNorm] = []
        for i in reversed(range(len(config.ch_mult))):
            block_out = ch * config.ch_mult[i]
            if network == "magvit2":
                adaptive.insert(0, AdaptiveGroupNorm(config.z_channels, block_in))
            blocks, attns = [], []
            for _ in range(config.num_res_blocks + (0 if maskgit or magvit2 else 1)):
                blocks.append(ResnetBlock(block_in, block_out, dropout, zq_channels, bias=bias,
                                          shortcut_from_output=maskgit))
                block_in = block_out
                if level_has_attention(config, i):
                    attns.append(AttnBlock(block_in, zq_channels))
            level = Level(blocks, attns)
            level.upsample = (Upsample(block_in, "depth_to_space" if magvit2 else "nearest") if i != 0 else None)
            levels.insert(0, level)
        self.up = nn.ModuleList(levels)  # indexed by resolution level, run from the last one
        # Open-MAGVIT2: before each level's blocks, a group norm modulated by the latent's statistics
        self.adaptive = nn.ModuleList(adaptive) if network == "magvit2" else None
        self.norm_out = make_norm(block_in, zq_channels)
        self.conv_out = nn.Conv2d(block_in, config.out_channels, kernel_size=3, padding=1)

    @property
    def global_levels(self) -> int:
        """Levels, in run order from the lowest resolution, up to the last one with attention: with
        ``conv_in`` and the mid block, the part whose outputs depend on the whole latent."""
        if self.adaptive is not None:  # every level is modulated by the whole latent's statistics
            return len(self.up)
        run_order = list(reversed(self.up))
        return max((r + 1 for r, level in enumerate(run_order) if len(level.attn)), default=0)

    @property
    def local_scale(self) -> int:
        """Size of :meth:`global_stage`'s output relative to the latent grid (1: latent resolution)."""
        return 2 ** max(self.global_levels - 1, 0)

    def check_zq(self, zq: Tensor | None) -> Tensor | None:
        """``zq`` for a MoVQ decoder (an error if it is missing), ``None`` for a VQGAN one."""
        if self.conditioned and zq is None:
            raise ValueError("the MoVQ decoder (norm='spatial') needs the quantized latent zq")
        return zq if self.conditioned else None

    def run_levels(self, h: Tensor, zq: Tensor | None, start: int, stop: int, style: Tensor | None = None) -> Tensor:
        """Levels ``start .. stop - 1`` in run order (0: the lowest resolution), each after the
        upsampling of the level before it. ``style`` is the latent the adaptive norms read
        (Open-MAGVIT2's decoder: its input ``z``)."""
        run_order = list(reversed(self.up))
        for r in range(start, stop):
            if r > 0:
                h = run_order[r - 1].upsample(h)
            if self.adaptive is not None:
                if style is None:
                    raise ValueError("Open-MAGVIT2's decoder levels need the latent (style) for their adaptive norms")
                h = self.adaptive[len(self.up) - 1 - r](h, style)
            for layer in run_order[r].layers():  # not level(h): that would keep the level's input alive to its end
                h = layer(h, zq)
        return h

    def global_stage(self, z: Tensor, zq: Tensor | None = None) -> Tensor:
        """``conv_in``, the mid block and the levels up to the last attention (without that level's
        upsampling): latent -> features at ``local_scale`` times the latent resolution."""
        zq = self.check_zq(zq)
        z = z.contiguous(memory_format=preferred_memory_format(z.device))
        return self.run_levels(self.mid(self.conv_in(z), zq), zq, 0, self.global_levels, style=z)

    def local_stage(self, h: Tensor, zq: Tensor | None = None) -> Tensor:
        """The remaining levels and the output conv: features -> image (NCHW). Each output pixel
        depends only on a neighbourhood of ``h`` (and of ``zq``, the latent it was decoded from)."""
        zq = self.check_zq(zq)
        h = h.contiguous(memory_format=preferred_memory_format(h.device))
        h = self.run_levels(h, zq, self.global_levels, len(self.up))
        return self.conv_out(F.silu(self.norm_out(h, zq))).contiguous()

    def forward(self, z: Tensor, zq: Tensor | None = None) -> Tensor:
        return self.local_stage(self.global_stage(z, zq), zq)
