"""movq against diffusers' ``VQModel`` on the same weights: one table (see benchmarks/README.md).

Round trips are interleaved in one process (median of ``--repeats``); the measurement is
``benchmarks/versus.py``. The speed of one codec alone is ``movq-bench speed --model NAME``.

    python benchmarks/speed.py --quick                                   # ~2 min: 256 px, batch 1
    python benchmarks/speed.py --photos ../shared/images/val --large 2048   # the full table (long on CPU)
    python benchmarks/speed.py --batches 1 --scaling 256,512,1024,2048 --untiled-rows 2048 --budget-rows 2048   # large images (#26)
"""

from __future__ import annotations

import argparse

import torch
import versus  # benchmarks/versus.py, next to this script


def _ints(text: str) -> list[int]:
    return [int(v) for v in text.split(",") if v.strip()]


def _precisions(text: str) -> list[str]:
    names = [v.strip() for v in text.split(",") if v.strip()]
    unknown = sorted(set(names) - set(versus.PRECISIONS))
    if unknown:
        raise argparse.ArgumentTypeError(f"unknown precision(s) {unknown}; use {' and/or '.join(versus.PRECISIONS)}")
    return names


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--vs-diffusers", default="movqgan-67m", metavar="PRESET", help="architecture (random weights)")
    p.add_argument("--sizes", type=_ints, default=[256, 512], help="comma list of resolutions")
    p.add_argument("--batches", type=_ints, default=[1, 8], help="comma list of batch sizes")
    p.add_argument("--precisions", type=_precisions, default=["fp32", "bf16"], help="fp32, bf16 or both")
    p.add_argument("--repeats", type=int, default=5, help="interleaved timed round trips per variant")
    p.add_argument("--photos", help="folder of real photos to time on (default: random images)")
    p.add_argument("--no-memory", action="store_true", help="skip the per-row peak memory child processes")
    p.add_argument("--large", type=int, action="append", default=[], metavar="RES",
                   help="also the peak RSS of one default codec.decode at RES x RES (child process, repeatable)")
    p.add_argument("--scaling", type=_ints, default=[], metavar="SIZES",
                   help="also one image per size (e.g. 256,512,1024,2048) with default settings: s / MP of decode and "
                        "encode, peak RSS, the tiling plan (child processes)")
    p.add_argument("--budget-rows", type=_ints, default=[], metavar="SIZES",
                   help="also a decode at those sizes with a fixed 4 GiB activation budget (the default budget follows the device)")
    p.add_argument("--untiled-rows", type=_ints, default=[], metavar="SIZES",
                   help="also those sizes with tiling off (where the machine holds them): the untiled s / MP that a "
                        "tiled row must stay within 2x of")
    p.add_argument("--decode-only", action="store_true", help="--scaling rows time the decode alone")
    p.add_argument("--quick", action="store_true", help="256 px, batch 1, 3 repeats, no memory columns")
    p.add_argument("--device")
    p.add_argument("--threads", type=int)
    p.add_argument("--out", help="write the rows as JSON here")
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.quick:
        args.sizes, args.batches, args.repeats, args.no_memory = [256], [1], 3, True
    print(f"movq vs diffusers {versus.diffusers_version()} on {versus.machine()}, {torch.get_num_threads()} threads, "
          f"{args.vs_diffusers} random weights, median of {args.repeats} interleaved round trips")
    print(versus.table([]), end="")
    versus.run(args.vs_diffusers, args.sizes, args.batches, args.precisions, args.repeats, args.device,
               not args.no_memory, args.photos, args.out)
    if args.scaling or args.budget_rows or args.untiled_rows:
        print(f"\n{args.vs_diffusers}, one image, fp32, default settings (3 repeats up to 512 px, else 1):\n")
        print(versus.SCALING_HEADER, end="")
    for resolution in args.scaling:
        row = versus.scaling_row(args.vs_diffusers, resolution, repeats=3 if resolution <= 512 else 1, photos=args.photos,
                                 encode=not args.decode_only)
        print(versus.scaling_line(args.vs_diffusers, resolution, row), flush=True)
    for resolution in args.untiled_rows:
        row = versus.scaling_row(args.vs_diffusers, resolution, photos=args.photos, encode=not args.decode_only,
                                 untiled=True)
        print(versus.scaling_line(args.vs_diffusers, resolution, row, " (tiling off)"), flush=True)
    for resolution in args.budget_rows:
        row = versus.scaling_row(args.vs_diffusers, resolution, budget=4 * 2**30, photos=args.photos, encode=False)
        print(versus.scaling_line(args.vs_diffusers, resolution, row, " (4 GiB budget)"), flush=True)
    for resolution in args.large:
        gib, seconds = versus.decode_peak_rss_gib(args.vs_diffusers, resolution)
        print(f"\n{args.vs_diffusers} codec.decode of a {resolution}x{resolution} image, default settings (fp32): "
              f"peak RSS {gib:.2f} GiB, {seconds:.0f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
