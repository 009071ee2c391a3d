"""``movq-bench``: reconstruction metrics of codecs on image folders, and codec speed.

Usage::

    movq-bench --model NAME_OR_PATH [--model ...] --data DIR [--resolution 256] [--batch-size 32]
               [--metrics fid,is,ssim,psnr,l1,lpips] [--by-domain] [--out results.json]
               [--limit N] [--device cuda] [--dtype bf16] [--cache DIR]
               [--protocol movq|adm|var] [--resize bicubic|lanczos] [--fid-mode pytorch-fid|clean]
               [--save-reference ref.npz | --reference ref.npz] [--export-npz recon.npz]
    torchrun --nproc_per_node N -m movq.bench ...     # sharded, statistics reduced over ranks
    movq-bench speed --model NAME_OR_PATH [--resolution 256] [--batch-size 8] [--dtype bf16]
    movq-bench compare --models A B C --data DIR --out REPORT_DIR [--grid-images 8] [any flag of the run above]
    movq-bench generation --samples DIR|FILE.npz --reference DIR|FILE.npz [--resolution 256] [--protocol adm]
               [--metrics fid,sfid,is,precision,recall] [--out results.json|results.csv]

movq against diffusers' ``VQModel`` on the same weights is a benchmark: ``python benchmarks/speed.py``.
"""

from __future__ import annotations

import argparse
import json
import sys

import torch

from movq.atomic import atomic_write_text, check_writable_dir, check_writable_file
from movq.bench.metric_table import CHOICES, DEFAULT_METRICS, normalise_metrics
from movq.bench.runner import BenchConfig, BenchError, BenchInterrupted
from movq.bench.speed import SpeedConfig
from movq.devices import resolve_device
from movq.dtypes import DTYPES
from movq.strict import error_line

EXIT_ERROR, EXIT_INTERRUPTED = 2, 3


def run_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="movq-bench", description="Reconstruction benchmark of movq codecs on an image folder.")
    p.add_argument("--model", action="append", required=True, help="model name, codec folder or checkpoint (repeatable)")
    p.add_argument("--data", required=True, help="image folder: flat (FFHQ), class subfolders (ImageNet) or domains")
    p.add_argument("--by-domain", action="store_true", help="one row per top-level subfolder plus a count-weighted 'all'")
    p.add_argument("--resolution", type=int, default=256)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--metrics", type=normalise_metrics, default=list(DEFAULT_METRICS),
                   help=f"comma list from {CHOICES} (default {','.join(DEFAULT_METRICS)})")
    p.add_argument("--out", help="write results.json here")
    p.add_argument("--markdown", help="also write the Markdown report here")
    p.add_argument("--limit", type=int, help="use at most N images (per domain with --by-domain)")
    p.add_argument("--device", help="cpu, cuda, cuda:1 (default: cuda if available)")
    p.add_argument("--dtype", default="float32", choices=sorted(DTYPES), help="codec dtype (bf16 is much faster on AMX CPUs)")
    p.add_argument("--cache", help="resume cache folder (per-shard statistics)")
    p.add_argument("--cache-interval", type=float, default=60.0, help="seconds between cache saves (0: every chunk)")
    p.add_argument("--chunk-size", type=int, default=256, help="images per resumable / sharded chunk")
    p.add_argument("--workers", type=int, default=0, help="DataLoader worker processes for decoding")
    p.add_argument("--feature-extractor", default="inception", help="inception | random[:SEED] | package.module:factory")
    p.add_argument("--inception-weights", help="local pt_inception-2015-12-05-6726825d.pth (or a TF-layout TorchScript)")
    p.add_argument("--no-download", action="store_true", help="never download weights")
    p.add_argument("--lpips-net", default="alex", choices=["alex", "vgg"])
    p.add_argument("--lpips-weights", help="local LPIPS weights file")
    p.add_argument("--threads", type=int, help="torch CPU threads")
    p.add_argument("--protocol", default="movq", choices=["movq", "adm", "var"],
                   help="image preprocessing: movq (short side resized, centre crop; default), adm (ADM's "
                   "center_crop_arr: BOX halving, bicubic, centre crop; LlamaGen / TiTok / IBQ / DiT) or var "
                   "(VAR: short side to 1.125x with Lanczos, centre crop)")
    p.add_argument("--resize", default="bicubic", choices=["bicubic", "lanczos"],
                   help="resampling filter of --protocol movq")
    p.add_argument("--fid-mode", default="pytorch-fid", choices=["pytorch-fid", "clean"],
                   help="Inception input: pytorch-fid (bilinear resize; default) or clean (clean-fid's PIL bicubic on 8-bit)")
    p.add_argument("--save-reference", metavar="REF.npz",
                   help="write the ADM reference batch: cropped inputs as arr_0 plus their Inception statistics")
    p.add_argument("--reference", metavar="REF.npz",
                   help="reuse --save-reference's statistics for FID (refused for another protocol, resolution or image list)")
    p.add_argument("--export-npz", metavar="RECON.npz",
                   help="write the reconstructions (uint8 [N,H,W,3] arr_0) for openai/guided-diffusion's evaluator")
    p.add_argument("--no-progress", action="store_true")
    p.add_argument("--max-chunks", type=int, help=argparse.SUPPRESS)
    return p


def speed_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="movq-bench speed",
        description="Encode / decode throughput and peak memory of --model codecs (movq against diffusers' "
        "VQModel: python benchmarks/speed.py).",
    )
    p.add_argument("--model", action="append", required=True, help="codec to time (repeatable)")
    p.add_argument("--resolution", type=int, default=256)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--iters", type=int, default=5)
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--device")
    p.add_argument("--dtype", default="float32", choices=sorted(DTYPES))
    p.add_argument("--threads", type=int)
    p.add_argument("--out", help="write the rows as JSON here")
    return p


def compare_parser() -> argparse.ArgumentParser:
    from movq.bench.compare import COMPARE_METRICS

    p = argparse.ArgumentParser(
        prog="movq-bench compare",
        description="The bench's protocol over several codecs, written into one folder: results.md / .csv / .json, "
        "rate_distortion.png, grid.png and report.html.",
        epilog="Every other flag of `movq-bench` (--resolution, --batch-size, --limit, --device, --dtype, --cache, "
        "--feature-extractor, --lpips-net, ...) applies as in a single run.",
    )
    p.add_argument("--models", nargs="+", required=True, help="registered names, codec folders or checkpoint files")
    p.add_argument("--out", required=True, help="output folder (created; files in it are replaced)")
    p.add_argument("--metrics", type=normalise_metrics, default=list(COMPARE_METRICS),
                   help=f"comma list from {CHOICES} (default {','.join(COMPARE_METRICS)}; psnr is always measured)")
    p.add_argument("--grid-images", type=int, default=8, help="rows of grid.png: the images with the worst mean PSNR")
    return p


def generation_parser() -> argparse.ArgumentParser:
    from movq.bench.generation import GENERATION_CHOICES, GENERATION_DEFAULT

    p = argparse.ArgumentParser(
        prog="movq-bench generation",
        description="FID, sFID, Inception Score and precision / recall of generated images against real ones.",
        epilog="A folder is read as its image files (recursively; an .npz beside them is not read); an .npz as its "
        "arr_0 uint8 [N, H, W, 3] images (the ADM evaluator's format); a --save-reference file as its stored, already "
        "cropped images, and its statistics give the FID.",
    )
    p.add_argument("--samples", required=True, help="generated images: a folder of images or an .npz (arr_0)")
    p.add_argument("--reference", required=True,
                   help="real images: a folder, an .npz (arr_0) or a movq-bench --save-reference file")
    p.add_argument("--resolution", type=int, default=256, help="both sets are cropped to this side by --protocol")
    p.add_argument("--metrics", type=normalise_metrics, default=None,
                   help=f"comma list from {GENERATION_CHOICES} (default: {','.join(GENERATION_DEFAULT)}, those the "
                   "network and the image counts allow)")
    p.add_argument("--protocol", default="movq", choices=["movq", "adm", "var"],
                   help="image preprocessing, as in movq-bench (adm: ADM's center_crop_arr)")
    p.add_argument("--resize", default="bicubic", choices=["bicubic", "lanczos"], help="resampling filter of --protocol movq")
    p.add_argument("--fid-mode", default="pytorch-fid", choices=["pytorch-fid", "clean"], help="Inception input, as in movq-bench")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--limit", type=int, help="score the first N images of each set")
    p.add_argument("--is-splits", type=int, default=10, help="Inception Score splits (contiguous, in sample order)")
    p.add_argument("--nearest-k", type=int, default=3, help="k of the precision / recall manifolds (3: the ADM evaluator)")
    p.add_argument("--out", help="write the results here: .csv as one CSV row, anything else as JSON")
    p.add_argument("--markdown", help="also write the Markdown report here")
    p.add_argument("--device", help="cpu, cuda, cuda:1 (default: cuda if available)")
    p.add_argument("--threads", type=int, help="torch CPU threads")
    p.add_argument("--workers", type=int, default=0, help="DataLoader worker processes for decoding folders")
    p.add_argument("--feature-extractor", default="inception", help="inception | random[:SEED] | package.module:factory")
    p.add_argument("--inception-weights", help="local pt_inception-2015-12-05-6726825d.pth (or a TF-layout TorchScript)")
    p.add_argument("--no-download", action="store_true", help="never download weights")
    p.add_argument("--no-progress", action="store_true")
    return p


def main(argv: list[str] | None = None) -> int:
    """Console entry point; returns the exit status (0 ok, 2 user error, 3 interrupted by --max-chunks)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    threads = torch.get_num_threads()
    speed, generation = argv[:1] == ["speed"], argv[:1] == ["generation"]
    try:
        if speed:
            return _speed(speed_parser().parse_args(argv[1:]))
        if generation:
            return _generation(generation_parser().parse_args(argv[1:]))
        if argv[:1] == ["compare"]:
            return _compare(argv[1:])
        return _run(run_parser().parse_args(argv[1:] if argv[:1] == ["run"] else argv))
    except (BenchError, ValueError, FileNotFoundError, NotADirectoryError) as err:
        print(error_line("movq-bench", err, _config_class(speed, generation)), file=sys.stderr)
        return EXIT_ERROR
    except BenchInterrupted as err:
        print(f"movq-bench: {err}", file=sys.stderr)
        return EXIT_INTERRUPTED
    finally:
        torch.set_num_threads(threads)  # --threads must not leak into a calling process


def _config_class(speed: bool, generation: bool) -> type:
    """The settings class whose field errors name the flags of the subcommand that ran."""
    if generation:
        from movq.bench.generation import GenerationConfig

        return GenerationConfig
    return SpeedConfig if speed else BenchConfig


def _generation(args: argparse.Namespace) -> int:
    """``movq-bench generation``: every input checked before the network loads, then one pass per image set."""
    from movq.bench.generation import GenerationConfig, GenerationRun, csv_row, markdown, result_json
    from movq.bench.report import write_csv, write_json

    cfg = GenerationConfig(
        samples=args.samples, reference=args.reference, resolution=args.resolution, batch_size=args.batch_size,
        metrics=args.metrics, protocol=args.protocol, resize=args.resize, fid_mode=args.fid_mode,
        feature_extractor=args.feature_extractor, inception_weights=args.inception_weights,
        download=not args.no_download, device=args.device, threads=args.threads, workers=args.workers,
        limit=args.limit, is_splits=args.is_splits, nearest_k=args.nearest_k, progress=not args.no_progress,
    )
    _check_common(args)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    run = GenerationRun(cfg)
    run.load()
    result = result_json(run, run.run())
    report = markdown(result)
    print(report, end="")
    if args.out:
        if args.out.lower().endswith(".csv"):
            write_csv(*csv_row(result), args.out)
        else:
            write_json(result, args.out)
    if args.markdown:
        atomic_write_text(args.markdown, report)
    return 0


def _check_common(args: argparse.Namespace) -> None:
    """The device and output checks shared by ``run`` and ``speed``, made before any model is loaded
    (the numbers are checked by :class:`BenchConfig` / :class:`SpeedConfig`)."""
    resolve_device(args.device)
    for flag in ("out", "markdown"):
        if getattr(args, flag, None):
            check_writable_file(getattr(args, flag), f"--{flag}")


def _speed(args: argparse.Namespace) -> int:
    from movq.bench.speed import run_speed, speed_table

    cfg = SpeedConfig(models=args.model, resolution=args.resolution, batch_size=args.batch_size, iters=args.iters,
                      warmup=args.warmup, device=args.device, dtype=args.dtype, threads=args.threads)
    _check_common(args)
    rows = run_speed(cfg.models, cfg.resolution, cfg.batch_size, cfg.iters, cfg.warmup, cfg.device,
                     DTYPES[cfg.dtype], cfg.threads)
    print(speed_table(rows), end="")
    if args.out:
        atomic_write_text(args.out, json.dumps(rows, indent=2) + "\n")
    return 0


def bench_config(args: argparse.Namespace) -> BenchConfig:
    """The :class:`BenchConfig` of parsed ``movq-bench`` run arguments."""
    return BenchConfig(
        models=args.model, data=args.data, resolution=args.resolution, batch_size=args.batch_size,
        metrics=args.metrics, by_domain=args.by_domain, limit=args.limit, device=args.device, dtype=args.dtype,
        cache=args.cache, cache_interval=args.cache_interval, chunk_size=args.chunk_size, workers=args.workers,
        feature_extractor=args.feature_extractor, inception_weights=args.inception_weights,
        lpips_net=args.lpips_net, lpips_weights=args.lpips_weights, download=not args.no_download,
        progress=not args.no_progress, max_chunks=args.max_chunks, threads=args.threads,
        protocol=args.protocol, resize=args.resize, fid_mode=args.fid_mode, save_reference=args.save_reference,
        reference=args.reference, export_npz=args.export_npz,
    )


def _compare(argv: list[str]) -> int:
    from movq.bench.compare import check_inputs

    compare, rest = compare_parser().parse_known_args(argv)
    if compare.grid_images < 1:
        raise ValueError(f"--grid-images must be an int >= 1, got {compare.grid_images}")
    metrics = list(dict.fromkeys([*compare.metrics, "psnr"]))
    models = [flag for spec in compare.models for flag in ("--model", spec)]
    args = run_parser().parse_args([*models, "--metrics", ",".join(metrics), *rest])
    cfg = bench_config(args)
    check_inputs(cfg.models, cfg.data, compare.out)
    return _run(args, cfg, compare_out=compare.out, grid_images=compare.grid_images)


def _run(args: argparse.Namespace, cfg: BenchConfig | None = None, compare_out: str | None = None,
         grid_images: int = 8) -> int:
    """One bench run of ``args`` (``cfg``: their config, when already built); ``compare_out`` also
    writes the comparison folder (:func:`movq.bench.compare.write_comparison`)."""
    from movq.bench.report import markdown, results_json, write_json
    from movq.bench.runner import Runner

    cfg = cfg or bench_config(args)
    _check_common(args)
    for flag in ("save_reference", "export_npz"):
        if getattr(args, flag):
            check_writable_file(getattr(args, flag), "--" + flag.replace("_", "-"))
    if cfg.cache:
        check_writable_dir(cfg.cache, "--cache")
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    runner = Runner(cfg)
    try:
        outcome = runner.run()
        if runner.ctx.is_main:
            result = results_json(runner, outcome)
            report = markdown(result)
            print(report, end="")
            if args.out:
                write_json(result, args.out)
            if args.markdown:
                atomic_write_text(args.markdown, report)
            if compare_out is not None:
                from movq.bench.compare import write_comparison

                write_comparison(runner, outcome, result, compare_out, grid_images)
    finally:
        runner.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
