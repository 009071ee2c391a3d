"""VQGAN / MoVQ convolutional decoder."""

from __future__ import annotations

from torch import Tensor, nn

from movq.config import CodecConfig
from movq.modules.blocks import AttnBlock, ResnetBlock, Upsample
from movq.modules.encoder import Level, MidBlock, level_has_attention
from movq.modules.layout import preferred_memory_format
from movq.modules.norm import make_norm
from movq.modules.prepacked import conv


class Decoder(nn.Module):
    """Latent ``[B, z_channels, h, w]`` -> image ``[B, out_channels, h*f, w*f]`` (about ``[-1, 1]``).

    With ``config.norm == "spatial"`` (MoVQ) every normalisation is a SpatialNorm conditioned on
    ``zq``, the quantized latent ``[B, embed_dim, h, w]``, which must then be passed to ``forward``;
    with ``"group"`` (VQGAN) ``zq`` is ignored. Runs in the device's preferred layout
    (:func:`~movq.modules.layout.preferred_memory_format`); returns NCHW.
    """

    def __init__(self, config: CodecConfig) -> None:
        super().__init__()
        ch, dropout = config.ch, config.dropout
        zq_channels = config.embed_dim if config.norm == "spatial" else None
        self.conditioned = zq_channels is not None
        block_in = ch * config.ch_mult[-1]
        self.conv_in = nn.Conv2d(config.z_channels, block_in, kernel_size=3, padding=1)
        self.mid = MidBlock(block_in, dropout, zq_channels)
        levels: list[Level] = []
        for i in reversed(range(len(config.ch_mult))):
            block_out = ch * config.ch_mult[i]
            blocks, attns = [], []
            for _ in range(config.num_res_blocks + 1):
                blocks.append(ResnetBlock(block_in, block_out, dropout, zq_channels))
                block_in = block_out
                if level_has_attention(config, i):
                    attns.append(AttnBlock(block_in, zq_channels))
            level = Level(blocks, attns)
            level.upsample = Upsample(block_in) if i != 0 else None
            levels.insert(0, level)
        self.up = nn.ModuleList(levels)  # indexed by resolution level, run from the last one
        self.norm_out = make_norm(block_in, zq_channels)
        self.conv_out = nn.Conv2d(block_in, config.out_channels, kernel_size=3, padding=1)

    @property
    def global_levels(self) -> int:
        """Levels, in run order from the lowest resolution, up to the last one with attention: with
        ``conv_in`` and the mid block, the part whose outputs depend on the whole latent."""
        run_order = list(reversed(self.up))
        return max((r + 1 for r, level in enumerate(run_order) if len(level.attn)), default=0)

    @property
    def local_scale(self) -> int:
        """Size of :meth:`global_stage`'s output relative to the latent grid (1: latent resolution)."""
        return 2 ** max(self.global_levels - 1, 0)

    def _check_zq(self, zq: Tensor | None) -> Tensor | None:
        if self.conditioned and zq is None:
            raise ValueError("the MoVQ decoder (norm='spatial') needs the quantized latent zq")
        return zq if self.conditioned else None

    def global_stage(self, z: Tensor, zq: Tensor | None = None) -> Tensor:
        """``conv_in``, the mid block and the levels up to the last attention (without that level's
        upsampling): latent -> features at ``local_scale`` times the latent resolution."""
        zq = self._check_zq(zq)
        h = self.mid(conv(self.conv_in, z.contiguous(memory_format=preferred_memory_format(z.device))), zq)
        run_order = list(reversed(self.up))[: self.global_levels]
        for r, level in enumerate(run_order):
            h = level(h, zq)
            if level.upsample is not None and r + 1 < len(run_order):
                h = level.upsample(h)
        return h

    def local_stage(self, h: Tensor, zq: Tensor | None = None) -> Tensor:
        """The remaining levels and the output conv: features -> image (NCHW). Each output pixel
        depends only on a neighbourhood of ``h`` (and of ``zq``, the latent it was decoded from)."""
        zq = self._check_zq(zq)
        h = h.contiguous(memory_format=preferred_memory_format(h.device))
        run_order = list(reversed(self.up))
        if self.global_levels and run_order[self.global_levels - 1].upsample is not None:
            h = run_order[self.global_levels - 1].upsample(h)
        for level in run_order[self.global_levels :]:
            h = level(h, zq)
            if level.upsample is not None:
                h = level.upsample(h)
        return conv(self.conv_out, self.norm_out(h, zq, silu=True)).contiguous()

    def forward(self, z: Tensor, zq: Tensor | None = None) -> Tensor:
        return self.local_stage(self.global_stage(z, zq), zq)
