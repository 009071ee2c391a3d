"""Pretrained checkpoints: the model registry, safe file reading, key formats and download.

These modules sit below the codec (which uses :mod:`movq.hub.formats` and :mod:`movq.hub.diffusers`)
and never import it; loading (``movq.load``, ``load_local``, ``load_dalle``) lives in
:mod:`movq.loader`, above the codec, and writing is the codec's (``save_pretrained``, ``push_to_hub``).
"""

from movq.hub.download import WeightsNotAvailableError, fetch
from movq.hub.formats import FORMATS
from movq.hub.registry import REGISTRY, ModelSpec, PublishedFigures, get_spec, list_models
from movq.hub.safe_load import CheckpointReadError, UnsafeCheckpointError, load_state_file

__all__ = [
    "FORMATS",
    "REGISTRY",
    "CheckpointReadError",
    "ModelSpec",
    "PublishedFigures",
    "UnsafeCheckpointError",
    "WeightsNotAvailableError",
    "fetch",
    "get_spec",
    "list_models",
    "load_state_file",
]
