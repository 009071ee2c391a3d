"""Sampling end to end, as one function: class labels or conditioning vectors -> latents (diffusion) -> images
(codec). :class:`movq.diffusion.pipeline.LatentDiffusionPipeline` calls it for a trained run folder."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Annotated, Any

import torch
from torch import Tensor

from movq.diffusion.gaussian_diffusion import GaussianDiffusion, check_finite
from movq.diffusion.unet import UNet
from movq.progress import Progress
from movq.seeding import Generators
from movq.strict import PositiveFloat, PositiveInt, Range, check_argument


def check_labels(labels: Tensor | Sequence[int], num_classes: int | None) -> Tensor:
    """Class ids ``LongTensor [B]`` for ``labels`` (a list of ints or an integer tensor ``[B]``), each in
    ``[0, num_classes)``; ``ValueError`` naming the bad label otherwise (``1.5``, ``True``, ``"3"``, ``-1``)."""
    if num_classes is None:
        raise ValueError("this UNet has no class labels (num_classes=None) but labels were given")
    if isinstance(labels, Tensor):
        if labels.is_floating_point() or labels.is_complex() or labels.dtype == torch.bool or labels.ndim != 1:
            raise ValueError(f"labels must be an integer tensor [B], got a {labels.dtype} tensor of shape "
                             f"{tuple(labels.shape)}")
        labels = labels.tolist()
    values = check_argument(labels, tuple[Annotated[int, Range(0, num_classes - 1)], ...], "labels")
    return torch.tensor(values, dtype=torch.long)


@torch.no_grad()
def generate(
    model: UNet,
    diffusion: GaussianDiffusion,
    codec: Any | None,
    *,
    labels: Tensor | Sequence[int] | None = None,
    cond: Tensor | None = None,
    num_samples: int | None = None,
    latent_size: int | tuple[int, int] | None = None,
    num_steps: int | str | None = 50,
    sampler: str = "ddim",
    eta: float = 0.0,
    guidance_scale: float = 1.0,
    quantize: bool = False,
    clip_denoised: float | None = None,
    generator: Generators = None,
    progress: Progress = False,
    latent_scale: float = 1.0,
    timestep_respacing: int | str | None = None,
) -> Tensor:
    """Sample images ``[B, 3, h * f, w * f]`` in ``[-1, 1]`` through ``codec.decode_latents``, or with
    ``codec=None`` from a pixel-space model (3 channels in, the samples are the images ``[B, 3, h, w]``;
    ``clip_denoised`` defaults to 1, improved DDPM's clipping of each ``x0`` prediction to ``[-1, 1]``).

    ``labels`` (``[B]`` ints) and/or ``cond`` (``[B, cond_dim]`` vectors, e.g. a CLIP image
    embedding as Kandinsky's decoder uses) set the batch; without either, ``num_samples`` does
    (unconditional, or the null condition of a conditional model). ``latent_size`` defaults to the
    model's ``sample_size``. ``num_steps`` respaces the diffusion (``None``: all its steps): a count or
    an improved-diffusion respacing string (``"250"``, ``"ddim50"``, ``"10,15,20"``; see
    :meth:`GaussianDiffusion.respace`); ``timestep_respacing`` (improved-diffusion's name), when
    given, is used instead of ``num_steps`` (``"ddimN"`` picks DDIM's striding; the steps taken are
    still ``sampler``'s, ``"ddim"`` by default); ``generator`` is one
    generator or a list of ``B``, one per sample (:mod:`movq.seeding`);
    ``sampler`` / ``eta`` / ``guidance_scale`` / ``clip_denoised`` / ``generator`` / ``progress`` go to
    :meth:`GaussianDiffusion.sample`. ``quantize=True`` snaps latents to the codebook before
    decoding (Kandinsky decodes them unquantized, the default). ``latent_scale`` is the factor the
    model's latents carry on top of the codec's own ``scaling_factor`` (a trained run records it):
    samples are divided by it before ``codec.decode_latents``.
    """
    latent_scale = check_argument(latent_scale, PositiveFloat, "latent_scale")
    num_samples = check_argument(num_samples, PositiveInt | None, "num_samples")
    if timestep_respacing is not None:
        num_steps = timestep_respacing
    if not isinstance(num_steps, str):
        num_steps = check_argument(num_steps, PositiveInt | None, "num_steps")
    latent_size = check_argument(latent_size, PositiveInt | tuple[PositiveInt, PositiveInt] | None, "latent_size")
    config = model.config
    if codec is None:
        if config.in_channels != 3:
            raise ValueError(f"without a codec the UNet must work on images (3 channels), but it takes "
                             f"{config.in_channels}: pass the codec that decodes its latents")
        if quantize:
            raise ValueError("quantize=True snaps codec latents to a codebook; a pixel-space model has none")
        clip_denoised = 1.0 if clip_denoised is None else clip_denoised
    embed_dim = getattr(getattr(codec, "config", None), "embed_dim", None)
    if embed_dim is not None and embed_dim != config.in_channels:
        raise ValueError(
            f"the codec's latents have {embed_dim} channels but the UNet takes {config.in_channels}"
        )
    device = next(model.parameters()).device
    kwargs: dict[str, Tensor] = {}
    if labels is not None:
        kwargs["y"] = check_labels(labels, config.num_classes).to(device)
    if cond is not None:
        check_finite(cond, "cond")
        kwargs["cond"] = cond.to(device)
    batches = {v.shape[0] if v.ndim else -1 for v in kwargs.values()}
    if num_samples is not None:
        batches.add(num_samples)
    if len(batches) != 1 or min(batches) < 1:
        raise ValueError(
            f"give labels [B], cond [B, D] or num_samples (agreeing on B >= 1); got batch sizes {sorted(batches)}"
        )
    size = config.sample_size if latent_size is None else latent_size
    height, width = (size, size) if isinstance(size, int) else size
    if isinstance(num_steps, str) or (num_steps is not None and num_steps != diffusion.num_timesteps):
        diffusion = diffusion.respace(num_steps)
    latents = diffusion.sample(
        model,
        (batches.pop(), config.in_channels, height, width),
        model_kwargs=kwargs,
        sampler=sampler,
        eta=eta,
        guidance_scale=guidance_scale,
        clip_denoised=clip_denoised,
        generator=generator,
        device=device,
        progress=progress,
    )
    if codec is None:
        return latents.clamp(-1.0, 1.0)
    return codec.decode_latents(latents / latent_scale, quantize=quantize)
