"""Latent diffusion on codec latents: improved DDPM (Nichol & Dhariwal) with an ADM-style UNet.

>>> from movq.diffusion import GaussianDiffusion, UNet, UNetConfig, generate
>>> diffusion = GaussianDiffusion(steps=1000, schedule="cosine")      # eps, learned variance, hybrid loss
>>> model = UNet(UNetConfig(in_channels=codec.config.embed_dim, num_classes=10))
>>> losses = diffusion.training_losses(model, latents, t, {"y": labels})   # losses["loss"]: [B]
>>> images = generate(model, diffusion, codec, labels=[3, 7], num_steps=50, guidance_scale=3.0)

Training and sampling a run (``movq-diffusion-train``, :mod:`movq.diffusion.train`):

>>> pipe = LatentDiffusionPipeline.from_pretrained("runs/diffusion")   # UNet (EMA) + diffusion + codec
>>> images = pipe.generate(labels=["red-disc", "blue-vbar"], num_steps=50)   # 2 PIL images
>>> x = pipe.generate(labels=["red-disc"], output_type="pt")                 # [1, 3, H, W] in [-1, 1]

Modules: ``schedules`` (betas, respacing: ``"250"`` / ``"ddim50"`` / ``"10,15,20"``), ``losses`` (KL,
discretized likelihood), ``resample`` (timestep samplers: uniform, loss-second-moment), ``config``
(:class:`DiffusionConfig`), ``gaussian_diffusion``, ``guidance`` (conditioning dropout, guided
model), ``blocks`` / ``unet`` (the network), ``presets`` (UNet sizes), ``sampling`` (:func:`generate`:
labels / vectors -> images), ``data`` (latents or images with labels / vectors), ``train`` (the trainer;
``--pixels`` for pixel space), ``pipeline`` (:class:`LatentDiffusionPipeline`: a trained run folder, ready to
sample), ``sample`` (``movq-diffusion-sample``: N samples into a sample folder), ``nll``
(``movq-diffusion-nll``: bits/dim of held-out images).
"""

from movq.diffusion.config import DiffusionConfig
from movq.diffusion.gaussian_diffusion import GaussianDiffusion
from movq.diffusion.guidance import ClassifierFreeGuidance, drop_conditions
from movq.diffusion.pipeline import LatentDiffusionPipeline
from movq.diffusion.presets import UNET_PRESETS, unet_config
from movq.diffusion.sampling import generate
from movq.diffusion.unet import UNet, UNetConfig

__all__ = [
    "UNET_PRESETS",
    "ClassifierFreeGuidance",
    "DiffusionConfig",
    "DiffusionTrainConfig",
    "DiffusionTrainer",
    "GaussianDiffusion",
    "LatentDiffusionPipeline",
    "UNet",
    "UNetConfig",
    "drop_conditions",
    "generate",
    "unet_config",
]


def __getattr__(name: str):  # lazy: the trainer pulls in movq.train
    if name in ("DiffusionTrainConfig", "DiffusionTrainer"):
        from movq.diffusion import train

        return getattr(train, name)
    raise AttributeError(f"module 'movq.diffusion' has no attribute {name!r}")
