"""Pretrained checkpoints: the model registry, safe file reading, key formats, download and export.

Loading (``load_local``, ``load_dalle``) lives with ``movq.load`` in :mod:`movq.loader`.
"""

from movq.hub.download import WeightsNotAvailableError, fetch
from movq.hub.export import push_to_hub, save_diffusers
from movq.hub.formats import FORMATS
from movq.hub.registry import REGISTRY, ModelSpec, get_spec, list_models
from movq.hub.safe_load import CheckpointReadError, UnsafeCheckpointError, load_state_file
from movq.loader import load_dalle, load_local

__all__ = [
    "FORMATS",
    "REGISTRY",
    "CheckpointReadError",
    "ModelSpec",
    "UnsafeCheckpointError",
    "WeightsNotAvailableError",
    "fetch",
    "get_spec",
    "list_models",
    "load_dalle",
    "load_local",
    "load_state_file",
    "push_to_hub",
    "save_diffusers",
]
