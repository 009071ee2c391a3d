"""Memory estimates checked before work starts, so an impossible run fails at once with a clear message
instead of being killed by the kernel after minutes of work (``movq-bench``, ``movq-train``,
``movq-tokenize``).

The estimates are deliberately simple (activation sizes of the widest feature maps times a count of
tensors alive at once) and err on the low side: a run is refused only when it cannot fit.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch

from movq.config import CodecConfig

LIVE_TENSORS_INFERENCE = 4
"""Full-size feature maps alive at once in an eval-mode forward (input, norm output, conv output, residual)."""
SAVED_TENSORS_PER_BLOCK = 6
"""Feature maps a residual block keeps for the backward pass (two norms, two activations, two convs)."""
IMAGE_COPIES = 3
"""Copies of the image batch alive at once (uint8 input, float input, float reconstruction)."""
GIB = 2**30


class MemoryBudgetError(ValueError):
    """The requested work needs more memory than the device has (raised before any work)."""


def image_bytes(batch: int, height: int, width: int) -> int:
    """Bytes of the image batch alone (:data:`IMAGE_COPIES` float32 copies), which no tiling reduces."""
    return batch * IMAGE_COPIES * 3 * height * width * 4


def codec_activation_bytes(
    config: CodecConfig, batch: int, height: int, width: int, dtype: torch.dtype = torch.float32, training: bool = False
) -> int:
    """A lower estimate of the peak bytes of a codec forward (and backward when ``training``).

    Counts the image batch (:data:`IMAGE_COPIES` float copies) plus, for inference, the widest feature
    map of any level times :data:`LIVE_TENSORS_INFERENCE`; for training, every level's feature maps
    times :data:`SAVED_TENSORS_PER_BLOCK` per residual block, for encoder and decoder.
    """
    item = torch.empty((), dtype=dtype).element_size()
    levels = [
        (config.ch * mult) * (height >> level) * (width >> level) for level, mult in enumerate(config.ch_mult)
    ]
    image = image_bytes(1, height, width)
    if training:
        features = 2 * sum(levels) * config.num_res_blocks * SAVED_TENSORS_PER_BLOCK * max(item, 4)
    else:
        features = max(levels) * LIVE_TENSORS_INFERENCE * item
    return batch * (image + features)


def codec_parameter_bytes(config: CodecConfig) -> int:
    """A lower estimate of the bytes of a codec's float32 parameters: the weights of its 3x3
    convolutions (residual blocks, mid blocks, down / upsampling; :mod:`movq.modules`), plus one float
    per code of the codebook. Norms, attention, 1x1 convolutions and biases are left out."""
    widths = [config.ch * mult for mult in config.ch_mult]
    blocks, top = config.num_res_blocks, widths[-1]
    convs = 2 * 2 * 18 * top * top  # the two residual blocks of the encoder's and the decoder's mid block
    previous = config.ch
    for level, width in enumerate(widths):  # encoder: blocks (first one from the previous width), downsample
        convs += 9 * (previous * width + width * width) + (blocks - 1) * 18 * width * width
        convs += 9 * width * width if level != len(widths) - 1 else 0
        previous = width
    for level in reversed(range(len(widths))):  # decoder: one block more per level, upsample
        width = widths[level]
        convs += 9 * (previous * width + width * width) + blocks * 18 * width * width
        convs += 9 * width * width if level != 0 else 0
        previous = width
    return 4 * (convs + getattr(config.quantizer, "codebook_size", 0))


def check_codec_size(config: CodecConfig) -> None:
    """Refuse (:class:`MemoryBudgetError`) a codec config whose parameters alone cannot fit in this
    machine's memory, before anything is allocated (a hostile or mistyped ``config.json``)."""
    check_memory_budget(
        codec_parameter_bytes(config), "cpu",
        f"the codec config {config.name!r} (ch={config.ch}, ch_mult={list(config.ch_mult)}, "
        f"num_res_blocks={config.num_res_blocks}, codebook_size={getattr(config.quantizer, 'codebook_size', None)})",
        "the config asks for far more parameters than a codec has; check those fields",
    )


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
