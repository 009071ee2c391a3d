"""``movq.load``: a model name or a path -> a codec, in one file.

It reads top to bottom:

1. check the arguments, before anything is read (:func:`load`, :func:`_check_arguments`);
2. resolve the source: a local folder or checkpoint file (:func:`load_local`), a registered model
   on the Hugging Face Hub / at a URL / shipped in the package (:func:`_load_registered`), an
   architecture preset, or any Hub repo id holding a codec folder (:func:`_load_repo`);
3. read its config and state, by format: each format of :data:`movq.hub.formats.FORMATS` has one
   reader here (folders: :data:`FOLDER_READERS`; checkpoint files: :func:`codec_from_state`;
   DALL·E's ``encoder.pkl`` + ``decoder.pkl``: :func:`load_dalle`);
4. build the codec and load the weights strictly (:func:`_build`): the error lists missing,
   unexpected and wrongly shaped keys, and names the file.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from movq.atomic import require_regular_file
from movq.codec import Codec
from movq.config import PRESETS, STATE_DICT_CONFIG_KEY, CodecConfig, get_preset
from movq.devices import ACCEPTED_DEVICES, resolve_device
from movq.dvae import DVAE, DVAEConfig, dalle_state_dict
from movq.hub.diffusers import (
    DIFFUSERS_WEIGHTS,
    DIFFUSERS_WEIGHTS_BIN,
    config_from_diffusers,
    diffusers_to_original,
)
from movq.hub.download import (
    WeightsNotAvailableError,
    fetch,
    fetch_repo_folder,
    package_folder,
    repo_folder_files,
)
from movq.hub.formats import (
    DALLE,
    DIFFUSERS,
    FORMATS,
    LLAMAGEN,
    MAGVIT2,
    MASKGIT,
    MOVQ,
    VAR,
    VQGAN_LC,
    WRAPPER_PREFIXES,
    detect_format,
    infer_config,
    unwrap_checkpoint,
)
from movq.hub.llamagen import read_llamagen
from movq.hub.magvit2 import read_magvit2
from movq.hub.maskgit import read_maskgit
from movq.hub.registry import REGISTRY, ModelSpec
from movq.hub.safe_load import CheckpointReadError, OpaqueObject, load_state_file, module_state_dict
from movq.hub.var import read_var
from movq.hub.vqgan_lc import read_vqgan_lc
from movq.model_folder import MODEL_CONFIG_FILE, MODEL_WEIGHTS_FILE
from movq.strict import ConfigError, dataclass_from_dict, did_you_mean, read_json_object

DEFAULT_MODEL = "movqgan-tiny-photos"
"""The codec the examples use when none is named."""
CHECKPOINT_SUFFIXES = (".ckpt", ".pt", ".pth", ".bin", ".safetensors")
"""Single checkpoint files (formats ``original``, ``lightning``, or ``diffusers`` keys)."""
DALLE_FILES = ("encoder.pkl", "decoder.pkl")
"""The two files of the ``dalle`` format."""


# ------------------------------------------------------------------------------ 1. arguments


def load(
    name_or_path: str | os.PathLike,
    *,
    pretrained: bool = True,
    preset: str | None = None,
    device: torch.device | str | None = None,
    dtype: torch.dtype | None = None,
    ema: bool | None = None,
    revision: str | None = None,
    local_files_only: bool = False,
    cache_dir: str | os.PathLike | None = None,
    token: str | bool | None = None,
    subfolder: str | None = None,
) -> Codec:
    """Return a codec in eval mode on ``device`` with ``dtype``.

    ``name_or_path`` is one of:

    - a registered model name (``movq.list_models()``), downloaded from the Hugging Face Hub (or its
      URL) into the Hub cache: ``revision`` overrides the pinned revision, ``local_files_only=True``
      or ``HF_HUB_OFFLINE=1`` stays offline, ``token`` / ``cache_dir`` go to ``huggingface_hub``;
    - a preset name (``movq.PRESETS``) with ``pretrained=False``;
    - any Hugging Face Hub repo id (``"owner/name"``) whose root or ``subfolder`` (also spelled
      ``"owner/name/subfolder"``) holds a folder of one of the kinds below (not a single checkpoint
      file: download it and pass its path), with ``revision`` (default ``main``), ``token``,
      ``cache_dir``, ``local_files_only`` and ``HF_HUB_OFFLINE`` as for registered models; only the
      files the folder formats read are downloaded (``config.json`` alone with ``pretrained=False``).
      Registered names, presets and existing local paths come first;
    - a folder written by ``Codec.save_pretrained``, a diffusers ``VQModel`` folder, or a folder with
      DALL·E's ``encoder.pkl`` + ``decoder.pkl``;
    - a ``.ckpt`` / ``.pt`` / ``.pth`` / ``.bin`` / ``.safetensors`` file in the original (taming /
      MoVQGAN), Lightning-wrapped (IBQ's too), diffusers, LlamaGen, MaskGIT VQGAN
      (``maskgit-vqgan-imagenet-f16-256.bin``), VQGAN-LC (``checkpoint-last.pth``), VAR
      (``vae_ch160v4096z32.pth``), Open-MAGVIT2 (``imagenet_256_L.ckpt``, ``imagenet_128_L.ckpt``) or
      SimVQ (its Lightning ``.ckpt``) key format, or a
      ``torch.save(codec.state_dict())`` of a movq codec (which carries its config); otherwise the
      architecture comes from ``preset`` or is inferred from the shapes.

    ``pretrained=False`` builds the architecture of any of these with fresh random weights
    (deterministic under ``torch.manual_seed``), like diffusers' ``from_config``: a folder's or
    registered model's config is read (a Hub model with a ``config.json`` fetches only that file),
    its weights are not.

    ``preset`` is only for checkpoint files (and may repeat a registered model's own preset or the
    preset name being loaded); with a folder, a different registered model or preset, or a
    DALL-E checkpoint it is a ``ValueError``, because those carry their architecture.

    ``ema``: ``None`` uses EMA weights when the checkpoint has them, ``True`` requires them (an error
    for folders and DALL-E files, which hold one set of weights), ``False`` ignores them; with
    ``pretrained=False`` it must stay ``None``. Loading is strict: missing / unexpected /
    mis-shaped keys are an error. Unknown names suggest the closest known ones. ``device``, ``dtype``
    and ``revision`` are checked before anything is read (``revision`` only applies to Hub models).
    ``subfolder`` is the folder inside a Hub repo (or a local folder) that holds the codec.
    """
    _check_arguments(name_or_path, device, dtype)
    path = Path(name_or_path)
    name = str(name_or_path)
    if subfolder is not None:
        if name in REGISTRY or name in PRESETS:
            raise ValueError(
                f"subfolder={subfolder!r} applies to Hub repo ids and local folders, not to the "
                f"{'registered model' if name in REGISTRY else 'preset'} {name!r}, which knows where its files are"
            )
        if path.is_dir():
            path = path / subfolder
            if not path.is_dir():
                raise FileNotFoundError(f"{path} does not exist (subfolder={subfolder!r} of {name})")
    if revision is not None and (path.exists() or name in PRESETS or (name in REGISTRY and REGISTRY[name].source != "hub")):
        where = "a local path" if path.exists() else (
            "an architecture preset" if name not in REGISTRY else f"shipped from {REGISTRY[name].location}")
        raise ValueError(f"revision={revision!r} only applies to models on the Hugging Face Hub, but {name!r} is {where}")
    if ema is not None and not pretrained:
        raise ValueError(
            f"ema={ema!r} chooses which stored weights to load, but pretrained=False loads none: leave ema unset"
        )
    if path.exists():
        codec = load_local(path, preset=preset, ema=ema, pretrained=pretrained)
    elif name in REGISTRY:
        spec = REGISTRY[name]
        if preset is not None and preset != spec.preset:
            raise ValueError(
                f"preset={preset!r} cannot be used with the registered model {name!r}: its architecture is "
                f"{'the preset ' + repr(spec.preset) if spec.preset else 'given by its own files'}. To read its "
                "weights into another architecture, pass the downloaded file's path with preset=."
            )
        hub = {"revision": revision, "local_files_only": local_files_only, "cache_dir": cache_dir, "token": token}
        codec = _load_registered(spec, pretrained, ema, hub)
    elif name in PRESETS:
        if pretrained:
            raise ValueError(
                f"{name!r} is an architecture preset without published weights: use pretrained=False for a "
                f"random codec, or a registered model: {sorted(REGISTRY)}"
            )
        if preset is not None and preset != name:
            raise ValueError(f"conflicting architectures: the preset {name!r} and preset={preset!r}; pass one")
        codec = Codec(get_preset(name))
    elif (repo := split_repo_id(name)) is not None and path.suffix not in CHECKPOINT_SUFFIXES:
        repo_id, inner = repo
        if inner is not None and subfolder is not None:
            raise ValueError(
                f"{name!r} already names the subfolder {inner!r} of the Hub repo {repo_id!r}; drop subfolder={subfolder!r}"
            )
        if preset is not None:
            raise ValueError(
                f"preset={preset!r} cannot be used with the Hub repo {repo_id!r}: a codec folder carries its own "
                "architecture. Drop preset=, or download a checkpoint file and pass its path with preset=."
            )
        hub = {"revision": revision, "local_files_only": local_files_only, "cache_dir": cache_dir, "token": token}
        try:
            codec = _load_repo(repo_id, inner or subfolder, pretrained, ema, hub)
        except WeightsNotAvailableError as error:
            raise WeightsNotAvailableError(f"{error} (No local file or folder {name!r} exists either.)") from None
    elif path.suffix in CHECKPOINT_SUFFIXES or os.sep in name:
        raise FileNotFoundError(f"{name} does not exist")
    elif not pretrained:
        raise ValueError(
            f"unknown preset {name!r} for pretrained=False: {did_you_mean(name, [*PRESETS, *REGISTRY])}presets: "
            f"{sorted(PRESETS)}; registered models: {sorted(REGISTRY)}; and no such file or folder"
        )
    else:
        raise ValueError(
            f"unknown model {name!r}: {did_you_mean(name, [*REGISTRY, *PRESETS])}not a registered model "
            f"{sorted(REGISTRY)}, not a preset {sorted(PRESETS)} (for pretrained=False), and no such file or folder"
        )
    return codec.to(device=device, dtype=dtype).eval()


def _check_arguments(name_or_path: object, device: object, dtype: object) -> None:
    """``TypeError`` / ``ValueError`` for arguments that cannot work, before any file is read."""
    if not isinstance(name_or_path, (str, os.PathLike)):
        raise TypeError(
            f"name_or_path must be a model name or a path (str or os.PathLike), got {type(name_or_path).__name__}"
        )
    if not str(name_or_path).strip():
        raise ValueError(
            "empty model name: pass a registered name (movq.list_models()), a preset with pretrained=False, "
            "or the path of a folder or checkpoint file"
        )
    if device is not None:
        try:
            resolved = torch.device(device)  # type: ignore[arg-type]
        except (RuntimeError, TypeError, ValueError):
            raise ValueError(f"unknown device {str(device)!r}; expected {ACCEPTED_DEVICES}") from None
        if resolved.type in ("cuda", "mps"):
            resolve_device(resolved)  # ValueError when this machine has no such device
    if dtype is not None and not (isinstance(dtype, torch.dtype) and dtype.is_floating_point):
        raise TypeError(
            f"dtype must be a floating-point torch.dtype (torch.float32, torch.bfloat16, torch.float16), got {dtype!r}"
        )


# ------------------------------------------------------------------------------ 2. sources


def _load_registered(spec: ModelSpec, pretrained: bool, ema: bool | None, hub: dict[str, Any]) -> Codec:
    """A registered model: its weights, or (``pretrained=False``) its architecture with random
    weights; ``hub`` holds :func:`~movq.hub.download.fetch`'s keyword arguments."""
    layout = FORMATS[spec.format].layout
    if not pretrained and spec.format == DALLE:
        codec: Codec = DVAE()  # the published architecture is DVAEConfig's defaults
    elif not pretrained and spec.preset is not None:
        codec = Codec(get_preset(spec.preset))
    elif not pretrained and spec.source == "package":
        codec = load_local(package_folder(spec), pretrained=False)
    elif spec.format == DALLE:
        if ema:
            raise ValueError(f"ema=True, but {spec.name!r} (DALL-E's pickled modules) has no EMA weights. Use ema=None.")
        codec = load_dalle(*fetch(spec, **hub))
    elif spec.source == "hub" and layout == "folder" and not spec.filenames:  # read like a Hub repo (sub)folder
        codec = _load_repo(spec.repo_id or "", spec.subfolder, pretrained, ema,
                           {**hub, "revision": hub["revision"] or spec.revision})
    elif spec.source == "package" or layout == "folder":
        files = spec.filenames if pretrained else tuple(f for f in spec.filenames if f == MODEL_CONFIG_FILE)
        paths = fetch(spec, files=files, **hub)
        codec = load_local(paths[0] if paths[0].is_dir() else paths[0].parent, ema=ema, pretrained=pretrained)
    else:  # a single checkpoint file
        codec = load_local(fetch(spec, **hub)[0], preset=spec.preset, ema=ema)
    codec.config.name = spec.name
    return codec


def split_repo_id(name: str) -> tuple[str, str | None] | None:
    """``(repo_id, subfolder)`` when ``name`` is spelled like a Hugging Face Hub model repo id,
    ``"owner/name"`` (``huggingface_hub``'s ``validate_repo_id``, with the owner required), optionally
    followed by a folder inside it, ``"owner/name/sub/folder"`` (so that command-line tools taking one
    model string reach subfolders); ``None`` otherwise."""
    parts = name.split("/")
    if len(parts) < 2 or any(p in ("", ".", "..") for p in parts):
        return None
    from huggingface_hub.errors import HFValidationError
    from huggingface_hub.utils import validate_repo_id

    repo_id = "/".join(parts[:2])
    try:
        validate_repo_id(repo_id)
    except HFValidationError:
        return None
    return repo_id, ("/".join(parts[2:]) or None)


def _load_repo(repo_id: str, subfolder: str | None, pretrained: bool, ema: bool | None, hub: dict[str, Any]) -> Codec:
    """A codec folder (any of :data:`FOLDER_FILES`) at the root or ``subfolder`` of the Hub repo
    ``repo_id``: only the files the folder formats read are fetched (:func:`fetch_repo_folder`);
    a repo folder holding none of them is a ``FileNotFoundError`` listing the files it has."""
    patterns = sorted({f for files in FOLDER_FILES.values() for f in files if pretrained or not f.endswith(WEIGHT_SUFFIXES)})
    folder = fetch_repo_folder(repo_id, subfolder=subfolder, patterns=patterns, **hub)
    where = f"hf://{repo_id}{'/' + subfolder.strip('/') if subfolder else ''}@{hub['revision'] or 'main'}"
    try:
        fmt: str | None = folder_format(folder)[0] if folder.is_dir() else None
    except FileNotFoundError:
        fmt = None
    weights = [f for f in FOLDER_FILES.get(fmt or "", ()) if f.endswith(WEIGHT_SUFFIXES)]
    if pretrained and weights and not any((folder / f).is_file() for f in weights):
        fmt = None  # a config.json alone (another library's model, or an upload that lacks its weights)
    if fmt is None:
        raise FileNotFoundError(
            f"{where} holds no codec folder: found {repo_folder_files(repo_id, subfolder, folder, **hub)}; expected "
            + "; ".join(f"{' + '.join(FOLDER_FILES[f])} ({FOLDER_READERS[f][0]})" for f in FOLDER_FILES)
            + ". A single checkpoint file: download it (huggingface_hub.hf_hub_download) and pass its path."
        )
    codec = load_local(folder, ema=ema, pretrained=pretrained)
    if fmt == DIFFUSERS:  # a diffusers config has no name: the repo's is the codec's
        codec.config.name = f"{repo_id}/{subfolder.strip('/')}" if subfolder else repo_id
    return codec


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
        fmt, data = folder_format(path)
        kind, reader = FOLDER_READERS[fmt]
        _refuse_preset_and_ema(path, kind, preset, ema)
        return reader(path, data, pretrained)
    require_regular_file(path, "expected a codec folder, a checkpoint file or a registered name (movq.list_models())")
    if path.suffix not in CHECKPOINT_SUFFIXES:
        raise ValueError(
            f"{path}: unsupported checkpoint type {path.suffix!r}; expected one of {CHECKPOINT_SUFFIXES} "
            "or a folder (save_pretrained / diffusers / DALL-E encoder.pkl + decoder.pkl)"
        )
    return codec_from_state(load_state_file(path), preset=preset, ema=ema, source=str(path), pretrained=pretrained)


def folder_format(directory: Path) -> tuple[str, dict[str, Any]]:
    """The format of a codec folder (``"dalle"``, ``"diffusers"`` or ``"movq"``) and its parsed
    ``config.json`` (``{}`` for DALL-E); ``FileNotFoundError`` when it is none of them."""
    if all((directory / name).is_file() for name in DALLE_FILES):
        return DALLE, {}
    config_path = directory / MODEL_CONFIG_FILE
    if not config_path.is_file():
        raise FileNotFoundError(
            f"{directory} is not a codec folder: expected {MODEL_CONFIG_FILE} + {MODEL_WEIGHTS_FILE} (movq "
            f"save_pretrained), {MODEL_CONFIG_FILE} + {DIFFUSERS_WEIGHTS} (diffusers VQModel), or "
            f"{DALLE_FILES[0]} + {DALLE_FILES[1]} (DALL-E); found {sorted(p.name for p in directory.iterdir())[:10]}"
        )
    data = read_json_object(config_path)
    if data.get("architecture") != DVAEConfig.architecture and (
        "_class_name" in data
        or (
            not (directory / MODEL_WEIGHTS_FILE).is_file()
            and any((directory / n).is_file() for n in (DIFFUSERS_WEIGHTS, DIFFUSERS_WEIGHTS_BIN))
        )
    ):
        return DIFFUSERS, data
    return MOVQ, data


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


# ------------------------------------------------------------------------------ 3. formats: config + state


def _read_movq_folder(directory: Path, data: dict[str, Any], pretrained: bool) -> Codec:
    """A ``save_pretrained`` folder: :meth:`Codec.from_pretrained` of the class its config names."""
    cls: type[Codec] = DVAE if data.get("architecture") == DVAEConfig.architecture else Codec
    if pretrained:
        return cls.from_pretrained(directory)
    config_path = directory / MODEL_CONFIG_FILE
    return _build(dataclass_from_dict(cls.config_class, data, source=config_path), {}, False, str(config_path))


def _read_diffusers_folder(directory: Path, data: dict[str, Any], pretrained: bool) -> Codec:
    """A diffusers ``VQModel`` folder: its ``config.json`` converted, its weights' keys converted."""
    config_path = directory / MODEL_CONFIG_FILE
    try:
        config = config_from_diffusers(data, name=directory.name or DIFFUSERS)
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
        if detect_format(state) == DIFFUSERS:
            state = diffusers_to_original(state)
    except ValueError as error:
        raise ValueError(f"{weights}: {error}") from None
    return _build(config, state, pretrained, str(weights))


def _read_dalle_folder(directory: Path, data: dict[str, Any], pretrained: bool) -> Codec:
    """A folder holding DALL·E's ``encoder.pkl`` and ``decoder.pkl``."""
    return load_dalle(directory / DALLE_FILES[0], directory / DALLE_FILES[1], pretrained=pretrained)


FOLDER_READERS: dict[str, tuple[str, Callable[[Path, dict[str, Any], bool], Codec]]] = {
    MOVQ: ("movq save_pretrained folder", _read_movq_folder),
    DIFFUSERS: ("diffusers VQModel folder", _read_diffusers_folder),
    DALLE: (f"DALL-E {DALLE_FILES[0]} + {DALLE_FILES[1]} folder", _read_dalle_folder),
}
"""Per folder format (:func:`folder_format`): what to call it in errors, and its reader
``(directory, parsed config.json, pretrained) -> codec``."""
FOLDER_FILES: dict[str, tuple[str, ...]] = {
    MOVQ: (MODEL_CONFIG_FILE, MODEL_WEIGHTS_FILE),
    DIFFUSERS: (MODEL_CONFIG_FILE, DIFFUSERS_WEIGHTS, DIFFUSERS_WEIGHTS_BIN),
    DALLE: DALLE_FILES,
}
"""Per folder format, the files its reader may read (a Hub repo id fetches only these; a diffusers
folder needs one of its two weight files). Anything else in a folder (``README.md``...) is ignored."""
WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pkl")
"""Files of :data:`FOLDER_FILES` that hold weights: not fetched with ``pretrained=False``."""


def codec_from_state(
    obj: object,
    *,
    preset: str | None = None,
    ema: bool | None = None,
    source: str = "checkpoint",
    pretrained: bool = True,
) -> Codec:
    """A codec from what a checkpoint file held (state dict, Lightning dict, pickled module).

    The key format (``original``, ``diffusers`` or ``dalle``) is detected. The architecture is, in
    this order: ``preset``; the config a movq codec stored in its state dict's metadata
    (:func:`saved_config`); the one the tensor shapes imply. Errors name ``source``.
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
    if fmt == DIFFUSERS:
        state = diffusers_to_original(state)
    if fmt == LLAMAGEN:
        return _build(*read_llamagen(state, preset, source), pretrained, source)
    if fmt == MASKGIT:
        return _build(*read_maskgit(state, preset, source), pretrained, source)
    if fmt == VQGAN_LC:
        return _build(*read_vqgan_lc(state, preset, source), pretrained, source)
    if fmt == VAR:
        return _build(*read_var(state, preset, source), pretrained, source)
    if fmt == MAGVIT2:
        return _build(*read_magvit2(state, preset, source), pretrained, source)
    config = saved_config(obj, source) if preset is None else None
    if config is None and fmt == DALLE:
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


# ------------------------------------------------------------------------------ 4. build


def _build(config: CodecConfig | DVAEConfig, state: dict[str, Tensor], pretrained: bool, source: str) -> Codec:
    """``config``'s codec with ``state`` loaded strictly (mismatches name ``source``), or with fresh
    random weights when ``pretrained=False``."""
    cls: type[Codec] = DVAE if isinstance(config, DVAEConfig) else Codec
    try:
        return cls(config).eval() if not pretrained else cls.from_state_dict(config, state)
    except ValueError as error:  # weights that do not match, or a config too large to build
        raise ValueError(f"{source}: {error}") from None
