"""Latent diffusion on codec latents: improved DDPM (Nichol & Dhariwal).

Modules: ``schedules`` (betas, respacing), ``losses`` (KL, discretized likelihood), ``config``
(:class:`DiffusionConfig`), ``gaussian_diffusion``, ``guidance`` (conditioning dropout, guided model).
"""

from movq.diffusion.config import DiffusionConfig
from movq.diffusion.gaussian_diffusion import GaussianDiffusion
from movq.diffusion.guidance import ClassifierFreeGuidance, drop_conditions

__all__ = ["ClassifierFreeGuidance", "DiffusionConfig", "GaussianDiffusion", "drop_conditions"]
