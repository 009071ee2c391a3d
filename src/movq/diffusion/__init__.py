"""Latent diffusion on codec latents: improved DDPM (Nichol & Dhariwal) with an ADM-style UNet.

>>> from movq.diffusion import GaussianDiffusion, UNet, UNetConfig, generate
>>> diffusion = GaussianDiffusion(steps=1000, schedule="cosine")      # eps, learned variance, hybrid loss
>>> model = UNet(UNetConfig(in_channels=codec.config.embed_dim, num_classes=10))
>>> losses = diffusion.training_losses(model, latents, t, {"y": labels})   # losses["loss"]: [B]
>>> images = generate(model, diffusion, codec, labels=[3, 7], num_steps=50, guidance_scale=3.0)

Modules: ``schedules`` (betas, respacing), ``losses`` (KL, discretized likelihood), ``config``
(:class:`DiffusionConfig`), ``gaussian_diffusion``, ``guidance`` (conditioning dropout, guided
model), ``blocks`` / ``unet`` (the network), ``pipeline`` (labels / vectors -> images).
"""

from movq.diffusion.config import DiffusionConfig
from movq.diffusion.gaussian_diffusion import GaussianDiffusion
from movq.diffusion.guidance import ClassifierFreeGuidance, drop_conditions
from movq.diffusion.pipeline import generate
from movq.diffusion.unet import UNet, UNetConfig

__all__ = [
    "ClassifierFreeGuidance",
    "DiffusionConfig",
    "GaussianDiffusion",
    "UNet",
    "UNetConfig",
    "drop_conditions",
    "generate",
]
