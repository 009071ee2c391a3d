"""Building a codec from local files in any supported layout (the disk half of ``movq.load``).

- a folder written by ``Codec.save_pretrained`` (``config.json`` + ``model.safetensors``);
- a diffusers ``VQModel`` folder (``config.json`` + ``diffusion_pytorch_model.safetensors``/``.bin``);
- a folder holding DALL·E's ``encoder.pkl`` and ``decoder.pkl``;
- a single ``.ckpt`` / ``.pt`` / ``.pth`` / ``.bin`` / ``.safetensors`` file in the original,
  Lightning-wrapped or diffusers key format (architecture from ``preset=`` or from the shapes).

Every load is strict: the error lists missing, unexpected and wrongly shaped keys, and names the file.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from torch import Tensor

from movq.codec import Codec
from movq.config import STATE_DICT_CONFIG_KEY, CodecConfig
from movq.dvae import DVAE, DVAEConfig, dalle_state_dict
from movq.hub.diffusers import (
    DIFFUSERS_WEIGHTS,
    DIFFUSERS_WEIGHTS_BIN,
    config_from_diffusers,
    diffusers_to_original,
)
from movq.hub.formats import WRAPPER_PREFIXES, detect_format, infer_config, unwrap_checkpoint
from movq.hub.safe_load import CheckpointReadError, OpaqueObject, load_state_file, module_state_dict
from movq.model_folder import CONFIG_NAME, WEIGHTS_NAME
from movq.strict import ConfigError, dataclass_from_dict, read_json_object

CHECKPOINT_SUFFIXES = (".ckpt", ".pt", ".pth", ".bin", ".safetensors")
DALLE_FILES = ("encoder.pkl", "decoder.pkl")


def load_local(
    path: str | Path, *, preset: str | None = None, ema: bool | None = None, pretrained: bool = True
) -> Codec:
    """The codec stored at ``path`` (a folder or a checkpoint file), on CPU in float32, eval mode.

    ``pretrained=False`` builds the same architecture with fresh random weights (like diffusers'
    ``from_config``): a folder's ``config.json`` is read, its weights are not. ``preset=`` applies
    only to checkpoint files (folders carry their architecture: refused with a ``ValueError``);
    ``ema=True`` is refused for folders, which hold one set of weights.
    """
    path = Path(path)
    if path.is_dir():
        return _load_folder(path, preset=preset, ema=ema, pretrained=pretrained)
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist")
    if path.suffix not in CHECKPOINT_SUFFIXES:
        raise ValueError(
            f"{path}: unsupported checkpoint type {path.suffix!r}; expected one of {CHECKPOINT_SUFFIXES} "
            "or a folder (save_pretrained / diffusers / DALL-E encoder.pkl + decoder.pkl)"
        )
    return load_state(load_state_file(path), preset=preset, ema=ema, source=str(path), pretrained=pretrained)


def load_state(
    obj: object,
    *,
    preset: str | None = None,
    ema: bool | None = None,
    source: str = "checkpoint",
    pretrained: bool = True,
) -> Codec:
    """A codec from what a checkpoint file held (state dict, Lightning dict, pickled module).

    The architecture is, in this order: ``preset``; the config a movq codec stored in its state
    dict's metadata (:func:`saved_config`); the one the tensor shapes imply. Errors name ``source``.
    """
    if isinstance(obj, OpaqueObject):
        raise ValueError(
            f"{source} holds a pickled module object, not a state dict. For DALL-E's dVAE pass the "
            f"folder holding both {DALLE_FILES[0]} and {DALLE_FILES[1]}."
        )
    try:
        state = unwrap_checkpoint(obj, ema=ema)
        fmt = detect_format(state)
    except ValueError as error:
        raise ValueError(f"{source}: {error}") from None
    if fmt == "diffusers":
        state = diffusers_to_original(state)
    config = saved_config(obj, source) if preset is None else None
    if config is None and fmt == "dalle":
        if preset is not None:
            raise ValueError(
                f"preset={preset!r} does not apply to {source}: it is a DALL-E dVAE checkpoint, whose "
                "architecture is read from its tensors. Drop preset=."
            )
        config = dalle_config(state, source)
    elif config is None:
        config = infer_config(state, preset, source)
    return _build(config, state, pretrained, source)


def saved_config(obj: object, source: str = "checkpoint") -> CodecConfig | DVAEConfig | None:
    """The config a movq codec stored in its state dict (``torch.save(codec.state_dict())``), or ``None``.

    ``Codec.state_dict()`` puts ``config.to_dict()`` into the state dict's ``_metadata`` (see
    :data:`movq.config.STATE_DICT_CONFIG_KEY`) under the codec's prefix: ``""`` for a codec saved
    alone, or a wrapper prefix (``module``, ``model``...) that :func:`unwrap_checkpoint` strips.
    It is checked like a ``config.json`` (a bad one is a :class:`~movq.strict.ConfigError`).
    """
    holders = [obj]
    if isinstance(obj, Mapping):
        holders += [obj[k] for k in ("state_dict", "model_state_dict", "model") if isinstance(obj.get(k), Mapping)]
    for holder in holders:
        metadata = getattr(holder, "_metadata", None)
        if not isinstance(metadata, Mapping):
            continue
        for prefix in ("", *(p.rstrip(".") for p in WRAPPER_PREFIXES)):
            entry = metadata.get(prefix)
            if isinstance(entry, Mapping) and STATE_DICT_CONFIG_KEY in entry:
                data = entry[STATE_DICT_CONFIG_KEY]
                is_dvae = isinstance(data, Mapping) and data.get("architecture") == DVAEConfig.architecture
                return dataclass_from_dict(
                    DVAEConfig if is_dvae else CodecConfig, data, source=f"{source} (config saved in its state dict)"
                )
    return None


def _build(config: CodecConfig | DVAEConfig, state: dict[str, Tensor], pretrained: bool, source: str) -> Codec:
    """``config``'s codec with ``state`` loaded strictly (mismatches name ``source``), or with fresh
    random weights when ``pretrained=False``."""
    cls: type[Codec] = DVAE if isinstance(config, DVAEConfig) else Codec
    try:
        return cls(config).eval() if not pretrained else cls.from_state_dict(config, state)
    except ValueError as error:  # weights that do not match, or a config too large to build
        raise ValueError(f"{source}: {error}") from None


def _refuse_preset_and_ema(directory: Path, kind: str, preset: str | None, ema: bool | None) -> None:
    """Folders carry their own architecture and one set of weights: ``preset=`` and ``ema=True`` are errors."""
    if preset is not None:
        raise ValueError(
            f"preset={preset!r} cannot be used with the folder {directory}: a {kind} carries its own "
            "architecture. preset= is only for single checkpoint files, whose architecture is otherwise "
            "inferred from the tensor shapes. Drop preset=, or use pretrained=False for a random codec of a preset."
        )
    if ema is True:
        raise ValueError(
            f"ema=True, but the folder {directory} ({kind}) holds a single set of weights, not EMA "
            "shadow weights ('model_ema.*' keys exist only in training checkpoints). Use ema=None."
        )


def _load_folder(directory: Path, *, preset: str | None, ema: bool | None, pretrained: bool) -> Codec:
    config_path = directory / CONFIG_NAME
    if all((directory / name).is_file() for name in DALLE_FILES):
        _refuse_preset_and_ema(directory, f"DALL-E {DALLE_FILES[0]} + {DALLE_FILES[1]} folder", preset, ema)
        return load_dalle(directory / DALLE_FILES[0], directory / DALLE_FILES[1], pretrained=pretrained)
    if config_path.is_file():
        data = read_json_object(config_path)
        if data.get("architecture") == DVAEConfig.architecture:
            cls: type[Codec] = DVAE
        elif "_class_name" in data or (
            not (directory / WEIGHTS_NAME).is_file()
            and any((directory / n).is_file() for n in (DIFFUSERS_WEIGHTS, DIFFUSERS_WEIGHTS_BIN))
        ):
            _refuse_preset_and_ema(directory, "diffusers VQModel folder", preset, ema)
            return _load_diffusers_folder(directory, data, pretrained)
        else:
            cls = Codec
        _refuse_preset_and_ema(directory, "movq save_pretrained folder", preset, ema)
        if not pretrained:
            return _build(dataclass_from_dict(cls.config_class, data, source=config_path), {}, False, str(config_path))
        try:
            return cls.from_pretrained(directory)
        except (ConfigError, CheckpointReadError):
            raise  # these name the file already
        except ValueError as error:  # the weights do not match the config
            raise ValueError(f"{directory / WEIGHTS_NAME}: {error}") from None
    raise FileNotFoundError(
        f"{directory} is not a codec folder: expected {CONFIG_NAME} + {WEIGHTS_NAME} (movq save_pretrained), "
        f"{CONFIG_NAME} + {DIFFUSERS_WEIGHTS} (diffusers VQModel), or {DALLE_FILES[0]} + {DALLE_FILES[1]} (DALL-E); "
        f"found {sorted(p.name for p in directory.iterdir())[:10]}"
    )


def _load_diffusers_folder(directory: Path, data: dict, pretrained: bool) -> Codec:
    config_path = directory / CONFIG_NAME
    try:
        config = config_from_diffusers(data, name=directory.name or "diffusers")
    except (ValueError, TypeError, AttributeError) as error:
        raise ConfigError(f"{config_path} is not a usable diffusers VQModel config: {error}") from None
    if not pretrained:
        return _build(config, {}, False, str(config_path))
    for name in (DIFFUSERS_WEIGHTS, DIFFUSERS_WEIGHTS_BIN):
        if (directory / name).is_file():
            weights = directory / name
            break
    else:
        raise FileNotFoundError(f"{directory}: diffusers config found but no {DIFFUSERS_WEIGHTS} / {DIFFUSERS_WEIGHTS_BIN}")
    obj = load_state_file(weights)
    try:
        state = unwrap_checkpoint(obj, ema=False)
        if detect_format(state) == "diffusers":
            state = diffusers_to_original(state)
    except ValueError as error:
        raise ValueError(f"{weights}: {error}") from None
    return _build(config, state, pretrained, str(weights))


def load_dalle(encoder_path: str | Path, decoder_path: str | Path, *, pretrained: bool = True) -> DVAE:
    """DALL·E's dVAE from OpenAI's ``encoder.pkl`` / ``decoder.pkl`` (read with the restricted
    unpickler; PyTorch's zip and pre-1.6 containers). ``pretrained=False``: that architecture,
    random weights."""
    parts = []
    for path in (encoder_path, decoder_path):
        obj = load_state_file(path)
        try:
            state = module_state_dict(obj)
        except RecursionError:  # a pickle can make a module contain itself
            raise CheckpointReadError(f"{path}: the pickled module tree refers to itself or nests too deeply") from None
        if not any(k.startswith("blocks.") for k in state):
            raise ValueError(f"{path} does not hold a DALL-E dVAE module (no 'blocks.*' parameters)")
        parts.append(state)
    state = dalle_state_dict(*parts)
    source = f"{encoder_path} + {decoder_path}"
    return _build(dalle_config(state, source), state, pretrained, source)  # type: ignore[return-value]


def dalle_config(state: Mapping[str, Tensor], source: str = "checkpoint") -> DVAEConfig:
    """The :class:`DVAEConfig` that a DALL-E dVAE state dict (``encoder.blocks.*`` / ``decoder.blocks.*``) needs."""
    try:
        groups = sorted({k.split(".")[2] for k in state if k.startswith("encoder.blocks.group_")})
        return DVAEConfig(
            group_count=len(groups),
            n_hid=state["encoder.blocks.input.w"].shape[0],
            n_blk_per_group=len({k.split(".")[3] for k in state if k.startswith("encoder.blocks.group_1.block_")}),
            n_init=state["decoder.blocks.input.w"].shape[0],
            in_channels=state["encoder.blocks.input.w"].shape[1],
            vocab_size=state["encoder.blocks.output.conv.w"].shape[0],
        )
    except KeyError as error:
        raise ValueError(f"{source}: incomplete DALL-E dVAE checkpoint: missing {error}") from None
