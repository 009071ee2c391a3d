"""Network modules: encoder, decoder, their blocks and normalisation layers, in plain PyTorch;
:mod:`movq.modules.cpu_engine` computes them faster for eager CPU inference."""

from movq.modules.blocks import AttnBlock, Downsample, ResnetBlock, Upsample
from movq.modules.decoder import Decoder
from movq.modules.encoder import Encoder
from movq.modules.norm import GroupNorm, SpatialNorm

__all__ = ["AttnBlock", "Decoder", "Downsample", "Encoder", "GroupNorm", "ResnetBlock", "SpatialNorm", "Upsample"]
