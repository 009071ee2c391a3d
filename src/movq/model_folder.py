"""Model folders: ``config.json`` (a config dataclass) + ``model.safetensors`` (the weights).

One implementation for every movq model that ``save_pretrained`` / ``from_pretrained`` (the codec,
the text-to-image transformer, the diffusion UNet): files are written atomically, weights are
read with safetensors only (never pickle), the config goes through the strict dataclass reader
(an error names the file and the field), and the weights must match the model key for key and
shape for shape.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, TypeVar

from safetensors.torch import save_file
from torch import Tensor, nn

from movq.atomic import atomic_write, atomic_write_text
from movq.strict import dataclass_from_file, state_dict_mismatches

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"

C = TypeVar("C")


def save_weights(path: str | os.PathLike, module: nn.Module) -> Path:
    """Write ``module``'s state dict (detached, contiguous, on CPU) to the safetensors file ``path``, atomically."""
    state = {k: v.detach().contiguous().cpu() for k, v in module.state_dict().items()}
    return atomic_write(path, lambda tmp: save_file(state, tmp, metadata={"format": "pt"}))


def save_model_folder(directory: str | os.PathLike, module: nn.Module, config: Any) -> Path:
    """Write ``config.json`` (``config.to_dict()``) and ``model.safetensors`` into ``directory``."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    save_weights(directory / WEIGHTS_NAME, module)
    atomic_write_text(directory / CONFIG_NAME, json.dumps(config.to_dict(), indent=2) + "\n")
    return directory


def read_model_folder(
    directory: str | os.PathLike, config_class: type[C], what: str, weights_name: str = WEIGHTS_NAME
) -> tuple[C, dict[str, Tensor]]:
    """The config and the weights of a folder written by :func:`save_model_folder`.

    ``what`` names the kind of folder in the error when a file is missing ("a movq codec folder").
    A bad ``config.json`` or weights file is an error naming the file and the problem.
    """
    from movq.hub.safe_load import load_state_file

    directory = Path(directory)
    config_path, weights_path = directory / CONFIG_NAME, directory / weights_name
    for path in (config_path, weights_path):
        if not path.is_file():
            raise FileNotFoundError(f"{path} not found: {what} holds {CONFIG_NAME} and {weights_name}")
    return dataclass_from_file(config_class, config_path), load_state_file(weights_path)


def load_strict(module: nn.Module, state: dict[str, Tensor], context: str) -> None:
    """Load ``state`` into ``module`` requiring exactly its keys and shapes.

    Otherwise ``ValueError("{context}: missing ...; unexpected ...; shape ...")`` lists every mismatch.
    """
    problems = state_dict_mismatches(module.state_dict(), state)
    if problems:
        raise ValueError(f"{context}: " + "; ".join(problems))
    module.load_state_dict(state, strict=True)
