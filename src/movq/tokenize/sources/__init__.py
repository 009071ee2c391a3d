"""Where the images come from: ``--data`` turned into a fixed list of items, one reader per format.

:func:`discover_sources` lists the items of ``--data`` in a deterministic order (no pixels are read
here; captions, ``.cls`` labels and table rows are read later, in the decoding workers):

- **folder** (:mod:`.folder`): every image file under it, recursively, sorted; the caption is the
  same-name ``.txt`` beside the image; the label is the image's class folder when every image lies in
  one (``DATA/<class>/<image>``, at least two classes; indices in sorted class order, as
  ``torchvision.datasets.ImageFolder``). A folder with a Hugging Face imagefolder ``metadata.jsonl`` /
  ``metadata.csv`` is read as that manifest (column ``file_name``).
- **manifest** (:mod:`.manifest`) ``.jsonl`` / ``.csv``: an image column (path, relative to the
  manifest's folder unless absolute), optional caption and label columns; the manifest's order is kept.
- **tar shards** (:mod:`.tars`): WebDataset ``.tar`` (or ``.tar.gz`` / ``.tgz`` / ``.tar.bz2`` /
  ``.tar.xz``) files: members grouped into samples by WebDataset's key rule, the image member, ``.txt``
  caption, ``.cls`` label and ``.json`` metadata carried through.
- **parquet** (:mod:`.parquet`): the ``datasets`` image struct column (``{bytes, path}``) or a plain
  bytes / path column, read by pyarrow one row group at a time.
- **Hugging Face datasets** (:mod:`.hf`): ``hf://datasets/ORG/NAME`` with a split, through the
  ``datasets`` library.

Several files are given as a glob (``shards/*.tar``), a brace pattern
(``shards/x-{0000..0127}.tar``, WebDataset's notation) or a folder holding only tars / parquet files.
Files read sequentially (a tar, a parquet row group) are *source shards*: output shards never cross
one, and under torchrun each source shard goes to one process (:attr:`Sources.groups`).

Columns: ``--image-column`` (default ``image``; ``file_name`` for imagefolder metadata),
``--caption-column`` (default: ``caption`` or else ``text`` when present), ``--label-column``
(default: ``label`` when present); a column named explicitly must exist.
"""

from __future__ import annotations

import glob
import os
import re
from collections.abc import Iterable, Iterator
from pathlib import Path

from movq.atomic import require_regular_file
from movq.tokenize.sources.base import (
    CAPTION_EXTENSIONS,
    DEFAULT_CAPTION_COLUMNS,
    DEFAULT_IMAGE_COLUMN,
    DEFAULT_LABEL_COLUMNS,
    HF_PREFIX,
    MANIFEST_SUFFIXES,
    PARQUET_SUFFIXES,
    TAR_SUFFIXES,
    Columns,
    Member,
    Record,
    SourceItem,
    Sources,
    parse_label,
    split_key,
)

__all__ = ["CAPTION_EXTENSIONS", "DEFAULT_CAPTION_COLUMNS", "DEFAULT_IMAGE_COLUMN", "DEFAULT_LABEL_COLUMNS", "HF_PREFIX",
           "MANIFEST_SUFFIXES", "PARQUET_SUFFIXES", "TAR_SUFFIXES", "Columns", "Member", "Record", "SourceItem", "Sources",
           "discover_sources", "expand_braces", "expand_data", "parse_label", "split_key"]


BRACE = re.compile(r"\{([^{}]*)\}")


def expand_braces(text: str) -> Iterator[str]:
    """WebDataset's (and the shell's) brace notation, lazily and in order: ``x-{0000..0127}.tar`` (an
    integer range, zero-padded to the width of its first bound), ``{train,val}`` (alternatives), several
    groups multiply. Nested braces are not supported; a group that is neither stays as written."""
    match = BRACE.search(text)
    if match is None:
        yield text
        return
    head, body, tail = text[: match.start()], match.group(1), text[match.end():]
    bounds = re.fullmatch(r"(-?\d+)\.\.(-?\d+)", body)
    if bounds:
        lo, hi = int(bounds.group(1)), int(bounds.group(2))
        width = len(bounds.group(1)) if bounds.group(1).startswith("0") else 0
        step = 1 if hi >= lo else -1
        choices: Iterable[str] = (f"{n:0{width}d}" for n in range(lo, hi + step, step))
    elif "," in body:
        choices = body.split(",")
    else:
        choices = [match.group(0)]
    for choice in choices:
        for rest in expand_braces(tail):
            yield head + choice + rest


def expand_data(text: str) -> list[Path]:
    """The files a ``--data`` value names: a brace pattern (:func:`expand_braces`) expanded in order, then
    each part globbed (sorted) when it holds ``*?[`` and does not exist as written. Raises
    ``FileNotFoundError`` for a pattern matching nothing or a brace-expanded file that does not exist
    (the expansion is lazy: it stops there, before a huge range is listed)."""
    parts: Iterable[str] = expand_braces(text) if "{" in text and not Path(text).exists() else [text]
    paths: list[Path] = []
    for part in parts:
        if any(ch in part for ch in "*?[") and not Path(part).exists():
            found = sorted(glob.glob(part))
            if not found:
                raise FileNotFoundError(f"no files match the pattern {part}")
            paths.extend(Path(p) for p in found)
        elif not Path(part).exists():
            raise FileNotFoundError(f"data {part} does not exist" + (f" (from the pattern {text})" if part != text else ""))
        else:
            paths.append(Path(part))
    return paths


def _no_columns(columns: Columns, data: str, sources: Sources) -> Sources:
    """``sources``, unless a column was named for a source without columns (an image folder, tar shards)."""
    named = columns.given()
    if named:
        flag = f"--{next(iter(named))}-column"
        raise ValueError(f"{flag} applies to manifests, parquet files and Hugging Face datasets; {data} is "
                         f"{'tar shards' if sources.kind == 'tar' else 'an image folder'} (captions .txt, labels "
                         f"{'.cls' if sources.kind == 'tar' else 'class folders'})")
    return sources


def _file_kind(path: Path) -> str | None:
    name = path.name.lower()
    if name.endswith(TAR_SUFFIXES):
        return "tar"
    if name.endswith(PARQUET_SUFFIXES):
        return "parquet"
    if name.endswith(MANIFEST_SUFFIXES):
        return "manifest"
    return None


def discover_sources(data: str | os.PathLike, exclude: str | os.PathLike | None = None,
                     columns: Columns | None = None, split: str | None = None) -> Sources:
    """List the items of ``data`` (see the module docstring); images under the folder ``exclude``
    (the output folder, when it lies inside the data folder) are left out. ``split`` is the split of an
    ``hf://datasets/...`` source (required there, refused elsewhere). Raises ``FileNotFoundError`` /
    ``ValueError`` with a one-line message for a missing path, an empty folder, a bad manifest, an
    unknown column."""
    from movq.tokenize.sources import folder, hf, manifest, parquet, tars

    columns = columns or Columns()
    text = str(data)
    if text.startswith("hf://"):
        return hf.from_hub(text, split, columns)
    if split is not None:
        raise ValueError(f"--split {split!r} applies to {HF_PREFIX}ORG/NAME data only, not {text}")
    paths = expand_data(text)
    if len(paths) == 1 and paths[0].is_dir():
        root = paths[0]
        meta = manifest.imagefolder_metadata(root)
        if meta is not None:
            return manifest.from_manifest(meta, columns, image_default="file_name")
        inside = [p for p in root.iterdir() if p.is_file() and not p.name.startswith(".")]
        for kind, reader in (("tar", tars.from_tars), ("parquet", parquet.from_parquet)):
            found = sorted(p for p in inside if _file_kind(p) == kind)
            if found and not folder.holds_images(root):
                return reader(found, columns) if kind == "parquet" else _no_columns(columns, text, reader(found))
        return _no_columns(columns, text, folder.from_folder(root, exclude))
    for p in paths:  # a FIFO or device named as data would block its reader
        require_regular_file(p, "expected an image folder, a .jsonl / .csv manifest, tar shards or parquet files",
                             ValueError)
    kinds = {_file_kind(p) for p in paths}
    if kinds == {"tar"}:
        return _no_columns(columns, text, tars.from_tars(paths))
    if kinds == {"parquet"}:
        return parquet.from_parquet(paths, columns)
    if kinds == {"manifest"} and len(paths) == 1:
        return manifest.from_manifest(paths[0], columns)
    raise ValueError(
        f"data {text} is not an image folder, a .jsonl / .csv manifest, .tar / .tar.gz shards, .parquet files "
        f"(a file, a glob or a brace pattern of one kind) or {HF_PREFIX}ORG/NAME"
    )
