"""Text to image at CPU scale: coloured shapes on coloured backgrounds, held-out caption combinations.

    python benchmarks/t2i_shapes.py --quick                  # end to end in a few minutes
    python benchmarks/t2i_shapes.py --minutes 25             # the recorded run (<= 30 min on 2 CPU cores)
    python benchmarks/t2i_shapes.py --speed-only             # KV cache vs none at 32x32 = 1024 image tokens

1. **Data**, drawn with PIL and deterministic by seed: a shape (circle, square, triangle) of one of
   six colours at one of five positions on a background of another colour, with jittered size and
   place; caption ``"a red circle at the top left on a blue background"``. Some (shape, colour,
   background) combinations are **held out**: no training image shows them, in any position.
2. **Codec**: by default a ``movqgan-tiny`` codec (f=8: 8x8 tokens for 64x64 images, 1024 codes,
   8-dim latents) trained on the training images with ``movq.train`` (``--codec train``). The
   shipped ``movqgan-tiny-photos`` was measured first (``--codec movqgan-tiny-photos``): at 64 px
   its reconstructions of the held-out scenes pass the checker for 96% of shape colours but only
   79% of shapes (flat colours drift, edges blur and ring), so it is not used. The "codec ceiling" row scores
   the chosen codec's reconstructions of the held-out scenes.
3. **Tokens**: ``movq-tokenize``'s API, once, into ``OUT/tokens``.
4. **Training**: ``movq.t2i.train.T2ITrainer`` (the ``movq-t2i-train`` trainer) within a wall-clock
   budget: a few calibration steps measure the speed, ``max_steps`` is set to fit the budget and
   ``max_minutes`` stops the run if the shared machine slows down.
5. **Sampling** the EMA weights with classifier-free guidance and top-k, decoding with the codec:
   the guidance scale and temperature are picked on as many *seen* combinations (best accuracy on
   all four attributes), then used once for every held-out combination at every position.
6. **Checker** (deterministic, no learned model): every pixel takes its nearest palette colour;
   the background is the most common colour, the shape the pixels of any other colour (largest
   connected component); shape colour = their most common colour; shape kind = triangle when the
   region widens from top to bottom (width at 3/4 of its height - width at 1/4 >= 0.25 of the box;
   ~0.5 for the triangle), else the ideal circle or square drawn in the bounding box with the higher
   IoU (the box's fill ratios are ~0.5, ~0.785 and 1.0); position = the caption position nearest
   the centroid.
7. **Speed**: ``T2ITransformer.generate`` with and without the KV cache at a 32x32 token grid
   (1024 image tokens), a small random model, interleaved repeats, median.

Writes ``OUT/results.json``, ``OUT/samples.png`` (copy it with ``--grid``) and prints Markdown tables.
"""

from __future__ import annotations

import argparse
import csv
import itertools
import json
import random
import statistics
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw

ROOT = Path(__file__).resolve().parent.parent

PALETTE: dict[str, tuple[int, int, int]] = {
    "red": (220, 40, 40),
    "green": (40, 170, 60),
    "blue": (40, 80, 220),
    "yellow": (240, 210, 40),
    "purple": (140, 60, 180),
    "white": (240, 240, 240),
}
SHAPES = ("circle", "square", "triangle")
POSITIONS: dict[str, tuple[float, float]] = {  # centre of the shape, as a fraction of the side
    "at the top left": (0.28, 0.28),
    "at the top right": (0.72, 0.28),
    "at the bottom left": (0.28, 0.72),
    "at the bottom right": (0.72, 0.72),
    "in the centre": (0.5, 0.5),
}
ATTRIBUTES = ("colour", "background", "shape", "position")


@dataclass(frozen=True)
class Scene:
    shape: str
    colour: str
    background: str
    position: str

    @property
    def caption(self) -> str:
        return f"a {self.colour} {self.shape} {self.position} on a {self.background} background"

    @property
    def combination(self) -> tuple[str, str, str]:
        return self.shape, self.colour, self.background


def all_combinations() -> list[tuple[str, str, str]]:
    """Every (shape, colour, background) with two different colours: 3 x 6 x 5 = 90."""
    return [(s, c, b) for s in SHAPES for c in PALETTE for b in PALETTE if c != b]


def held_out_split(count: int = 12, seed: int = 0) -> tuple[list[tuple], list[tuple]]:
    """``(seen, held_out)`` combinations: ``count`` held out, drawn by seed so that every shape, colour
    and background value, and every (colour, background) pair in either order, stays in training."""
    combos = all_combinations()
    rng = random.Random(seed)
    while True:
        held = rng.sample(combos, count)
        seen = [c for c in combos if c not in held]
        pairs = {(c, b) for _, c, b in seen}
        if all((c, b) in pairs or (b, c) in pairs for _, c, b in held) and len(
            {s for s, _, _ in seen}
        ) == len(SHAPES):
            return seen, held


def draw(scene: Scene, size: int, rng: random.Random) -> Image.Image:
    """The scene as an RGB image ``size`` x ``size``: shape side 38-46% of the image, centre jittered by 4%."""
    image = Image.new("RGB", (size, size), PALETTE[scene.background])
    pen = ImageDraw.Draw(image)
    side = size * rng.uniform(0.38, 0.46)
    fx, fy = POSITIONS[scene.position]
    cx = size * (fx + rng.uniform(-0.04, 0.04))
    cy = size * (fy + rng.uniform(-0.04, 0.04))
    box = (cx - side / 2, cy - side / 2, cx + side / 2, cy + side / 2)
    colour = PALETTE[scene.colour]
    if scene.shape == "circle":
        pen.ellipse(box, fill=colour)
    elif scene.shape == "square":
        pen.rectangle(box, fill=colour)
    else:  # apex up, base at the bottom: half its bounding box
        pen.polygon([(cx, box[1]), (box[2], box[3]), (box[0], box[3])], fill=colour)
    return image


def scenes(combinations: list[tuple], repeats: int) -> list[Scene]:
    """Every combination at every position, ``repeats`` times (each drawn with its own jitter)."""
    return [Scene(s, c, b, p) for s, c, b in combinations for p in POSITIONS for _ in range(repeats)]


# ---------------------------------------------------------------------------------------------
# The checker


PALETTE_ARRAY = np.array(list(PALETTE.values()), dtype=np.float32)
NAMES = list(PALETTE)


def largest_component(mask: np.ndarray) -> np.ndarray:
    """The largest 4-connected component of a boolean mask (an empty mask stays empty)."""
    seen = np.zeros_like(mask)
    best: list[tuple[int, int]] = []
    h, w = mask.shape
    for y0, x0 in zip(*np.nonzero(mask)):
        if seen[y0, x0]:
            continue
        stack, part = [(y0, x0)], []
        seen[y0, x0] = True
        while stack:
            y, x = stack.pop()
            part.append((y, x))
            for ny, nx in ((y - 1, x), (y + 1, x), (y, x - 1), (y, x + 1)):
                if 0 <= ny < h and 0 <= nx < w and mask[ny, nx] and not seen[ny, nx]:
                    seen[ny, nx] = True
                    stack.append((ny, nx))
        if len(part) > len(best):
            best = part
    out = np.zeros_like(mask)
    if best:
        ys, xs = zip(*best)
        out[list(ys), list(xs)] = True
    return out


def shape_masks(h: int, w: int) -> dict[str, np.ndarray]:
    """The three ideal shapes filling an ``h`` x ``w`` box, as boolean masks (pixel centres inside)."""
    y, x = np.mgrid[0:h, 0:w]
    u, v = (x + 0.5) / w, (y + 0.5) / h  # in (0, 1)
    return {
        "circle": (u - 0.5) ** 2 + (v - 0.5) ** 2 <= 0.25,
        "square": np.ones((h, w), dtype=bool),
        "triangle": np.abs(u - 0.5) <= v / 2,  # apex at the top centre, base at the bottom
    }


TAPER = 0.25
"""Width at 3/4 of the height minus width at 1/4 (fractions of the box width) above which a shape is
a triangle: ~0.5 for the apex-up triangle, ~0 for circles and squares."""


def classify_shape(region: np.ndarray) -> tuple[str, float]:
    """The shape of a region, and its bounding box's fill ratio (square ~1.0, circle ~0.785, triangle ~0.5).

    A region that widens from top to bottom (:data:`TAPER`) is the triangle; otherwise the ideal
    circle or square drawn in the bounding box with the higher IoU. Comparing whole masks, and the
    taper, tolerate the rounded corners of a codec's reconstruction better than the fill ratio alone."""
    ys, xs = np.nonzero(region)
    box = region[ys.min() : ys.max() + 1, xs.min() : xs.max() + 1]
    h, w = box.shape
    widths = box.sum(axis=1) / w
    taper = widths[(3 * h) // 4] - widths[h // 4]
    if taper >= TAPER:
        return "triangle", float(box.mean())
    masks = shape_masks(h, w)
    ious = {name: (box & masks[name]).sum() / (box | masks[name]).sum() for name in ("circle", "square")}
    return max(ious, key=ious.get), float(box.mean())


def classify_position(cx: float, cy: float) -> str:
    """Centroid (fractions of the side) -> the nearest of the five caption positions."""
    return min(POSITIONS, key=lambda p: (POSITIONS[p][0] - cx) ** 2 + (POSITIONS[p][1] - cy) ** 2)


def check(image: Image.Image) -> dict[str, str | float | None]:
    """What the image shows, read with fixed rules (see the module docstring)."""
    pixels = np.asarray(image.convert("RGB"), dtype=np.float32)
    h, w, _ = pixels.shape
    labels = ((pixels[:, :, None, :] - PALETTE_ARRAY) ** 2).sum(-1).argmin(-1)
    counts = np.bincount(labels.ravel(), minlength=len(NAMES))
    background = int(counts.argmax())
    region = largest_component(labels != background)
    found: dict[str, str | float | None] = {"background": NAMES[background], "colour": None, "shape": None,
                                            "position": None, "fill": None}
    if region.sum() < 0.01 * h * w:  # no shape to speak of
        return found
    found["colour"] = NAMES[int(np.bincount(labels[region], minlength=len(NAMES)).argmax())]
    ys, xs = np.nonzero(region)
    found["shape"], fill = classify_shape(region)
    found["fill"] = round(fill, 3)
    found["position"] = classify_position((xs.mean() + 0.5) / w, (ys.mean() + 0.5) / h)
    return found


def score(images: list[Image.Image], targets: list[Scene]) -> dict[str, float]:
    """Fraction of images whose checked attribute equals the caption's, per attribute, and all four at once."""
    hits: Counter[str] = Counter()
    for image, scene in zip(images, targets):
        found = check(image)
        ok = {
            "colour": found["colour"] == scene.colour,
            "background": found["background"] == scene.background,
            "shape": found["shape"] == scene.shape,
            "position": found["position"] == scene.position,
        }
        hits.update(k for k, v in ok.items() if v)
        hits["all"] += all(ok.values())
    return {k: hits[k] / len(targets) for k in (*ATTRIBUTES, "all")}


def shape_confusion(images: list[Image.Image], targets: list[Scene]) -> dict[str, dict[str, int]]:
    """``{asked shape: {shape found (or "none"): count}}``."""
    table: dict[str, Counter[str]] = {shape: Counter() for shape in SHAPES}
    for image, scene in zip(images, targets):
        table[scene.shape][str(check(image)["shape"] or "none")] += 1
    return {shape: dict(counts) for shape, counts in table.items() if counts}


# ---------------------------------------------------------------------------------------------
# Data set, codec, tokens


def write_images(folder: Path, items: list[Scene], size: int, seed: int) -> Path:
    """``folder/NNNNNN.png`` + same-name ``.txt`` caption for every scene (movq-tokenize's folder layout)."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = random.Random(seed)
    for i, scene in enumerate(items):
        image = draw(scene, size, rng)
        if (folder / f"{i:06d}.txt").is_file() and (folder / f"{i:06d}.png").is_file():
            continue  # rerun: already written (same seed, same images)
        image.save(folder / f"{i:06d}.png")
        (folder / f"{i:06d}.txt").write_text(scene.caption + "\n")
    return folder


def train_codec(images: Path, out: Path, size: int, steps: int, codes: int, latent: int, seed: int) -> Path:
    """A ``movqgan-tiny`` codec trained on the shape images with ``movq.train`` (pixel losses, EMA codebook).

    It trains on crops of a quarter of the image at their own scale (``size / 2`` pixels, 4x cheaper
    than whole images; the codec is convolutional and is used on whole images afterwards)."""
    from movq.train.config import CodecTrainConfig
    from movq.train.losses import LossWeights
    from movq.train.trainer import Trainer

    if (out / "model.safetensors").is_file() and (out / "checkpoints").is_dir():
        return out
    quantizer = {"kind": "ema", "codebook_size": codes, "decay": 0.99, "dead_code_threshold": 0.03, "kmeans_init": True}
    cfg = CodecTrainConfig(
        data=str(images), out=str(out), preset="movqgan-tiny",
        codec={"quantizer": quantizer, "z_channels": latent, "embed_dim": latent}, resolution=size // 2,
        crop_scale=(0.25, 0.25), crop_ratio=(1.0, 1.0), batch_size=16, max_steps=steps, lr=5e-4,
        warmup_steps=min(50, steps // 10), loss=LossWeights(l1=1.0), perceptual_net="none", disc_start=10**9, num_workers=1,
        save_every=steps, log_every=25, image_every=steps, progress=False, seed=seed,
    )
    Trainer(cfg).run()
    return out


def tokenize(images: Path, codec: Path | str, out: Path, size: int) -> Path:
    """``movq-tokenize`` (its Python API) over the image folder: token shards + captions in ``out``."""
    from movq.tokenize.config import TokenizeConfig
    from movq.tokenize.runner import Tokenizer

    tokenizer = Tokenizer(TokenizeConfig(model=str(codec), data=str(images), out=str(out), resolution=size,
                                         batch_size=64, num_workers=0, progress=False))
    try:
        summary = tokenizer.run()
    finally:
        tokenizer.close()
    print(f"tokenized {summary['images']} images: {summary.get('used_codes')} of {summary.get('codebook_size')} codes "
          f"used", flush=True)
    return out


# ---------------------------------------------------------------------------------------------
# Text-to-image training and sampling


def caption_tokenizer(kind: str, out: Path) -> str:
    """``"words"``: a word-level Hugging Face ``tokenizers`` file over the captions' words (13 text
    positions instead of ~60 bytes: a shorter sequence, faster training), saved as
    ``out/words.json``; ``"byte"`` / ``"byte-lower"``: the built-in byte tokenizer."""
    if kind != "words":
        return kind
    from tokenizers import Tokenizer, models, pre_tokenizers

    words = {"a", "on", "background", *SHAPES, *PALETTE}
    words |= {w for p in POSITIONS for w in p.split()}
    vocab = {w: i for i, w in enumerate(sorted(words))}
    vocab["[UNK]"] = len(vocab)
    tokenizer = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    tokenizer.pre_tokenizer = pre_tokenizers.Whitespace()
    out.mkdir(parents=True, exist_ok=True)
    tokenizer.save(str(out / "words.json"))
    return str(out / "words.json")


def train_t2i(tokens: Path, codec: Path | str, out: Path, model: dict, tokenizer: str, minutes: float, batch: int,
              lr: float, seed: int) -> dict:
    """Train with ``movq.t2i.train.T2ITrainer`` for about ``minutes``: calibrate the speed on a few
    steps, size ``max_steps`` to the budget, cap the run with ``max_minutes``."""
    from dataclasses import replace

    from movq.t2i.train import T2ITrainConfig, T2ITrainer

    base = T2ITrainConfig(
        data=str(tokens), codec=str(codec), out=str(out / "calibrate"), preset="t2i-tiny", model=model,
        tokenizer=tokenizer, batch_size=batch, lr=lr, warmup_steps=10, max_steps=12, save_every=10**6,
        log_every=4, num_workers=0, progress=False, seed=seed, ema_decay=0.999,
    )
    calibration = T2ITrainer(base)
    calibration.run()
    rate = float(last_log_row(out / "calibrate")["steps_per_s"])
    steps = max(20, int(minutes * 60 * rate * 0.95))
    print(f"calibration: {rate:.2f} steps/s -> max_steps {steps} for {minutes:g} min "
          f"({calibration.model.num_parameters() / 1e6:.2f}M parameters)", flush=True)
    cfg = replace(base, out=str(out / "run"), max_steps=steps, warmup_steps=min(200, steps // 10),
                  save_every=max(steps // 4, 1), log_every=25, max_minutes=minutes * 1.05, progress=True)
    start = time.perf_counter()
    trainer = T2ITrainer(cfg)
    done = trainer.run()
    seconds = time.perf_counter() - start
    return {"steps": done, "planned_steps": steps, "minutes": seconds / 60, "batch_size": batch, "lr": lr,
            "parameters": trainer.model.num_parameters(), "config": trainer.config.to_dict(),
            "final_log": last_log_row(out / "run"), "weights": str(out / "run")}


def last_log_row(run: Path) -> dict[str, str]:
    with open(run / "log.csv", newline="") as f:
        return list(csv.DictReader(f))[-1]


@torch.no_grad()
def sample(model_dir: Path, codec_dir: Path | str, targets: list[Scene], guidance: float, temperature: float,
           top_k: int | None, seed: int) -> list[Image.Image]:
    """One image per scene from the release (EMA) weights, through ``T2IPipeline``."""
    import movq
    from movq.t2i import T2IPipeline, T2ITransformer

    pipe = T2IPipeline(T2ITransformer.from_pretrained(model_dir), movq.load(codec_dir).eval())
    generator = torch.Generator().manual_seed(seed)
    out = pipe([s.caption for s in targets], guidance_scale=guidance, temperature=temperature, top_k=top_k,
               generator=generator, batch_size=64)
    return out.images


def save_grid(path: Path, rows: list[tuple[str, list[Image.Image]]], size: int) -> None:
    """PNG: one row per combination, its label then one sample per position."""
    label_w = 150
    cols = max(len(images) for _, images in rows)
    grid = Image.new("RGB", (label_w + cols * (size + 2), len(rows) * (size + 2) + 14), (255, 255, 255))
    pen = ImageDraw.Draw(grid)
    for c, name in enumerate(POSITIONS):
        pen.text((label_w + c * (size + 2) + 2, 1), name.replace("at the ", "").replace("in the ", ""), fill=(0, 0, 0))
    for r, (label, images) in enumerate(rows):
        y = 14 + r * (size + 2)
        for line, text in enumerate(label.split("\n")):
            pen.text((4, y + 4 + 12 * line), text, fill=(0, 0, 0))
        for c, image in enumerate(images):
            grid.paste(image.resize((size, size)), (label_w + c * (size + 2), y))
    path.parent.mkdir(parents=True, exist_ok=True)
    # flat colours: a 64-colour palette keeps the file small (~80 KB) and the samples as they look
    grid.quantize(colors=64, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE).save(path, optimize=True)


# ---------------------------------------------------------------------------------------------
# KV cache speed


@torch.no_grad()
def cache_speed(repeats: int, grid: int = 32, seed: int = 0) -> dict:
    """Seconds to sample ``grid`` x ``grid`` image tokens (batch 1, greedy) with and without the KV cache,
    interleaved, ``repeats`` times each; medians and the speed-up. A small random model (speed only)."""
    from movq.t2i import T2IConfig, T2ITransformer, encode_prompts, load_tokenizer

    torch.manual_seed(seed)
    config = T2IConfig(text_len=64, image_vocab_size=1024, image_grid=(grid, grid), n_layer=2, n_head=4, n_embd=128)
    model = T2ITransformer(config).eval()
    text = encode_prompts(load_tokenizer("byte"), ["a red circle at the top left on a blue background"], 64)
    times: dict[bool, list[float]] = {True: [], False: []}
    outputs: dict[bool, torch.Tensor] = {}
    for _ in range(repeats):
        for use_cache in (True, False):
            start = time.perf_counter()
            outputs[use_cache] = model.generate(text, temperature=0, use_cache=use_cache)
            times[use_cache].append(time.perf_counter() - start)
    cached, full = statistics.median(times[True]), statistics.median(times[False])
    return {"image_tokens": config.image_len, "text_len": config.text_len, "parameters": model.num_parameters(),
            "model": "2 layers, 4 heads, 128 wide", "repeats": repeats, "cached_s": cached, "uncached_s": full,
            "speedup": full / cached, "cached_tokens_per_s": config.image_len / cached,
            "uncached_tokens_per_s": config.image_len / full, "all_cached_s": times[True],
            "all_uncached_s": times[False], "same_tokens": bool(torch.equal(outputs[True], outputs[False]))}


# ---------------------------------------------------------------------------------------------
# The run


QUICK = {"repeats": 2, "codec_steps": 300, "minutes": 2.0, "samples": 1, "speed_repeats": 1,
         "model": {"n_layer": 2, "n_head": 4, "n_embd": 128}}
FULL = {"repeats": 12, "codec_steps": 1500, "minutes": 25.0, "samples": 2, "speed_repeats": 3,
        "model": {"n_layer": 4, "n_head": 4, "n_embd": 256}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="/tmp/movq-t2i-shapes")
    parser.add_argument("--quick", action="store_true", help="a few minutes: fewer images, a smaller model, 2 min")
    parser.add_argument("--minutes", type=float, help="training budget of the text-to-image model (wall clock)")
    parser.add_argument("--size", type=int, default=64, help="image side in pixels (f=8 codec: size/8 tokens a side)")
    parser.add_argument("--codec", default="train",
                        help="'train' (a movqgan-tiny codec trained on the shapes), or a codec name / folder")
    parser.add_argument("--codec-steps", type=int)
    parser.add_argument("--codec-codes", type=int, default=1024)
    parser.add_argument("--codec-latent", type=int, default=8)
    parser.add_argument("--repeats", type=int, help="training images per (combination, position)")
    parser.add_argument("--model", type=json.loads, help="T2IConfig overrides (JSON) of the t2i-tiny preset")
    parser.add_argument("--tokenizer", default="words", help="words (a word-level tokenizers file), byte-lower, byte")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--samples", type=int, help="samples per (combination, position) when scoring")
    parser.add_argument("--guidance", type=float, nargs="+", default=[1.5, 3.0, 5.0],
                        help="classifier-free guidance scales to try on seen combinations")
    parser.add_argument("--temperature", type=float, nargs="+", default=[0.5, 1.0],
                        help="temperatures to try on seen combinations")
    parser.add_argument("--top-k", type=int, default=16)
    parser.add_argument("--held-out", type=int, default=12, help="(shape, colour, background) combinations held out")
    parser.add_argument("--speed-repeats", type=int)
    parser.add_argument("--reuse", action="store_true",
                        help="keep OUT's trained model and speed figures; sample and score again")
    parser.add_argument("--speed-only", action="store_true")
    parser.add_argument("--skip-speed", action="store_true")
    parser.add_argument("--threads", type=int, help="torch CPU threads (default: torch's)")
    parser.add_argument("--grid", help="also copy the sample grid PNG here (e.g. benchmarks/t2i_shapes.png)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    preset = QUICK if args.quick else FULL
    for key in ("repeats", "codec_steps", "minutes", "samples", "speed_repeats", "model"):
        if getattr(args, key) is None:
            setattr(args, key, preset[key])
    args.model = {"text_len": 12 if args.tokenizer == "words" else 64, **args.model}
    if args.threads:
        torch.set_num_threads(args.threads)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    results: dict = {"args": vars(args), "threads": torch.get_num_threads()}
    previous = json.loads((out / "results.json").read_text()) if args.reuse and (out / "results.json").is_file() else {}
    if args.reuse and "speed" in previous:
        results["speed"] = previous["speed"]
    elif not args.skip_speed:
        results["speed"] = cache_speed(args.speed_repeats)
        s = results["speed"]
        print(f"KV cache at {s['image_tokens']} image tokens: {s['cached_s']:.2f} s vs {s['uncached_s']:.2f} s without "
              f"({s['speedup']:.1f}x)", flush=True)
    if args.speed_only:
        (out / "results.json").write_text(json.dumps(results, indent=2) + "\n")
        return

    seen, held = held_out_split(args.held_out, args.seed)
    t0 = time.perf_counter()
    images = write_images(out / "images", scenes(seen, args.repeats), args.size, args.seed)
    results["data"] = {"train_images": len(seen) * len(POSITIONS) * args.repeats, "seen_combinations": len(seen),
                       "held_out_combinations": [list(c) for c in held], "size": args.size}
    if args.codec == "train":
        start = time.perf_counter()
        codec = train_codec(images, out / "codec", args.size, args.codec_steps, args.codec_codes, args.codec_latent,
                            args.seed)
        results["codec"] = {"kind": "trained here", "steps": args.codec_steps, "codes": args.codec_codes,
                            "latent": args.codec_latent, "minutes": (time.perf_counter() - start) / 60}
    else:
        codec = args.codec
        results["codec"] = {"kind": args.codec}
    if args.reuse and "codec" in previous:
        results["codec"] = previous["codec"]
    import movq

    rng = random.Random(args.seed + 1)
    check_scenes = scenes(held, args.samples)
    truth = [draw(s, args.size, rng) for s in check_scenes]
    with torch.no_grad():
        loaded = movq.load(codec).eval()
        reconstructions = [loaded.reconstruct(im) for im in truth]
    results["ground_truth"] = score(truth, check_scenes)
    results["codec_ceiling"] = score(reconstructions, check_scenes)
    print(f"checker on drawn images: {results['ground_truth']}\ncodec ceiling (reconstructions of held-out scenes): "
          f"{results['codec_ceiling']}", flush=True)

    tokens = tokenize(images, codec, out / "tokens", args.size)
    tokenizer = caption_tokenizer(args.tokenizer, out)
    if args.reuse and "training" in previous and (out / "run" / "model.safetensors").is_file():
        results["training"] = previous["training"]
        print(f"reusing the trained model in {out / 'run'} (--reuse)", flush=True)
    else:
        results["training"] = train_t2i(tokens, codec, out, args.model, tokenizer, args.minutes, args.batch_size,
                                        args.lr, args.seed)
    print(f"trained {results['training']['steps']} steps in {results['training']['minutes']:.1f} min", flush=True)

    # Sampling settings are chosen on seen combinations only, then used once on the held-out ones.
    weights = Path(results["training"]["weights"])
    seen_scenes = scenes(random.Random(args.seed).sample(seen, len(held)), args.samples)
    start = time.perf_counter()
    results["settings_on_seen"] = []
    for guidance, temperature in itertools.product(args.guidance, args.temperature):
        images_seen = sample(weights, codec, seen_scenes, guidance, temperature, args.top_k, args.seed + 1)
        results["settings_on_seen"].append({"guidance": guidance, "temperature": temperature,
                                            **score(images_seen, seen_scenes)})
    best = max(results["settings_on_seen"], key=lambda r: (r["all"], r["colour"] + r["background"]))
    results["sampling"] = {"guidance": best["guidance"], "temperature": best["temperature"], "top_k": args.top_k}
    generated = sample(weights, codec, check_scenes, best["guidance"], best["temperature"], args.top_k, args.seed)
    results["sampling_s"] = time.perf_counter() - start
    results["held_out"] = score(generated, check_scenes)
    results["held_out_shapes"] = shape_confusion(generated, check_scenes)
    results["seen"] = {k: best[k] for k in (*ATTRIBUTES, "all")}
    print(f"sampling settings on seen combinations: {results['settings_on_seen']}; chosen {results['sampling']}")
    results["total_minutes"] = (time.perf_counter() - t0) / 60
    if args.reuse and "total_minutes" in previous:
        results["rescore_minutes"], results["total_minutes"] = results["total_minutes"], previous["total_minutes"]

    rows = []
    per = len(POSITIONS) * args.samples
    for i, (shape, colour, background) in enumerate(held):
        images_i = generated[i * per : (i + 1) * per : args.samples]
        rows.append((f"{colour} {shape}\non {background}", images_i))
    save_grid(out / "samples.png", rows, args.size)
    if args.grid:
        save_grid(Path(args.grid), rows, args.size)
    (out / "results.json").write_text(json.dumps(results, indent=2) + "\n")

    print("\n| images | " + " | ".join(ATTRIBUTES) + " | all four |")
    print("|---|" + "---|" * (len(ATTRIBUTES) + 1))
    for name, key in (("drawn (checker sanity)", "ground_truth"), ("codec reconstructions, held-out", "codec_ceiling"),
                      ("generated, held-out combinations", "held_out"), ("generated, seen combinations", "seen")):
        r = results[key]
        print(f"| {name} | " + " | ".join(f"{100 * r[a]:.1f}%" for a in (*ATTRIBUTES, "all")) + " |")
    print(f"\nresults: {out / 'results.json'}, grid: {out / 'samples.png'}")


if __name__ == "__main__":
    main()
