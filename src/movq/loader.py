"""``movq.load``: one entry point for registered models, presets, folders and checkpoint files."""

from __future__ import annotations

import os
from pathlib import Path

import torch

from movq.codec import Codec
from movq.config import PRESETS, get_preset
from movq.hub.checkpoints import CHECKPOINT_SUFFIXES, load_dalle, load_local
from movq.hub.download import fetch
from movq.hub.registry import REGISTRY, ModelSpec

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
    - a preset name (``movq.PRESETS``) with ``pretrained=False``: randomly initialised
      (deterministic under ``torch.manual_seed``); registered names also work with ``pretrained=False``;
    - a folder written by ``Codec.save_pretrained``, a diffusers ``VQModel`` folder, or a folder with
      DALL·E's ``encoder.pkl`` + ``decoder.pkl``;
    - a ``.ckpt`` / ``.pt`` / ``.pth`` / ``.bin`` / ``.safetensors`` file in the original (taming /
      MoVQGAN), Lightning-wrapped or diffusers key format; the architecture comes from ``preset``
      or is inferred from the shapes.

    ``ema``: ``None`` uses EMA weights when the checkpoint has them, ``True`` requires them,
    ``False`` ignores them. Loading is strict: missing / unexpected / mis-shaped keys are an error.
    """
    path = Path(name_or_path)
    name = str(name_or_path)
    if path.exists():
        codec = load_local(path, preset=preset, ema=ema)
    elif not pretrained:
        codec = _random(name, preset)
    elif name in REGISTRY:
        codec = _load_registered(REGISTRY[name], ema, revision, local_files_only, cache_dir, token)
    elif name in PRESETS:
        raise ValueError(
            f"{name!r} is an architecture preset without published weights: use pretrained=False for a "
            f"random codec, or a registered model: {sorted(REGISTRY)}"
        )
    elif path.suffix in CHECKPOINT_SUFFIXES or os.sep in name:
        raise FileNotFoundError(f"{name} does not exist")
    else:
        raise ValueError(
            f"unknown model {name!r}: not a registered model {sorted(REGISTRY)}, not a preset "
            f"{sorted(PRESETS)} (for pretrained=False), and no such file or folder"
        )
    return codec.to(device=device, dtype=dtype).eval()


def _random(name: str, preset: str | None) -> Codec:
    if name in REGISTRY and REGISTRY[name].format == "dalle":
        from movq.dvae import DVAE

        return DVAE()
    if name in REGISTRY and REGISTRY[name].preset is not None:
        name = REGISTRY[name].preset or name
    if preset is not None:
        name = preset
    if name not in PRESETS:
        raise ValueError(f"unknown preset {name!r} for pretrained=False; presets: {sorted(PRESETS)}")
    return Codec(get_preset(name))


def _load_registered(
    spec: ModelSpec,
    ema: bool | None,
    revision: str | None,
    local_files_only: bool,
    cache_dir: str | os.PathLike | None,
    token: str | bool | None,
) -> Codec:
    paths = fetch(spec, revision=revision, local_files_only=local_files_only, cache_dir=cache_dir, token=token)
    if spec.format == "dalle":
        codec: Codec = load_dalle(paths[0], paths[1])
    elif spec.source == "package" or spec.format == "diffusers":
        codec = load_local(paths[0] if paths[0].is_dir() else paths[-1].parent)
    else:
        codec = load_local(paths[0], preset=spec.preset, ema=ema)
    codec.config.name = spec.name
    return codec
