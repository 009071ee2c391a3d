"""``movq.load``: one entry point for registered models, presets, folders and checkpoint files."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch

from movq.codec import Codec
from movq.config import PRESETS, get_preset
from movq.devices import ACCEPTED_DEVICES, resolve_device
from movq.dvae import DVAE
from movq.hub.checkpoints import CHECKPOINT_SUFFIXES, load_dalle, load_local
from movq.hub.download import fetch, package_folder
from movq.hub.registry import FOLDER_FORMATS, REGISTRY, ModelSpec
from movq.model_folder import CONFIG_NAME
from movq.strict import did_you_mean

DEFAULT_MODEL = "movqgan-tiny-photos"
"""The codec the examples use when none is named."""


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
) -> Codec:
    """Return a codec in eval mode on ``device`` with ``dtype``.

    ``name_or_path`` is one of:

    - a registered model name (``movq.list_models()``), downloaded from the Hugging Face Hub (or its
      URL) into the Hub cache: ``revision`` overrides the pinned revision, ``local_files_only=True``
      or ``HF_HUB_OFFLINE=1`` stays offline, ``token`` / ``cache_dir`` go to ``huggingface_hub``;
    - a preset name (``movq.PRESETS``) with ``pretrained=False``;
    - a folder written by ``Codec.save_pretrained``, a diffusers ``VQModel`` folder, or a folder with
      DALL·E's ``encoder.pkl`` + ``decoder.pkl``;
    - a ``.ckpt`` / ``.pt`` / ``.pth`` / ``.bin`` / ``.safetensors`` file in the original (taming /
      MoVQGAN), Lightning-wrapped or diffusers key format, or a ``torch.save(codec.state_dict())``
      of a movq codec (which carries its config); otherwise the architecture comes from ``preset``
      or is inferred from the shapes.

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
    """
    _check_arguments(name_or_path, device, dtype)
    path = Path(name_or_path)
    name = str(name_or_path)
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


def _load_registered(spec: ModelSpec, pretrained: bool, ema: bool | None, hub: dict[str, Any]) -> Codec:
    """A registered model: its weights, or (``pretrained=False``) its architecture with random
    weights; ``hub`` holds :func:`~movq.hub.download.fetch`'s keyword arguments."""
    if not pretrained and spec.format == "dalle":
        codec: Codec = DVAE()  # the published architecture is DVAEConfig's defaults
    elif not pretrained and spec.preset is not None:
        codec = Codec(get_preset(spec.preset))
    elif not pretrained and spec.source == "package":
        codec = load_local(package_folder(spec), pretrained=False)
    elif spec.format == "dalle":
        if ema:
            raise ValueError(f"ema=True, but {spec.name!r} (DALL-E's pickled modules) has no EMA weights. Use ema=None.")
        codec = load_dalle(*fetch(spec, **hub))
    elif spec.source == "package" or spec.format in FOLDER_FORMATS:
        files = spec.filenames if pretrained else tuple(f for f in spec.filenames if f == CONFIG_NAME)
        paths = fetch(spec, files=files, **hub)
        codec = load_local(paths[0] if paths[0].is_dir() else paths[0].parent, ema=ema, pretrained=pretrained)
    else:
        codec = load_local(fetch(spec, **hub)[0], preset=spec.preset, ema=ema)
    codec.config.name = spec.name
    return codec
