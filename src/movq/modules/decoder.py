"""VQGAN / MoVQ convolutional decoder."""

from __future__ import annotations

from torch import Tensor, nn

from movq.config import CodecConfig
from movq.modules.blocks import AttnBlock, ResnetBlock, Upsample
from movq.modules.encoder import Level, MidBlock, level_has_attention
from movq.modules.layout import preferred_memory_format
from movq.modules.norm import make_norm


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

    def forward(self, z: Tensor, zq: Tensor | None = None) -> Tensor:
        if self.conditioned and zq is None:
            raise ValueError("the MoVQ decoder (norm='spatial') needs the quantized latent zq")
        zq = zq if self.conditioned else None
        h = self.mid(self.conv_in(z.contiguous(memory_format=preferred_memory_format(z.device))), zq)
        for level in reversed(self.up):
            h = level(h, zq)
            if level.upsample is not None:
                h = level.upsample(h)
        return self.conv_out(self.norm_out(h, zq, silu=True)).contiguous()
