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

from movq.atomic import atomic_write, atomic_write_text, require_regular_file
from movq.hub.safe_load import load_state_file
from movq.strict import dataclass_from_file, nonfinite_entries, state_dict_mismatches

MODEL_CONFIG_FILE = "config.json"
"""A model folder's architecture: the config dataclass as JSON (not a training run's config)."""
MODEL_WEIGHTS_FILE = "model.safetensors"
"""A model folder's weights (safetensors)."""

C = TypeVar("C")


def save_weights(path: str | os.PathLike, module: nn.Module) -> Path:
    """Write ``module``'s state dict (detached, contiguous, on CPU) to the safetensors file ``path``, atomically."""
    state = {k: v.detach().contiguous().cpu() for k, v in module.state_dict().items()}
    _check_finite(state, path)
    return atomic_write(path, lambda tmp: save_file(state, tmp, metadata={"format": "pt"}))


def _check_finite(state: dict[str, Tensor], path: str | os.PathLike) -> None:
    """Refuse to write weights the loaders would refuse (NaN / inf), before the file is replaced."""
    broken = nonfinite_entries(state)
    if broken:
        raise ValueError(
            f"refusing to write {path}: the weights contain NaN or inf values in {len(broken)} tensor(s) {broken[:8]} "
            "(a diverged model); the file is left as it was"
        )


def save_model_folder(directory: str | os.PathLike, module: nn.Module, config: Any) -> Path:
    """Write ``config.json`` (``config.to_dict()``) and ``model.safetensors`` into ``directory``."""
    return write_folder(directory, config.to_dict(), module.state_dict())


def write_folder(
    directory: str | os.PathLike,
    config: dict[str, Any],
    state: dict[str, Tensor],
    weights_file: str = MODEL_WEIGHTS_FILE,
) -> Path:
    """Write the JSON ``config`` as ``config.json`` and ``state`` (detached, contiguous, on CPU) as the
    safetensors file ``weights_file`` into ``directory`` (created if needed), each atomically; weights
    holding NaN or inf are refused (``ValueError`` naming the file) before anything is written."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    tensors = {k: v.detach().contiguous().cpu() for k, v in state.items()}
    _check_finite(tensors, directory / weights_file)
    atomic_write(directory / weights_file, lambda tmp: save_file(tensors, tmp, metadata={"format": "pt"}))
    atomic_write_text(directory / MODEL_CONFIG_FILE, json.dumps(config, indent=2) + "\n")
    return directory


def read_model_folder(
    directory: str | os.PathLike, config_class: type[C], what: str, weights_name: str = MODEL_WEIGHTS_FILE
) -> tuple[C, dict[str, Tensor]]:
    """The config and the weights of a folder written by :func:`save_model_folder`.

    ``what`` names the kind of folder in the error when a file is missing ("a movq codec folder").
    A bad ``config.json`` or weights file (weights holding NaN or inf included) is an error naming
    the file and the problem.
    """
    directory = Path(directory)
    config_path, weights_path = directory / MODEL_CONFIG_FILE, directory / weights_name
    for path in (config_path, weights_path):
        require_regular_file(path, f"{what} holds {MODEL_CONFIG_FILE} and {weights_name}")
    config = dataclass_from_file(config_class, config_path)
    state = load_state_file(weights_path)
    check_finite_weights(state, weights_path)
    return config, state


def check_finite_weights(state: dict[str, Tensor], source: str | os.PathLike | None = None) -> None:
    """Raise ``ValueError`` naming the tensors of ``state`` (read from the file ``source``, named first
    when given) that hold NaN or inf values (meta tensors and integer buffers are skipped): such
    weights would silently give NaN outputs."""
    broken = nonfinite_entries(state)
    if broken:
        raise ValueError(
            ("" if source is None else f"{source}: ") + f"the weights contain NaN or inf values in {len(broken)} tensor(s) {broken[:8]}; the checkpoint is "
            "corrupt (or from a diverged training run)"
        )


def load_strict(module: nn.Module, state: dict[str, Tensor], context: str) -> None:
    """Load ``state`` into ``module`` requiring exactly its keys and shapes.

    Otherwise ``ValueError("{context}: missing ...; unexpected ...; shape ...")`` lists every mismatch.
    """
    problems = state_dict_mismatches(module.state_dict(), state)
    if problems:
        raise ValueError(f"{context}: " + "; ".join(problems))
    module.load_state_dict(state, strict=True)
