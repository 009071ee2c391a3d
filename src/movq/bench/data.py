"""Image folders for the bench: discovery (ImageNet / FFHQ / domain layouts), decoding and preprocessing.

Preprocessing is :func:`movq.image_files.load_preprocessed` (printed with every result). Images
smaller than the resolution are upscaled and counted.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor

from movq.image_files import IMAGE_EXTENSIONS, check_image_folder, is_hidden, is_image_file, load_preprocessed

ROOT_DOMAIN = "(root)"
ALL = "all"


@dataclass(frozen=True)
class ImageRecord:
    """One candidate file: ``path`` (absolute), ``rel`` (relative to the data root, POSIX), ``domain``."""

    path: str
    rel: str
    domain: str


@dataclass
class Discovery:
    """Result of scanning a data folder: image ``records`` (sorted by ``rel``) and non-image files ``skipped``."""

    records: list[ImageRecord]
    skipped: list[dict[str, str]]


def discover(root: str | Path, by_domain: bool = False) -> Discovery:
    """List image files under ``root`` recursively (hidden files and folders ignored), sorted.

    Without ``by_domain`` every image belongs to the domain ``"all"`` (ImageNet class folders and
    flat FFHQ folders alike). With ``by_domain`` the domain is the top-level subfolder (files
    directly in ``root`` get ``"(root)"``). Files with other extensions are returned in ``skipped``.
    Raises ``FileNotFoundError`` / ``NotADirectoryError`` / ``ValueError`` (no images) with the path.
    """
    root = check_image_folder(root)
    records: list[ImageRecord] = []
    skipped: list[dict[str, str]] = []
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        rel = path.relative_to(root).as_posix()
        if is_hidden(rel):
            continue
        if not is_image_file(path):
            skipped.append({"path": rel, "reason": f"not an image file (extension {path.suffix or 'none'!r})"})
            continue
        parts = Path(rel).parts
        domain = (parts[0] if len(parts) > 1 else ROOT_DOMAIN) if by_domain else ALL
        records.append(ImageRecord(str(path.resolve()), rel, domain))
    if not records:
        raise ValueError(f"no image files ({', '.join(IMAGE_EXTENSIONS)}) found under {root}")
    return Discovery(records, skipped)


@dataclass
class LoadedImage:
    """A decoded image ``pixels`` uint8 ``[3, R, R]`` (or ``None`` when unreadable, with ``error``)."""

    index: int
    pixels: Tensor | None
    upscaled: bool = False
    error: str = ""


def load_image(record: ImageRecord, index: int, resolution: int) -> LoadedImage:
    """Decode and preprocess one file; never raises for bad data (the error is returned)."""
    try:
        pixels, upscaled = load_preprocessed(record.path, resolution)
    except Exception as err:  # corrupt, truncated, unsupported: reported, not fatal
        return LoadedImage(index, None, error=f"{type(err).__name__}: {err}")
    return LoadedImage(index, pixels, upscaled)


class ImageDataset(torch.utils.data.Dataset):
    """Map-style dataset over ``records``: item ``i`` -> :class:`LoadedImage` (for a DataLoader)."""

    def __init__(self, records: list[ImageRecord], resolution: int) -> None:
        self.records, self.resolution = records, resolution

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, index: int) -> LoadedImage:
        return load_image(self.records[index], index, self.resolution)

