"""Image files on disk: which files count as images, how they are listed, decoded and preprocessed.

One place for every reader of image files (movq-bench, training, training evaluation,
movq-tokenize and the examples), so they all see the same pixels:

- :data:`IMAGE_EXTENSIONS` and :func:`list_image_files` (recursive, sorted, hidden files and
  folders skipped);
- :func:`open_rgb`: full decode, EXIF orientation applied, any mode to 8-bit RGB (16-bit scaled,
  alpha composited on white: :func:`movq.images.to_rgb`);
- :func:`resize_center_crop` / :func:`load_preprocessed`: the evaluation preprocessing
  (:data:`PREPROCESSING`), shorter side to ``resolution`` with PIL bicubic, centre crop;
  :class:`Preprocessing` names the protocols ``movq-bench --protocol`` offers: ``"movq"`` (that
  one, or with ``resize="lanczos"``), ``"adm"`` (:func:`adm_center_crop`, ADM's
  ``center_crop_arr`` of openai/guided-diffusion, the preprocessing of LlamaGen, TiTok, IBQ and DiT)
  and ``"var"`` (:func:`var_center_crop`, VAR's validation transform);
- :func:`decode_image` / :class:`DecodedImages`: the one DataLoader reader of ``movq-bench`` and
  ``movq-tokenize``, which reports an unreadable item instead of raising.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, Literal

import numpy as np
import torch
from PIL import Image, ImageOps
from torch import Tensor

from movq.images import to_rgb
from movq.strict import StrictConfig

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".jfif", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm")
"""File suffixes (case-insensitive) read as images everywhere in movq."""

PREPROCESSING = (
    "EXIF-transposed, converted to 8-bit RGB (alpha composited on white), shorter side resized to "
    "{res} px (PIL bicubic, antialiased), centre crop {res}x{res}"
)
"""The evaluation preprocessing of :func:`load_preprocessed`, as printed with every result."""

ADM_PREPROCESSING = (
    "ADM center_crop_arr (openai/guided-diffusion): decoded by PIL and converted with PIL's convert('RGB') "
    "(no EXIF orientation, as ADM's ImageDataset and torchvision's ImageFolder read files), halved with PIL BOX "
    "while the shorter side is >= {twice} px, shorter side to {res} px with PIL bicubic (sides rounded), "
    "centre crop {res}x{res}"
)
"""The ``"adm"`` protocol (:func:`adm_center_crop`), as printed with every result."""

VAR_PREPROCESSING = (
    "VAR's validation transform (FoundationVision/VAR): decoded by PIL and converted with convert('RGB') (no EXIF "
    "orientation), shorter side to {mid} px (1.125x) with PIL Lanczos as torchvision's Resize (longer side truncated), "
    "torchvision's CenterCrop {res}x{res}"
)
"""The ``"var"`` protocol (:func:`var_center_crop`), as printed with every result."""

RESIZE_FILTERS = {"bicubic": Image.Resampling.BICUBIC, "lanczos": Image.Resampling.LANCZOS}
"""The resampling filters of the ``"movq"`` protocol (``--resize``): bicubic (the default) or Lanczos."""

ADM_EXACT_PIXELS = 2**25
"""Largest intermediate image (pixels) :func:`adm_center_crop` resizes whole, as ADM does; beyond it
(only extreme aspect ratios, e.g. a 1 x 100000 strip) only the cropped region is resampled."""


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


def open_rgb(path: str | os.PathLike | IO[bytes], exif: bool = True) -> Image.Image:
    """Decode an image file fully, apply its EXIF orientation and convert it to 8-bit RGB
    (:func:`movq.images.to_rgb`). ``exif=False`` reads it as ADM's and torchvision's loaders do:
    no EXIF orientation, PIL's own ``convert("RGB")`` (alpha dropped, not composited).

    Raises ``ValueError`` for an empty (0-pixel) image and PIL's errors for unreadable files.
    """
    with Image.open(path) as image:
        image.load()
        rgb = to_rgb(ImageOps.exif_transpose(image)) if exif else image.convert("RGB")
    if min(rgb.size) < 1:
        raise ValueError(f"{path}: empty image ({rgb.size[0]}x{rgb.size[1]} pixels)")
    return rgb


def resize_center_crop(image: Image.Image, resolution: int, resize: str = "bicubic") -> tuple[Image.Image, bool]:
    """Shorter side -> ``resolution`` (PIL ``resize`` filter of :data:`RESIZE_FILTERS`, antialiased) then
    centre crop; returns (image, upscaled?)."""
    width, height = image.size
    short = min(width, height)
    upscaled = short < resolution
    if short != resolution:
        scale = resolution / short
        new_size = max(resolution, round(width * scale)), max(resolution, round(height * scale))
        limit = max(16 * resolution**2, width * height)
        return _resize_crop(image, new_size, _floor_centre(new_size, resolution), resolution, RESIZE_FILTERS[resize], limit), upscaled
    left, top = (width - resolution) // 2, (height - resolution) // 2
    return image.crop((left, top, left + resolution, top + resolution)), upscaled


def adm_center_crop(image: Image.Image, resolution: int) -> tuple[Image.Image, bool]:
    """ADM's ``center_crop_arr`` (openai/guided-diffusion ``image_datasets.py``), pixel for pixel:
    while the shorter side is at least ``2 * resolution``, halve both sides (``side // 2``) with PIL
    BOX; then resize with PIL bicubic so the shorter side is ``resolution`` (both sides
    ``round(side * scale)``); centre crop ``resolution x resolution`` at ``((H - r) // 2, (W - r) // 2)``.

    In: an RGB PIL image of any size (smaller images are upscaled). Out: (the ``resolution``-square
    RGB image, whether it was upscaled). Only an intermediate image of more than
    :data:`ADM_EXACT_PIXELS` pixels (extreme aspect ratios) is resampled in the cropped region alone.
    """
    upscaled = min(image.size) < resolution
    while min(image.size) >= 2 * resolution:
        image = image.resize(tuple(side // 2 for side in image.size), resample=Image.Resampling.BOX)
    scale = resolution / min(image.size)
    new_size = round(image.size[0] * scale), round(image.size[1] * scale)
    limit = max(16 * resolution**2, image.size[0] * image.size[1], ADM_EXACT_PIXELS)
    return _resize_crop(image, new_size, _floor_centre(new_size, resolution), resolution, Image.Resampling.BICUBIC, limit), upscaled


VAR_MID_RESO = 1.125
"""VAR's evaluation zoom: the shorter side is resized to ``round(1.125 * resolution)`` before the centre crop."""


def var_center_crop(image: Image.Image, resolution: int) -> tuple[Image.Image, bool]:
    """VAR's validation transform (FoundationVision/VAR ``utils/data.py``: torchvision
    ``Resize(round(1.125 * r), LANCZOS)`` then ``CenterCrop(r)``), pixel for pixel on PIL images:
    the shorter side to ``mid = round(1.125 * r)`` and the longer to ``int(mid * long / short)``
    (torchvision truncates) with PIL Lanczos, then the ``r``-square crop at
    ``(int(round((H - r) / 2)), int(round((W - r) / 2)))``. Returns (image, upscaled?)."""
    mid = round(VAR_MID_RESO * resolution)
    width, height = image.size
    short, long = min(width, height), max(width, height)
    new_short, new_long = mid, int(mid * long / short)
    new_size = (new_short, new_long) if width <= height else (new_long, new_short)
    offsets = int(round((new_size[0] - resolution) / 2.0)), int(round((new_size[1] - resolution) / 2.0))
    limit = max(16 * resolution**2, width * height, ADM_EXACT_PIXELS)
    return _resize_crop(image, new_size, offsets, resolution, Image.Resampling.LANCZOS, limit), short < mid


def _floor_centre(new_size: tuple[int, int], resolution: int) -> tuple[int, int]:
    """(left, top) of the centred ``resolution`` square: ``((W - r) // 2, (H - r) // 2)``."""
    return (new_size[0] - resolution) // 2, (new_size[1] - resolution) // 2


def _resize_crop(image: Image.Image, new_size: tuple[int, int], offsets: tuple[int, int], resolution: int, resample: int,
                 limit: int) -> Image.Image:
    """Resize ``image`` to ``new_size`` with ``resample`` and crop the ``resolution`` square at
    ``offsets`` (left, top). A resized image of more than ``limit`` pixels (an extreme aspect ratio:
    a 1 x 100000 strip would take gigabytes) is never built: only the region the crop keeps is
    resampled (same pixels up to rounding)."""
    width, height = image.size
    new_w, new_h = new_size
    left, top = offsets
    if new_w * new_h > limit:
        sx, sy = width / new_w, height / new_h
        box = (left * sx, top * sy, (left + resolution) * sx, (top + resolution) * sy)
        return image.resize((resolution, resolution), resample, box=box, reducing_gap=None)
    image = image.resize((new_w, new_h), resample, reducing_gap=None)
    return image.crop((left, top, left + resolution, top + resolution))


@dataclass(frozen=True)
class Preprocessing(StrictConfig):
    """An evaluation preprocessing protocol (``movq-bench --protocol / --resize``).

    ``protocol="movq"`` (the default): :func:`open_rgb` (EXIF orientation, alpha on white), shorter
    side to the resolution with the ``resize`` filter (``"bicubic"``, or ``"lanczos"``), centre crop.
    ``protocol="adm"``: PIL's own ``convert("RGB")`` then :func:`adm_center_crop` (ADM's
    ``center_crop_arr``); ``protocol="var"``: the same reading then :func:`var_center_crop` (VAR's
    1.125x Lanczos resize and centre crop). ``resize`` must stay ``"bicubic"`` for ``adm`` / ``var``. ``crop`` / ``load`` apply it,
    ``describe`` says it in words.
    """

    protocol: Literal["movq", "adm", "var"] = "movq"
    resize: Literal["bicubic", "lanczos"] = "bicubic"

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.protocol != "movq" and self.resize != "bicubic":
            what = "ADM's center_crop_arr (BOX halving, then bicubic)" if self.protocol == "adm" else "VAR's transform (Lanczos)"
            raise ValueError(f"--resize {self.resize} applies to --protocol movq; --protocol {self.protocol} is {what} "
                             "with its own filter: leave --resize out")

    def crop(self, image: Image.Image, resolution: int) -> tuple[Image.Image, bool]:
        """RGB PIL image -> (the ``resolution``-square crop, upscaled?)."""
        if self.protocol == "adm":
            return adm_center_crop(image, resolution)
        if self.protocol == "var":
            return var_center_crop(image, resolution)
        return resize_center_crop(image, resolution, self.resize)

    def load(self, source: str | os.PathLike | IO[bytes], resolution: int) -> tuple[Tensor, bool]:
        """Read an image file and preprocess it: uint8 ``[3, resolution, resolution]`` and whether it was upscaled."""
        image = open_rgb(source, exif=self.protocol == "movq")
        cropped, upscaled = self.crop(image, resolution)
        return torch.from_numpy(np.asarray(cropped, dtype=np.uint8).copy()).permute(2, 0, 1), upscaled

    def describe(self, resolution: int) -> str:
        """The protocol in words, as printed with every result."""
        if self.protocol == "adm":
            return "adm: " + ADM_PREPROCESSING.format(res=resolution, twice=2 * resolution)
        if self.protocol == "var":
            return "var: " + VAR_PREPROCESSING.format(res=resolution, mid=round(VAR_MID_RESO * resolution))
        text = PREPROCESSING.format(res=resolution)
        return "movq: " + (text if self.resize == "bicubic" else text.replace("PIL bicubic", "PIL Lanczos"))


def load_preprocessed(
    path: str | os.PathLike | IO[bytes], resolution: int, preprocessing: Preprocessing | None = None
) -> tuple[Tensor, bool]:
    """:func:`open_rgb` + :func:`resize_center_crop` (or another ``preprocessing`` protocol): uint8
    ``[3, resolution, resolution]`` and whether it was upscaled."""
    return (preprocessing or Preprocessing()).load(path, resolution)


@dataclass
class DecodedImage:
    """One item read by :func:`decode_image`: ``pixels`` uint8 ``[3, R, R]`` preprocessed, whether it
    was ``upscaled`` and its ``caption`` (if any); or ``pixels=None`` with the ``error`` that made it
    unreadable. ``index`` is the item's position in the source list."""

    index: int
    pixels: Tensor | None
    upscaled: bool = False
    caption: str | None = None
    error: str = ""


def decode_image(
    index: int,
    resolution: int,
    open_item: Callable[[], tuple[str | os.PathLike | IO[bytes], str | None]],
    preprocessing: Preprocessing | None = None,
) -> DecodedImage:
    """:func:`load_preprocessed` of what ``open_item()`` returns (a path or a binary file, and a
    caption); never raises for bad data: a corrupt, truncated, missing or unsupported item comes
    back with its error, so a run lists it instead of stopping."""
    try:
        source, caption = open_item()
        pixels, upscaled = load_preprocessed(source, resolution, preprocessing)
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
