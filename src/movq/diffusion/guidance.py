"""Classifier-free guidance (Ho & Salimans): conditioning dropout in training, and the guided
model used in sampling. A conditional model marks unconditional rows with ``uncond_mask``."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor

from movq.strict import check_argument

CONDITION_KEYS = ("y", "cond")


def drop_conditions(
    model_kwargs: dict[str, Any], p_uncond: float, *, generator: torch.Generator | None = None
) -> dict[str, Any]:
    """Label / conditioning dropout for training a guidable model.

    ``model_kwargs`` holds ``y`` (class labels ``[B]``) and/or ``cond`` (vectors ``[B, D]``). Returns
    a copy whose ``uncond_mask`` (bool ``[B]``) is True on a random fraction ``p_uncond`` of the rows
    (or-ed with any mask already there): the model replaces their condition by its learned null
    one, so it learns the unconditional prediction too. ``generator`` must be on the data's device.
    """
    if not (isinstance(p_uncond, (int, float)) and 0.0 <= p_uncond <= 1.0):
        raise ValueError(f"p_uncond must be a probability in [0, 1], got {p_uncond!r}")
    conditions = [model_kwargs[k] for k in CONDITION_KEYS if isinstance(model_kwargs.get(k), Tensor)]
    if not conditions:
        raise ValueError(
            f"drop_conditions needs a tensor 'y' (labels) or 'cond' (vectors) in model_kwargs, got {sorted(model_kwargs)}"
        )
    batch, device = conditions[0].shape[0], conditions[0].device
    drop = torch.rand(batch, generator=generator, device=device) < p_uncond
    previous = model_kwargs.get("uncond_mask")
    if previous is not None:
        drop = drop | previous.to(device=device, dtype=torch.bool)
    return {**model_kwargs, "uncond_mask": drop}


class ClassifierFreeGuidance:
    """Wraps a conditional model ``model(x, t, **kwargs)``: one batched call on ``[x; x]`` with the
    second half unconditional, then ``u + scale * (c - u)`` on the first ``channels`` output
    channels (the eps / x0 / v prediction, linear in the output); the remaining channels (a learned
    variance) come from the conditional half. In and out like the wrapped model."""

    def __init__(self, model: Callable[..., Tensor], scale: float, channels: int) -> None:
        scale = check_argument(scale, float, "guidance_scale")
        if getattr(model, "conditional", True) is False:
            raise ValueError(
                "classifier-free guidance needs a conditional model (num_classes or cond_dim set)"
            )
        self.model, self.scale, self.channels = model, scale, channels

    def __call__(self, x: Tensor, t: Tensor, **kwargs: Any) -> Tensor:
        batch = x.shape[0]
        given = kwargs.pop("uncond_mask", None)
        conditional = (
            torch.zeros(batch, dtype=torch.bool, device=x.device) if given is None else given.to(x.device)
        )
        doubled = {
            k: torch.cat([v, v]) if isinstance(v, Tensor) and v.ndim and v.shape[0] == batch else v
            for k, v in kwargs.items()
        }
        doubled["uncond_mask"] = torch.cat([conditional, torch.ones_like(conditional)])
        out = self.model(torch.cat([x, x]), torch.cat([t, t]), **doubled)
        cond, uncond = out[:batch], out[batch:]
        c = self.channels
        guided = uncond[:, :c] + self.scale * (cond[:, :c] - uncond[:, :c])
        return torch.cat([guided, cond[:, c:]], dim=1)
