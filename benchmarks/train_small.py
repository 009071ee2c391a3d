"""Small training comparisons on the shared photos: one codec, one change per arm, same data and steps.

Trains ``movqgan-tiny`` once per arm with ``movq-train``'s Trainer on random 64x64 crops of
``../shared/images/train`` and evaluates the EMA weights on ``../shared/images/val`` (PSNR, SSIM,
L1 at 128x128 centre crops, 8-bit output, codebook usage and perplexity of all val tokens). Writes
``OUT/results.json`` and prints a Markdown table. One seed per arm. Arm groups (``--arms``):

- ``decoder``: MoVQ decoder (SpatialNorm) vs plain GroupNorm decoder, both with an EMA-codebook
  quantizer (k-means init, dead-code restarts) in place of the preset's gradient-trained VQ, which
  collapses to ~2% usage in runs this short.
- ``rotation``: the gradient-trained VQ (1024 codes) with straight-through gradients vs the rotation
  trick (Fifty et al. 2024), nothing else changed.
- ``simvq``: SimVQ (frozen codebook, learned linear map) vs the EMA codebook, 1024 codes each;
  skipped with a message while ``movq.quantizers.SimVQ`` does not exist.
- ``bits``: FSQ (levels 8-5-5-5, 1000 codes: 9.97 bits), LFQ and BSQ (spherical LFQ), 10 bits, at
  about equal bits per token (the latent has as many channels as the quantizer needs: 4 or 10).

    python benchmarks/train_small.py --steps 400 --batch-size 16                       # decoder arms
    python benchmarks/train_small.py --arms rotation,simvq,bits --steps 500 --batch-size 16
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path
from typing import Any

import torch

import movq
import movq.quantizers
from movq.bench.evaluate import evaluate_folder
from movq.train.config import CodecTrainConfig
from movq.train.trainer import Trainer

ROOT = Path(__file__).resolve().parent.parent
QUANTIZER = {"kind": "ema", "codebook_size": 1024, "decay": 0.99, "dead_code_threshold": 0.03, "kmeans_init": True}
VQ = {"kind": "vq", "codebook_size": 1024}


def simvq_arms() -> list[dict[str, Any]]:
    """SimVQ vs EMA, or nothing (with a message) while movq has no SimVQ quantizer."""
    config_cls = getattr(movq.quantizers, "SimVQConfig", None)
    if getattr(movq.quantizers, "SimVQ", None) is None or config_cls is None:
        print("[train_small] skipping the simvq arms: movq.quantizers has no SimVQ / SimVQConfig yet", flush=True)
        return []
    simvq = {"kind": config_cls().kind, "codebook_size": 1024}
    return [{"arm": "simvq", "name": "SimVQ", "codec": {"quantizer": simvq}},
            {"arm": "simvq", "name": "EMA codebook", "codec": {"quantizer": QUANTIZER}}]


def arms(groups: list[str]) -> list[dict[str, Any]]:
    """The runs of the arm ``groups``: each a name and its ``--codec`` overrides of ``movqgan-tiny``."""
    table = {
        "decoder": lambda: [
            {"arm": "decoder", "name": "MoVQ (SpatialNorm)", "codec": {"norm": "spatial", "quantizer": QUANTIZER}},
            {"arm": "decoder", "name": "VQGAN (GroupNorm)", "codec": {"norm": "group", "quantizer": QUANTIZER}},
        ],
        "rotation": lambda: [
            {"arm": "rotation", "name": "VQ straight-through", "codec": {"quantizer": {**VQ, "rotation_trick": False}}},
            {"arm": "rotation", "name": "VQ rotation trick", "codec": {"quantizer": {**VQ, "rotation_trick": True}}},
        ],
        "simvq": simvq_arms,
        "bits": lambda: [
            {"arm": "bits", "name": "FSQ 8-5-5-5", "codec": {"embed_dim": 4, "quantizer": {"kind": "fsq", "levels": [8, 5, 5, 5]}}},
            {"arm": "bits", "name": "LFQ 10 bits", "codec": {"embed_dim": 10, "quantizer": {"kind": "lfq"}}},
            {"arm": "bits", "name": "BSQ 10 bits", "codec": {"embed_dim": 10, "quantizer": {"kind": "lfq", "spherical": True}}},
        ],
    }
    unknown = [g for g in groups if g not in table]
    if unknown:
        raise SystemExit(f"--arms: unknown arm group(s) {unknown}; accepted: {sorted(table)}")
    return [run for group in groups for run in table[group]()]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", default=str(ROOT.parent / "shared" / "images"))
    parser.add_argument("--out", default="/tmp/movq-train-small")
    parser.add_argument("--arms", default="decoder", help="comma-separated: decoder, rotation, simvq, bits")
    parser.add_argument("--steps", type=int, default=400)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--lr", type=float, default=2e-4)
    parser.add_argument("--eval-size", type=int, default=128)
    parser.add_argument("--perceptual-net", default="none")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    images = Path(args.images)
    if not (images / "train").is_dir():
        raise SystemExit(f"{images}/train not found: this benchmark needs the shared photo set")
    runs = arms([g.strip() for g in args.arms.split(",") if g.strip()])
    rows = []
    for run in runs:
        out = Path(args.out) / run["arm"] / run["name"].replace(" ", "_").replace("(", "").replace(")", "")
        cfg = CodecTrainConfig(
            data=str(images / "train"), out=str(out), preset="movqgan-tiny", codec=run["codec"], resolution=64,
            batch_size=args.batch_size, max_steps=args.steps, lr=args.lr, warmup_steps=min(100, args.steps // 10),
            crop_scale=(0.05, 1.0), perceptual_net=args.perceptual_net, disc_start=10**9, num_workers=1,
            save_every=args.steps, log_every=20, image_every=args.steps, progress=False, seed=args.seed,
        )
        start = time.perf_counter()
        Trainer(cfg).run()
        minutes = (time.perf_counter() - start) / 60
        codec = movq.load(out, dtype=torch.float32)
        result = evaluate_folder(codec, images / "val", size=args.eval_size)
        params = sum(p.numel() for p in codec.parameters())
        levels = codec.tokens_shape(8, 8)[0] if len(codec.tokens_shape(8, 8)) == 3 else 1
        bits = levels * math.log2(codec.codebook_size)
        rows.append({"arm": run["arm"], "name": run["name"], "codec": run["codec"], "params": params,
                     "bits_per_token": bits, "train_min": minutes, **result.to_dict()})
        print(json.dumps(rows[-1]), flush=True)
    (Path(args.out) / "results.json").write_text(json.dumps({"args": vars(args), "rows": rows}, indent=2) + "\n")
    print("\n| arm | run | bits / token | params | steps | PSNR (dB) | SSIM | L1 | codebook usage | perplexity | train min |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['arm']} | {r['name']} | {r['bits_per_token']:.2f} | {r['params'] / 1e6:.2f}M | {args.steps} | "
              f"{r['psnr']:.2f} | {r['ssim']:.4f} | {r['l1']:.4f} | {r['usage']:.3f} | {r['perplexity']:.1f} | "
              f"{r['train_min']:.1f} |")


if __name__ == "__main__":
    main()
