"""Inception Score from class posteriors."""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor


def inception_score_from_posteriors(probs: Tensor | np.ndarray, splits: int = 10) -> tuple[float, float]:
    """IS of posteriors ``probs [N, C]`` (rows sum to 1): mean and std over ``splits`` contiguous splits.

    Each split computes ``exp(mean_x KL(p(y|x) || p(y)))`` with ``p(y)`` the split's marginal
    (the formula of Salimans et al. 2016). ``splits=1`` equals the streaming
    :class:`~movq.metrics.accumulators.PosteriorAccumulator`.
    """
    p = torch.as_tensor(np.asarray(probs), dtype=torch.float64)
    if p.ndim != 2 or p.shape[0] < splits:
        raise ValueError(f"expected probs [N >= splits={splits}, C], got {tuple(p.shape)}")
    scores = []
    n = p.shape[0]
    for k in range(splits):
        part = p[k * n // splits : (k + 1) * n // splits]
        marginal = part.mean(0, keepdim=True)
        kl = (torch.special.xlogy(part, part) - part * torch.log(marginal.clamp_min(1e-300))).sum(1).mean()
        scores.append(float(torch.exp(kl)))
    return float(np.mean(scores)), float(np.std(scores))


def inception_score(logits: Tensor, splits: int = 10) -> tuple[float, float]:
    """IS from classifier logits ``[N, C]`` (softmax applied here); see :func:`inception_score_from_posteriors`."""
    return inception_score_from_posteriors(torch.softmax(logits.double(), dim=1), splits)
