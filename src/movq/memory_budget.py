"""Memory estimates and the before-work budget check: an impossible run fails at once with a clear
message instead of being killed by the kernel after minutes of work (``Codec`` construction and
``encode`` / ``decode``, ``movq-bench``, ``movq-train``, ``movq-tokenize``).

One activation estimate serves every caller: :func:`feature_bytes_per_pixel` (feature maps of the
network's widest full-resolution width, ``config.activation_channels``) sizes both the memory check
(:func:`activation_bytes`) and the codec's tiling plan (:meth:`movq.codec.Codec.enable_tiling`).
Parameter bytes are not estimated: :func:`module_bytes` sums a build on the meta device.
"""

from __future__ import annotations

import ctypes
import functools
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol, TypeVar

import torch
from torch import nn
from torch.overrides import TorchFunctionMode

ACTIVATION_MAPS = 4.0
"""Peak activation memory of an encode or decode, in feature maps of the widest full-resolution
width (``config.activation_channels``) at ``H x W``: measured 3.5 for a MoVQGAN-67M decode and
2.5 for an encode (process RSS above the loaded model, fp32, 512x512)."""
SAVED_MAPS_TRAINING = 12
"""Feature maps of that width kept for the backward pass of a training step (a lower bound: six per
residual block, two norms, two activations and two convolutions, for the first full-resolution block
of the encoder and of the decoder; AMP keeps them at least in float32)."""
IMAGE_COPIES = 3
"""Copies of the image batch alive at once (uint8 input, float input, float reconstruction)."""
GIB = 2**30


class MemoryBudgetError(ValueError):
    """The requested work needs more memory than the device has (raised before any work)."""


class SizedNetwork(Protocol):
    """What the activation estimate needs from a codec config."""

    @property
    def activation_channels(self) -> int: ...


def image_bytes(batch: int, height: int, width: int) -> int:
    """Bytes of the image batch alone (:data:`IMAGE_COPIES` float32 copies), which no tiling reduces."""
    return batch * IMAGE_COPIES * 3 * height * width * 4


def feature_bytes_per_pixel(config: SizedNetwork, dtype: torch.dtype = torch.float32, training: bool = False) -> float:
    """Peak feature-map bytes of one image per pixel: :data:`ACTIVATION_MAPS` maps (inference) or
    :data:`SAVED_MAPS_TRAINING` maps (forward and backward) of ``config.activation_channels`` channels."""
    item = torch.empty((), dtype=dtype).element_size()
    if training:
        return SAVED_MAPS_TRAINING * config.activation_channels * max(item, 4)
    return ACTIVATION_MAPS * config.activation_channels * item


def activation_bytes(
    config: SizedNetwork, batch: int, height: int, width: int, dtype: torch.dtype = torch.float32,
    training: bool = False,
) -> int:
    """Peak bytes of a codec forward (and backward when ``training``) over ``batch`` images of
    ``height x width`` pixels in one piece (untiled, unsliced): the image copies plus the feature maps
    (:func:`feature_bytes_per_pixel`)."""
    features = batch * height * width * feature_bytes_per_pixel(config, dtype, training)
    return image_bytes(batch, height, width) + int(features)


M = TypeVar("M", bound=nn.Module)

_INITIALISERS = frozenset({
    torch.Tensor.normal_, torch.Tensor.uniform_, torch.Tensor.fill_, torch.Tensor.zero_,
    *(getattr(nn.init, name) for name in nn.init.__all__ if name.endswith("_")),
})
"""In-place initialisers: on the meta device they have no values to set, and torch's meta ``normal_``
imports ``torch._dynamo`` (seconds, and a gloo process group initialised before it is never freed)."""


class _SkipInitialisers(TorchFunctionMode):
    """Inside :func:`build_on_meta`: every in-place initialiser returns its tensor untouched."""

    def __torch_function__(self, func: Any, types: Any, args: tuple = (), kwargs: dict | None = None) -> Any:
        if func in _INITIALISERS:  # nn.init passes its tensor by keyword
            return args[0] if args else (kwargs or {})["tensor"]
        return func(*args, **(kwargs or {}))


def build_on_meta(build: Callable[[], M]) -> M:
    """``build()`` with every tensor on the meta device and no initialiser run: the module's shapes and
    dtypes without allocating or computing anything (its values are undefined until loaded with
    ``load_state_dict(..., assign=True)``)."""
    with torch.device("meta"), _SkipInitialisers():
        return build()


def module_bytes(module: nn.Module) -> int:
    """Bytes of ``module``'s parameters and buffers (works on the meta device: nothing is read)."""
    tensors = [*module.parameters(), *module.buffers()]
    return sum(t.numel() * t.element_size() for t in tensors)


def available_bytes(device: torch.device | str = "cpu") -> int | None:
    """Total memory of ``device``: a CUDA device's memory, else this machine's RAM (or its cgroup limit).

    ``None`` when it cannot be read (then no check is made).
    """
    device = torch.device(device)
    if device.type == "cuda":
        return int(torch.cuda.get_device_properties(device).total_memory)
    if device.type != "cpu":
        return None
    limits = []
    try:
        limits.append(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))
    except (ValueError, OSError, AttributeError):
        pass
    for cgroup in (Path("/sys/fs/cgroup/memory.max"), Path("/sys/fs/cgroup/memory/memory.limit_in_bytes")):
        try:
            text = cgroup.read_text().strip()
        except OSError:
            continue
        if text.isdigit() and int(text) < 2**60:
            limits.append(int(text))
    return min(limits) if limits else None


DEVICE_BUDGET_SHARE = 0.5
"""Share of the memory free on a codec's device, read when an ``encode`` / ``decode`` call starts, that
its activations may use by default (:func:`device_activation_budget`): the rest is left to the images
themselves, the output, the allocator's fragmentation and whatever else runs. Tiling and batch slicing
engage only beyond it (``TilingPolicy(memory_budget=...)`` fixes the budget instead)."""
FALLBACK_BUDGET = 4 * GIB
"""The activation budget when the device's free memory cannot be read (an unknown accelerator)."""


def free_bytes(device: torch.device | str = "cpu") -> int | None:
    """Memory of ``device`` free for new tensors now: on CUDA the driver's free memory
    (``torch.cuda.mem_get_info``) plus what PyTorch's caching allocator holds unused; on CPU the kernel's
    ``MemAvailable``, capped by the cgroup's limit minus its usage. ``None`` when it cannot be read."""
    device = torch.device(device)
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return int(free + torch.cuda.memory_reserved(device) - torch.cuda.memory_allocated(device))
    if device.type != "cpu":
        return None
    limits = []
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                limits.append(int(line.split()[1]) * 1024)
    except (OSError, ValueError, IndexError):
        pass
    for limit_file, usage_file in (("memory.max", "memory.current"), ("memory/memory.limit_in_bytes",
                                                                    "memory/memory.usage_in_bytes")):
        try:
            limit = (Path("/sys/fs/cgroup") / limit_file).read_text().strip()
            usage = (Path("/sys/fs/cgroup") / usage_file).read_text().strip()
        except OSError:
            continue
        if limit.isdigit() and usage.isdigit() and int(limit) < 2**60:
            limits.append(max(int(limit) - int(usage), 0))
    return min(limits) if limits else available_bytes(device)


def device_activation_budget(device: torch.device | str = "cpu") -> int:
    """The default activation budget of a forward pass on ``device``: :data:`DEVICE_BUDGET_SHARE` of
    :func:`free_bytes` now (:data:`FALLBACK_BUDGET` when that cannot be read), at least 1 byte."""
    free = free_bytes(device)
    return max(1, int(DEVICE_BUDGET_SHARE * free)) if free is not None else FALLBACK_BUDGET


@functools.cache
def _malloc_trim() -> Callable[[int], int] | None:
    """glibc's ``malloc_trim``, or ``None`` where the C library has none (macOS, Windows, musl)."""
    try:
        return ctypes.CDLL(None).malloc_trim
    except (OSError, AttributeError, TypeError):
        return None


def release_freed_memory() -> None:
    """Give the pages of freed heap memory back to the operating system (glibc's ``malloc_trim(0)``;
    nothing where there is none). Threads that allocate in turn (the tiles of
    :class:`movq.tiling.LockstepGroupStats`) each keep a malloc arena whose freed maps the others cannot
    reuse: trimming at every hand-over keeps the process's memory at what is alive (measured at 512 px,
    67M decode in lockstep: 0.85 GiB above the model instead of 1.62)."""
    trim = _malloc_trim()
    if trim is not None:
        trim(0)


def check_memory_budget(needed: int, device: torch.device | str, what: str, advice: str) -> None:
    """Raise :class:`MemoryBudgetError` when ``needed`` bytes exceed the memory of ``device``.

    ``what`` names the work (``"--resolution 100000 x --batch-size 8"``), ``advice`` how to shrink it.
    """
    total = available_bytes(device)
    if total is not None and needed > total:
        raise MemoryBudgetError(
            f"{what} needs at least {needed / GIB:.1f} GiB, but {torch.device(device)} has "
            f"{total / GIB:.1f} GiB; {advice}"
        )


def check_parameters_fit(build: Callable[[], nn.Module], what: str, advice: str) -> None:
    """Refuse (:class:`MemoryBudgetError`) a network whose parameters and buffers alone cannot fit in
    this machine's memory, before anything is allocated: ``build()`` is counted on the meta device
    (:func:`build_on_meta`). Every network constructor calls it first (a hostile or mistyped config);
    inside a meta build it does nothing."""
    if torch.empty(0).device.type == "meta":
        return
    check_memory_budget(module_bytes(build_on_meta(build)), "cpu", what, advice)
