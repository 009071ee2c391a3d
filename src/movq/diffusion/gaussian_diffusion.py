"""Gaussian diffusion (Ho et al.; Nichol & Dhariwal's improved DDPM): forward process, posterior,
the training loss, and ancestral / DDIM sampling with classifier-free guidance."""

from __future__ import annotations

import json
import math
import os
from collections.abc import Callable, Sequence
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from movq.atomic import atomic_write_text, require_regular_file
from movq.diffusion.config import DiffusionConfig
from movq.diffusion.guidance import ClassifierFreeGuidance
from movq.diffusion.losses import discretized_gaussian_log_likelihood, mean_flat, normal_kl
from movq.diffusion.schedules import RESPACING_FORMS, check_kept_timesteps, get_betas, space_timesteps
from movq.memory_budget import check_memory_budget
from movq.progress import Progress, progress_bar
from movq.seeding import Generators, check_generators, randn
from movq.strict import NonNegativeFloat, PositiveFloat, PositiveInt, check_argument

DIFFUSION_CONFIG_FILE = "diffusion.json"
SAMPLERS = ("ddpm", "ddim")
Model = Callable[..., Tensor]


class GaussianDiffusion:
    """A diffusion process over ``steps`` timesteps and the maths to train and sample a model on it.

    Keyword arguments are the fields of :class:`~movq.diffusion.config.DiffusionConfig`. Tensors
    ``betas``, ``alphas_cumprod``, ``alphas_cumprod_prev``, ``posterior_variance``,
    ``posterior_log_variance_clipped`` are float64 ``[num_timesteps]`` on the CPU; they are cast to
    the data's dtype and device when used. ``timestep_map`` ``[num_timesteps]`` (long) gives, for each
    step of this (possibly respaced) process, the step of the base process: the model always sees
    base-process timesteps, so one model samples with any respacing.

    Data ``x0`` / ``x_t`` are float tensors ``[B, C, ...]`` (codec latents ``[B, C, h, w]`` scaled to
    roughly unit variance); ``t`` is an integer tensor ``[B]`` in ``[0, num_timesteps)``. A model is
    called as ``model(x_t, timestep_map[t], **model_kwargs)`` and returns ``[B, C, ...]``, or
    ``[B, 2C, ...]`` with ``var_type="learned_range"`` (the second half in ``[-1, 1]`` interpolates
    the log variance between ``log beta_tilde_t`` and ``log beta_t``).

    Decoder bin width: latents are continuous and unbounded, so the discretized likelihood at
    ``t = 0`` gives each latent value a bin of width ``bin_width`` centred on it with no open
    boundary bins. The default ``2/255`` is the 8-bit grid of a ``[-1, 1]`` signal, i.e. the same
    resolution as pixel-space improved DDPM for latents scaled to about unit spread by the codec's
    ``scaling_factor``; scale it with the latents if they are scaled otherwise. Pixels (``bounds=(-1, 1)``:
    8-bit images in ``[-1, 1]``) get improved DDPM's pixel-space decoder: the same ``2/255`` bins, the
    first and last of the 256 open to the tails.

    Terminal step: the cosine schedule's last beta is 0.999, so ``alpha_bar`` at the last step is
    tiny (``2.4e-9``) and an eps prediction's error reaches the first reverse step multiplied by
    ``sqrt(alpha_bar_prev / alpha_bar_last)``: 32 with all 1000 steps, 630 respaced to 50 (the linear
    schedule: 1.2). Pixel-space improved DDPM hides this by clipping ``x0`` to ``[-1, 1]``; for
    latents prefer ``mean_type="v"`` (well conditioned at every step) or the ``linear`` schedule,
    or pass ``clip_denoised`` at the latents' range when sampling a cosine eps model.
    """

    def __init__(self, **kwargs: Any) -> None:
        self.config = DiffusionConfig(**kwargs)
        base_betas = get_betas(self.config.schedule, self.config.steps)
        kept = self.config.timesteps
        if kept is None:
            betas, kept = base_betas, list(range(self.config.steps))
        else:  # keep alpha_bar at the kept steps: beta'_i = 1 - abar[k_i] / abar[k_{i-1}]
            base_abar = torch.cumprod(1.0 - base_betas, dim=0)[kept]
            betas = 1.0 - base_abar / torch.cat([base_abar.new_ones(1), base_abar[:-1]])
        self.timestep_map = torch.tensor(kept, dtype=torch.long)
        self.betas = betas
        self.num_timesteps = len(betas)

        self.alphas_cumprod = torch.cumprod(1.0 - betas, dim=0)
        self.alphas_cumprod_prev = torch.cat([betas.new_ones(1), self.alphas_cumprod[:-1]])
        # q(x_{t-1} | x_t, x_0): variance beta_tilde, mean = coef1 * x0 + coef2 * x_t
        self.posterior_variance = betas * (1.0 - self.alphas_cumprod_prev) / (1.0 - self.alphas_cumprod)
        # beta_tilde_0 = 0: its log is clipped to beta_tilde_1 (only the t = 0 decoder uses it)
        self.posterior_log_variance_clipped = torch.log(
            torch.cat([self.posterior_variance[1:2], self.posterior_variance[1:]])
        )
        self.posterior_mean_coef1 = betas * self.alphas_cumprod_prev.sqrt() / (1.0 - self.alphas_cumprod)
        self.posterior_mean_coef2 = (
            (1.0 - self.alphas_cumprod_prev) * (1.0 - betas).sqrt() / (1.0 - self.alphas_cumprod)
        )
        # log variances of the reverse step: learned_range interpolates between the first two
        fixed_large = torch.cat([self.posterior_variance[1:2], betas[1:]])  # beta_t; beta_tilde_1 at t = 0
        self._log_variance = {
            "fixed_small": self.posterior_log_variance_clipped,
            "fixed_large": torch.log(fixed_large),
            "betas": torch.log(betas),
        }

    def __repr__(self) -> str:
        fields = ", ".join(f"{k}={v!r}" for k, v in asdict(self.config).items() if k != "timesteps")
        kept = "" if self.config.timesteps is None else f", kept={self.num_timesteps}"
        return f"GaussianDiffusion({fields}{kept})"

    # ----------------------------------------------------------------------------- checks

    def _check_x(self, x: Tensor, name: str) -> None:
        if not isinstance(x, Tensor) or not x.is_floating_point() or x.ndim < 2 or x.shape[0] == 0:
            got = (
                f"{type(x).__name__} {tuple(x.shape)} {x.dtype}"
                if isinstance(x, Tensor)
                else type(x).__name__
            )
            raise ValueError(f"{name} must be a float tensor [B>0, C, ...], got {got}")

    def _check_t(self, t: Tensor, batch: int) -> None:
        if not isinstance(t, Tensor) or t.is_floating_point() or t.is_complex() or t.dtype == torch.bool:
            raise TypeError(
                f"t must be an integer tensor [B] of step indices, got {getattr(t, 'dtype', type(t))}"
            )
        if tuple(t.shape) != (batch,):
            raise ValueError(f"t must have shape [B] = [{batch}], got {tuple(t.shape)}")
        low, high = int(t.min()), int(t.max())
        if low < 0 or high >= self.num_timesteps:
            raise ValueError(f"t must be in [0, {self.num_timesteps}), got values in [{low}, {high}]")

    def _take(self, values: Tensor, t: Tensor, like: Tensor) -> Tensor:
        """``values[t]`` cast to ``like``'s dtype and device, shaped ``[B, 1, 1, ...]`` to broadcast."""
        out = values[t.cpu()].to(dtype=like.dtype).to(like.device)
        return out.view(-1, *([1] * (like.ndim - 1)))

    # ----------------------------------------------------------------------------- forward process

    def q_sample(self, x0: Tensor, t: Tensor, noise: Tensor | None = None) -> Tensor:
        """``x_t = sqrt(abar_t) x0 + sqrt(1 - abar_t) noise``: a draw from ``q(x_t | x0)``, like ``x0``."""
        self._check_x(x0, "x0")
        self._check_t(t, x0.shape[0])
        if noise is None:
            noise = torch.randn_like(x0)
        if noise.shape != x0.shape:
            raise ValueError(f"noise must have x0's shape {tuple(x0.shape)}, got {tuple(noise.shape)}")
        abar = self._take(self.alphas_cumprod, t, x0)
        return abar.sqrt() * x0 + (1.0 - abar).sqrt() * noise

    def q_posterior_mean_variance(self, x0: Tensor, x_t: Tensor, t: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Mean, variance and clipped log variance of ``q(x_{t-1} | x_t, x0)``, each shaped like ``x0``."""
        self._check_x(x0, "x0")
        if x_t.shape != x0.shape:
            raise ValueError(f"x_t must have x0's shape {tuple(x0.shape)}, got {tuple(x_t.shape)}")
        self._check_t(t, x0.shape[0])
        mean = (
            self._take(self.posterior_mean_coef1, t, x0) * x0
            + self._take(self.posterior_mean_coef2, t, x0) * x_t
        )
        variance = self._take(self.posterior_variance, t, x0).expand_as(x0)
        log_variance = self._take(self.posterior_log_variance_clipped, t, x0).expand_as(x0)
        return mean, variance, log_variance

    # ----------------------------------------------------------------------------- parameterisations

    def predict_x0(self, x_t: Tensor, t: Tensor, mean_output: Tensor) -> Tensor:
        """The clean ``x0`` implied by the model's mean output (eps / x0 / v) at ``x_t``."""
        abar = self._take(self.alphas_cumprod, t, x_t)
        if self.config.mean_type == "eps":
            return (x_t - (1.0 - abar).sqrt() * mean_output) / abar.sqrt()
        if self.config.mean_type == "v":
            return abar.sqrt() * x_t - (1.0 - abar).sqrt() * mean_output
        return mean_output

    def predict_eps(self, x_t: Tensor, t: Tensor, x0: Tensor) -> Tensor:
        """The noise that takes ``x0`` to ``x_t`` at step ``t``."""
        abar = self._take(self.alphas_cumprod, t, x_t)
        return (x_t - abar.sqrt() * x0) / (1.0 - abar).sqrt()

    def mse_target(self, x0: Tensor, t: Tensor, noise: Tensor) -> Tensor:
        """What the model's mean output should be: ``noise``, ``x0`` or ``v = sqrt(abar) noise - sqrt(1-abar) x0``."""
        if self.config.mean_type == "eps":
            return noise
        if self.config.mean_type == "x0":
            return x0
        abar = self._take(self.alphas_cumprod, t, x0)
        return abar.sqrt() * noise - (1.0 - abar).sqrt() * x0

    def _split(self, output: Tensor, x_t: Tensor) -> tuple[Tensor, Tensor | None]:
        """Model output -> (mean output, variance output or None), checking its shape."""
        channels = x_t.shape[1]
        expected = (x_t.shape[0], channels * (2 if self.config.learned_variance else 1), *x_t.shape[2:])
        if not isinstance(output, Tensor) or tuple(output.shape) != expected:
            got = tuple(output.shape) if isinstance(output, Tensor) else type(output).__name__
            raise ValueError(
                f"model output must have shape {expected} for var_type={self.config.var_type!r} "
                f"(learned variance doubles the channels), got {got}"
            )
        if self.config.learned_variance:
            mean_out, var_out = output.split(channels, dim=1)
            return mean_out, var_out
        return output, None

    def p_mean_variance(
        self, output: Tensor, x_t: Tensor, t: Tensor, clip_denoised: float | None = None
    ) -> dict[str, Tensor]:
        """``p(x_{t-1} | x_t)`` from a model ``output``: dict of ``mean``, ``variance``, ``log_variance``
        and ``pred_x0`` (clamped to ``[-clip_denoised, clip_denoised]`` when given), all like ``x_t``."""
        mean_out, var_out = self._split(output, x_t)
        if var_out is not None:
            min_log = self._take(self.posterior_log_variance_clipped, t, x_t)
            max_log = self._take(self._log_variance["betas"], t, x_t)
            frac = (var_out + 1.0) / 2.0
            log_variance = frac * max_log + (1.0 - frac) * min_log
        else:
            log_variance = self._take(self._log_variance[self.config.var_type], t, x_t).expand_as(x_t)
        pred_x0 = self.predict_x0(x_t, t, mean_out)
        if clip_denoised is not None:
            pred_x0 = pred_x0.clamp(-clip_denoised, clip_denoised)
        mean = (
            self._take(self.posterior_mean_coef1, t, x_t) * pred_x0
            + self._take(self.posterior_mean_coef2, t, x_t) * x_t
        )
        return {
            "mean": mean,
            "variance": torch.exp(log_variance),
            "log_variance": log_variance,
            "pred_x0": pred_x0,
        }

    # ----------------------------------------------------------------------------- training

    def model_output(
        self, model: Model, x_t: Tensor, t: Tensor, model_kwargs: dict[str, Any] | None = None
    ) -> Tensor:
        """Call ``model(x_t, timestep_map[t], **model_kwargs)`` and check the output's shape."""
        output = model(x_t, self.timestep_map.to(x_t.device)[t], **(model_kwargs or {}))
        self._split(output, x_t)
        return output

    def vb_terms_bits(
        self, output: Tensor, x0: Tensor, x_t: Tensor, t: Tensor, clip_denoised: float | None = None
    ) -> Tensor:
        """One VLB term per sample ``[B]``, in bits per dimension: ``KL(q(x_{t-1}|x_t,x0) || p(x_{t-1}|x_t))``
        for ``t > 0`` and the decoder's ``-log p(x0 | x_1)`` (discretized, ``bin_width`` bins, open edge bins
        at ``bounds``) at ``t = 0``. ``clip_denoised`` clamps the ``x0`` prediction of ``p`` (as sampling does)."""
        true_mean, _, true_log_variance = self.q_posterior_mean_variance(x0, x_t, t)
        p = self.p_mean_variance(output, x_t, t, clip_denoised)
        kl = mean_flat(normal_kl(true_mean, true_log_variance, p["mean"], p["log_variance"]))
        nll = -mean_flat(
            discretized_gaussian_log_likelihood(
                x0, p["mean"], 0.5 * p["log_variance"], bin_width=self.config.bin_width, bounds=self.config.bounds
            )
        )
        return torch.where(t.to(x0.device) == 0, nll, kl) / math.log(2.0)

    def training_losses(
        self,
        model: Model,
        x0: Tensor,
        t: Tensor,
        model_kwargs: dict[str, Any] | None = None,
        noise: Tensor | None = None,
    ) -> dict[str, Tensor]:
        """Losses ``[B]`` for clean data ``x0`` ``[B, C, ...]`` at steps ``t`` ``[B]``.

        Returns ``mse`` (L_simple: mean squared error of the eps / x0 / v prediction) and ``loss``;
        with ``loss="hybrid"`` also ``vb`` (the VLB term in bits/dim, computed with the predicted
        mean detached so it trains only the variance) and ``loss = mse + vlb_weight * T * vb``
        (``T * vb`` estimates the whole bound ``L_vlb`` from one uniformly drawn term). With
        ``loss="kl"`` (improved-diffusion's ``use_kl``, its ``RESCALED_KL``) ``loss = T * vb`` with
        nothing detached (the VLB trains mean and variance); ``mse`` is then reported, detached.
        """
        self._check_x(x0, "x0")
        self._check_t(t, x0.shape[0])
        if noise is None:
            noise = torch.randn_like(x0)
        x_t = self.q_sample(x0, t, noise)
        output = self.model_output(model, x_t, t, model_kwargs)
        mean_out, var_out = self._split(output, x_t)
        terms = {"mse": mean_flat((self.mse_target(x0, t, noise) - mean_out) ** 2)}
        if self.config.loss == "kl":
            terms["mse"] = terms["mse"].detach()
            terms["vb"] = self.vb_terms_bits(output, x0, x_t, t)
            terms["loss"] = self.num_timesteps * terms["vb"]
            return terms
        if var_out is None:
            terms["loss"] = terms["mse"]
            return terms
        frozen = torch.cat([mean_out.detach(), var_out], dim=1)  # stop-gradient on the mean
        terms["vb"] = self.vb_terms_bits(frozen, x0, x_t, t)
        terms["loss"] = terms["mse"] + self.config.vlb_weight * self.num_timesteps * terms["vb"]
        return terms

    # ----------------------------------------------------------------------------- sampling steps

    def p_step(
        self,
        output: Tensor,
        x_t: Tensor,
        t: Tensor,
        *,
        clip_denoised: float | None = None,
        generator: Generators = None,
    ) -> tuple[Tensor, Tensor]:
        """Ancestral step: draw ``x_{t-1} ~ p(x_{t-1} | x_t)`` (no noise where ``t == 0``). Returns
        ``(x_{t-1}, pred_x0)``."""
        p = self.p_mean_variance(output, x_t, t, clip_denoised)
        nonzero = (t != 0).to(x_t.device)
        if not bool(nonzero.any()):
            return p["mean"], p["pred_x0"]
        noise = randn(x_t.shape, generator, device=x_t.device, dtype=x_t.dtype)
        mask = nonzero.to(x_t.dtype).view(-1, *([1] * (x_t.ndim - 1)))
        return p["mean"] + mask * torch.exp(0.5 * p["log_variance"]) * noise, p["pred_x0"]

    def ddim_step(
        self,
        output: Tensor,
        x_t: Tensor,
        t: Tensor,
        *,
        eta: float = 0.0,
        clip_denoised: float | None = None,
        generator: Generators = None,
    ) -> tuple[Tensor, Tensor]:
        """DDIM step (Song et al., eq. 12) from ``t`` to the previous kept step; ``eta = 0`` is
        deterministic, ``eta = 1`` matches the ancestral variance. Returns ``(x_{t-1}, pred_x0)``."""
        pred_x0 = self.p_mean_variance(output, x_t, t, clip_denoised)["pred_x0"]
        eps = self.predict_eps(x_t, t, pred_x0)
        abar = self._take(self.alphas_cumprod, t, x_t)
        abar_prev = self._take(self.alphas_cumprod_prev, t, x_t)
        sigma = eta * ((1.0 - abar_prev) / (1.0 - abar)).sqrt() * (1.0 - abar / abar_prev).sqrt()
        x_prev = abar_prev.sqrt() * pred_x0 + (1.0 - abar_prev - sigma**2).sqrt() * eps
        if eta > 0 and bool((t != 0).any()):
            noise = randn(x_t.shape, generator, device=x_t.device, dtype=x_t.dtype)
            x_prev = x_prev + sigma * noise
        return x_prev, pred_x0

    # ----------------------------------------------------------------------------- sampling loop

    @torch.no_grad()
    def sample(
        self,
        model: Model,
        shape: Sequence[int],
        *,
        model_kwargs: dict[str, Any] | None = None,
        sampler: str = "ddpm",
        eta: float = 0.0,
        guidance_scale: float = 1.0,
        clip_denoised: float | None = None,
        noise: Tensor | None = None,
        generator: Generators = None,
        device: torch.device | str | None = None,
        progress: Progress = False,
    ) -> Tensor:
        """Run the reverse process over this diffusion's ``num_timesteps`` steps (respace first for
        fewer) from Gaussian noise of ``shape`` ``[B, C, ...]``; returns ``x0`` samples of that shape.

        ``sampler="ddpm"`` draws ancestral steps; ``"ddim"`` takes DDIM steps with ``eta``.
        ``guidance_scale`` ``s != 1`` applies classifier-free guidance ``u + s (c - u)`` (the model must
        accept ``uncond_mask``, as :class:`~movq.diffusion.UNet` does). ``generator`` draws all the
        noise (reproducible; it must live on ``device``): one generator, or a list of ``B``, one per
        sample (:mod:`movq.seeding`: sample ``i``'s noise then depends on ``generator[i]`` alone);
        ``noise`` replaces the initial draw; ``clip_denoised=c`` clamps each ``x0`` prediction to
        ``[-c, c]``; ``progress`` shows tqdm (``True`` or a dict of tqdm keywords, :mod:`movq.progress`).
        The model is called as it is (put it in eval mode first).
        """
        if sampler not in SAMPLERS:
            raise ValueError(f"unknown sampler {sampler!r}; expected one of {list(SAMPLERS)}")
        eta = check_argument(eta, NonNegativeFloat, "eta")
        guidance_scale = check_argument(guidance_scale, float, "guidance_scale")
        clip_denoised = check_argument(clip_denoised, PositiveFloat | None, "clip_denoised")
        if sampler == "ddpm" and eta != 0:
            raise ValueError(
                "eta is a DDIM setting: use sampler='ddim' (eta=1 is close to ancestral sampling)"
            )
        shape = check_argument(shape, tuple[PositiveInt, ...], "shape")
        if len(shape) < 2:
            raise ValueError(f"shape must be [B, C, ...] with positive sizes, got {shape}")
        _check_model_channels(model, shape[1], self.config.learned_variance)
        if noise is not None:
            check_finite(noise, "noise")
            if tuple(noise.shape) != shape:
                raise ValueError(f"noise must have shape {shape}, got {tuple(noise.shape)}")
        if device is None:
            device = _model_device(model)
        check_generators(generator, shape[0], device)
        _check_sample_memory(model, shape, device, guided=guidance_scale != 1.0)
        if guidance_scale != 1.0:
            model = ClassifierFreeGuidance(model, guidance_scale, channels=shape[1])
        x = randn(shape, generator, device=device) if noise is None else noise.to(device)
        for i in _progress(range(self.num_timesteps - 1, -1, -1), progress):
            t = torch.full((shape[0],), i, dtype=torch.long, device=x.device)
            output = self.model_output(model, x, t, model_kwargs)
            if sampler == "ddpm":
                x, _ = self.p_step(output, x, t, clip_denoised=clip_denoised, generator=generator)
            else:
                x, _ = self.ddim_step(output, x, t, eta=eta, clip_denoised=clip_denoised, generator=generator)
        return x

    # ----------------------------------------------------------------------------- respacing / io

    def respace(self, steps: int | str | Sequence[int]) -> GaussianDiffusion:
        """A process over some of this one's steps: a respacing ``steps`` as improved-diffusion writes
        it (``50`` or ``"50"``: evenly spaced, first and last kept; ``"ddim50"``: DDIM's integer stride;
        ``"10,15,20"``: counts per equal section; see :func:`~movq.diffusion.schedules.space_timesteps`),
        or the ascending step indices to keep. ``alphas_cumprod`` at the kept steps is unchanged and
        ``timestep_map`` points at the base process's steps."""
        if isinstance(steps, str) or (isinstance(steps, int) and not isinstance(steps, bool)):
            kept = space_timesteps(self.num_timesteps, steps)
        elif isinstance(steps, (list, tuple, Tensor)):
            kept = check_kept_timesteps(self.num_timesteps, list(check_argument(steps, tuple[int, ...], "steps")))
        else:
            raise ValueError(f"steps must be {RESPACING_FORMS} or a list of step indices, got {steps!r}")
        base_steps = [int(self.timestep_map[k]) for k in kept]
        return GaussianDiffusion(**asdict(replace(self.config, timesteps=base_steps)))

    def to_dict(self) -> dict[str, Any]:
        return self.config.to_dict()

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> GaussianDiffusion:
        """Inverse of :meth:`to_dict`; unknown keys are an error naming them."""
        return cls(**asdict(DiffusionConfig.from_dict(data)))

    def save_pretrained(self, directory: str | os.PathLike) -> Path:
        """Write ``diffusion.json`` into ``directory`` (atomically), beside a model's files."""
        path = Path(directory) / DIFFUSION_CONFIG_FILE
        atomic_write_text(path, json.dumps(self.to_dict(), indent=2) + "\n")
        return path.parent

    @classmethod
    def from_pretrained(cls, directory: str | os.PathLike) -> GaussianDiffusion:
        """Read the ``diffusion.json`` of a folder written by :meth:`save_pretrained`."""
        path = Path(directory) / DIFFUSION_CONFIG_FILE
        require_regular_file(path, f"GaussianDiffusion.save_pretrained writes {DIFFUSION_CONFIG_FILE}")
        from movq.strict import dataclass_from_dict, read_json_object

        # read_json_object / source=: a bad file is a ConfigError naming it, not a raw JSON traceback
        return cls(**asdict(dataclass_from_dict(DiffusionConfig, read_json_object(path), source=path)))


def check_finite(x: Tensor, name: str) -> None:
    """Raise ``ValueError`` naming ``name`` unless ``x`` is a floating-point tensor of finite values
    (NaN or inf in noise, latents or conditioning vectors would silently give NaN samples)."""
    if not isinstance(x, Tensor) or not x.is_floating_point():
        got = f"a {x.dtype} tensor" if isinstance(x, Tensor) else type(x).__name__
        raise ValueError(f"{name} must be a float tensor, got {got}")
    if not bool(torch.isfinite(x).all()):
        raise ValueError(f"{name} contains NaN or inf values; expected finite values")


def _check_sample_memory(model: Model, shape: tuple[int, ...], device: torch.device | str, guided: bool) -> None:
    """Refuse (:class:`~movq.memory_budget.MemoryBudgetError`) a sample whose tensors cannot fit on
    ``device``, before anything is allocated: a lower bound of three float32 copies of the latents
    (``x``, the model output, the step's noise) and one feature map of the model's width
    (``config.channels``), twice over with guidance (the batch is doubled)."""
    positions = shape[0] * math.prod(shape[2:])
    width = getattr(getattr(model, "config", None), "channels", 0)
    needed = positions * (3 * shape[1] + width) * 4 * (2 if guided else 1)
    check_memory_budget(needed, device, f"sampling latents of shape {list(shape)}",
                        "sample fewer or smaller latents (batch size, latent_size)")


def _check_model_channels(model: Model, channels: int, learned_variance: bool) -> None:
    """Before sampling: a model with a ``config`` (like UNet) must take ``channels`` and give the
    channel count the variance type needs."""
    config = getattr(model, "config", None)
    in_channels, out_channels = getattr(config, "in_channels", None), getattr(config, "out_channels", None)
    if in_channels is not None and in_channels != channels:
        raise ValueError(
            f"the model takes {in_channels} latent channels, but the sample shape has {channels}"
        )
    expected = channels * (2 if learned_variance else 1)
    if out_channels is not None and out_channels != expected:
        raise ValueError(
            f"the model outputs {out_channels} channels but this diffusion needs {expected} "
            f"({'learned' if learned_variance else 'fixed'} variance): set the model's learn_sigma accordingly"
        )


def _model_device(model: Model) -> torch.device:
    if isinstance(model, nn.Module):
        for param in model.parameters():
            return param.device
    return torch.device("cpu")


def _progress(steps: range, progress: Progress):
    """``steps`` wrapped in a tqdm bar when ``progress`` asks for one (:func:`movq.progress.progress_bar`)."""
    return progress_bar(steps, progress, desc="sampling")
