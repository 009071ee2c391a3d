"""Likelihood terms of the variational bound: Gaussian KL and the discretized Gaussian
log-likelihood of the decoder at ``t = 0``. All in nats, elementwise, broadcasting."""

from __future__ import annotations

import torch
from torch import Tensor


def mean_flat(x: Tensor) -> Tensor:
    """Mean over every axis but the first: ``[B, ...] -> [B]``."""
    return x.mean(dim=tuple(range(1, x.ndim)))


def normal_kl(mean1: Tensor, logvar1: Tensor, mean2: Tensor, logvar2: Tensor) -> Tensor:
    """``KL(N(mean1, exp(logvar1)) || N(mean2, exp(logvar2)))`` elementwise, in nats (broadcasts)."""
    return 0.5 * (
        logvar2 - logvar1 - 1.0 + torch.exp(logvar1 - logvar2) + (mean1 - mean2) ** 2 * torch.exp(-logvar2)
    )


def _log_sub_exp(a: Tensor, b: Tensor) -> Tensor:
    """``log(exp(a) - exp(b))`` for ``a >= b``, without cancellation."""
    one_minus = -torch.expm1((b - a).clamp(max=0.0))
    return a + torch.log(one_minus.clamp(min=1e-30))


def discretized_gaussian_log_likelihood(
    x: Tensor,
    means: Tensor,
    log_scales: Tensor,
    bin_width: float = 2.0 / 255.0,
    bounds: tuple[float, float] | None = None,
) -> Tensor:
    """Log-probability (nats) of the bin ``[x - w/2, x + w/2]`` under ``N(means, exp(log_scales)^2)``.

    ``x``, ``means`` and ``log_scales`` broadcast to one shape; ``w = bin_width``. Images in
    ``[-1, 1]`` from uint8 use ``w = 2/255`` and ``bounds=(-1, 1)``: a value within half a bin of a
    bound gets the whole tail beyond it (the first and last of the 256 bins are open). With
    ``bounds=None`` every value gets a bin of width ``w`` (continuous, unbounded latents).
    Computed with the exact normal CDF (``log_ndtr``), stable far in the tails.
    """
    if not bin_width > 0:
        raise ValueError(f"bin_width must be > 0, got {bin_width!r}")
    inv_std = torch.exp(-log_scales)
    half = bin_width / 2.0
    lo = (x - half - means) * inv_std
    hi = (x + half - means) * inv_std
    # P(lo < Z < hi) = P(-hi < Z < -lo): use the side where both CDF values are small.
    flip = (lo + hi) > 0
    upper = torch.where(flip, -lo, hi)
    lower = torch.where(flip, -hi, lo)
    log_probs = _log_sub_exp(torch.special.log_ndtr(upper), torch.special.log_ndtr(lower))
    if bounds is not None:
        low, high = bounds
        log_cdf_hi = torch.special.log_ndtr(hi)  # P(Z < hi): the open first bin
        log_sf_lo = torch.special.log_ndtr(-lo)  # P(Z > lo): the open last bin
        log_probs = torch.where(
            x < low + half, log_cdf_hi, torch.where(x > high - half, log_sf_lo, log_probs)
        )
    return log_probs
