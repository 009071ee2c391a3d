"""movq against diffusers' ``VQModel`` on the same weights: the measurement behind ``benchmarks/speed.py``
(and the helpers ``benchmarks/fast_paths.py`` times with).

Every pair is measured interleaved in one process (variant A, variant B, A, B, ... for several
repeats; the median of each is reported), so load from other processes affects both alike. The
round trip is ``decode(encode(x))``: tokens and back to pixels. Reported per configuration:
images/s of both, their ratio, movq's effective GFLOP/s (the reference architecture's FLOPs,
counted by ``torch.utils.flop_counter``) and its share of this machine's measured 3x3 convolution
peak, the token agreement with diffusers' fp32 tokens (of movq, and of the diffusers variant
timed), and the peak memory of one round trip of each (CPU: RSS
growth of a child process; CUDA: ``max_memory_allocated``).
"""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

import movq
from movq.dtypes import dtype_names
from movq.hub.diffusers import config_to_diffusers, original_to_diffusers

PRECISIONS = dtype_names(torch.float32, torch.bfloat16, short=True)  # fp32, bf16


@dataclass
class Row:
    """One line of the table (times are medians over the repeats, seconds per batch)."""

    model: str
    resolution: int
    batch: int
    precision: str
    movq_images_per_s: float
    diffusers_images_per_s: float
    diffusers_variant: str
    ratio: float
    gflop_per_round_trip: float
    movq_gflops: float
    conv_peak_gflops: float
    token_agreement: float
    diffusers_token_agreement: float
    movq_peak_mib: float | None = None
    diffusers_peak_mib: float | None = None


def spread_weights(model: nn.Module, seed: int) -> nn.Module:
    """Random, non-default weights (works on a movq ``Codec`` and a diffusers ``VQModel``): norm
    scales around 1, biases around 0, the codebook spread like the latents, so tokens and pixels
    are not degenerate. Returns ``model`` in eval mode."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in model.named_parameters():
            noise = torch.randn(param.shape, generator=gen)
            if "norm" in name and name.endswith("weight") and param.ndim == 1:
                param.copy_(1.0 + 0.2 * noise)
            elif name.endswith("bias"):
                param.copy_(0.05 * noise)
            elif name == "quantize.embedding.weight":
                param.copy_(0.5 * noise)
    return model.eval()


def diffusers_twin(codec: movq.Codec) -> nn.Module:
    """A diffusers ``VQModel`` with ``codec``'s architecture and weights (fp32, eval, NCHW)."""
    from diffusers import VQModel

    config = {k: v for k, v in config_to_diffusers(codec.config).items() if not k.startswith("_")}
    model = VQModel(**config)
    state = {k: v.float() for k, v in codec.state_dict().items()}
    model.load_state_dict(original_to_diffusers(state))
    return model.eval()


def diffusers_round_trip(model: nn.Module, x: Tensor) -> tuple[Tensor, Tensor]:
    """``(tokens, pixels)`` of diffusers' ``VQModel``: encode, then ``decode`` (which quantizes)."""
    latents = model.encode(x).latents
    _, _, (_, _, indices) = model.quantize(latents)
    return indices.reshape(x.shape[0], *latents.shape[-2:]), model.decode(latents).sample


def images(batch: int, resolution: int, photos: str | None = None) -> Tensor:
    """``batch`` real photos (centre crops of the JPEG / PNG files in the folder ``photos``, reused
    if there are fewer) in ``[-1, 1]``, or random images without a folder."""
    from movq.image_files import open_rgb, resize_center_crop
    from movq.images import to_tensor

    paths = sorted(p for p in Path(photos).iterdir() if p.suffix.lower() in (".jpg", ".jpeg", ".png")) if photos else []
    if not paths:
        generator = torch.Generator().manual_seed(resolution + batch)
        return torch.rand(batch, 3, resolution, resolution, generator=generator) * 2 - 1
    crops = [resize_center_crop(open_rgb(paths[i % len(paths)]), resolution)[0] for i in range(batch)]
    return to_tensor(crops)[0]


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def conv_peak_gflops(dtype: torch.dtype, device: torch.device, repeats: int = 5) -> float:
    """Best GFLOP/s of a 256-channel 3x3 convolution on a 64x64 map (NCHW or channels-last, the
    faster) on this machine: the yardstick of the table's "% of peak" column."""
    best = 0.0
    flop = 2 * 256 * 256 * 9 * 64 * 64
    with torch.inference_mode():
        for layout in (torch.contiguous_format, torch.channels_last):
            x = torch.randn(1, 256, 64, 64, device=device, dtype=dtype).contiguous(memory_format=layout)
            w = torch.randn(256, 256, 3, 3, device=device, dtype=dtype).contiguous(memory_format=layout)
            F.conv2d(x, w, padding=1)
            for _ in range(repeats):
                sync(device)
                start = time.perf_counter()
                F.conv2d(x, w, padding=1)
                sync(device)
                best = max(best, flop / (time.perf_counter() - start) / 1e9)
    return best


def count_gflop(model: nn.Module, x: Tensor) -> float:
    """FLOPs of one diffusers round trip (convolutions, matrix products, attention), in GFLOP."""
    from torch.utils.flop_counter import FlopCounterMode

    with torch.inference_mode(), FlopCounterMode(display=False) as counter:
        diffusers_round_trip(model, x)
    return counter.get_total_flops() / 1e9


def interleaved(variants: dict[str, Callable[[], Any]], repeats: int, device: torch.device) -> dict[str, float]:
    """Median seconds per call of each variant, calls interleaved (one warm-up call each first)."""
    times: dict[str, list[float]] = {name: [] for name in variants}
    with torch.inference_mode():
        for fn in variants.values():
            fn()
        for _ in range(repeats):
            for name, fn in variants.items():
                sync(device)
                start = time.perf_counter()
                fn()
                sync(device)
                times[name].append(time.perf_counter() - start)
    return {name: statistics.median(values) for name, values in times.items()}


def build(preset: str, seed: int, device: torch.device) -> tuple[movq.Codec, nn.Module]:
    """The random-weight movq codec of ``preset`` and its diffusers twin, both fp32 on ``device``."""
    torch.manual_seed(seed)
    codec = spread_weights(movq.Codec(movq.get_preset(preset)), seed)
    return codec.to(device), diffusers_twin(codec).to(device)


def diffusers_variants(model: nn.Module, x: Tensor, precision: str) -> dict[str, Callable[[], Any]]:
    """The diffusers configurations a user would run: fp32 as loaded; bf16 as bf16 weights or fp32
    weights under autocast, both channels-last (the table keeps the faster)."""
    if precision == "fp32":
        return {"default": lambda: diffusers_round_trip(model, x)}
    weights = _copy(model).to(dtype=torch.bfloat16, memory_format=torch.channels_last)
    autocast = _copy(model).to(memory_format=torch.channels_last)
    x_bf16 = x.to(torch.bfloat16).contiguous(memory_format=torch.channels_last)
    x_last = x.contiguous(memory_format=torch.channels_last)

    def under_autocast() -> Any:
        with torch.autocast(x.device.type, dtype=torch.bfloat16):
            return diffusers_round_trip(autocast, x_last)

    return {"bf16 weights, channels_last": lambda: diffusers_round_trip(weights, x_bf16),
            "autocast bf16, channels_last": under_autocast}


def _copy(model: nn.Module) -> nn.Module:
    import copy

    return copy.deepcopy(model)


def compare(preset: str, resolution: int, batch: int, precision: str, repeats: int, device: torch.device,
            peak: float, memory: bool, photos: str | None = None, seed: int = 0) -> Row:
    """Measure one configuration (see the module docstring)."""
    dtype = PRECISIONS[precision]
    codec, model = build(preset, seed, device)
    x = images(batch, resolution, photos).to(device)
    gflop = count_gflop(model, x[:1]) * batch
    fast = codec.to(dtype)
    variants = {f"diffusers {name}": fn for name, fn in diffusers_variants(model, x, precision).items()}
    variants["movq"] = lambda: fast.decode(fast.encode(x))
    seconds = interleaved(variants, repeats, device)
    best = min((k for k in seconds if k != "movq"), key=seconds.__getitem__)
    with torch.inference_mode():
        reference = diffusers_round_trip(model, x)[0]
        agreement = (fast.encode(x) == reference).float().mean().item()
        theirs = (variants[best]()[0] == reference).float().mean().item()
    row = Row(
        model=preset, resolution=resolution, batch=batch, precision=precision,
        movq_images_per_s=batch / seconds["movq"], diffusers_images_per_s=batch / seconds[best],
        diffusers_variant=best.removeprefix("diffusers "), ratio=seconds[best] / seconds["movq"],
        gflop_per_round_trip=gflop, movq_gflops=gflop / seconds["movq"], conv_peak_gflops=peak,
        token_agreement=agreement, diffusers_token_agreement=theirs,
    )
    if memory:
        row.movq_peak_mib = peak_memory_mib("movq", preset, resolution, batch, precision, device)
        row.diffusers_peak_mib = peak_memory_mib(f"diffusers:{row.diffusers_variant}", preset, resolution, batch,
                                                 precision, device)
    return row


def peak_memory_mib(which: str, preset: str, resolution: int, batch: int, precision: str,
                    device: torch.device) -> float:
    """Peak memory of one round trip (random images) above the loaded models, in MiB: measured in
    a child process: on Linux the peak RSS (``VmHWM``, restarted before the round trip) above the
    resident size before it; on CUDA ``max_memory_allocated`` above the allocated size."""
    args = [which, preset, str(resolution), str(batch), precision, str(device)]
    out = subprocess.run([sys.executable, __file__, *args], capture_output=True, text=True,
                         check=True)
    return float(out.stdout.strip().splitlines()[-1])


def _child(which: str, preset: str, resolution: int, batch: int, precision: str, device_name: str) -> float:
    import resource

    device = torch.device(device_name)
    codec, model = build(preset, 0, device)
    x = images(batch, resolution).to(device)
    if which == "movq":
        fast = codec.to(PRECISIONS[precision])
        fn: Callable[[], Any] = lambda: fast.decode(fast.encode(x))  # noqa: E731
    else:
        variants = diffusers_variants(model, x, precision)
        fn = variants[which.removeprefix("diffusers:")]
        del codec
    status = Path("/proc/self/status")
    peak_mib: Callable[[], float]
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
        base = torch.cuda.memory_allocated(device)
        peak_mib = lambda: (torch.cuda.max_memory_allocated(device) - base) / 2**20  # noqa: E731
    elif status.is_file() and _restart_peak_rss():  # building the models must not hide the round trip's peak
        base = _status_kib(status, "VmRSS")
        peak_mib = lambda: (_status_kib(status, "VmHWM") - base) / 2**10  # noqa: E731
    else:  # growth of the process's peak RSS (reads 0 when building the models peaked higher)
        base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        scale = 1 if sys.platform == "darwin" else 1024  # ru_maxrss: bytes on macOS, KiB on Linux
        peak_mib = lambda: (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - base) * scale / 2**20  # noqa: E731
    with torch.inference_mode():
        fn()
    return peak_mib()


def _restart_peak_rss() -> bool:
    """Reset this process's peak RSS (``VmHWM``) to its current RSS (Linux >= 4.0); False where refused."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        return False
    return True


def _status_kib(status: Path, field: str) -> int:
    """A ``kB`` field of ``/proc/self/status`` (``VmRSS``: resident now, ``VmHWM``: its peak)."""
    for line in status.read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"no {field} in {status}")


def decode_peak_rss_gib(preset: str, resolution: int, precision: str = "fp32") -> tuple[float, float]:
    """``(peak RSS GiB, seconds)`` of a child process that builds ``preset`` and runs
    ``codec.decode(tokens)`` once for a ``resolution``-square image with default settings."""
    code = (
        "import resource, sys, time, torch, movq\n"
        f"torch.manual_seed(0); codec = movq.Codec(movq.get_preset({preset!r})).eval().to({PRECISIONS[precision]})\n"
        f"tokens = torch.randint(0, codec.codebook_size, (1, *codec.tokens_shape({resolution}, {resolution})))\n"
        "start = time.perf_counter(); codec.decode(tokens); seconds = time.perf_counter() - start\n"
        "scale = 1 if sys.platform == 'darwin' else 1024\n"
        "print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale / 2**30, seconds)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    gib, seconds = out.stdout.split()
    return float(gib), float(seconds)


SCALING_CODE = """
import json, sys, time, torch, movq
sys.path.insert(0, {here!r})
import versus
preset, resolution, budget, repeats, photos, encode, untiled = {preset!r}, {resolution}, {budget!r}, {repeats}, {photos!r}, {encode!r}, {untiled!r}
codec, _ = versus.build(preset, 0, torch.device("cpu"))
del _
if budget is not None:
    codec.enable_tiling(auto=True, memory_budget=budget)
if untiled:
    codec.disable_tiling()
x = versus.images(1, resolution, photos)
with torch.inference_mode():
    tokens = codec.encode(x)
    plan = codec._plan(tokens[:, None].float(), 1)
    tile, statistics, lockstep_tile = plan.tile, plan.statistics, plan.lockstep_tile
    budget_bytes = codec.tiling.budget("cpu")
    versus._restart_peak_rss()
    base = versus._status_kib(versus.Path("/proc/self/status"), "VmRSS")
    times = {{"decode": [], "encode": []}}
    for _ in range(repeats):  # interleaved
        start = time.perf_counter(); codec.decode(tokens); times["decode"].append(time.perf_counter() - start)
        if encode:
            start = time.perf_counter(); codec.encode(x); times["encode"].append(time.perf_counter() - start)
    peak = versus._status_kib(versus.Path("/proc/self/status"), "VmHWM")
print(json.dumps({{"decode_s": sorted(times["decode"])[repeats // 2],
                  "encode_s": sorted(times["encode"])[repeats // 2] if encode else None,
                  "peak_gib": peak / 2**20, "above_model_gib": (peak - base) / 2**20, "tile": tile,
                  "statistics": statistics, "lockstep_tile": lockstep_tile, "budget_gib": budget_bytes / 2**30}}))
"""


def scaling_row(preset: str, resolution: int, budget: int | None = None, repeats: int = 1,
                photos: str | None = None, encode: bool = True, untiled: bool = False) -> dict[str, Any]:
    """One image of ``resolution`` x ``resolution`` through ``preset`` (random weights spread like trained
    ones, fp32, default settings, a fixed ``budget`` in bytes, or ``untiled``: tiling off, so the
    untiled rate a tiled row is held to) in a child process: median seconds of
    ``repeats`` interleaved decodes and encodes, the peak RSS of the process (and above the loaded
    model), the tile side the plan chose (``None``: untiled) and how its tiles got their statistics
    (:class:`movq.tiling.TilePlan`)."""
    code = SCALING_CODE.format(here=str(Path(__file__).resolve().parent), preset=preset, resolution=resolution,
                               budget=budget, repeats=repeats, photos=photos, encode=encode,
                               untiled=untiled)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def scaling_line(preset: str, resolution: int, row: dict[str, Any], label: str = "") -> str:
    """A Markdown row of :func:`scaling_row`: seconds per megapixel, peak RSS, the plan."""
    megapixels = resolution * resolution / 1e6
    encode_rate = "-" if row["encode_s"] is None else f"{row['encode_s'] / megapixels:.2f}"
    encode_s = "-" if row["encode_s"] is None else f"{row['encode_s']:.1f}"
    plan = "untiled" if row["tile"] is None else (
        f"tiles of {row['tile']} positions, {STATISTICS_LABELS[row['statistics']]} statistics")
    if row.get("statistics") == "bf16" and row.get("lockstep_tile") != row["tile"]:
        plan += f" (lockstep tiles of {row['lockstep_tile']})"

    return (f"| {preset} | {resolution}{label} | {row['budget_gib']:.2f} GiB | {row['decode_s'] / megapixels:.2f} | "
            f"{encode_rate} | {row['decode_s']:.1f} / {encode_s} | "
            f"{row['peak_gib']:.2f} ({row['above_model_gib']:.2f}) | {plan} |")


STATISTICS_LABELS = {"exact": "exact (lockstep)", "bf16": "bf16 lockstep", "passes": "estimated (passes)"}
"""How :func:`scaling_line` names each statistics mode of a tiled row."""

SCALING_HEADER = ("| codec | px | activation budget | decode s / MP | encode s / MP | decode / encode s | "
                  "peak RSS GiB (above model) | plan |\n|---|---|---|---|---|---|---|---|\n")


def machine() -> str:
    """One line naming the processor (or GPU) the numbers come from."""
    if torch.cuda.is_available():
        return torch.cuda.get_device_name()
    import platform

    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return f"{line.split(':', 1)[1].strip()} ({platform.machine()})"
    except OSError:
        pass
    return platform.processor() or platform.machine()


def diffusers_version() -> str:
    import diffusers

    return diffusers.__version__


def table(rows: list[Row]) -> str:
    """Markdown table of the rows."""
    head = ("| model | res | batch | precision | movq img/s | diffusers img/s (variant) | ratio | movq GFLOP/s "
            "| % conv peak | tokens = diffusers fp32: movq / diffusers | peak MiB movq / diffusers |")
    lines = [head, "|" + "---|" * 11]
    for r in rows:
        memory = "-" if r.movq_peak_mib is None else f"{r.movq_peak_mib:.0f} / {r.diffusers_peak_mib:.0f}"
        lines.append(
            f"| {r.model} | {r.resolution} | {r.batch} | {r.precision} | {r.movq_images_per_s:.3g} | "
            f"{r.diffusers_images_per_s:.3g} ({r.diffusers_variant}) | **{r.ratio:.2f}x** | {r.movq_gflops:.0f} | "
            f"{100 * r.movq_gflops / r.conv_peak_gflops:.0f}% of {r.conv_peak_gflops:.0f} | "
            f"{100 * r.token_agreement:.2f}% / {100 * r.diffusers_token_agreement:.2f}% | {memory} |"
        )
    return "\n".join(lines) + "\n"


def run(preset: str, resolutions: list[int], batches: list[int], precisions: list[str], repeats: int,
        device: str | None, memory: bool, photos: str | None = None, out: str | None = None) -> list[Row]:
    """Measure every configuration, print the table as it grows, optionally write JSON rows."""
    dev = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    peaks = {p: conv_peak_gflops(PRECISIONS[p], dev) for p in precisions}
    rows = []
    for precision in precisions:
        for resolution in resolutions:
            for batch in batches:
                rows.append(compare(preset, resolution, batch, precision, repeats, dev, peaks[precision], memory, photos))
                print(table(rows[-1:]).splitlines()[-1], flush=True)
                if out:
                    Path(out).write_text(json.dumps([asdict(r) for r in rows], indent=2) + "\n")
    return rows


if __name__ == "__main__":  # child process of peak_memory_mib
    print(_child(sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), sys.argv[5], sys.argv[6]))
