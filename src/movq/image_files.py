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
- :class:`Preprocessing`: the protocols ``movq-bench --protocol`` offers: ``"movq"`` (the evaluation
  preprocessing above, or with ``resize="lanczos"``), ``"adm"`` (:func:`center_crop_arr`, the
  preprocessing of LlamaGen, TiTok, IBQ and DiT) and ``"var"`` (:func:`var_center_crop`, VAR's
  validation transform);
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

from movq.atomic import require_regular_file
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
"""The ``"adm"`` protocol (:func:`center_crop_arr`), as printed with every result."""

VAR_PREPROCESSING = (
    "VAR's validation transform (FoundationVision/VAR): decoded by PIL and converted with convert('RGB') (no EXIF "
    "orientation), shorter side to {mid} px (1.125x) with PIL Lanczos as torchvision's Resize (longer side truncated), "
    "torchvision's CenterCrop {res}x{res}"
)
"""The ``"var"`` protocol (:func:`var_center_crop`), as printed with every result."""

RESIZE_FILTERS = {"bicubic": Image.Resampling.BICUBIC, "lanczos": Image.Resampling.LANCZOS}
"""The resampling filters of the ``"movq"`` protocol (``--resize``): bicubic (the default) or Lanczos."""

ADM_EXACT_PIXELS = 2**25
"""Largest intermediate image (pixels) :func:`center_crop_arr` and :func:`var_center_crop` resize whole, as
ADM and VAR do; beyond it (only extreme aspect ratios, e.g. a 1 x 100000 strip) only the cropped
region is resampled."""


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
    """Decode an image file (or an open binary file) fully, apply its EXIF orientation and convert it to
    8-bit RGB (:func:`movq.images.to_rgb`). ``exif=False`` reads it as ADM's and torchvision's loaders
    do: no EXIF orientation, PIL's own ``convert("RGB")`` (alpha dropped, not composited).

    Raises ``FileNotFoundError`` naming a path that is missing or not a regular file (a FIFO would block),
    ``ValueError`` for an empty (0-pixel) image and PIL's errors for unreadable files.
    """
    if isinstance(path, (str, os.PathLike)):
        path = require_regular_file(path, "expected an image file")
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


def center_crop_arr(pil_image: Image.Image, image_size: int) -> Image.Image:
    """ADM's centre crop (openai/guided-diffusion ``center_crop_arr``, used by LlamaGen, TiTok, IBQ and
    DiT), pixel for pixel: halve the image with PIL BOX (``side // 2``) while its shorter side is at
    least ``2 * image_size``, resize it with PIL bicubic so the shorter side is ``image_size`` (both
    sides ``round(side * scale)``), then cut the ``image_size`` square at
    ``((H - image_size) // 2, (W - image_size) // 2)``. PIL image in, PIL image out (same mode).
    Only an intermediate image of more than :data:`ADM_EXACT_PIXELS` pixels (an extreme strip) is
    resampled where the crop keeps alone (:func:`_resize_crop`'s guard against gigabyte upscales).
    """
    if image_size < 1:
        raise ValueError(f"image_size must be >= 1, got {image_size}")
    if min(pil_image.size) < 1:
        raise ValueError(f"empty image: {pil_image.size[0]}x{pil_image.size[1]} pixels (WxH)")
    while min(*pil_image.size) >= 2 * image_size:
        pil_image = pil_image.resize(tuple(x // 2 for x in pil_image.size), resample=Image.Resampling.BOX)
    scale = image_size / min(*pil_image.size)
    new_size = round(pil_image.size[0] * scale), round(pil_image.size[1] * scale)
    limit = max(16 * image_size**2, pil_image.size[0] * pil_image.size[1], ADM_EXACT_PIXELS)
    return _resize_crop(pil_image, new_size, _floor_centre(new_size, image_size), image_size, Image.Resampling.BICUBIC, limit)


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
    ``protocol="adm"``: PIL's own ``convert("RGB")`` then :func:`center_crop_arr` (ADM's); ``protocol="var"``: the same reading then :func:`var_center_crop` (VAR's
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
            return center_crop_arr(image, resolution), min(image.size) < resolution
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
    augment: Augment | None = None, preprocessing: Preprocessing | None = None,
) -> DecodedImage:
    """:func:`load_preprocessed` (with the ``preprocessing`` protocol) of what ``open_item()`` returns
    (a path or a binary file, and a caption), or with ``augment`` its views (``pixels`` uint8 ``[views, 3, R, R]``, see :class:`Augment`);
    never raises for bad data: a corrupt, truncated, missing or unsupported item comes back with its
    error, so a run lists it instead of stopping."""
    try:
        source, caption = open_item()
        if augment is None:
            pixels, upscaled = load_preprocessed(source, resolution, preprocessing)
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
