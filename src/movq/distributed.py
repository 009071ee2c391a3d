"""``torch.distributed`` for every movq command launched by ``torchrun``: one context, a few collectives.

:func:`setup` reads torchrun's environment (``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``) and, with more
than one process, joins the default process group (nccl on CUDA, gloo otherwise); a group that
already exists is adopted, not owned. Every helper is a no-op (or the one-process answer) without
a process group, so the same code runs under ``python`` and under ``torchrun``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist  # already imported by ``import torch``: costs nothing extra

from movq.devices import resolve_device


@dataclass(frozen=True)
class DistContext:
    """Where this process runs: ``rank`` of ``world_size`` processes, on ``device``.

    ``local_rank`` is the process's index on its machine (its CUDA device); ``owns_group`` is true
    when :func:`setup` initialised the process group, so only then does :func:`teardown` destroy it.
    """

    rank: int
    world_size: int
    local_rank: int
    device: torch.device
    owns_group: bool = False

    @property
    def is_main(self) -> bool:
        """Rank 0: the process that prints and writes shared files."""
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        """More than one process, so collectives actually communicate."""
        return self.world_size > 1


def _group_active() -> bool:
    """A default process group exists and has more than one process."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def setup(device: str | torch.device | None = "auto") -> DistContext:
    """The context of this process; joins the process group when torchrun started several.

    ``device`` is resolved by :func:`movq.devices.resolve_device` for this process's ``LOCAL_RANK``
    (``ValueError`` for a device that cannot work here); a CUDA device becomes the current one.
    An already-initialised group is adopted (``owns_group=False``); otherwise, with ``WORLD_SIZE > 1``,
    the group is initialised here (nccl on CUDA, gloo otherwise; ``owns_group=True``).
    """
    adopted = dist.is_available() and dist.is_initialized()
    if adopted:
        rank, world = dist.get_rank(), dist.get_world_size()
        local = int(os.environ.get("LOCAL_RANK", rank))
    else:
        rank, world = int(os.environ.get("RANK", "0")), int(os.environ.get("WORLD_SIZE", "1"))
        local = int(os.environ.get("LOCAL_RANK", "0"))
        if world <= 1:
            rank, world = 0, 1
    dev = resolve_device(device, local)
    if dev.type == "cuda":
        torch.cuda.set_device(dev)
    if adopted or world == 1:
        return DistContext(rank, world, local, dev, owns_group=False)
    dist.init_process_group(backend="nccl" if dev.type == "cuda" else "gloo")
    return DistContext(dist.get_rank(), dist.get_world_size(), local, dev, owns_group=True)


def teardown(ctx: DistContext) -> None:
    """Destroy the process group if :func:`setup` created it for ``ctx``; an adopted group is left alone."""
    if ctx.owns_group and dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def gather_objects(obj: Any, ctx: DistContext) -> list[Any]:
    """``[obj of rank 0, obj of rank 1, ...]`` on every rank (``[obj]`` in one process); ``obj`` must pickle."""
    if not ctx.enabled:
        return [obj]
    out: list[Any] = [None] * ctx.world_size
    dist.all_gather_object(out, obj)
    return out


def any_flag(flag: bool, ctx: DistContext) -> bool:
    """True on every rank if ``flag`` is true on any (e.g. a SIGTERM seen by one rank)."""
    if not ctx.enabled:
        return bool(flag)
    t = torch.tensor([1.0 if flag else 0.0], device=ctx.device)
    dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return bool(t.item() > 0)


def barrier(ctx: DistContext) -> None:
    """Wait until every rank gets here (nothing to wait for in one process)."""
    if ctx.enabled:
        dist.barrier()


def all_reduce_sum(tensor: torch.Tensor) -> torch.Tensor:
    """Sum ``tensor`` over all ranks of the default group, in place; returns it (unchanged without a group)."""
    if _group_active():
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor


def broadcast(tensor: torch.Tensor, src: int = 0) -> torch.Tensor:
    """Replace ``tensor`` by rank ``src``'s copy, in place; returns it (unchanged without a group)."""
    if _group_active():
        dist.broadcast(tensor, src=src)
    return tensor
