"""Exponential moving average of all codec weights (the release weights)."""

from __future__ import annotations

import copy

import torch
from torch import nn


class ModelEMA(nn.Module):
    """EMA copy of a module: ``p_ema = d * p_ema + (1 - d) * p`` for every floating parameter.

    Buffers (e.g. the EMA-quantizer codebook, itself an average) are copied as they are. With
    ``warmup=True`` the decay is ``min(decay, (1 + n) / (10 + n))`` after ``n`` updates, so short
    runs are not dominated by the initial weights. ``module`` holds the averaged copy (eval mode,
    no grads); ``num_updates`` is saved in the state dict.
    """

    def __init__(self, model: nn.Module, decay: float = 0.9999, warmup: bool = True) -> None:
        super().__init__()
        self.module = copy.deepcopy(model).eval().requires_grad_(False)
        self.decay, self.warmup = decay, warmup
        self.register_buffer("num_updates", torch.zeros((), dtype=torch.long))

    def current_decay(self) -> float:
        n = int(self.num_updates)
        return min(self.decay, (1 + n) / (10 + n)) if self.warmup else self.decay

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        d = self.current_decay()
        own = dict(self.module.named_parameters())
        for name, param in model.named_parameters():
            own[name].lerp_(param.detach().to(own[name].dtype), 1.0 - d)
        own_buffers = dict(self.module.named_buffers())
        for name, buf in model.named_buffers():
            own_buffers[name].copy_(buf)
        self.num_updates += 1
