"""Pretrained checkpoints: the model registry, safe file reading, key formats, download and export.

These modules sit below the codec (which uses :mod:`movq.hub.formats` and :mod:`movq.hub.diffusers`);
loading (``load_local``, ``load_dalle``) lives with ``movq.load`` in :mod:`movq.loader`, above the
codec, and is re-exported here on first access so that importing this package never imports the codec.
"""

from typing import Any

from movq.hub.download import WeightsNotAvailableError, fetch
from movq.hub.export import push_to_hub, save_diffusers
from movq.hub.formats import FORMATS
from movq.hub.registry import REGISTRY, ModelSpec, get_spec, list_models
from movq.hub.safe_load import CheckpointReadError, UnsafeCheckpointError, load_state_file

_FROM_LOADER = ("load_dalle", "load_local")

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


def __getattr__(name: str) -> Any:
    if name in _FROM_LOADER:
        from movq import loader

        return getattr(loader, name)
    raise AttributeError(f"module 'movq.hub' has no attribute {name!r}")
