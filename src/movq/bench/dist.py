"""torch.distributed helpers: launched by ``torchrun``, the bench shards data and reduces statistics."""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import torch

from movq.devices import resolve_device


@dataclass
class DistContext:
    """``rank`` / ``world_size`` of this process and its ``device``; ``initialized`` when we set up the group."""

    rank: int = 0
    world_size: int = 1
    device: torch.device = torch.device("cpu")
    initialized: bool = False

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def setup(device: str | None) -> DistContext:
    """Read torchrun's environment; with ``WORLD_SIZE > 1`` join the group (NCCL on CUDA, gloo on CPU)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    dev = resolve_device(device, local_rank)
    if dev.type == "cuda":
        torch.cuda.set_device(dev)
    if world <= 1:
        return DistContext(0, 1, dev, False)
    import torch.distributed as dist

    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if dev.type == "cuda" else "gloo")
        return DistContext(rank, world, dev, True)
    return DistContext(dist.get_rank(), dist.get_world_size(), dev, False)


def gather_objects(ctx: DistContext, obj: Any) -> list[Any]:
    """``[obj of rank 0, obj of rank 1, ...]`` (just ``[obj]`` without distribution)."""
    if ctx.world_size == 1:
        return [obj]
    import torch.distributed as dist

    out: list[Any] = [None] * ctx.world_size
    dist.all_gather_object(out, obj)
    return out


def barrier(ctx: DistContext) -> None:
    if ctx.world_size > 1:
        import torch.distributed as dist

        dist.barrier()


def teardown(ctx: DistContext) -> None:
    if ctx.initialized:
        import torch.distributed as dist

        dist.destroy_process_group()


def teardown_if_initialized() -> None:
    """Destroy the default process group if one exists (error paths before a runner owns it)."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()
