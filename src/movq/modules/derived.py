"""Weights derived from parameters (stacked, folded, re-arranged), built once per inference.

During inference the same derived tensors (q/k/v stacked into one matrix, the phase kernels of
the sub-pixel upsampling, SpatialNorm's folded modulation) would otherwise be rebuilt at every
call. :func:`derived` memoises them on the module while autograd is off and rebuilds them when a
source parameter changes (new storage, in-place update, dtype or device); with autograd on, or
while ``torch.compile`` / ``torch.export`` trace, it always rebuilds so gradients and graphs see the
parameters themselves.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Hashable
from typing import TypeVar

import torch
from torch import Tensor, nn

T = TypeVar("T")


def _version(t: Tensor) -> int:
    """In-place update counter; inference tensors (made under ``inference_mode``) have none."""
    return 0 if t.is_inference() else t._version


_builds = itertools.count(1)


def _stamped(value: T) -> T:
    """Mark the tensors of a freshly built ``value`` with a unique build number, so that a weight
    derived from them (a packed copy of a stacked weight) is rebuilt with them even when the new
    tensor reuses a freed one's memory address."""
    for t in value if isinstance(value, tuple) else (value,):
        if isinstance(t, Tensor):
            t._movq_build = next(_builds)
    return value


def derived(module: nn.Module, name: str, build: Callable[[], T], *sources: Tensor, extra: Hashable = None) -> T:
    """``build()``, memoised on ``module`` under ``name`` for inference (see the module docstring).
    ``sources`` are the tensors ``build`` reads (parameters, or what another ``derived`` built); a
    change of ``extra`` also rebuilds (one entry per ``name`` is kept)."""
    if torch.is_grad_enabled() or torch.compiler.is_compiling():
        return build()
    key = (extra, *((t.data_ptr(), _version(t), t.dtype, t.device, getattr(t, "_movq_build", 0)) for t in sources))
    store: dict[str, tuple[tuple, T]] = module.__dict__.setdefault("_derived_weights", {})
    hit = store.get(name)
    if hit is None or hit[0] != key:
        hit = store[name] = (key, _stamped(build()))
    return hit[1]
