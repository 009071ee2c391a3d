"""Pretrained checkpoints: the model registry, safe file reading, key formats, download and export."""

from movq.hub.checkpoints import load_dalle, load_local
from movq.hub.download import WeightsNotAvailableError, fetch
from movq.hub.export import push_to_hub, save_diffusers
from movq.hub.registry import REGISTRY, ModelSpec, get_spec, list_models
from movq.hub.safe_load import CheckpointReadError, UnsafeCheckpointError, load_state_file

__all__ = [
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
