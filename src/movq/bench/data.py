"""Image folders for the bench: discovery (ImageNet / FFHQ / domain layouts), decoding and preprocessing.

Preprocessing is :func:`movq.image_files.load_preprocessed` with the run's
:class:`~movq.image_files.Preprocessing` protocol (printed with every result). Images smaller than
the resolution are upscaled and counted.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from movq.image_files import (
    IMAGE_EXTENSIONS,
    DecodedImage,
    Preprocessing,
    check_image_folder,
    decode_image,
    is_hidden,
    is_image_file,
)

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


def load_image(record: ImageRecord, index: int, resolution: int, preprocessing: Preprocessing | None = None) -> DecodedImage:
    """Decode and preprocess one file (``preprocessing``: the protocol, default ``movq``); never raises
    for bad data (the error is returned)."""
    return decode_image(index, resolution, lambda: (record.path, None), preprocessing=preprocessing)
