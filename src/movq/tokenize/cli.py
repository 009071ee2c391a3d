"""``movq-tokenize``: run a codec once over a whole image collection and store its tokens (or latents).

Usage::

    movq-tokenize --model NAME_OR_PATH --data SRC --out DIR [--resolution 256] [--latents]
                  [--batch-size 32] [--shard-size 4096] [--num-workers W] [--dtype bfloat16] [--device cuda]
                  [--augment none|flip|ten-crop] [--crop-range 1.1]
    torchrun --nproc_per_node K -m movq.tokenize ...     # shards split across processes, same output
    movq-tokenize export DIR --format parquet|webdataset|llamagen --out EXPORTED   # see movq.tokenize.export

``SRC`` is an image folder (captions: same-name ``.txt``, labels: class folders), a ``.jsonl`` / ``.csv``
manifest (``--image-column``, ``--caption-column``, ``--label-column``), WebDataset ``.tar`` / ``.tar.gz``
shards (a glob or a brace pattern ``x-{0000..0127}.tar``), ``.parquet`` files or
``hf://datasets/ORG/NAME --split S`` (see :mod:`movq.tokenize.sources`). Read the result with
``movq.tokenize.dataset.TokenDataset(DIR)``.
"""

from __future__ import annotations

import argparse
import sys

import torch

from movq.dtypes import DTYPES
from movq.strict import ConfigError, error_line
from movq.tokenize.config import LATENT_DTYPES, TokenizeConfig, TokenizeError, default_workers

EXIT_ERROR = 2
PROG = "movq-tokenize"


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=PROG, description="Tokenize an image collection into token (or latent) shards. "
                                "Export them for other trainers with: movq-tokenize export --help")
    p.add_argument("--model", required=True, help="model name, codec folder or checkpoint file")
    p.add_argument("--data", required=True,
                   help="image folder, .jsonl / .csv manifest, .tar / .tar.gz shards (glob or {0000..0127} pattern), "
                        ".parquet files, or hf://datasets/ORG/NAME with --split")
    p.add_argument("--out", required=True, help="output folder (a rerun with the same settings resumes)")
    p.add_argument("--resolution", type=int, default=256, help="shorter side resized to this, centre crop (default 256)")
    p.add_argument("--latents", action="store_true", help="store pre-quantization latents x scaling factor, not tokens")
    p.add_argument("--latent-dtype", default="float16", choices=sorted(LATENT_DTYPES), help="stored dtype of --latents")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--shard-size", type=int, default=4096, help="source items per shard file (default 4096)")
    p.add_argument("--num-workers", type=int, default=None,
                   help=f"decoding processes per rank (default {default_workers()} here: CPU cores - 1, at most 8)")
    p.add_argument("--dtype", default="float32", choices=sorted(DTYPES),
                   help="encoder compute dtype; the codebook search stays float32 (default float32)")
    p.add_argument("--device", help="cpu, cuda, cuda:1 (default: cuda if available)")
    p.add_argument("--threads", type=int, help="torch CPU threads of each process (default on the CPU: 1, so the "
                   "output does not depend on the machine; the same --threads gives byte-identical shards)")
    p.add_argument("--no-progress", action="store_true")
    p.add_argument("--augment", default="none", choices=["none", "flip", "ten-crop"],
                   help="store several views per image as LlamaGen does: flip (the image and its mirror, 2 views) or "
                        "ten-crop (ADM centre crop to --crop-range x resolution, then TenCrop: 10 views); items "
                        "are [n_aug, h, w]")
    p.add_argument("--crop-range", type=float, default=1.1,
                   help="ten-crop: the centre crop is int(resolution x crop-range) px (default 1.1, as LlamaGen)")
    add_reader_arguments(p)
    return p


def add_reader_arguments(p: argparse.ArgumentParser) -> None:
    """The flags of the source readers (columns of manifests / parquet / Hugging Face datasets, split)."""
    p.add_argument("--image-column", help="column of image paths / bytes (default: image; file_name for "
                   "imagefolder metadata.jsonl / .csv)")
    p.add_argument("--caption-column", help="caption column (default: caption, else text, when present)")
    p.add_argument("--label-column", help="integer class label column (default: label, when present)")
    p.add_argument("--split", help="split of hf://datasets/ORG/NAME data (train, validation, ...)")


def main(argv: list[str] | None = None) -> int:
    """Console entry point; returns the exit status (0 ok, 2 user error). ``movq-tokenize export ...``
    runs :func:`movq.tokenize.export.main`."""
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["export"]:
        from movq.tokenize.export import main as export_main

        return export_main(argv[1:])
    args = build_parser().parse_args(argv)
    threads = torch.get_num_threads()
    try:
        from movq.tokenize.runner import Tokenizer

        cfg = TokenizeConfig(
            model=args.model, data=args.data, out=args.out, resolution=args.resolution, latents=args.latents,
            latent_dtype=args.latent_dtype, batch_size=args.batch_size, shard_size=args.shard_size,
            num_workers=args.num_workers, dtype=args.dtype, device=args.device, threads=args.threads,
            progress=not args.no_progress, augment=args.augment, crop_range=args.crop_range,
            image_column=args.image_column, caption_column=args.caption_column, label_column=args.label_column,
            split=args.split,
        )
        tokenizer = Tokenizer(cfg)
        try:
            summary = tokenizer.run()
        finally:
            tokenizer.close()
    except (TokenizeError, ConfigError) as err:
        print(error_line(PROG, err, TokenizeConfig), file=sys.stderr)
        return EXIT_ERROR
    finally:
        torch.set_num_threads(threads)  # --threads must not leak into a calling process
    if summary:
        print(format_summary(summary, cfg.out))
        if summary.get("images", 0) == 0:  # as movq-bench: nothing done is not a success
            print(f"{PROG}: error: none of the source images could be read (see {cfg.out}/skipped.jsonl)", file=sys.stderr)
            return EXIT_ERROR
    return 0


def format_summary(summary: dict, out: str) -> str:
    """The end-of-run lines printed by rank 0."""
    run = summary.get("run", {})
    lines = [
        (f"{PROG}: {summary['images']} images in {summary['shards']} shard(s) -> {out} "
         f"({summary['skipped']} skipped, listed in skipped.jsonl)"),
        (f"  encoded now: {run.get('images_encoded_now', 0)} images in {run.get('seconds', 0):.1f} s "
         f"({run.get('images_per_s', 0):.1f} images/s, {run.get('processes', 1)} process(es))"),
    ]
    if summary["kind"] == "tokens":
        lines.append(f"  codebook: {summary['used_codes']} of {summary['codebook_size']} codes used "
                     f"(usage {summary['usage']:.3f}), perplexity {summary['perplexity']:.1f}, "
                     f"dead codes {summary['dead_codes']}; histogram: code_histogram.png")
    elif summary.get("positions"):
        lines.append(f"  latents: per-channel std {', '.join(f'{s:.3f}' for s in summary['std'])} "
                     f"(overall {summary['overall_std']:.3f})")
    return "\n".join(lines)


if __name__ == "__main__":
    raise SystemExit(main())
