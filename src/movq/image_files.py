"""Image files on disk: which files count as images, how they are listed, decoded and preprocessed.

One place for every reader of image files (movq-bench, training, training evaluation,
movq-tokenize and the examples), so they all see the same pixels:

- :data:`IMAGE_EXTENSIONS` and :func:`list_image_files` (recursive, sorted, hidden files and
  folders skipped);
- :func:`open_rgb`: full decode, EXIF orientation applied, any mode to 8-bit RGB (16-bit scaled,
  alpha composited on white: :func:`movq.images.to_rgb`);
- :func:`resize_center_crop` / :func:`load_preprocessed`: the evaluation preprocessing
  (:data:`PREPROCESSING`), shorter side to ``resolution`` with PIL bicubic, centre crop;
- :func:`decode_image` / :class:`DecodedImages`: the one DataLoader reader of ``movq-bench`` and
  ``movq-tokenize``, which reports an unreadable item instead of raising.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import numpy as np
import torch
from PIL import Image, ImageOps
from torch import Tensor

from movq.images import to_rgb

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".jfif", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm")
"""File suffixes (case-insensitive) read as images everywhere in movq."""

PREPROCESSING = (
    "EXIF-transposed, converted to 8-bit RGB (alpha composited on white), shorter side resized to "
    "{res} px (PIL bicubic, antialiased), centre crop {res}x{res}"
)
"""The evaluation preprocessing of :func:`load_preprocessed`, as printed with every result."""


def is_image_file(path: str | os.PathLike) -> bool:
    """Whether ``path``'s suffix is one of :data:`IMAGE_EXTENSIONS` (the contents are not read)."""
    return Path(path).suffix.lower() in IMAGE_EXTENSIONS


def is_hidden(relative: str | os.PathLike) -> bool:
    """Whether any part of the relative path starts with ``.`` (hidden files and folders are skipped)."""
    return any(part.startswith(".") for part in Path(relative).parts)


def list_image_files(root: str | os.PathLike) -> list[Path]:
    """Image files under the folder ``root``, recursively, sorted by relative path, hidden ones skipped.

    Raises ``FileNotFoundError`` (no such folder), ``NotADirectoryError`` (a file) or ``ValueError``
    (no image files), each naming ``root`` and the accepted extensions.
    """
    root = check_image_folder(root)
    files = sorted(
        (p for p in root.rglob("*") if is_image_file(p) and not is_hidden(p.relative_to(root)) and p.is_file()),
        key=lambda p: p.relative_to(root).as_posix(),
    )
    if not files:
        raise ValueError(f"no image files ({', '.join(IMAGE_EXTENSIONS)}) found under {root}")
    return files


def check_image_folder(root: str | os.PathLike) -> Path:
    """``root`` as a ``Path`` if it is an existing folder; a clear error otherwise."""
    root = Path(root)
    if not root.exists():
        raise FileNotFoundError(f"data folder {root} does not exist")
    if not root.is_dir():
        raise NotADirectoryError(f"data must be a folder of images, got the file {root}")
    return root


def open_rgb(path: str | os.PathLike) -> Image.Image:
    """Decode an image file fully, apply its EXIF orientation and convert it to 8-bit RGB.

    Raises ``ValueError`` for an empty (0-pixel) image and PIL's errors for unreadable files.
    """
    with Image.open(path) as image:
        image.load()
        rgb = to_rgb(ImageOps.exif_transpose(image))
    if min(rgb.size) < 1:
        raise ValueError(f"{path}: empty image ({rgb.size[0]}x{rgb.size[1]} pixels)")
    return rgb


def resize_center_crop(image: Image.Image, resolution: int) -> tuple[Image.Image, bool]:
    """Shorter side -> ``resolution`` (bicubic, antialiased) then centre crop; returns (image, upscaled?)."""
    width, height = image.size
    short = min(width, height)
    upscaled = short < resolution
    if short != resolution:
        scale = resolution / short
        new_w, new_h = max(resolution, round(width * scale)), max(resolution, round(height * scale))
        if new_w * new_h > max(16 * resolution * resolution, width * height):
            # An extreme aspect ratio (a 1 x 100000 strip) would be upscaled to gigabytes before the
            # crop: resample only the region the crop keeps (same pixels up to rounding).
            left, top = (new_w - resolution) // 2, (new_h - resolution) // 2
            sx, sy = width / new_w, height / new_h
            box = (left * sx, top * sy, (left + resolution) * sx, (top + resolution) * sy)
            return image.resize((resolution, resolution), Image.Resampling.BICUBIC, box=box, reducing_gap=None), upscaled
        image = image.resize((new_w, new_h), Image.Resampling.BICUBIC, reducing_gap=None)
    width, height = image.size
    left, top = (width - resolution) // 2, (height - resolution) // 2
    return image.crop((left, top, left + resolution, top + resolution)), upscaled


def load_preprocessed(path: str | os.PathLike, resolution: int) -> tuple[Tensor, bool]:
    """:func:`open_rgb` + :func:`resize_center_crop`: uint8 ``[3, resolution, resolution]`` and whether it was upscaled."""
    cropped, upscaled = resize_center_crop(open_rgb(path), resolution)
    return torch.from_numpy(np.asarray(cropped, dtype=np.uint8).copy()).permute(2, 0, 1), upscaled


@dataclass
class DecodedImage:
    """One item read by :func:`decode_image`: ``pixels`` uint8 ``[3, R, R]`` preprocessed, whether it
    was ``upscaled`` and its ``caption`` (if any); or ``pixels=None`` with the ``error`` that made it
    unreadable. ``index`` is the item's position in the source list. ``label`` (a class index) and
    ``extra`` (a JSON object, e.g. a WebDataset sample's ``.json``) are set by readers that have them."""

    index: int
    pixels: Tensor | None
    upscaled: bool = False
    caption: str | None = None
    error: str = ""
    label: int | None = None
    extra: Any = None


def decode_image(
    index: int, resolution: int, open_item: Callable[[], tuple[str | os.PathLike | IO[bytes], str | None]]
) -> DecodedImage:
    """:func:`load_preprocessed` of what ``open_item()`` returns (a path or a binary file, and a
    caption); never raises for bad data: a corrupt, truncated, missing or unsupported item comes
    back with its error, so a run lists it instead of stopping."""
    try:
        source, caption = open_item()
        pixels, upscaled = load_preprocessed(source, resolution)
    except Exception as err:  # bad data: listed, not fatal
        return DecodedImage(index, None, error=f"{type(err).__name__}: {err}")
    return DecodedImage(index, pixels, upscaled, caption)


class DecodedImages(torch.utils.data.Dataset):
    """Map-style dataset (for a DataLoader): ``ds[i]`` -> ``decode(items[i], i, resolution)``, a
    :class:`DecodedImage` with pixels uint8 ``[3, resolution, resolution]`` (``decode`` is the app's
    adapter around :func:`decode_image`; a module-level function, so workers can pickle it)."""

    def __init__(self, items: Sequence[Any], resolution: int, decode: Callable[[Any, int, int], DecodedImage]) -> None:
        self.items, self.resolution, self.decode = items, resolution, decode

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> DecodedImage:
        return self.decode(self.items[index], index, self.resolution)
