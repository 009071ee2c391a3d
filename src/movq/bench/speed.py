"""``movq-bench speed``: encode / decode throughput and peak memory of one or more codecs."""

from __future__ import annotations

import resource
import sys
import time
from dataclasses import dataclass
from typing import Annotated, Any

import torch

import movq
from movq.bench.runner import Resolution, check_codec_memory
from movq.devices import resolve_device
from movq.dtypes import DTypeName
from movq.strict import MinLength, NonNegativeInt, PositiveInt, StrictConfig


@dataclass
class SpeedConfig(StrictConfig):
    """What ``movq-bench speed`` times (the CLI fills it from its arguments; :func:`run_speed` takes its
    fields): ``models`` at ``resolution`` x ``batch_size``, ``warmup`` untimed then ``iters`` timed
    encodes and decodes. Every field is checked against its hint on construction."""

    models: Annotated[list[str], MinLength(1)]
    resolution: Resolution = 256
    batch_size: PositiveInt = 8
    iters: PositiveInt = 5
    warmup: NonNegativeInt = 1
    device: str | None = None
    dtype: DTypeName = "float32"
    threads: PositiveInt | None = None


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _peak_rss_mb() -> float:
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss / 1024.0 / (1024.0 if sys.platform == "darwin" else 1.0)


def measure(
    codec: movq.Codec, resolution: int, batch_size: int, iters: int, warmup: int, device: torch.device
) -> dict[str, Any]:
    """Time ``encode`` and ``decode`` on random images ``[batch_size, 3, R, R]``.

    Returns images/s and ms/batch for both, and the peak memory: CUDA ``max_memory_allocated``
    during the timed loop, or on CPU the process's peak resident set size (includes everything
    loaded so far, so it is an upper bound).
    """
    generator = torch.Generator().manual_seed(0)
    x = (torch.rand(batch_size, 3, resolution, resolution, generator=generator) * 2 - 1).to(device)
    tokens = codec.encode(x)
    out: dict[str, Any] = {}
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    for name, fn in (("encode", lambda: codec.encode(x)), ("decode", lambda: codec.decode(tokens))):
        with torch.inference_mode():
            for _ in range(warmup):
                fn()
            _sync(device)
            start = time.perf_counter()
            for _ in range(iters):
                fn()
            _sync(device)
        seconds = (time.perf_counter() - start) / iters
        out[f"{name}_ms_per_batch"] = seconds * 1000
        out[f"{name}_images_per_s"] = batch_size / seconds
    if device.type == "cuda":
        out["peak_memory_mb"] = torch.cuda.max_memory_allocated(device) / 2**20
        out["peak_memory_kind"] = "cuda max_memory_allocated"
    else:
        out["peak_memory_mb"] = _peak_rss_mb()
        out["peak_memory_kind"] = "process peak RSS"
    return out


def run_speed(models: list[str], resolution: int, batch_size: int, iters: int, warmup: int,
              device: str | None, dtype: torch.dtype, threads: int | None = None) -> list[dict[str, Any]]:
    """Measure every model; raises ``ValueError`` for unloadable models (message names the model)."""
    if threads:
        torch.set_num_threads(threads)
    dev = resolve_device(device)
    results = []
    for spec in models:
        try:
            codec = movq.load(spec, device=dev, dtype=dtype)
        except Exception as err:
            raise ValueError(f"cannot load model {spec!r}: {err}") from err
        if resolution % codec.downsample_factor:
            raise ValueError(f"--resolution {resolution} is not a multiple of {spec}'s downsample factor {codec.downsample_factor}")
        check_codec_memory([codec], batch_size, resolution, dev)
        row = {"model": spec, "resolution": resolution, "batch_size": batch_size, "dtype": str(dtype).replace("torch.", ""),
               "device": str(dev), "threads": torch.get_num_threads()}
        row.update(measure(codec, resolution, batch_size, iters, warmup, dev))
        results.append(row)
        del codec
    return results


def speed_table(rows: list[dict[str, Any]]) -> str:
    """Markdown table of :func:`run_speed` rows."""
    head = "| Model | Res | Batch | dtype | Device | Encode img/s | Decode img/s | Encode ms/batch | Decode ms/batch | Peak MB |"
    lines = [head, "|" + "---|" * 10]
    for r in rows:
        lines.append(
            f"| {r['model']} | {r['resolution']} | {r['batch_size']} | {r['dtype']} | {r['device']} | "
            f"{r['encode_images_per_s']:.2f} | {r['decode_images_per_s']:.2f} | {r['encode_ms_per_batch']:.1f} | "
            f"{r['decode_ms_per_batch']:.1f} | {r['peak_memory_mb']:.0f} ({r['peak_memory_kind']}) |"
        )
    return "\n".join(lines) + "\n"
