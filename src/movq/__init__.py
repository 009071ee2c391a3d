"""movq: image tokenizers (VQ-VAE / VQGAN / MoVQGAN) for PyTorch.

>>> import movq
>>> codec = movq.load("movqgan-tiny", pretrained=False)
>>> tokens = codec.encode(image)          # LongTensor [B, H/8, W/8]
>>> image2 = codec.decode(tokens)         # float [B, 3, H, W] in [-1, 1]
"""

from movq.codec import Codec, CodecOutput
from movq.config import PRESETS, CodecConfig, get_preset
from movq.dvae import DVAE, DVAEConfig
from movq.hub import list_models
from movq.loader import DEFAULT_MODEL, load
from movq.modules import Decoder, Encoder, SpatialNorm
from movq.quantizers import Quantizer, QuantizerOutput

__version__ = "0.1.0"

__all__ = [
    "DEFAULT_MODEL",
    "PRESETS",
    "Codec",
    "CodecConfig",
    "CodecOutput",
    "DVAE",
    "DVAEConfig",
    "Decoder",
    "Encoder",
    "Quantizer",
    "QuantizerOutput",
    "SpatialNorm",
    "get_preset",
    "list_models",
    "load",
]
