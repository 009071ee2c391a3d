"""Seed 002 at CPU scale: class-conditional pixel-space improved DDPM, ``mse`` vs ``hybrid`` loss.

Data (``--stage data``): the shared photos (``../shared/images``: ``train/`` 86, ``val/`` 21) cut into
32x32 tiles (``--resolution``, default 32): each photo's shorter side resized to twice the resolution
with the bench's preprocessing (:func:`movq.image_files.resize_center_crop`: PIL bicubic, centre crop),
then its four quadrants, so 344 training and 84 held-out tiles. Two classes by a deterministic rule
that a checker can apply to samples: ``warm`` when the tile's mean red minus mean blue is above the
median of the training tiles, else ``cool`` (balanced by construction). Written as image folders in the
ImageNet layout (``OUT/data/train/<class>/``, ``OUT/data/val/<class>/``) plus ``OUT/data/classes.json``.

Training (``--stage train``): ``movq-diffusion-train --pixels`` twice on the same data, UNet, steps,
batch, learning rate and seed; eps prediction and the cosine schedule as improved DDPM; only the loss
(and so the variance) differs: ``mse`` (fixed ``beta_t``) vs ``hybrid`` (learned, ``L_simple +
0.001 L_vlb``).

Sampling (``--stage sample``): ``--num-samples`` per arm and schedule, classes alternating, with all
1000 steps, respaced to 250 and 50 (ancestral) and DDIM 50 (``--respacings``), by
``movq-diffusion-sample RUN --num-samples N --timestep-respacing R --out DIR`` (sample ``i`` of class
``i % 2``, its noise seeded ``--seed + i``; ``--sample-pipeline`` draws them through
:class:`~movq.diffusion.LatentDiffusionPipeline` in this process instead). Each folder holds PNGs and
``samples.npz`` (``arr_0`` uint8 ``[N, H, W, 3]``, ``arr_1`` labels).

Scores (``--stage score``): FID, sFID, IS, precision and recall of each sample folder's PNGs against the
training tiles by ``movq-bench generation --samples DIR --reference OUT/data/train --resolution R
--out OUT/scores/NAME.json`` (read from its JSON ``results``; ``--feature-extractor`` /
``--inception-weights`` go to it: the FID Inception by default, whose weights it downloads unless
given; ``--quick`` uses ``random``, a random CNN, when no ``--inception-weights`` are given, so its
numbers only show that the stage runs); bits/dim of each arm on the held-out tiles by ``movq-diffusion-nll RUN --data OUT/data/val``; class
accuracy: the share of samples whose warm/cool rule gives the requested class (its ceiling on real
tiles is 1 by construction). With a few hundred samples FID is strongly biased upwards: compare
rows of one run, not with published numbers. Prints a Markdown table; ``OUT/results.json``.

    python benchmarks/diffusion_pixels.py --quick                 # a smoke run of every stage (minutes)
    python benchmarks/diffusion_pixels.py                         # every stage, the recorded settings
    python benchmarks/diffusion_pixels.py --stage score           # stages run alone, in order: data train sample score
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from movq.train.logs import save_image_grid

ROOT = Path(__file__).resolve().parents[1]
SHARED_IMAGES = ROOT.parent / "shared" / "images"
if not SHARED_IMAGES.is_dir():  # a git worktree under /work/wt/<name>
    SHARED_IMAGES = ROOT.parents[1] / "shared" / "images"
STAGES = ("data", "train", "sample", "score")
ARMS = ("mse", "hybrid")
CLASSES = ("cool", "warm")


def run_command(argv: list[str], what: str, check: bool = True) -> subprocess.CompletedProcess:
    """Run a movq command (``python -m ...``) with this checkout's sources on the path; echo it."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), os.environ.get("PYTHONPATH", "")])}
    print(f"[{what}] {' '.join(argv)}", flush=True)
    done = subprocess.run(argv, env=env, text=True, capture_output=True)
    if done.stdout:
        print(done.stdout.rstrip(), flush=True)
    if check and done.returncode != 0:
        raise SystemExit(f"{what} failed (exit {done.returncode}): {done.stderr.strip()[-2000:]}")
    return done


# ----------------------------------------------------------------------------- data


def warmth(pixels: np.ndarray) -> np.ndarray:
    """Mean red minus mean blue of uint8 images ``[N, H, W, 3]`` (the class rule's statistic)."""
    pixels = pixels.astype(np.float64)
    return pixels[..., 0].mean(axis=(1, 2)) - pixels[..., 2].mean(axis=(1, 2))


def classify(pixels: np.ndarray, threshold: float) -> np.ndarray:
    """The checker: class index (0 ``cool``, 1 ``warm``) of uint8 images ``[N, H, W, 3]``."""
    return (warmth(pixels) > threshold).astype(np.int64)


def tiles(split: Path, resolution: int) -> tuple[np.ndarray, list[str]]:
    """The four ``resolution`` quadrants of every photo of ``split`` (uint8 ``[N, R, R, 3]``) and names."""
    from movq.image_files import list_image_files, open_rgb, resize_center_crop

    out, names = [], []
    for path in list_image_files(split):
        square = np.asarray(resize_center_crop(open_rgb(path), 2 * resolution)[0])
        for k, (y, x) in enumerate(((0, 0), (0, 1), (1, 0), (1, 1))):
            out.append(square[y * resolution:(y + 1) * resolution, x * resolution:(x + 1) * resolution])
            names.append(f"{path.stem}_{k}")
    return np.stack(out), names


def stage_data(args: argparse.Namespace) -> None:
    train, train_names = tiles(args.images / "train", args.resolution)
    threshold = float(np.median(warmth(train)))
    for split, (pixels, names) in (("train", (train, train_names)), ("val", tiles(args.images / "val", args.resolution))):
        labels = classify(pixels, threshold)
        for image, name, label in zip(pixels, names, labels):
            folder = args.out / "data" / split / CLASSES[label]
            folder.mkdir(parents=True, exist_ok=True)
            Image.fromarray(image).save(folder / f"{name}.png")
        print(f"[data] {split}: {len(pixels)} tiles of {args.resolution} px, {int(labels.sum())} warm", flush=True)
    (args.out / "data" / "classes.json").write_text(json.dumps(
        {"classes": CLASSES, "threshold": threshold, "rule": "warm: mean(R) - mean(B) > threshold (median of train tiles)",
         "resolution": args.resolution}, indent=2) + "\n")


# ----------------------------------------------------------------------------- train


def stage_train(args: argparse.Namespace) -> None:
    for arm in ARMS:
        argv = [sys.executable, "-m", "movq.diffusion.train", "--data", str(args.out / "data" / "train"), "--pixels",
                "--resolution", str(args.resolution), "--out", str(args.out / "runs" / arm), "--loss", arm,
                "--mean-type", "eps", "--schedule", "cosine", "--diffusion-steps", str(args.diffusion_steps),
                "--preset", args.preset, "--batch-size", str(args.batch_size), "--max-steps", str(args.max_steps),
                "--lr", str(args.lr), "--warmup-steps", str(min(200, args.max_steps // 10)),
                "--save-every", str(args.max_steps), "--log-every", str(max(1, args.max_steps // 20)),
                "--p-uncond", "0", "--seed", str(args.seed), "--num-workers", "0", "--no-progress"]
        if args.model:
            argv += ["--model", args.model]
        if (args.out / "runs" / arm / "checkpoints").is_dir():
            argv.append("--resume")
        run_command(argv, f"train {arm}")


# ----------------------------------------------------------------------------- sample


def respacing_steps(respacing: str, steps: int) -> tuple[str, int | None]:
    """``"250"`` -> (ddpm, 250), ``"ddim50"`` -> (ddim, 50); all of the process's steps -> (ddpm, None)."""
    sampler, count = ("ddim", int(respacing[4:])) if respacing.startswith("ddim") else ("ddpm", int(respacing))
    return sampler, None if count == steps else count


def sample_images(run: Path, out: Path, num_samples: int, respacing: str, batch_size: int, seed: int,
                  use_cli: bool = True) -> None:
    """``num_samples`` images of the pixel run ``run`` (classes alternating) into ``out``: PNGs and
    ``samples.npz`` (``arr_0`` uint8 ``[N, H, W, 3]``, ``arr_1`` labels). ``use_cli``: through
    ``movq-diffusion-sample`` (default), else through the pipeline in this process."""
    if use_cli:
        run_command([sys.executable, "-m", "movq.diffusion.sample", str(run), "--num-samples", str(num_samples),
                     "--batch-size", str(batch_size), "--timestep-respacing", respacing, "--seed", str(seed),
                     "--out", str(out), "--no-progress"], f"sample {run.name} {respacing}")
        return
    from movq.diffusion import LatentDiffusionPipeline

    pipe = LatentDiffusionPipeline.from_pretrained(run)
    sampler, steps = respacing_steps(respacing, pipe.diffusion.num_timesteps)
    classes = pipe.model.config.num_classes or 1
    labels = [i % classes for i in range(num_samples)]
    out.mkdir(parents=True, exist_ok=True)
    arrays = []
    for start in range(0, num_samples, batch_size):
        chunk = labels[start:start + batch_size]
        g = torch.Generator().manual_seed(seed * 1_000_003 + start)
        x = pipe.generate(chunk, num_steps=steps, sampler=sampler, generator=g, output_type="pt")
        array = ((x.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()
        for i, image in enumerate(array):
            Image.fromarray(image).save(out / f"{start + i:06d}.png")
        arrays.append(array)
        print(f"[sample {run.name} {respacing}] {start + len(chunk)}/{num_samples}", flush=True)
    np.savez(out / "samples.npz", np.concatenate(arrays), np.array(labels, dtype=np.int64))


def stage_sample(args: argparse.Namespace) -> None:
    for arm in ARMS:
        for respacing in args.respacings:
            folder = args.out / "samples" / f"{arm}-{respacing}"
            if (folder / "samples.npz").is_file():
                continue
            sample_images(args.out / "runs" / arm, folder, args.num_samples, respacing, args.sample_batch, args.seed,
                          not args.sample_pipeline)


# ----------------------------------------------------------------------------- score


def generation_scores(samples: Path, reference: Path, resolution: int, out: Path,
                      extractor: list[str] | None = None) -> dict[str, Any]:
    """``movq-bench generation`` of a sample folder's PNGs against ``reference``, its JSON written to
    ``out``: the ``results`` block (``fid``, ``sfid``, ``is``, ``is_std``, ``precision``, ``recall``,
    ``n_samples``, ``n_reference``; ``None`` where not measured) and ``network`` (the feature extractor);
    ``{"error": its last stderr line}`` when it fails. ``extractor``: extra flags (``--feature-extractor``...)."""
    out.parent.mkdir(parents=True, exist_ok=True)
    done = run_command([sys.executable, "-m", "movq.bench", "generation", "--samples", str(samples), "--reference",
                        str(reference), "--resolution", str(resolution), "--out", str(out), "--no-progress",
                        *(extractor or [])], "score", check=False)
    if done.returncode != 0:
        return {"error": (done.stderr.strip().splitlines() or ["failed"])[-1]}
    result = json.loads(out.read_text())
    return {**result["results"], "network": result["protocol"]["feature_extractor"],
            "standard_network": result["protocol"]["feature_extractor_standard"]}


def stage_score(args: argparse.Namespace) -> dict[str, Any]:
    threshold = json.loads((args.out / "data" / "classes.json").read_text())["threshold"]
    results: dict[str, Any] = {"settings": {k: str(v) for k, v in vars(args).items()}, "rows": []}
    bpd = {}
    for arm in ARMS:
        nll = args.out / "nll" / f"{arm}.json"
        nll.parent.mkdir(parents=True, exist_ok=True)
        if not nll.is_file():  # else kept from an earlier run of this stage
            run_command([sys.executable, "-m", "movq.diffusion.nll", str(args.out / "runs" / arm), "--data",
                         str(args.out / "data" / "val"), "--out", str(nll), "--num-samples", str(args.nll_images),
                         "--batch-size", str(args.sample_batch), "--no-progress"], f"bits/dim {arm}")
        bpd[arm] = json.loads(nll.read_text())["bits_per_dim"]
    for arm in ARMS:
        for respacing in args.respacings:
            folder = args.out / "samples" / f"{arm}-{respacing}"
            with np.load(folder / "samples.npz") as npz:
                pixels, labels = npz["arr_0"], npz["arr_1"]
            accuracy = float((classify(pixels, threshold) == labels).mean())
            scores = generation_scores(folder, args.out / "data" / "train", args.resolution,
                                       args.out / "scores" / f"{arm}-{respacing}.json", extractor_flags(args))
            results["rows"].append({"loss": arm, "sampling": respacing, "samples": len(pixels),
                                    "class_accuracy": accuracy, "bits_per_dim": bpd[arm], **scores})
    (args.out / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    grid = save_sample_grid(args)
    print(f"sample grid: {grid}")
    networks = sorted({row["network"] for row in results["rows"] if "network" in row})
    if networks:
        standard = all(row.get("standard_network") for row in results["rows"] if "network" in row)
        print(f"\nFID network: {'; '.join(networks)}" + ("" if standard else " (substitute: not comparable to published FID)"))
    print("\n| loss | sampling | samples | FID | IS | precision | recall | class accuracy | bits/dim (val) |\n"
          "|---|---|---|---|---|---|---|---|---|")
    for row in results["rows"]:
        cells = [number(row, key) for key in ("fid", "is", "precision", "recall")] if "error" not in row else \
            [row["error"], "", "", ""]
        print(f"| {row['loss']} | {row['sampling']} | {row['samples']} | {' | '.join(cells)} | "
              f"{row['class_accuracy']:.3f} | {row['bits_per_dim']:.3f} |")
    return results


GRID_COLUMNS = 16
"""Images per row of the sample grid: classes alternate (warm, cool, ...), as the samples do."""


def save_sample_grid(args: argparse.Namespace) -> Path:
    """A PNG (``--grid``, default ``OUT/grid.png``) of one row of training tiles (classes alternating),
    then one row per arm and sampling schedule (its first samples, classes alternating), in the order
    of the table."""
    data = args.out / "data" / "train"
    classes = json.loads((data.parent / "classes.json").read_text())["classes"]
    per_class = [sorted((data / name).glob("*.png")) for name in classes]
    real = [np.asarray(Image.open(per_class[i % len(classes)][i // len(classes)]).convert("RGB"))
            for i in range(GRID_COLUMNS)]
    rows = [np.stack(real)]
    for arm in ARMS:
        for respacing in args.respacings:
            with np.load(args.out / "samples" / f"{arm}-{respacing}" / "samples.npz") as npz:
                row = npz["arr_0"][:GRID_COLUMNS]
            rows.append(np.concatenate([row, np.zeros((GRID_COLUMNS - len(row), *row.shape[1:]), row.dtype)]))
    images = torch.from_numpy(np.concatenate(rows)).permute(0, 3, 1, 2).float() / 127.5 - 1
    return save_image_grid(args.grid or args.out / "grid.png", images, GRID_COLUMNS)


def number(row: dict[str, Any], key: str) -> str:
    """A table cell: ``row[key]`` with 3 decimals, ``-`` when not measured."""
    value = row.get(key)
    return "-" if value is None else f"{value:.3f}"


def extractor_flags(args: argparse.Namespace) -> list[str]:
    """The ``movq-bench generation`` flags naming the feature extractor (``--feature-extractor``, ``--inception-weights``)."""
    flags = ["--feature-extractor", args.feature_extractor]
    if args.inception_weights:
        flags += ["--inception-weights", str(args.inception_weights)]
    return flags


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--stage", choices=[*STAGES, "all"], default="all")
    parser.add_argument("--out", type=Path, default=ROOT / "runs" / "diffusion_pixels")
    parser.add_argument("--images", type=Path, default=SHARED_IMAGES, help="the shared photos (train/ and val/)")
    parser.add_argument("--resolution", type=int, default=32)
    parser.add_argument("--diffusion-steps", type=int, default=1000)
    parser.add_argument("--preset", default="unet-tiny")
    parser.add_argument("--model", help="UNet overrides (JSON), as movq-diffusion-train --model")
    parser.add_argument("--max-steps", type=int, default=3000)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--lr", type=float, default=2e-4)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--respacings", type=lambda s: s.split(","), default=["1000", "250", "50", "ddim50"],
                        help="comma-separated: a step count (ancestral) or ddimN (default 1000,250,50,ddim50)")
    parser.add_argument("--num-samples", type=int, default=256, help="samples per arm and respacing")
    parser.add_argument("--sample-batch", type=int, default=128)
    parser.add_argument("--sample-pipeline", action="store_true",
                        help="sample through LatentDiffusionPipeline in this process instead of movq-diffusion-sample")
    parser.add_argument("--feature-extractor", help="movq-bench generation --feature-extractor (default inception; "
                        "--quick: random unless --inception-weights)")
    parser.add_argument("--inception-weights", type=Path, help="local FID Inception weights for movq-bench generation")
    parser.add_argument("--nll-images", type=int, default=84, help="held-out tiles for bits/dim (0: all)")
    parser.add_argument("--grid", type=Path, help="where the score stage writes the sample grid (default OUT/grid.png)")
    parser.add_argument("--quick", action="store_true",
                        help="smoke run of every stage: 16 px, 40 diffusion steps, 3 training steps, 4 samples")
    args = parser.parse_args()
    if args.quick:
        args.resolution, args.diffusion_steps, args.max_steps, args.num_samples = 16, 40, 3, 4
        args.respacings, args.batch_size, args.nll_images = ["40", "10", "ddim10"], 8, 4
        args.preset = "unet-tiny"
        args.out = args.out.with_name(args.out.name + "_quick")
        if args.feature_extractor is None and args.inception_weights is None:
            args.feature_extractor = "random"
    args.feature_extractor = args.feature_extractor or "inception"
    if not (args.images / "train").is_dir():
        raise SystemExit(f"the shared photos are not at {args.images} (see its README): pass --images")
    stages = STAGES if args.stage == "all" else (args.stage,)
    for stage in stages:
        {"data": stage_data, "train": stage_train, "sample": stage_sample, "score": stage_score}[stage](args)


if __name__ == "__main__":
    main()
