"""Resource bounds before work: estimate the memory a codec pass needs and refuse a run that cannot fit.

:func:`estimate_codec_bytes` is a deliberately simple model of an inference (no-grad) pass of the
encoder (the decoder's peak is about the same): the weights, plus a few live buffers of the widest
feature map, plus the input conversion and the quantizer's chunked distance matrix. It is meant to
catch impossible settings (``--resolution 100000``, a batch of thousands at 1024 px) with a clear
message before any compute, not to predict the allocator's peak to the byte.
:func:`check_memory_budget` compares an estimate with the free memory of the device.
"""

from __future__ import annotations

import os
from typing import Any

import torch

LIVE_BUFFERS = 5
"""Feature maps of the widest level alive at once in a ResNet block (input, norm, activation, conv, sum)."""

SEARCH_CHUNK = 4096
"""Rows of the nearest-code search done at once (``movq.quantizers.base.DEFAULT_CHUNK_SIZE``)."""


def _config_of(codec_or_config: Any) -> Any:
    return getattr(codec_or_config, "config", codec_or_config)


def _level_widths(config: Any) -> list[int]:
    """Channels of each resolution level (level ``i`` is ``2**i`` times smaller than the input)."""
    if hasattr(config, "ch") and hasattr(config, "ch_mult"):
        return [config.ch * m for m in config.ch_mult]
    if hasattr(config, "n_hid") and hasattr(config, "group_count"):  # DALL-E dVAE
        return [config.n_hid * 2**g for g in range(config.group_count)]
    return [512]  # unknown architecture: a wide full-resolution network, on the safe side


def _parameter_bytes(codec_or_config: Any, dtype: torch.dtype) -> int:
    if isinstance(codec_or_config, torch.nn.Module):
        return sum(p.numel() * p.element_size() for p in codec_or_config.parameters())
    from movq.codec import Codec
    from movq.dvae import DVAE, DVAEConfig

    cls = DVAE if isinstance(codec_or_config, DVAEConfig) else Codec
    with torch.device("meta"):  # shapes only: nothing is allocated
        model = cls(codec_or_config)
    itemsize = torch.empty((), dtype=dtype).element_size()
    return sum(p.numel() for p in model.parameters()) * itemsize


def estimate_codec_bytes(codec_or_config: Any, batch: int, height: int, width: int, dtype: torch.dtype) -> int:
    """Bytes an inference pass of ``codec_or_config`` (a codec module or its config) needs for a batch.

    ``batch`` images of ``height x width`` pixels with the codec in ``dtype``. Counts the weights,
    ``LIVE_BUFFERS`` feature maps of the widest level, the float32 input and its cast, and the
    float32 distance chunk of the nearest-code search (``SEARCH_CHUNK x codebook_size``).
    """
    config = _config_of(codec_or_config)
    itemsize = torch.empty((), dtype=dtype).element_size()
    pixels = height * width
    widest = max(w * pixels // 4**i for i, w in enumerate(_level_widths(config)))
    activations = batch * LIVE_BUFFERS * widest * itemsize
    inputs = batch * 3 * pixels * (1 + 4 + itemsize)  # uint8 batch, float32 conversion, cast to dtype
    f = getattr(config, "downsample_factor", 8)
    positions = batch * (height // f) * (width // f)
    codes = int(getattr(config, "codebook_size", 16384))
    search = 3 * min(positions, SEARCH_CHUNK) * min(codes, 2**20) * 4
    return _parameter_bytes(codec_or_config, dtype) + activations + inputs + search


def available_bytes(device: torch.device | str = "cpu") -> int | None:
    """Free memory of ``device``: CUDA ``mem_get_info``; for the CPU ``MemAvailable`` of
    ``/proc/meminfo``, else ``psutil`` if installed, else ``os.sysconf`` free pages; ``None`` if unknown."""
    device = torch.device(device)
    if device.type == "cuda":
        return int(torch.cuda.mem_get_info(device)[0])
    if device.type != "cpu":
        return None
    try:
        with open("/proc/meminfo", encoding="ascii") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        import psutil  # type: ignore[import-not-found]

        return int(psutil.virtual_memory().available)
    except ImportError:
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


def format_bytes(n: float) -> str:
    """``1536`` -> ``'1.5 KiB'``."""
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.1f} {unit}" if unit != "B" else f"{int(n)} B"
        n /= 1024
    return f"{n:.1f} TiB"


def check_memory_budget(needed: int, device: torch.device | str = "cpu", what: str = "this run") -> None:
    """Raise ``ValueError`` naming the estimate and the free memory if ``needed`` bytes do not fit on ``device``.

    Does nothing when the free memory cannot be read (unknown device type or platform).
    """
    free = available_bytes(device)
    if free is not None and needed > free:
        kind = "GPU memory" if torch.device(device).type == "cuda" else "RAM"
        raise ValueError(
            f"{what} needs about {format_bytes(needed)} but only {format_bytes(free)} of {kind} is available; "
            "lower the resolution or the batch size"
        )
