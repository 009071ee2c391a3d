"""movq: image tokenizers (VQ-VAE / VQGAN / MoVQGAN) for PyTorch.

>>> import movq
>>> codec = movq.load("movqgan-tiny", pretrained=False)
>>> tokens = codec.encode(image)          # LongTensor [B, H/8, W/8]
>>> image2 = codec.decode(tokens)         # float [B, 3, H, W] in [-1, 1]

The user API is below; the building blocks live one level down: :mod:`movq.modules` (``Encoder``,
``Decoder``, ``SpatialNorm``), :mod:`movq.quantizers` (``Quantizer``, ``QuantizerOutput``) and
:mod:`movq.dvae` (``DVAE``, ``DVAEConfig``).
"""

import importlib
import warnings
from typing import Any

from movq.codec import Codec, CodecOutput
from movq.config import PRESETS, CodecConfig, get_preset
from movq.hub import list_models
from movq.loader import DEFAULT_MODEL, load

__version__ = "0.1.0"

__all__ = [
    "DEFAULT_MODEL",
    "PRESETS",
    "Codec",
    "CodecConfig",
    "CodecOutput",
    "__version__",
    "get_preset",
    "list_models",
    "load",
]

_MOVED = {  # deprecated in 0.2: importable from movq for one more release
    "Encoder": "movq.modules",
    "Decoder": "movq.modules",
    "SpatialNorm": "movq.modules",
    "Quantizer": "movq.quantizers",
    "QuantizerOutput": "movq.quantizers",
    "DVAE": "movq.dvae",
    "DVAEConfig": "movq.dvae",
}


def __getattr__(name: str) -> Any:
    if name in _MOVED:
        warnings.warn(f"movq.{name} is deprecated: import it from {_MOVED[name]}", DeprecationWarning, stacklevel=2)
        return getattr(importlib.import_module(_MOVED[name]), name)
    raise AttributeError(f"module 'movq' has no attribute {name!r}")
