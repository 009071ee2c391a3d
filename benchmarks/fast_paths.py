"""Quality of the fast paths against the fp32 reference path, and where encode time goes.

Prints Markdown sections (recorded in benchmarks/README.md):

1. bf16: the shipped ``movqgan-tiny-photos`` on the ``val`` photos, and ``movqgan-67m`` (random
   weights spread like trained ones) on the same photos: PSNR of the round trip against the
   originals, PSNR of the bf16 decode against the fp32 decode of the same tokens, token agreement.
2. Tiling: tiled decode (512 px tiles; exact lockstep statistics, lockstep statistics on a bfloat16
   copy, two estimating passes) against
   untiled decode of the same tokens, and tiled encode's token agreement, with the shipped codec on
   every ``val`` photo at 1024 px and on ``--photo`` at 2048 px; decode time against untiled.
3. Nearest-code search: its share of ``movqgan-67m`` encode time at 512 and 1024 px (fp32).
4. ``--large RES``: peak RSS of one default ``codec.decode`` of a RES x RES image (child process).

    python benchmarks/fast_paths.py --images ../shared/images/val [--skip-67m] [--skip bf16,search] [--large 2048]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch
import versus  # benchmarks/versus.py, next to this script

import movq
from movq.image_files import open_rgb, resize_center_crop
from movq.images import to_tensor
from movq.metrics.image import psnr, to_unit_range

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


TILING_VARIANTS = {"exact": dict(statistics="exact"), "bf16": dict(statistics="bf16"),
                   "bf16, 704 px tiles": dict(tile_size=704, statistics="bf16"),
                   "passes (2)": dict(statistics="passes", stat_passes=2)}
"""The tiled decodes compared (512 px tiles unless named): lockstep (exact) statistics, lockstep
statistics from a bfloat16 copy (also in the 704 px tiles, 88 positions, that a 4 GiB budget gives
MoVQGAN-67M at 2048 px: the plan ``movqgan-67m`` makes there, on the shipped codec), and the estimate
of two statistics passes."""


def tiling_fidelity(paths: list[Path], size: int) -> dict[str, list[float]]:
    """PSNR (dB) of each tiled variant's decode against the untiled decode of the same tokens, per photo
    (shipped codec, 512 px tiles unless the variant names others, 32 px overlap), and the tiled encode's token agreement."""
    codec = movq.load("movqgan-tiny-photos")
    scores: dict[str, list[float]] = {f"{name} {what}": [] for name in TILING_VARIANTS for what in ("psnr", "tokens")}
    with torch.inference_mode():
        for path in paths:
            x = to_tensor(resize_center_crop(open_rgb(path), size)[0])[0]
            codec.disable_tiling()
            tokens = codec.encode(x)
            reference = codec.decode(tokens)
            for name, options in TILING_VARIANTS.items():
                codec.enable_tiling(**options)
                scores[f"{name} psnr"].append(mean_psnr(reference, codec.decode(tokens))[0])
                scores[f"{name} tokens"].append((codec.encode(x) == tokens).float().mean().item())
            print(f"<!-- {path.name} {size}px: " + ", ".join(f"{k} {v[-1]:.3f}" for k, v in scores.items()) + " -->",
                  flush=True)
    return scores


def tiling_times(x: torch.Tensor, repeats: int = 3) -> dict[str, float]:
    """Median decode seconds of the same tokens, untiled and each tiled variant, interleaved."""
    codecs = {"untiled": movq.load("movqgan-tiny-photos")}
    codecs["untiled"].disable_tiling()
    for name, options in TILING_VARIANTS.items():
        codecs[name] = movq.load("movqgan-tiny-photos")
        codecs[name].enable_tiling(**options)
    with torch.inference_mode():
        tokens = codecs["untiled"].encode(x)
        return versus.interleaved({name: (lambda c=c: c.decode(tokens)) for name, c in codecs.items()}, repeats,
                                  torch.device("cpu"))


def tiling_section(folder: Path, photo: str, sizes: list[int], all_photos: int, timed: bool = True) -> list[str]:
    """Markdown rows: per size, each tiled variant's PSNR against untiled (min / mean over the photos),
    token agreement, and decode time against untiled on ``photo``."""
    lines = []
    for size in sizes:
        paths = sorted(folder.glob("*.jpg")) if size <= all_photos else [folder / photo]
        scores = tiling_fidelity(paths, size)
        x = to_tensor(resize_center_crop(open_rgb(folder / photo), size)[0])[0]
        times = tiling_times(x, repeats=3 if size <= 1024 else 1) if timed else None
        for name in TILING_VARIANTS:
            psnrs, agree = scores[f"{name} psnr"], scores[f"{name} tokens"]
            timing = (f"{times[name]:.2f} s vs {times['untiled']:.2f} s ({times[name] / times['untiled']:.2f}x)"
                      if times else "not timed")
            lines.append(f"| {size} | {len(paths)} | {name} | {min(psnrs):.2f} / {sum(psnrs) / len(psnrs):.2f} | "
                         f"{100 * min(agree):.1f}% / {100 * sum(agree) / len(agree):.1f}% | {timing} |")
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
    parser.add_argument("--tile-sizes", type=lambda t: [int(v) for v in t.split(",")], default=[1024, 2048],
                        help="photo sizes of the tiling section (comma list)")
    parser.add_argument("--all-photos-up-to", type=int, default=1024,
                        help="the tiling section scores every photo of --images up to this size, --photo alone above")
    parser.add_argument("--skip", default="", help="comma list of sections to skip: bf16, tiling, times (the tiling section's timings), search")
    parser.add_argument("--photo", default="080_palapeli-dat_cincinnati-bridge.jpg", help="photo of the tiling section")
    parser.add_argument("--skip-67m", action="store_true", help="bf16 section on the shipped codec only")
    parser.add_argument("--large", type=int, action="append", default=[], metavar="RES")
    parser.add_argument("--threads", type=int)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    folder = Path(args.images)
    skip = set(filter(None, args.skip.split(",")))
    print(f"{versus.machine()}, {torch.get_num_threads()} threads\n")
    if "bf16" not in skip:
        bf16_report(folder, args.size, args.skip_67m)
    if "tiling" not in skip:
        print(f"\n## Tiling: shipped codec, 512 px tiles unless named, 32 px overlap; times on {args.photo}\n")
        print("| px | photos | statistics | tiled decode vs untiled, same tokens: PSNR min / mean (dB) | tiled encode "
              "tokens = untiled, min / mean | decode time vs untiled (median of 3, interleaved) |")
        print("|---|---|---|---|---|---|")
        for line in tiling_section(folder, args.photo, args.tile_sizes, args.all_photos_up_to, "times" not in skip):
            print(line, flush=True)
    if "search" not in skip:
        print("\n## Nearest-code search share of encode time (movqgan-67m, fp32, batch 1)\n")
        print("| resolution | positions x codes | search | network | search share |")
        print("|---|---|---|---|---|")
        for resolution in (512, 1024):
            print(search_share(resolution), flush=True)
    for resolution in args.large:
        gib, seconds = versus.decode_peak_rss_gib("movqgan-67m", resolution)
        print(f"\nmovqgan-67m codec.decode of a {resolution}x{resolution} image, default settings (fp32): "
              f"peak RSS {gib:.2f} GiB, {seconds:.0f} s")


def bf16_report(folder: Path, size: int, skip_67m: bool) -> None:
    print("## bf16 against fp32\n")
    print("| codec | photos | fp32 round trip PSNR | bf16 round trip PSNR | difference (dB) | bf16 decode vs fp32 "
          "decode, same tokens (dB) | tokens = fp32 |")
    print("|---|---|---|---|---|---|---|")
    x = photos(folder, size)
    print(bf16_section("movqgan-tiny-photos (shipped)", movq.load("movqgan-tiny-photos"), x), flush=True)
    if not skip_67m:
        codec, _ = versus.build("movqgan-67m", 0, torch.device("cpu"))
        print(bf16_section("movqgan-67m (random, spread)", codec, x), flush=True)


if __name__ == "__main__":
    main()
