"""Latent diffusion on codec latents: improved DDPM (Nichol & Dhariwal) with an ADM-style UNet.

Modules: ``schedules`` (betas, respacing), ``losses`` (KL, discretized likelihood), ``config``
(:class:`DiffusionConfig`), ``gaussian_diffusion``, ``guidance`` (conditioning dropout, guided
model), ``blocks`` / ``unet`` (the network).
"""

from movq.diffusion.config import DiffusionConfig
from movq.diffusion.gaussian_diffusion import GaussianDiffusion
from movq.diffusion.guidance import ClassifierFreeGuidance, drop_conditions
from movq.diffusion.unet import UNet, UNetConfig

__all__ = ["ClassifierFreeGuidance", "DiffusionConfig", "GaussianDiffusion", "UNet", "UNetConfig", "drop_conditions"]
