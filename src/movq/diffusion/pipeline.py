"""A trained latent-diffusion run folder, ready to sample: :class:`LatentDiffusionPipeline`.

``movq-diffusion-train`` releases into its ``OUT``:

- ``config.json`` + ``model.safetensors`` + ``ema.safetensors``: the UNet (:meth:`UNet.save_pretrained`);
- ``diffusion.json``: the diffusion process (:meth:`GaussianDiffusion.save_pretrained`);
- ``latent_diffusion.json``: ``space`` (``"latent"``, or ``"pixel"`` for a ``--pixels`` model that works
  on images and has no codec; a release without the field is a latent one), the codec whose latents the
  model learned (the name or folder given to ``movq.load``, its config and weights hashes), the latent
  shape (``[3, R, R]`` for pixels), the extra ``latent_scale`` the model's latents carry, and the class
  names (label ``i`` is ``labels[i]``).

>>> pipe = LatentDiffusionPipeline.from_pretrained("runs/diffusion")
>>> images = pipe.generate(labels=["cat", "dog"], num_steps=50)      # 2 PIL images
>>> x = pipe.generate(labels=["cat"], output_type="pt")              # [1, 3, H, W] in [-1, 1]
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from PIL import Image
from torch import Tensor

from movq.atomic import atomic_write_text, require_regular_file
from movq.diffusion.gaussian_diffusion import GaussianDiffusion
from movq.diffusion.sampling import check_labels, generate
from movq.diffusion.unet import UNet
from movq.images import check_output_type, generated_output
from movq.progress import ProgressBarConfig
from movq.seeding import Generators
from movq.tokenize.training_data import recorded_codec

RELEASE_NAME = "latent_diffusion.json"
RELEASE_KEYS = ("codec", "codec_name", "config_hash", "weights_hash", "resolution", "latent_shape", "latent_scale",
                "labels", "space")
SPACES = ("latent", "pixel")


def write_release_info(directory: str | os.PathLike, info: dict[str, Any]) -> Path:
    """Write ``latent_diffusion.json`` (atomically) with the :data:`RELEASE_KEYS` of ``info`` (``space``
    defaults to ``"latent"``, as :func:`read_release_info` reads a release without it)."""
    info = {"space": "latent", **info}
    if info["space"] not in SPACES:
        raise ValueError(f"space must be one of {list(SPACES)}, got {info['space']!r}")
    missing = sorted(set(RELEASE_KEYS) - set(info))
    if missing:
        raise ValueError(f"release info lacks {missing}")
    path = Path(directory) / RELEASE_NAME
    atomic_write_text(path, json.dumps({k: info[k] for k in RELEASE_KEYS}, indent=2) + "\n")
    return path


def read_release_info(directory: str | os.PathLike) -> dict[str, Any]:
    """The ``latent_diffusion.json`` of a run folder, checked for its keys."""
    path = Path(directory) / RELEASE_NAME
    require_regular_file(path, f"not a movq-diffusion-train run folder (it writes {RELEASE_NAME})")
    try:
        info = json.loads(path.read_text())
    except ValueError as error:
        raise ValueError(f"{path} is not valid JSON: {error}") from None
    if isinstance(info, dict):
        info.setdefault("space", "latent")  # releases from before pixel-space models
        if info["space"] not in SPACES:
            raise ValueError(f"{path}: space must be one of {list(SPACES)}, got {info['space']!r}")
    missing = sorted(set(RELEASE_KEYS) - set(info)) if isinstance(info, dict) else list(RELEASE_KEYS)
    if missing:
        raise ValueError(f"{path} lacks {missing}")
    return info


class LatentDiffusionPipeline(ProgressBarConfig):
    """Class labels / conditioning vectors -> images: a UNet, its diffusion and the codec that decodes.

    ``latent_scale`` divides the sampled latents before ``codec.decode_latents``; ``labels`` are the
    class names (then :meth:`generate` accepts names); ``latent_shape`` ``(C, h, w)`` sets the sample size.
    ``codec=None``: a pixel-space model, whose samples are the images (``x0`` clipped to ``[-1, 1]``).
    """

    def __init__(self, model: UNet, diffusion: GaussianDiffusion, codec: Any, *, latent_scale: float = 1.0,
                 labels: Sequence[str] | None = None, latent_shape: Sequence[int] | None = None) -> None:
        self.model, self.diffusion, self.codec = model, diffusion, codec
        self.latent_scale = float(latent_scale)
        self.labels = None if labels is None else list(labels)
        classes = model.config.num_classes or 0
        if self.labels and len(self.labels) > classes:
            raise ValueError(
                f"{len(self.labels)} class names are given but the UNet has {classes} classes "
                f"(num_classes={model.config.num_classes}); a release lists at most one name per class"
            )
        size = model.config.sample_size
        self.latent_shape = tuple(latent_shape) if latent_shape is not None else (model.config.in_channels, size, size)

    @classmethod
    def from_pretrained(cls, directory: str | os.PathLike, *, codec: Any = None, weights: str = "auto",
                        device: torch.device | str | None = None, dtype: torch.dtype = torch.float32,
                        check_codec: bool = True) -> LatentDiffusionPipeline:
        """Load a ``movq-diffusion-train`` run folder: the UNet (``weights="auto"``: EMA), ``diffusion.json``
        and the recorded codec (``codec``: a codec or a name / folder to load instead). With
        ``check_codec`` a codec whose weights differ from the recorded ones is warned about."""
        info = read_release_info(directory)
        model = UNet.from_pretrained(directory, weights=weights, device=device, dtype=dtype)
        diffusion = GaussianDiffusion.from_pretrained(directory)
        if info["space"] == "pixel":
            if codec is not None:
                raise ValueError(f"{directory} is a pixel-space model (it samples images, no codec): leave codec= out")
            return cls(model, diffusion, None, labels=info["labels"], latent_shape=info["latent_shape"])
        if codec is None and not info["codec"]:
            raise ValueError(f"{directory} records no codec (trained on latents without a movq-tokenize folder): pass codec=")
        # loaded as stored (the hash covers these weights), then cast
        codec, loaded = recorded_codec(codec, info["codec"], info.get("weights_hash"), directory, "latents", device,
                                       check_codec)
        if loaded:
            codec = codec.to(dtype)
        return cls(model, diffusion, codec, latent_scale=info["latent_scale"], labels=info["labels"],
                   latent_shape=info["latent_shape"])

    def label_ids(self, labels: Sequence[int | str] | Tensor) -> Tensor:
        """Class ids ``[B]`` for ids or class names."""
        if isinstance(labels, (list, tuple)):
            ids: list[object] = []
            for label in labels:
                if isinstance(label, str):
                    if self.labels is None or label not in self.labels:
                        known = "this model has no class names" if self.labels is None else f"classes: {self.labels}"
                        raise ValueError(f"unknown class {label!r}; {known}")
                    label = self.labels.index(label)
                ids.append(label)
            labels = ids
        return check_labels(labels, self.model.config.num_classes)

    @torch.no_grad()
    def generate(self, labels: Sequence[int | str] | Tensor | None = None, *, cond: Tensor | None = None,
                 num_samples: int | None = None, num_steps: int | str | None = 50, sampler: str = "ddim",
                 eta: float = 0.0, guidance_scale: float = 1.0, clip_denoised: float | None = None,
                 quantize: bool = False, generator: Generators = None, progress: bool | None = None,
                 output_type: str = "pil", timestep_respacing: int | str | None = None) -> list[Image.Image] | Tensor:
        """Images for class ``labels`` (ids or names) and/or ``cond`` vectors, or ``num_samples``
        unconditional ones; see :func:`movq.diffusion.generate`.

        ``output_type="pil"`` (default) gives ``B`` RGB PIL images; ``"pt"`` the tensor ``[B, 3, H, W]``
        in ``[-1, 1]``. ``generator``: one generator, or a list of ``B``, one per sample (sample ``i``'s
        noise then depends on ``generator[i]`` alone, :mod:`movq.seeding`). ``num_steps``: an int or a
        respacing string; ``timestep_respacing`` (``50``, ``"250"``,
        ``"ddim50"``, ``"10,15,20"``), when given, replaces it. ``progress``: a tqdm bar over the steps (``None``: shown unless
        :meth:`set_progress_bar_config` ``(disable=True)``).
        """
        check_output_type(output_type)
        images = generate(
            self.model, self.diffusion, self.codec, labels=None if labels is None else self.label_ids(labels),
            cond=cond, num_samples=num_samples, latent_size=tuple(self.latent_shape[1:]), num_steps=num_steps,
            sampler=sampler, eta=eta, guidance_scale=guidance_scale, quantize=quantize, clip_denoised=clip_denoised,
            generator=generator, progress=self._progress(progress), latent_scale=self.latent_scale,
            timestep_respacing=timestep_respacing,
        )
        return generated_output(images, output_type)

    __call__ = generate
