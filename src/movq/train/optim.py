"""Optimisation pieces every movq trainer shares: the warm-up + cosine schedule, the autocast
dtype, AdamW parameter groups with and without weight decay, gradient accumulation under DDP and
the optimizer step itself (:class:`OptimizerStep`: clip, step, zero_grad, schedule, EMA)."""

from __future__ import annotations

import contextlib
import math
import warnings
from typing import TYPE_CHECKING, Any, Protocol

import torch
from torch import Tensor, nn

from movq.train.ema import ModelEMA

if TYPE_CHECKING:
    from movq.train.config import OptimConfig


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


class OptimizerStep:
    """The end of a training step, the same in every movq trainer: clip the gradient norm of
    ``model``, ``opt.step()``, ``opt.zero_grad(set_to_none=True)``, ``sched.step()``, ``ema.update(model)``.

    ``model`` is the unwrapped module that ``opt`` trains (not its DDP wrapper: the gradients are
    the same, and ``ema`` copies its parameter names). ``grad_clip``: largest total L2 gradient norm,
    ``0`` for no clipping (the norm is still measured), ``None`` for neither. ``ema``: updated after
    every applied step, or ``None``.

    ``step = OptimizerStep(model, opt, sched, cfg.grad_clip, ema)`` (or :meth:`adamw`, what the
    trainers use: AdamW, warm-up + cosine, EMA, all from the config); after the backward passes,
    ``grad_norm = step()`` returns the norm before clipping as a 0-d float32 tensor on the device,
    never read back (no host sync), or ``None`` when ``grad_clip`` is ``None``. ``step(apply=False)``
    (a model that does not train yet, such as the codec's discriminator before ``disc_start``) skips
    clipping, ``opt.step()`` and the EMA but still zeroes the gradients and advances the schedule,
    so the schedule counts the trainer's steps. ``state_dict()`` / ``load_state_dict()`` hold the
    model, EMA, optimizer and schedule under the checkpoint keys ``model``, ``ema``, ``opt``, ``sched``.
    """

    def __init__(self, model: nn.Module, opt: torch.optim.Optimizer, sched: torch.optim.lr_scheduler.LRScheduler,
                 grad_clip: float | None = 0.0, ema: ModelEMA | None = None) -> None:
        self.model, self.opt, self.sched, self.ema = model, opt, sched, ema
        self.max_norm = None if grad_clip is None else grad_clip if grad_clip > 0 else float("inf")

    @classmethod
    def adamw(cls, model: nn.Module, cfg: OptimConfig, params: Any = None, lr: float | None = None,
              ema: bool = True, clip: bool = True) -> OptimizerStep:
        """The step of an :class:`~movq.train.config.OptimConfig`: AdamW over ``params`` (default
        :func:`decay_groups`: weight decay on linear and convolution weights only; an iterable of
        parameters all decay) at ``lr`` (default ``cfg.lr``) with ``cfg.betas`` and ``cfg.weight_decay``,
        the warm-up + cosine schedule (:func:`lr_lambda`), clipping at ``cfg.grad_clip`` (``clip=False``:
        none, no norm) and a :class:`~movq.train.ema.ModelEMA` of ``model`` (``ema=False``: none)."""
        if params is None:
            params = decay_groups(model, cfg.weight_decay)
        opt = torch.optim.AdamW(params, lr or cfg.lr, betas=cfg.betas, weight_decay=cfg.weight_decay)
        sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_lambda(cfg))
        average = ModelEMA(model, cfg.ema_decay, cfg.ema_warmup) if ema else None
        return cls(model, opt, sched, cfg.grad_clip if clip else None, average)

    def __call__(self, apply: bool = True) -> Tensor | None:
        grad_norm = None
        if apply and self.max_norm is not None:
            grad_norm = nn.utils.clip_grad_norm_(self.model.parameters(), self.max_norm).detach().float()
        if apply:
            self.opt.step()
        self.opt.zero_grad(set_to_none=True)
        with warnings.catch_warnings():  # a schedule stepped before its first applied step: expected
            warnings.filterwarnings("ignore", message=r"Detected call of `lr_scheduler.step\(\)` before")
            self.sched.step()
        if apply and self.ema is not None:
            self.ema.update(self.model)
        return grad_norm

    def state_dict(self) -> dict[str, Any]:
        """``model``, ``ema`` (when there is one), ``opt`` and ``sched`` state dicts (tensors and plain values)."""
        state = {"model": self.model.state_dict()}
        if self.ema is not None:
            state["ema"] = self.ema.state_dict()
        return {**state, "opt": self.opt.state_dict(), "sched": self.sched.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what :meth:`state_dict` returned (other keys of ``state`` are left alone)."""
        self.model.load_state_dict(state["model"])
        if self.ema is not None:
            self.ema.load_state_dict(state["ema"])
        self.opt.load_state_dict(state["opt"])
        self.sched.load_state_dict(state["sched"])
