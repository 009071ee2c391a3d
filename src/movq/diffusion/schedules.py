"""Noise schedules (betas) and timestep respacing (improved-diffusion's ``"250"`` / ``"ddim50"`` /
``"10,15,20"`` strings: :func:`space_timesteps`), in float64.

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


RESPACING_FORMS = "an int N, a string 'N', 'ddimN' (DDIM's integer stride) or section counts 'a,b,c'"
"""What a timestep respacing may be (improved-diffusion's ``timestep_respacing`` strings), for error messages."""


def space_timesteps(steps: int, spec: int | str) -> list[int]:
    """The timesteps (ascending indices into ``0 .. steps - 1``) that a respacing ``spec`` keeps, as
    improved-diffusion's ``space_timesteps`` reads its ``timestep_respacing`` strings.

    - ``N`` or ``"N"``: ``N`` steps evenly spaced over the whole process, first and last kept;
    - ``"a,b,c"``: the process cut into equal sections (the first ``steps % len`` one step longer),
      section ``i`` keeping its count evenly spaced over it (first and last of the section kept);
    - ``"ddimN"``: ``range(0, steps, s)`` for the smallest integer stride ``s`` giving exactly ``N``
      steps (DDIM's striding: the last step ``steps - 1`` is kept only when ``s`` divides it).

    Within a section of ``size`` steps keeping ``k``, the ``j``-th kept step is ``round(j * stride)``
    (``stride = (size - 1) / (k - 1)`` summed ``j`` times in float, rounding half to even, exactly as
    the original does). Raises ``ValueError`` (one line naming :data:`RESPACING_FORMS`) for anything
    else, a section keeping more steps than it has, a ``ddimN`` no integer stride gives, or fewer than
    two kept steps in all.
    """
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 2:
        raise ValueError(f"steps must be an int >= 2, got {steps!r}")
    if isinstance(spec, str) and spec.strip().startswith("ddim"):
        count = _count(spec.strip()[4:], spec)
        for stride in range(1, steps):
            if len(range(0, steps, stride)) == count:
                return _at_least_two(list(range(0, steps, stride)), spec, steps)
        raise ValueError(
            f"timestep respacing {spec!r}: no integer stride takes exactly {count} of {steps} steps "
            f"(N must be ceil({steps} / s) for an integer stride s); '{count}' spaces {count} steps evenly without that limit"
        )
    if isinstance(spec, int) and not isinstance(spec, bool):
        counts = [spec]
    elif isinstance(spec, str):
        counts = [_count(part, spec) for part in spec.split(",")]
    else:
        raise ValueError(f"timestep respacing must be {RESPACING_FORMS}, got {spec!r}")
    if len(counts) > steps:
        raise ValueError(f"timestep respacing {spec!r}: {len(counts)} sections of a {steps}-step process")
    size, extra = divmod(steps, len(counts))
    kept: list[int] = []
    start = 0
    for i, count in enumerate(counts):
        length = size + (1 if i < extra else 0)
        if not 1 <= count <= length:
            where = "" if len(counts) == 1 else f" section {i} has {length} steps and"
            raise ValueError(
                f"timestep respacing {spec!r}:{where} cannot keep {count} of {length} steps "
                f"(each count must be in [1, {length}])"
            )
        stride = 1.0 if count == 1 else (length - 1) / (count - 1)
        position = 0.0
        for _ in range(count):
            kept.append(start + round(position))
            position += stride
        start += length
    return _at_least_two(kept, spec, steps)


def _count(text: str, spec: object) -> int:
    """A step count written in a respacing string (``ValueError`` naming the accepted forms otherwise)."""
    text = text.strip()
    if not text.isdigit() or not text.isascii():
        raise ValueError(f"timestep respacing must be {RESPACING_FORMS}, got {spec!r}")
    return int(text)


def _at_least_two(kept: list[int], spec: object, steps: int) -> list[int]:
    if len(kept) < 2:
        raise ValueError(f"timestep respacing {spec!r} keeps {len(kept)} step; keep between 2 and {steps}")
    return kept


def is_ddim_respacing(spec: object) -> bool:
    """True for an improved-diffusion ``"ddimN"`` string (whose striding is DDIM's: sample it with ``sampler="ddim"``)."""
    return isinstance(spec, str) and spec.strip().startswith("ddim")


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
