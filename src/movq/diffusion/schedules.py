"""Noise schedules (betas) and timestep respacing, in float64.

Nichol & Dhariwal (improved DDPM): the ``linear`` schedule of Ho et al. scaled by ``1000 / T`` so
it keeps its shape for any number of steps ``T``, and the ``cosine`` schedule defined through
``alpha_bar(t) = cos^2(((t / T + s) / (1 + s)) * pi / 2)`` with ``s = 0.008`` and every beta
clipped at ``0.999``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Literal, get_args

import torch
from torch import Tensor

Schedule = Literal["cosine", "linear"]
"""The schedule names (a config field's hint)."""
SCHEDULES: tuple[str, ...] = get_args(Schedule)
COSINE_OFFSET = 0.008
MAX_BETA = 0.999


def cosine_alpha_bar(u: float, s: float = COSINE_OFFSET) -> float:
    """``alpha_bar`` of the cosine schedule at the fraction ``u = t / T`` in ``[0, 1]`` (unnormalised:
    ``alpha_bar(0)`` is slightly below 1, and only ratios of it are used)."""
    return math.cos((u + s) / (1 + s) * math.pi / 2) ** 2


def betas_for_alpha_bar(
    steps: int, alpha_bar: Callable[[float], float], max_beta: float = MAX_BETA
) -> Tensor:
    """Betas ``[steps]`` (float64) with ``beta_i = 1 - alpha_bar((i + 1) / steps) / alpha_bar(i / steps)``,
    each clipped at ``max_beta``, so the cumulative product of ``1 - beta`` follows ``alpha_bar``."""
    betas = [min(1.0 - alpha_bar((i + 1) / steps) / alpha_bar(i / steps), max_beta) for i in range(steps)]
    return torch.tensor(betas, dtype=torch.float64)


def linear_betas(steps: int) -> Tensor:
    """Ho et al.'s ``linspace(1e-4, 0.02, 1000)`` scaled by ``1000 / steps`` (float64 ``[steps]``)."""
    scale = 1000.0 / steps
    return torch.linspace(scale * 1e-4, scale * 0.02, steps, dtype=torch.float64)


def get_betas(schedule: str, steps: int) -> Tensor:
    """Betas ``[steps]`` (float64, in ``(0, 1)``) of the named schedule ("cosine" or "linear")."""
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 2:
        raise ValueError(f"steps must be an int >= 2, got {steps!r}")
    if schedule == "cosine":
        return betas_for_alpha_bar(steps, cosine_alpha_bar)
    if schedule == "linear":
        if steps < 21:  # 0.02 * 1000 / steps must stay below 1
            raise ValueError(
                f"the linear schedule needs steps >= 21 (its last beta is 20 / steps), got {steps}"
            )
        return linear_betas(steps)
    raise ValueError(f"unknown schedule {schedule!r}; expected one of {list(SCHEDULES)}")


def space_timesteps(steps: int, count: int) -> list[int]:
    """``count`` timesteps out of ``0 .. steps - 1``, evenly spaced, always keeping the first and the
    last (``round(i * (steps - 1) / (count - 1))``), sorted ascending."""
    if isinstance(count, bool) or not isinstance(count, int) or not 2 <= count <= steps:
        raise ValueError(f"can keep between 2 and {steps} of {steps} steps, got {count!r}")
    stride = (steps - 1) / (count - 1)
    return [round(i * stride) for i in range(count)]


def check_kept_timesteps(steps: int, kept: Sequence[int]) -> list[int]:
    """Validate a respacing: strictly increasing distinct ints in ``[0, steps)``, at least two."""
    kept = list(kept)
    if len(kept) < 2 or any(isinstance(k, bool) or not isinstance(k, int) for k in kept):
        raise ValueError(f"kept timesteps must be a sequence of at least two ints, got {kept[:10]!r}")
    if kept != sorted(set(kept)) or kept[0] < 0 or kept[-1] >= steps:
        raise ValueError(
            f"kept timesteps must be strictly increasing ints in [0, {steps}), got {kept[:10]!r}..."
        )
    return kept
