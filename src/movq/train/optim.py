"""Optimisation pieces every movq trainer shares: the warm-up + cosine schedule, the autocast
dtype, AdamW parameter groups with and without weight decay, and gradient accumulation under DDP."""

from __future__ import annotations

import contextlib
import math
from typing import Any, Protocol

import torch
from torch import nn


class ScheduleConfig(Protocol):
    warmup_steps: int
    max_steps: int
    min_lr_ratio: float


def lr_lambda(cfg: ScheduleConfig) -> Any:
    """Linear warm-up over ``warmup_steps``, then cosine from 1 to ``min_lr_ratio`` at ``max_steps``."""

    def factor(step: int) -> float:
        if step < cfg.warmup_steps:
            return (step + 1) / cfg.warmup_steps
        span = max(cfg.max_steps - cfg.warmup_steps, 1)
        progress = min((step - cfg.warmup_steps) / span, 1.0)
        return cfg.min_lr_ratio + (1 - cfg.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress))

    return factor


def autocast_dtype(cfg: Any, device: torch.device) -> torch.dtype | None:
    """``cfg.amp``: bf16 on CPU and on CUDA devices that support it (``"auto"``), fp16 only when asked, ``"none"``."""
    if cfg.amp == "none" or device.type not in ("cpu", "cuda"):
        return None
    if cfg.amp == "fp16":
        return torch.float16
    if device.type == "cuda" and not torch.cuda.is_bf16_supported():
        return None if cfg.amp == "auto" else torch.bfloat16
    return torch.bfloat16


def autocast(dtype: torch.dtype | None, device: torch.device) -> contextlib.AbstractContextManager[Any]:
    """``torch.autocast`` in ``dtype`` on ``device``, or nothing when ``dtype`` is ``None``."""
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=dtype)


def no_sync_unless(module: nn.Module, sync: bool) -> contextlib.AbstractContextManager[Any]:
    """DDP's ``no_sync()`` for the micro-batches of an accumulation that must not all-reduce yet
    (``sync=False``); a no-op for the last micro-batch and for modules that are not DDP-wrapped."""
    if sync or not hasattr(module, "no_sync"):
        return contextlib.nullcontext()
    return module.no_sync()  # type: ignore[operator]


DECAYED = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.ConvTranspose2d)


def decay_groups(model: nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    """AdamW parameter groups: the weights of linear and convolution layers decay by ``weight_decay``;
    biases, normalisation scales, embeddings and free parameters do not (GPT-2 / minGPT practice)."""
    decayed: set[int] = set()
    for module in model.modules():
        if isinstance(module, DECAYED):
            decayed.add(id(module.weight))
    params = [p for p in model.parameters() if p.requires_grad]
    return [
        {"params": [p for p in params if id(p) in decayed], "weight_decay": weight_decay},
        {"params": [p for p in params if id(p) not in decayed], "weight_decay": 0.0},
    ]
