"""Quality of the fast paths against the fp32 reference path, and where encode time goes.

Prints Markdown sections (recorded in benchmarks/README.md):

1. bf16: the shipped ``movqgan-tiny-photos`` on the ``val`` photos, and ``movqgan-67m`` (random
   weights spread like trained ones) on the same photos: PSNR of the round trip against the
   originals, PSNR of the bf16 decode against the fp32 decode of the same tokens, token agreement.
2. Tiling: tiled decode against untiled decode of the same tokens, and tiled encode's token
   agreement, on a real photo resized to ``--tile-size`` (1024) with the shipped codec.
3. Nearest-code search: its share of ``movqgan-67m`` encode time at 512 and 1024 px (fp32).
4. ``--large RES``: peak RSS of one default ``codec.decode`` of a RES x RES image (child process).

    python benchmarks/fast_paths.py --images ../shared/images/val [--skip-67m] [--large 2048]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch

import movq
from movq.image_files import open_rgb, resize_center_crop
from movq.images import to_tensor
from movq.metrics.image import psnr, to_unit_range

import versus  # benchmarks/versus.py, next to this script

ROOT = Path(__file__).resolve().parent.parent


def photos(folder: Path, size: int, limit: int | None = None) -> torch.Tensor:
    paths = sorted(folder.glob("*.jpg"))[:limit]
    return torch.cat([to_tensor(resize_center_crop(open_rgb(p), size)[0])[0] for p in paths])


def mean_psnr(a: torch.Tensor, b: torch.Tensor) -> tuple[float, float]:
    values = psnr(to_unit_range(a), to_unit_range(b))
    return values.mean().item(), values.min().item()


def bf16_section(name: str, codec: movq.Codec, x: torch.Tensor, batch: int = 4) -> str:
    fast = codec.__class__.from_state_dict(codec.config, codec.state_dict()).to(torch.bfloat16)
    with torch.inference_mode():
        tokens = torch.cat([codec.encode(part) for part in x.split(batch)])
        fast_tokens = torch.cat([fast.encode(part) for part in x.split(batch)])
        ref = torch.cat([codec.decode(part) for part in tokens.split(batch)])
        own = torch.cat([fast.decode(part) for part in fast_tokens.split(batch)])
        same = torch.cat([fast.decode(part) for part in tokens.split(batch)])
    rt32, rt16 = mean_psnr(x, ref)[0], mean_psnr(x, own)[0]
    dec_mean, dec_min = mean_psnr(ref, same)
    agree = (tokens == fast_tokens).float().mean().item()
    return (f"| {name} | {x.shape[0]} x {x.shape[-1]} px | {rt32:.3f} | {rt16:.3f} | {rt16 - rt32:+.3f} | "
            f"{dec_mean:.1f} (min {dec_min:.1f}) | {100 * agree:.2f}% |")


def tiling_section(x: torch.Tensor) -> list[str]:
    codec = movq.load("movqgan-tiny-photos")
    lines = []
    with torch.inference_mode():
        codec.disable_tiling()
        tokens = codec.encode(x)
        start = time.perf_counter()
        reference = codec.decode(tokens)
        untiled_s = time.perf_counter() - start
        for passes in (2, 1, 0):
            codec.enable_tiling(stat_passes=passes)  # 512 px tiles, the default overlap (32 px)
            start = time.perf_counter()
            tiled = codec.decode(tokens)
            seconds = time.perf_counter() - start
            agree = (codec.encode(x) == tokens).float().mean().item()
            default = " (default)" if passes == 2 else ""
            lines.append(f"| {passes}{default} | {mean_psnr(reference, tiled)[0]:.2f} | {100 * agree:.1f}% | "
                         f"{seconds / untiled_s:.1f}x |")
    return lines


def search_share(resolution: int, repeats: int = 3) -> str:
    codec, _ = versus.build("movqgan-67m", 0, torch.device("cpu"))
    x = versus.images(1, resolution)
    with torch.inference_mode():
        z = codec.encode_to_prequant(x)
        times = versus.interleaved({"network": lambda: codec.encode_to_prequant(x),
                                    "search": lambda: codec.quantize.indices(z)}, repeats, torch.device("cpu"))
    share = times["search"] / (times["network"] + times["search"])
    positions = z.shape[-2] * z.shape[-1]
    return (f"| {resolution} | {positions} x 16384 | {times['search'] * 1000:.0f} ms | "
            f"{times['network']:.1f} s | {100 * share:.2f}% |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", default=str(ROOT.parent / "shared" / "images" / "val"))
    parser.add_argument("--size", type=int, default=256, help="photo size of the bf16 section")
    parser.add_argument("--tile-size", type=int, default=1024, help="photo size of the tiling section")
    parser.add_argument("--photo", default="080_palapeli-dat_cincinnati-bridge.jpg", help="photo of the tiling section")
    parser.add_argument("--skip-67m", action="store_true", help="bf16 section on the shipped codec only")
    parser.add_argument("--large", type=int, action="append", default=[], metavar="RES")
    parser.add_argument("--threads", type=int)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    folder = Path(args.images)
    print(f"{versus.machine()}, {torch.get_num_threads()} threads\n")
    print("## bf16 against fp32\n")
    print("| codec | photos | fp32 round trip PSNR | bf16 round trip PSNR | difference (dB) | bf16 decode vs fp32 "
          "decode, same tokens (dB) | tokens = fp32 |")
    print("|---|---|---|---|---|---|---|")
    x = photos(folder, args.size)
    print(bf16_section("movqgan-tiny-photos (shipped)", movq.load("movqgan-tiny-photos"), x), flush=True)
    if not args.skip_67m:
        codec, _ = versus.build("movqgan-67m", 0, torch.device("cpu"))
        print(bf16_section("movqgan-67m (random, spread)", codec, x), flush=True)
    print(f"\n## Tiling: {args.photo} resized to {args.tile_size} px, shipped codec\n")
    print("| stat passes | tiled decode vs untiled decode, same tokens (PSNR dB) | tiled encode tokens = untiled "
          "| decode time vs untiled |")
    print("|---|---|---|---|")
    big = to_tensor(resize_center_crop(open_rgb(folder / args.photo), args.tile_size)[0])[0]
    for line in tiling_section(big):
        print(line, flush=True)
    print("\n## Nearest-code search share of encode time (movqgan-67m, fp32, batch 1)\n")
    print("| resolution | positions x codes | search | network | search share |")
    print("|---|---|---|---|---|")
    for resolution in (512, 1024):
        print(search_share(resolution), flush=True)
    for resolution in args.large:
        gib, seconds = versus.decode_peak_rss_gib("movqgan-67m", resolution)
        print(f"\nmovqgan-67m codec.decode of a {resolution}x{resolution} image, default settings (fp32): "
              f"peak RSS {gib:.2f} GiB, {seconds:.0f} s")


if __name__ == "__main__":
    main()
