"""Which timesteps a training batch uses: improved-diffusion's schedule samplers (``--schedule-sampler``).

``uniform`` draws ``t`` uniformly (weights 1). ``loss-second-moment`` (Nichol & Dhariwal, section 3.3)
keeps the last ``history_per_term`` training losses of every timestep; once every timestep has that
many ("warmed up"), it draws ``t`` with probability ``p_t`` proportional to ``sqrt(E[loss_t^2])`` mixed
with ``uniform_prob`` of the uniform distribution, and weights each sample's loss by ``1 / (T p_t)`` so
the objective's expectation is unchanged (importance sampling) while its variance drops. Before
warm-up it draws exactly as ``uniform`` does.

>>> sampler = schedule_sampler("loss-second-moment", diffusion.num_timesteps)
>>> t, weights = sampler.sample(batch_size, device)          # [B] long, [B] float32
>>> loss = (diffusion.training_losses(model, x0, t)["loss"] * weights).mean()
>>> sampler.update(t, per_sample_losses.detach(), dist_ctx)  # every rank: all ranks' losses, in rank order

A sampler's :meth:`state_dict` (tensors) goes into the trainer's checkpoints, so a resumed run draws
the same timesteps as an uninterrupted one.
"""

from __future__ import annotations

from typing import Any, Literal, get_args

import torch
from torch import Tensor

from movq.distributed import DistContext, gather_objects

ScheduleSamplerName = Literal["uniform", "loss-second-moment"]
"""The sampler names (a config field's hint)."""
SCHEDULE_SAMPLERS: tuple[str, ...] = get_args(ScheduleSamplerName)


class UniformSampler:
    """Timesteps uniform over ``[0, num_timesteps)``, weights 1; no state."""

    def __init__(self, num_timesteps: int) -> None:
        self.num_timesteps = int(num_timesteps)

    def sample(self, batch_size: int, device: torch.device | str) -> tuple[Tensor, Tensor]:
        """``(t, weights)``: ``t`` ``[B]`` long drawn with the device's torch RNG, ``weights`` ``[B]`` float32 ones."""
        t = torch.randint(0, self.num_timesteps, (batch_size,), device=device)
        return t, torch.ones(batch_size, device=device)

    def update(self, t: Tensor, losses: Tensor, ctx: DistContext | None = None) -> None:
        """Nothing to learn from the losses."""

    def state_dict(self) -> dict[str, Tensor]:
        return {}

    def load_state_dict(self, state: dict[str, Tensor]) -> None:
        """Nothing to restore."""


class LossSecondMomentResampler(UniformSampler):
    """improved-diffusion's ``LossSecondMomentResampler`` (see the module docstring).

    State: ``loss_history`` float64 ``[T, history_per_term]`` (per timestep, oldest loss first) and
    ``loss_counts`` int64 ``[T]`` (how many of its slots are filled).
    """

    def __init__(self, num_timesteps: int, history_per_term: int = 10, uniform_prob: float = 0.001) -> None:
        super().__init__(num_timesteps)
        if history_per_term < 1 or not 0.0 <= uniform_prob <= 1.0:
            raise ValueError(f"history_per_term must be >= 1 and uniform_prob in [0, 1], got "
                             f"{history_per_term!r}, {uniform_prob!r}")
        self.history_per_term = int(history_per_term)
        self.uniform_prob = float(uniform_prob)
        self.loss_history = torch.zeros(self.num_timesteps, self.history_per_term, dtype=torch.float64)
        self.loss_counts = torch.zeros(self.num_timesteps, dtype=torch.int64)

    def warmed_up(self) -> bool:
        """Every timestep has ``history_per_term`` losses."""
        return bool((self.loss_counts == self.history_per_term).all())

    def weights(self) -> Tensor:
        """Probabilities ``p`` float64 ``[T]`` (sum 1): uniform before warm-up, then
        ``(1 - uniform_prob) * rms_t / sum(rms) + uniform_prob / T`` with ``rms_t`` the root mean square
        of timestep ``t``'s loss history."""
        if not self.warmed_up():
            return torch.full((self.num_timesteps,), 1.0 / self.num_timesteps, dtype=torch.float64)
        rms = self.loss_history.pow(2).mean(dim=1).sqrt()
        return rms / rms.sum() * (1.0 - self.uniform_prob) + self.uniform_prob / self.num_timesteps

    def sample(self, batch_size: int, device: torch.device | str) -> tuple[Tensor, Tensor]:
        """``(t, weights)``: before warm-up as :class:`UniformSampler`; after, ``t ~ p`` (the CPU torch
        RNG) and ``weights = 1 / (T p_t)`` (float32), both ``[B]`` on ``device``."""
        if not self.warmed_up():
            return super().sample(batch_size, device)
        p = self.weights()
        t = torch.multinomial(p, batch_size, replacement=True)
        weights = 1.0 / (self.num_timesteps * p[t])
        return t.to(device), weights.float().to(device)

    def update(self, t: Tensor, losses: Tensor, ctx: DistContext | None = None) -> None:
        """Record the per-sample ``losses`` ``[B]`` at timesteps ``t`` ``[B]``: with several processes, every
        rank records all ranks' pairs in rank order (gathered here), so every rank keeps the same state."""
        pairs = (t.tolist(), losses.double().tolist())
        gathered = gather_objects(pairs, ctx) if ctx is not None else [pairs]
        for steps, values in gathered:
            for step, value in zip(steps, values):
                self._record(int(step), float(value))

    def _record(self, step: int, loss: float) -> None:
        count = int(self.loss_counts[step])
        if count == self.history_per_term:  # full: shift out the oldest
            self.loss_history[step, :-1] = self.loss_history[step, 1:].clone()
            self.loss_history[step, -1] = loss
        else:
            self.loss_history[step, count] = loss
            self.loss_counts[step] = count + 1

    def state_dict(self) -> dict[str, Tensor]:
        return {"loss_history": self.loss_history.clone(), "loss_counts": self.loss_counts.clone()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore :meth:`state_dict`; ``ValueError`` for tensors of another shape or dtype."""
        for name in ("loss_history", "loss_counts"):
            value, current = state[name], getattr(self, name)
            if not isinstance(value, Tensor) or value.shape != current.shape or value.dtype != current.dtype:
                got = f"{value.dtype} {tuple(value.shape)}" if isinstance(value, Tensor) else type(value).__name__
                raise ValueError(f"schedule sampler state {name!r} must be {current.dtype} {tuple(current.shape)}, got {got}")
            setattr(self, name, value.clone())


def schedule_sampler(name: str, num_timesteps: int) -> UniformSampler:
    """The sampler called ``name`` (:data:`SCHEDULE_SAMPLERS`) for a process of ``num_timesteps`` steps."""
    if name == "uniform":
        return UniformSampler(num_timesteps)
    if name == "loss-second-moment":
        return LossSecondMomentResampler(num_timesteps)
    raise ValueError(f"unknown schedule sampler {name!r}; expected one of {list(SCHEDULE_SAMPLERS)}")
