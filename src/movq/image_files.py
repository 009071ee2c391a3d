"""Image files on disk: which files count as images, how they are listed, decoded and preprocessed.

One place for every reader of image files (movq-bench, training, training evaluation,
movq-tokenize and the examples), so they all see the same pixels:

- :data:`IMAGE_EXTENSIONS` and :func:`list_image_files` (recursive, sorted, hidden files and
  folders skipped);
- :func:`open_rgb`: full decode, EXIF orientation applied, any mode to 8-bit RGB (16-bit scaled,
  alpha composited on white: :func:`movq.images.to_rgb`);
- :func:`resize_center_crop` / :func:`load_preprocessed`: the evaluation preprocessing
  (:data:`PREPROCESSING`), shorter side to ``resolution`` with PIL bicubic, centre crop;
- :func:`center_crop_arr` (ADM's centre crop, as LlamaGen / DiT preprocess ImageNet), :func:`ten_crop`
  (torchvision's ``TenCrop`` order) and :class:`Augment` (``flip`` / ``ten-crop`` views of one image, as
  LlamaGen's ``extract_codes_c2i.py`` makes them), the views ``movq-tokenize --augment`` stores;
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

from movq.atomic import require_regular_file
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


def open_rgb(path: str | os.PathLike | IO[bytes]) -> Image.Image:
    """Decode an image file (or an open binary file) fully, apply its EXIF orientation and convert it to
    8-bit RGB.

    Raises ``FileNotFoundError`` naming a path that is missing or not a regular file (a FIFO would block),
    ``ValueError`` for an empty (0-pixel) image and PIL's errors for unreadable files.
    """
    if isinstance(path, (str, os.PathLike)):
        path = require_regular_file(path, "expected an image file")
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


def center_crop_arr(pil_image: Image.Image, image_size: int) -> Image.Image:
    """ADM's centre crop (guided-diffusion ``center_crop_arr``, used by DiT and LlamaGen): halve the
    image with a BOX filter while its shorter side is at least ``2 * image_size``, resize it with PIL
    bicubic so the shorter side is ``image_size`` (the longer ``round(side * scale)``), then cut the
    centre ``image_size x image_size`` square (offsets rounded down). PIL image in, PIL image out
    (same mode), pixel-identical to the reference for every image whose resized longer side stays
    below ``16 * image_size`` times its shorter one; a more extreme strip is resampled only where the
    crop keeps (:func:`resize_center_crop`'s guard against gigabyte upscales).
    """
    if image_size < 1:
        raise ValueError(f"image_size must be >= 1, got {image_size}")
    if min(pil_image.size) < 1:
        raise ValueError(f"empty image: {pil_image.size[0]}x{pil_image.size[1]} pixels (WxH)")
    while min(*pil_image.size) >= 2 * image_size:
        pil_image = pil_image.resize(tuple(x // 2 for x in pil_image.size), resample=Image.Resampling.BOX)
    scale = image_size / min(*pil_image.size)
    new_w, new_h = (round(x * scale) for x in pil_image.size)
    if new_w * new_h > 16 * image_size * image_size:  # a 1 x 100000 strip: resample only the kept square
        left, top = (new_w - image_size) // 2, (new_h - image_size) // 2
        sx, sy = pil_image.size[0] / new_w, pil_image.size[1] / new_h
        box = (left * sx, top * sy, (left + image_size) * sx, (top + image_size) * sy)
        return pil_image.resize((image_size, image_size), Image.Resampling.BICUBIC, box=box)
    pil_image = pil_image.resize((new_w, new_h), resample=Image.Resampling.BICUBIC)
    top, left = (new_h - image_size) // 2, (new_w - image_size) // 2
    return pil_image.crop((left, top, left + image_size, top + image_size))


def ten_crop(image: Image.Image, size: int) -> list[Image.Image]:
    """The ten ``size x size`` crops of torchvision's ``TenCrop(size)``, in its order: top-left,
    top-right, bottom-left, bottom-right and centre of ``image``, then the same five of its horizontal
    mirror. The centre crop's offsets are ``round((side - size) / 2)`` (Python's round, half to even),
    as torchvision's ``center_crop``. Raises ``ValueError`` if ``image`` is smaller than ``size``."""
    width, height = image.size
    if size < 1 or size > min(width, height):
        raise ValueError(f"ten_crop size {size} must be in [1, {min(width, height)}] for a {width}x{height} image")

    def five(im: Image.Image) -> list[Image.Image]:
        top, left = int(round((height - size) / 2.0)), int(round((width - size) / 2.0))
        corners = [(0, 0), (width - size, 0), (0, height - size), (width - size, height - size), (left, top)]
        return [im.crop((x, y, x + size, y + size)) for x, y in corners]

    return five(image) + five(image.transpose(Image.Transpose.FLIP_LEFT_RIGHT))


AUGMENTATIONS = {"none": 1, "flip": 2, "ten-crop": 10}
"""``--augment`` modes and the number of views each stores per image."""


@dataclass(frozen=True)
class Augment:
    """The views of one image that ``movq-tokenize --augment`` encodes, as LlamaGen's
    ``extract_codes_c2i.py`` makes them:

    - ``"flip"``: :func:`center_crop_arr` to ``resolution``, then the image and its horizontal mirror (2 views);
    - ``"ten-crop"``: :func:`center_crop_arr` to ``int(resolution * crop_range)`` (LlamaGen's ``int``),
      then :func:`ten_crop` of ``resolution`` (10 views);
    - ``"none"``: :func:`resize_center_crop` (the evaluation preprocessing, 1 view).

    ``augment(image, resolution)`` takes an RGB PIL image and returns uint8 ``[views, 3, R, R]`` and
    whether the image was upscaled. A frozen dataclass, so DataLoader workers can pickle it.
    """

    mode: str = "none"
    crop_range: float = 1.1

    def __post_init__(self) -> None:
        if self.mode not in AUGMENTATIONS:
            raise ValueError(f"augment must be one of {sorted(AUGMENTATIONS)}, got {self.mode!r}")
        if not (isinstance(self.crop_range, (int, float)) and 1.0 <= self.crop_range <= 4.0):
            raise ValueError(f"crop_range must be a number in [1, 4], got {self.crop_range!r}")

    @property
    def views(self) -> int:
        """Views per image: 1, 2 or 10."""
        return AUGMENTATIONS[self.mode]

    def crop_size(self, resolution: int) -> int:
        """The side of the ADM centre crop the views are cut from."""
        return int(resolution * self.crop_range) if self.mode == "ten-crop" else resolution

    def describe(self, resolution: int) -> str:
        """The preprocessing in words (what a run records next to its tokens)."""
        if self.mode == "none":
            return PREPROCESSING.format(res=resolution)
        crop = self.crop_size(resolution)
        adm = (f"EXIF-transposed, converted to 8-bit RGB (alpha composited on white), ADM centre crop to {crop} px "
               f"(BOX-halved while the shorter side >= {2 * crop}, PIL bicubic to a shorter side of {crop}, centre "
               f"crop {crop}x{crop})")
        if self.mode == "flip":
            return f"{adm}; 2 views: the image and its horizontal mirror"
        return (f"{adm} (crop_range {self.crop_range:g}); 10 views: torchvision TenCrop({resolution}) (top-left, "
                f"top-right, bottom-left, bottom-right, centre, then the same of the horizontal mirror)")

    def __call__(self, image: Image.Image, resolution: int) -> tuple[Tensor, bool]:
        crop = self.crop_size(resolution)
        upscaled = min(image.size) < crop
        if self.mode == "none":
            views = [resize_center_crop(image, resolution)[0]]
        elif self.mode == "flip":
            base = center_crop_arr(image, resolution)
            views = [base, base.transpose(Image.Transpose.FLIP_LEFT_RIGHT)]
        else:
            views = ten_crop(center_crop_arr(image, crop), resolution)
        array = np.stack([np.asarray(v.convert("RGB"), dtype=np.uint8) for v in views])
        return torch.from_numpy(array).permute(0, 3, 1, 2).contiguous(), upscaled


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
    index: int, resolution: int, open_item: Callable[[], tuple[str | os.PathLike | IO[bytes], str | None]],
    augment: Augment | None = None,
) -> DecodedImage:
    """:func:`load_preprocessed` of what ``open_item()`` returns (a path or a binary file, and a
    caption), or with ``augment`` its views (``pixels`` uint8 ``[views, 3, R, R]``, see :class:`Augment`);
    never raises for bad data: a corrupt, truncated, missing or unsupported item comes back with its
    error, so a run lists it instead of stopping."""
    try:
        source, caption = open_item()
        if augment is None:
            pixels, upscaled = load_preprocessed(source, resolution)
        else:
            pixels, upscaled = augment(open_rgb(source), resolution)
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
