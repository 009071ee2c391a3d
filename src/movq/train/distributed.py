"""torch.distributed setup for ``torchrun``: gloo on CPU, nccl on CUDA; rank 0 writes."""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

from movq.devices import resolve_device


@dataclass
class DistInfo:
    """Where this process runs: ``rank`` of ``world_size`` replicas, on ``device``."""

    rank: int
    world_size: int
    local_rank: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1


def pick_device(name: str, local_rank: int = 0) -> torch.device:
    """``"auto"``: the local CUDA device if any, else MPS, else CPU; other names are checked (:func:`movq.devices.resolve_device`)."""
    return resolve_device(name, local_rank)


def setup(device_name: str = "auto") -> DistInfo:
    """Join the process group if launched by torchrun (``WORLD_SIZE`` > 1) or one already exists."""
    if dist.is_available() and dist.is_initialized():
        rank, world = dist.get_rank(), dist.get_world_size()
        local = int(os.environ.get("LOCAL_RANK", rank))
        return DistInfo(rank, world, local, pick_device(device_name, local))
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return DistInfo(0, 1, 0, pick_device(device_name))
    local = int(os.environ.get("LOCAL_RANK", "0"))
    device = pick_device(device_name, local)
    if device.type == "cuda":
        torch.cuda.set_device(device)
    dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return DistInfo(dist.get_rank(), dist.get_world_size(), local, device)


def any_flag(flag: bool, info: DistInfo) -> bool:
    """True on every replica if ``flag`` is true on any (e.g. a SIGTERM seen by one rank)."""
    if not info.enabled:
        return flag
    t = torch.tensor([1.0 if flag else 0.0], device=info.device)
    dist.all_reduce(t)
    return bool(t.item() > 0)


def gather_objects(obj: object, info: DistInfo) -> list[object]:
    """``obj`` from every rank, in rank order (a one-element list without distribution)."""
    if not info.enabled:
        return [obj]
    out: list[object] = [None] * info.world_size
    dist.all_gather_object(out, obj)
    return out
