"""Where the images come from: an image folder, a JSONL / CSV manifest, or WebDataset-style ``.tar`` shards.

:func:`discover_sources` turns ``--data`` into a deterministic list of :class:`SourceItem` (no pixels
are read here; captions of folders and tars are read later, in the decoding workers):

- **folder**: every image file under it (:func:`movq.image_files.list_image_files`: recursive,
  sorted, hidden files skipped); the caption is the same-name ``.txt`` beside the image.
- **manifest** ``.jsonl`` (one JSON object per line) or ``.csv`` (with a header): an ``image``
  column (path, relative to the manifest's folder unless absolute) and an optional ``caption``
  column; the manifest's order is kept.
- **tar shards**: one ``.tar``, a glob pattern (``shards/*.tar``), or a folder holding ``.tar``
  files and no images. Members are grouped into samples as WebDataset does (the key is the member
  path up to the first dot of its file name); a sample's image is its first member with an image
  extension, its caption the ``.txt`` member. Tars are read with the standard ``tarfile`` module
  and indexed once (byte offsets), so any sample can be read with one seek: that is what lets a
  fixed shard of items be assigned to any process. Compressed tars cannot be seeked and are refused.
"""

from __future__ import annotations

import csv
import glob
import json
import os
import tarfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from movq.atomic import require_regular_file
from movq.image_files import IMAGE_EXTENSIONS, is_hidden, is_image_file, list_image_files

MANIFEST_SUFFIXES = (".jsonl", ".csv")
CAPTION_EXTENSIONS = ("txt",)


@dataclass(frozen=True)
class Member:
    """A byte range ``[offset, offset + size)`` of the file ``path`` (a tar member's data)."""

    path: str
    offset: int
    size: int


@dataclass(frozen=True)
class SourceItem:
    """One image to tokenize.

    ``source`` is the name stored in the index (folder: path relative to the folder; manifest: the
    ``image`` value as written; tar: ``<tar path>/<member name>``). The pixels are the file ``path``
    or, for a tar sample, the byte range ``member``. ``caption`` is known up front (manifests) or
    read later from ``caption_path`` (folders) / ``caption_member`` (tars); ``None`` when absent.
    """

    source: str
    path: str | None = None
    member: Member | None = None
    caption: str | None = None
    caption_path: str | None = None
    caption_member: Member | None = None


@dataclass
class Sources:
    """What :func:`discover_sources` found: ``items`` in their fixed order, ``kind``, and entries
    ``skipped`` while listing (``{"source", "reason"}``, e.g. tar samples without an image)."""

    items: list[SourceItem]
    kind: str
    skipped: list[dict[str, str]] = field(default_factory=list)


def discover_sources(data: str | os.PathLike, exclude: str | os.PathLike | None = None) -> Sources:
    """List the items of ``data`` (see the module docstring); images under the folder ``exclude``
    (the output folder, when it lies inside the data folder) are left out. Raises
    ``FileNotFoundError`` / ``ValueError`` with a one-line message for a missing path, an empty
    folder, a bad manifest."""
    text = str(data)
    path = Path(text)
    if any(ch in text for ch in "*?[") and not path.exists():
        tars = sorted(glob.glob(text))
        if not tars:
            raise FileNotFoundError(f"no files match the pattern {text}")
        return _from_tars([Path(t) for t in tars])
    if not path.exists():
        raise FileNotFoundError(f"data {text} does not exist")
    if path.is_dir():
        tars = sorted(p for p in path.iterdir() if p.suffix == ".tar" and p.is_file() and not p.name.startswith("."))
        if tars and not any(is_image_file(p) for p in path.rglob("*")):
            return _from_tars(tars)
        return _from_folder(path, exclude)
    require_regular_file(path, "expected an image folder, a .jsonl / .csv manifest or a .tar shard")
    if path.suffix.lower() in MANIFEST_SUFFIXES:
        return _from_manifest(path)
    if path.name.endswith((".tar", ".tar.gz", ".tgz", ".tar.bz2", ".tar.xz")):
        return _from_tars([path])
    raise ValueError(
        f"data {text} is not an image folder, a .jsonl / .csv manifest, or a .tar shard (or a glob pattern of .tar files)"
    )


def _from_folder(root: Path, exclude: str | os.PathLike | None) -> Sources:
    items = []
    skip = Path(exclude).resolve() if exclude is not None else None
    if skip is not None and not skip.is_relative_to(root.resolve()):
        skip = None
    for path in list_image_files(root):
        if skip is not None and path.resolve().is_relative_to(skip):
            continue
        caption = path.with_suffix(".txt")
        items.append(SourceItem(path.relative_to(root).as_posix(), path=str(path), caption_path=str(caption)))
    if not items:
        raise ValueError(f"no image files under {root} outside the output folder {exclude}")
    return Sources(items, "folder")


def _from_manifest(path: Path) -> Sources:
    rows = _read_jsonl(path) if path.suffix.lower() == ".jsonl" else _read_csv(path)
    base = path.parent
    items = []
    for line, row in rows:
        image = row.get("image")
        if not isinstance(image, str) or not image:
            raise ValueError(f"{path}, line {line}: every row needs an 'image' path (got {row.get('image')!r})")
        caption = row.get("caption")
        if caption is not None and not isinstance(caption, str):
            caption = str(caption)
        full = Path(image) if Path(image).is_absolute() else base / image
        items.append(SourceItem(image, path=str(full), caption=caption if caption != "" else None))
    if not items:
        raise ValueError(f"manifest {path} lists no images")
    return Sources(items, "manifest")


def _read_jsonl(path: Path) -> list[tuple[int, dict]]:
    rows = []
    with open(path, encoding="utf-8") as f:
        for n, line in _numbered_lines(path, f, start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as err:
                raise ValueError(f"{path}, line {n}: not valid JSON ({err.msg})") from None
            except RecursionError:
                raise ValueError(f"{path}, line {n}: JSON nested too deeply") from None
            if not isinstance(row, dict):
                raise ValueError(f"{path}, line {n}: expected a JSON object with an 'image' key")
            rows.append((n, row))
    return rows


def _read_csv(path: Path) -> list[tuple[int, dict]]:
    with open(path, encoding="utf-8", newline="") as f:
        reader = csv.DictReader(f)
        try:
            if reader.fieldnames is None or "image" not in reader.fieldnames:
                raise ValueError(f"{path}: a CSV manifest needs a header with an 'image' column (and optionally 'caption')")
            return list(_numbered_lines(path, reader, start=2))
        except csv.Error as err:  # e.g. a field over csv.field_size_limit(): not a ValueError
            raise ValueError(f"{path}, line {reader.line_num}: not a readable CSV manifest ({err})") from None
        except UnicodeDecodeError as err:
            raise ValueError(f"{path} is not UTF-8 text ({err.reason} at byte {err.start})") from None


def _numbered_lines(path: Path, lines: Any, start: int) -> Any:
    """``enumerate(lines, start)``, with a file that is not UTF-8 reported as a ``ValueError`` naming it."""
    try:
        yield from enumerate(lines, start=start)
    except UnicodeDecodeError as err:
        raise ValueError(f"{path} is not UTF-8 text ({err.reason} at byte {err.start})") from None


def split_key(name: str) -> tuple[str, str]:
    """WebDataset's grouping rule: ``"a/b.seg.png"`` -> (``"a/b"``, ``"seg.png"``); the extension is lower-cased."""
    folder, _, base = name.rpartition("/")
    stem, dot, ext = base.partition(".")
    return (f"{folder}/{stem}" if folder else stem), (ext.lower() if dot else "")


def _from_tars(tars: list[Path]) -> Sources:
    items: list[SourceItem] = []
    skipped: list[dict[str, str]] = []
    for tar in tars:
        samples = _index_tar(tar)
        for key, members in samples.items():
            images = [(ext, m) for ext, m in members.items() if "." + ext.rsplit(".", 1)[-1] in IMAGE_EXTENSIONS]
            if not images:
                skipped.append({"source": f"{tar}/{key}", "reason": f"no image in sample (members: {sorted(members)})"})
                continue
            ext, member = images[0]
            caption = next((members[c] for c in CAPTION_EXTENSIONS if c in members), None)
            items.append(SourceItem(f"{tar}/{key}.{ext}", member=member, caption_member=caption))
    if not items:
        raise ValueError(f"no image samples ({', '.join(IMAGE_EXTENSIONS)}) found in {', '.join(map(str, tars))}")
    return Sources(items, "tar", skipped)


def _index_tar(tar: Path) -> dict[str, dict[str, Member]]:
    """``{key: {extension: Member}}`` in tar order (hidden members skipped)."""
    try:
        archive = tarfile.open(tar, mode="r:")  # noqa: SIM115 (closed below)
    except tarfile.ReadError as err:
        raise ValueError(
            f"{tar} is not an uncompressed tar ({err}); compressed tars cannot be read by offset: decompress them first"
        ) from None
    samples: dict[str, dict[str, Member]] = {}
    with archive:
        try:
            for info in archive:
                if not info.isfile() or is_hidden(info.name):
                    continue
                key, ext = split_key(info.name)
                samples.setdefault(key, {}).setdefault(ext, Member(str(tar), info.offset_data, info.size))
        except tarfile.TarError as err:  # a member header past the end of the file, a corrupt header
            raise ValueError(f"{tar} is truncated or corrupt ({err}); repair or remove it") from None
    return samples
