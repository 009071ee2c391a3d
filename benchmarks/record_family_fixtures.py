"""Record parity fixtures: movq against the ORIGINAL implementation of each codec family, on
seeded random weights spread like trained ones, saved in the family's published container.

For each family the recorder

1. builds the original model (imported from its own repository checkout, never copied) at its
   published configuration;
2. fills it with :func:`seeded_weights` (a pure function of the published key names, shapes and a
   seed: norm scales around 1, small biases, convolutions scaled by fan-in, a codebook with real
   spread, so that a wrong key mapping cannot hide) and saves it exactly as the project publishes it;
3. runs ``movq.load(file)`` and the original on :func:`seeded_images` and compares token ids
   (``encode``) and pixels (``decode`` of the original's tokens);
4. writes ``tests/fixtures/<family>.json``: the recipe (seeds, sizes, container), a hash of the
   published key names and shapes, checksums of the weights and inputs, the original's token ids,
   per-image channel means / standard deviations and a small crop of its decoded pixels, and the
   measured parity.

``tests/test_family_*.py`` rebuild the same checkpoint from the recipe with :func:`seeded_weights`
(no third-party repository needed) and compare movq against the recorded outputs.

Usage (one family, or all)::

    python benchmarks/record_family_fixtures.py --llamagen /path/to/LlamaGen [--family llamagen-vq16]

A new family adds a recorder function to :data:`RECORDERS` (and, if needed, a ``--<repo>`` option).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import sys
import tempfile
import zlib
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

FIXTURES = Path(__file__).resolve().parents[1] / "tests" / "fixtures"
WEIGHTS_SEED = 20
INPUTS_SEED = 7
BATCH = 2
CROP = 8
"""Side of the square of decoded pixels recorded per image (all channels), at :func:`crop_box`."""


# ------------------------------------------------------------------ shared with the tests


def seeded_weights(shapes: Mapping[str, Sequence[int]], seed: int = WEIGHTS_SEED) -> dict[str, Tensor]:
    """float32 tensors for a state dict of ``shapes`` (key -> shape), each a function of ``(seed,
    key, shape)`` only (so the order of keys does not matter):

    - 1-D ``*norm*.weight``: ``1 + 0.2 * N(0, 1)``; ``*.bias``: ``0.05 * N(0, 1)``;
    - ``*embedding.weight`` (codebooks): ``N(0, 1)``, spread in every direction, not unit-norm;
    - ``*codebook_used`` (LlamaGen's usage log, a buffer of code ids): integers in ``[0, 1024)``;
    - any other weight: ``N(0, 1) / sqrt(fan_in)`` (fan_in = product of the shape after axis 0).
    """
    out = {}
    for key, shape in shapes.items():
        gen = torch.Generator().manual_seed(seed * 1_000_003 + zlib.crc32(key.encode()))
        shape = tuple(int(s) for s in shape)
        noise = torch.randn(shape, generator=gen)
        if key.endswith("codebook_used"):
            value = torch.randint(0, 1024, shape, generator=gen).float()
        elif key.endswith("embedding.weight"):
            value = noise
        elif key.endswith("bias"):
            value = 0.05 * noise
        elif len(shape) == 1 and "norm" in key:
            value = 1.0 + 0.2 * noise
        else:
            value = noise / math.sqrt(max(1, math.prod(shape[1:])))
        out[key] = value.contiguous()
    return out


def seeded_images(batch: int, size: int, seed: int = INPUTS_SEED) -> Tensor:
    """``[batch, 3, size, size]`` smooth random images in ``(-1, 1)``: Gaussian noise at 1/8 of the
    size, bilinearly upsampled, plus fine noise, through ``tanh``."""
    gen = torch.Generator().manual_seed(seed)
    coarse = torch.randn(batch, 3, max(1, size // 8), max(1, size // 8), generator=gen)
    fine = 0.3 * torch.randn(batch, 3, size, size, generator=gen)
    smooth = F.interpolate(coarse, size=(size, size), mode="bilinear", align_corners=False)
    return torch.tanh(smooth + fine)


def keys_digest(shapes: Mapping[str, Sequence[int]]) -> str:
    """sha256 of the sorted ``"key (shape)"`` lines: names and shapes of a state dict in a few bytes."""
    lines = "\n".join(f"{k} {tuple(int(s) for s in shapes[k])}" for k in sorted(shapes))
    return hashlib.sha256(lines.encode()).hexdigest()


def checksum(tensors: Mapping[str, Tensor] | Tensor) -> float:
    """float64 sum of the absolute values of ``tensors`` (a weak but order-free fingerprint)."""
    values = tensors.values() if isinstance(tensors, Mapping) else [tensors]
    return float(sum(t.double().abs().sum() for t in values))


def crop_box(height: int, width: int) -> tuple[int, int]:
    """Top-left corner of the recorded :data:`CROP` x :data:`CROP` square: off-centre, away from the borders."""
    return (height - CROP) // 3, (width - CROP) // 2


def pixel_summary(images: Tensor) -> dict[str, Any]:
    """What the fixtures keep of decoded images ``[B, 3, H, W]``: per image and channel the mean and
    standard deviation, and the :func:`crop_box` square (rounded to 1e-6)."""
    top, left = crop_box(*images.shape[-2:])
    images = images.double()
    return {
        "mean": images.mean(dim=(2, 3)).tolist(),
        "std": images.std(dim=(2, 3)).tolist(),
        "crop_top_left": [top, left],
        "crop": [[[[round(v, 6) for v in row] for row in channel] for channel in image]
                 for image in images[:, :, top:top + CROP, left:left + CROP].tolist()],
    }


# ------------------------------------------------------------------ the families


def record_llamagen(repo: Path, variant: str, size: int) -> dict[str, Any]:
    """LlamaGen ``VQ-16`` / ``VQ-8`` (``tokenizer/tokenizer_image/vq_model.py``), saved like the
    published ``vq_ds16_c2i.pt``: ``torch.save({"model": state_dict})``."""
    sys.path.insert(0, str(repo))
    from tokenizer.tokenizer_image.vq_model import VQ_models  # the original, from its checkout

    import movq

    torch.manual_seed(0)
    original: nn.Module = VQ_models[variant]().eval()
    shapes = {k: tuple(v.shape) for k, v in original.state_dict().items()}
    weights = seeded_weights(shapes)
    original.load_state_dict(weights, strict=True)
    images = seeded_images(BATCH, size)
    with torch.no_grad():
        _, _, (_, _, indices) = original.encode(images)
        grid = size // (16 if variant == "VQ-16" else 8)
        tokens = indices.reshape(BATCH, grid, grid)
        pixels = original.decode_code(tokens.flatten(), (BATCH, original.config.codebook_embed_dim, grid, grid))
        with tempfile.TemporaryDirectory() as folder:
            path = Path(folder) / ("vq_ds16_c2i.pt" if variant == "VQ-16" else "vq_ds8_c2i.pt")
            torch.save({"model": weights}, path)
            codec = movq.load(path)
        movq_tokens = codec.encode(images)
        movq_pixels = codec.decode(tokens)
        movq_unclamped = codec.decode(tokens, clamp=False)
    return {
        "family": "llamagen",
        "variant": variant,
        "preset": codec.config.name,
        "recipe": {
            "original": "FoundationVision/LlamaGen tokenizer/tokenizer_image/vq_model.py VQ_models[" + repr(variant) + "]",
            "container": "torch.save({'model': state_dict})",
            "weights": "seeded_weights(published shapes, seed)", "weights_seed": WEIGHTS_SEED,
            "inputs": "seeded_images(batch, size, seed)", "inputs_seed": INPUTS_SEED, "batch": BATCH, "size": size,
        },
        "published_keys": len(shapes),
        "published_keys_sha256": keys_digest(shapes),
        "weights_checksum": checksum(weights),
        "inputs_checksum": checksum(images),
        "tokens": tokens.tolist(),
        "pixels": pixel_summary(pixels),
        "parity": {
            "tokens_equal": float((movq_tokens == tokens).double().mean()),
            "max_pixel_difference": float((movq_unclamped - pixels).abs().max()),
            "max_pixel_difference_clamped": float((movq_pixels - pixels.clamp(-1, 1)).abs().max()),
        },
    }


RECORDERS: dict[str, tuple[str, Callable[[Path], dict[str, Any]]]] = {
    "llamagen-vq16": ("llamagen", lambda repo: record_llamagen(repo, "VQ-16", 64)),
    "llamagen-vq8": ("llamagen", lambda repo: record_llamagen(repo, "VQ-8", 64)),
}
"""Family fixture name -> (the option naming its repository checkout, recorder(checkout) -> fixture)."""


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--llamagen", type=Path, help="checkout of github.com/FoundationVision/LlamaGen")
    parser.add_argument("--family", choices=sorted(RECORDERS), action="append", help="default: every family whose repo is given")
    parser.add_argument("--out", type=Path, default=FIXTURES)
    args = parser.parse_args(argv)
    families = args.family or [f for f, (repo, _) in RECORDERS.items() if getattr(args, repo) is not None]
    if not families:
        parser.error("give the checkout of at least one original repository (--llamagen ...)")
    torch.set_num_threads(max(1, torch.get_num_threads()))
    print("| family | tokens equal | max pixel difference |")
    print("|---|---|---|")
    for family in families:
        repo_option, recorder = RECORDERS[family]
        repo = getattr(args, repo_option)
        if repo is None or not repo.is_dir():
            parser.error(f"--{repo_option} must name a checkout of the original repository for {family}")
        fixture = recorder(repo)
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / f"{family}.json").write_text(json.dumps(fixture, separators=(",", ":")) + "\n")
        parity = fixture["parity"]
        print(f"| {family} | {100 * parity['tokens_equal']:.2f}% | {parity['max_pixel_difference']:.2e} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
