"""Building a codec from local files in any supported layout (the disk half of ``movq.load``).

- a folder written by ``Codec.save_pretrained`` (``config.json`` + ``model.safetensors``);
- a diffusers ``VQModel`` folder (``config.json`` + ``diffusion_pytorch_model.safetensors``/``.bin``);
- a folder holding DALL·E's ``encoder.pkl`` and ``decoder.pkl``;
- a single ``.ckpt`` / ``.pt`` / ``.pth`` / ``.bin`` / ``.safetensors`` file in the original,
  Lightning-wrapped or diffusers key format (architecture from ``preset=`` or from the shapes).

Every load is strict: the error lists missing, unexpected and wrongly shaped keys.
"""

from __future__ import annotations

import json
from pathlib import Path

from torch import Tensor

from movq.codec import CONFIG_NAME, WEIGHTS_NAME, Codec
from movq.dvae import DVAE, DVAEConfig, dalle_state_dict
from movq.hub.diffusers import (
    DIFFUSERS_WEIGHTS,
    DIFFUSERS_WEIGHTS_BIN,
    config_from_diffusers,
    diffusers_to_original,
    is_diffusers_folder,
)
from movq.hub.formats import detect_format, infer_config, unwrap_checkpoint
from movq.hub.safe_load import OpaqueObject, load_state_file, module_state_dict

CHECKPOINT_SUFFIXES = (".ckpt", ".pt", ".pth", ".bin", ".safetensors")
DALLE_FILES = ("encoder.pkl", "decoder.pkl")


def load_local(path: str | Path, *, preset: str | None = None, ema: bool | None = None) -> Codec:
    """The codec stored at ``path`` (a folder or a checkpoint file), on CPU in float32, eval mode."""
    path = Path(path)
    if path.is_dir():
        return _load_folder(path, preset=preset, ema=ema)
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist")
    if path.suffix not in CHECKPOINT_SUFFIXES:
        raise ValueError(
            f"{path}: unsupported checkpoint type {path.suffix!r}; expected one of {CHECKPOINT_SUFFIXES} "
            "or a folder (save_pretrained / diffusers / DALL-E encoder.pkl + decoder.pkl)"
        )
    return load_state(load_state_file(path), preset=preset, ema=ema, source=str(path))


def load_state(obj: object, *, preset: str | None = None, ema: bool | None = None, source: str = "checkpoint") -> Codec:
    """A codec from what a checkpoint file held (state dict, Lightning dict, pickled module)."""
    if isinstance(obj, OpaqueObject):
        raise ValueError(
            f"{source} holds a pickled module object, not a state dict. For DALL-E's dVAE pass the "
            f"folder holding both {DALLE_FILES[0]} and {DALLE_FILES[1]}."
        )
    state = unwrap_checkpoint(obj, ema=ema)
    fmt = detect_format(state)
    if fmt == "dalle":
        return _dalle_from_state(state)
    if fmt == "diffusers":
        state = diffusers_to_original(state)
    config = infer_config(state, preset)
    return Codec.from_state_dict(config, state)


def _load_folder(directory: Path, *, preset: str | None, ema: bool | None) -> Codec:
    config_path = directory / CONFIG_NAME
    if all((directory / name).is_file() for name in DALLE_FILES):
        return load_dalle(directory / DALLE_FILES[0], directory / DALLE_FILES[1])
    if config_path.is_file():
        data = json.loads(config_path.read_text())
        if data.get("architecture") == "dalle-dvae":
            return DVAE.from_pretrained(directory)
        if (directory / WEIGHTS_NAME).is_file() and "_class_name" not in data:
            return Codec.from_pretrained(directory)
        if is_diffusers_folder(directory):
            return _load_diffusers_folder(directory, data)
    raise FileNotFoundError(
        f"{directory} is not a codec folder: expected {CONFIG_NAME} + {WEIGHTS_NAME} (movq save_pretrained), "
        f"{CONFIG_NAME} + {DIFFUSERS_WEIGHTS} (diffusers VQModel), or {DALLE_FILES[0]} + {DALLE_FILES[1]} (DALL-E); "
        f"found {sorted(p.name for p in directory.iterdir())[:10]}"
    )


def _load_diffusers_folder(directory: Path, data: dict) -> Codec:
    for name in (DIFFUSERS_WEIGHTS, DIFFUSERS_WEIGHTS_BIN):
        if (directory / name).is_file():
            weights = directory / name
            break
    else:
        raise FileNotFoundError(f"{directory}: diffusers config found but no {DIFFUSERS_WEIGHTS} / {DIFFUSERS_WEIGHTS_BIN}")
    config = config_from_diffusers(data, name=directory.name or "diffusers")
    state = unwrap_checkpoint(load_state_file(weights), ema=False)
    if detect_format(state) == "diffusers":
        state = diffusers_to_original(state)
    return Codec.from_state_dict(config, state)


def load_dalle(encoder_path: str | Path, decoder_path: str | Path) -> DVAE:
    """DALL·E's dVAE from OpenAI's ``encoder.pkl`` / ``decoder.pkl`` (read with the restricted unpickler)."""
    parts = []
    for path in (encoder_path, decoder_path):
        obj = load_state_file(path)
        state = module_state_dict(obj)
        if not any(k.startswith("blocks.") for k in state):
            raise ValueError(f"{path} does not hold a DALL-E dVAE module (no 'blocks.*' parameters)")
        parts.append(state)
    return _dalle_from_state(dalle_state_dict(*parts))


def _dalle_from_state(state: dict[str, Tensor]) -> DVAE:
    try:
        groups = sorted({k.split(".")[2] for k in state if k.startswith("encoder.blocks.group_")})
        config = DVAEConfig(
            group_count=len(groups),
            n_hid=state["encoder.blocks.input.w"].shape[0],
            n_blk_per_group=len({k.split(".")[3] for k in state if k.startswith("encoder.blocks.group_1.block_")}),
            n_init=state["decoder.blocks.input.w"].shape[0],
            in_channels=state["encoder.blocks.input.w"].shape[1],
            vocab_size=state["encoder.blocks.output.conv.w"].shape[0],
        )
    except KeyError as error:
        raise ValueError(f"incomplete DALL-E dVAE checkpoint: missing {error}") from None
    return DVAE.from_state_dict(config, state)
