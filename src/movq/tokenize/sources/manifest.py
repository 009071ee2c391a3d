"""Manifests: a ``.jsonl`` (one JSON object per line) or ``.csv`` (with a header) listing image paths,
and the Hugging Face imagefolder ``metadata.jsonl`` / ``metadata.csv`` (column ``file_name``).

The image column (``--image-column``, default ``image``; ``file_name`` for imagefolder metadata) holds a
path, relative to the manifest's folder unless absolute; captions and labels come from their columns
(:class:`~movq.tokenize.sources.Columns`). The manifest's order is kept. A row without an image path
or with a label that is not an integer is skipped and reported; a line that is not JSON (or a CSV
that cannot be parsed) is refused before any work.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

from movq.tokenize.sources.base import DEFAULT_IMAGE_COLUMN, Columns, SourceItem, Sources, parse_label

METADATA_NAMES = ("metadata.jsonl", "metadata.csv")


def imagefolder_metadata(root: Path) -> Path | None:
    """The imagefolder ``metadata.jsonl`` / ``metadata.csv`` at the top of ``root``, if any."""
    for name in METADATA_NAMES:
        if (root / name).is_file():
            return root / name
    return None


def from_manifest(path: Path, columns: Columns, image_default: str = DEFAULT_IMAGE_COLUMN) -> Sources:
    """The items of the manifest ``path`` (see the module docstring)."""
    if path.suffix.lower() == ".jsonl":
        rows = _read_jsonl(path)
        names = sorted({k for _, row in rows for k in row})
    else:
        names, rows = _read_csv(path, columns.image or image_default)
    image_col, caption_col, label_col = columns.pick(names, f"manifest {path}", image_default)
    base = path.parent
    items, skipped = [], []
    for line, row in rows:
        image = row.get(image_col)
        if not isinstance(image, str) or not image:
            skipped.append({"source": f"{path}, line {line}", "reason": f"no {image_col!r} path (got {image!r})"})
            continue
        caption = row.get(caption_col) if caption_col else None
        if caption is not None and not isinstance(caption, str):
            caption = str(caption)
        try:
            label = parse_label(row.get(label_col) if label_col else None, f"{path}, line {line}")
        except ValueError as err:
            skipped.append({"source": image, "reason": str(err)})
            continue
        full = Path(image) if Path(image).is_absolute() else base / image
        items.append(SourceItem(image, path=str(full), caption=caption if caption != "" else None, label=label))
    if not items:
        raise ValueError(f"manifest {path} lists no images (column {image_col!r})")
    return Sources(items, "manifest", skipped)


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
                raise ValueError(f"{path}, line {n}: expected a JSON object with an image path")
            rows.append((n, row))
    return rows


def _read_csv(path: Path, image_col: str) -> tuple[list[str], list[tuple[int, dict]]]:
    with open(path, encoding="utf-8", newline="") as f:
        reader = csv.DictReader(f)
        try:
            if reader.fieldnames is None or image_col not in reader.fieldnames:
                raise ValueError(f"{path}: a CSV manifest needs a header with an {image_col!r} column "
                                 f"(--image-column; optionally caption and label columns)")
            return list(reader.fieldnames), list(_numbered_lines(path, reader, start=2))
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
