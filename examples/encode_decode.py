"""Encode a photo into tokens, decode it back, and write the reconstruction next to the original.

    python examples/encode_decode.py [IMAGE] [--model NAME_OR_PATH] [--out DIR] [--size 256]

IMAGE defaults to the first photo in ../shared/images/val (or a generated test picture when that
folder is absent). --model takes a Hub name, a preset name or a local folder / checkpoint.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch
from PIL import Image

import movq
from movq.atomic import atomic_write
from movq.image_files import open_rgb, resize_center_crop

SHARED_IMAGES = Path(__file__).resolve().parents[1].parent / "shared" / "images" / "val"


def default_image() -> Image.Image:
    photos = sorted(SHARED_IMAGES.glob("*.jpg")) if SHARED_IMAGES.is_dir() else []
    if photos:
        return open_rgb(photos[0])
    y, x = np.mgrid[0:256, 0:256]
    rgb = np.stack([x, y, (x + y) // 2], axis=-1).astype(np.uint8)  # a smooth gradient
    return Image.fromarray(rgb)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("image", nargs="?", help="image file (default: a photo from ../shared/images)")
    parser.add_argument("--model", default=movq.DEFAULT_MODEL, help="codec name or path")
    parser.add_argument("--out", default="outputs", help="output folder")
    parser.add_argument("--size", type=int, default=256, help="centre-crop size (a multiple of 8)")
    args = parser.parse_args()

    # the project's one image reader: 16-bit PNGs scaled, EXIF rotation applied, transparency on white
    image = open_rgb(args.image) if args.image else default_image()
    image, _ = resize_center_crop(image, args.size)
    codec = movq.load(args.model)

    tokens = codec.encode(image)  # LongTensor [1, size/8, size/8]
    reconstruction = codec.reconstruct(image)  # PIL in, PIL out
    original = torch.from_numpy(np.array(image)).float()
    restored = torch.from_numpy(np.array(reconstruction)).float()
    psnr = 10 * torch.log10(255.0**2 / (original - restored).pow(2).mean())

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    for name, picture in (("original.png", image), ("reconstruction.png", reconstruction)):
        atomic_write(out / name, lambda tmp, picture=picture: picture.save(tmp, format="PNG"))  # never half-written
    print(f"model {args.model}: tokens {tuple(tokens.shape)} from a codebook of {codec.codebook_size}")
    print(f"PSNR {psnr:.2f} dB; wrote {out / 'original.png'} and {out / 'reconstruction.png'}")


if __name__ == "__main__":
    main()
