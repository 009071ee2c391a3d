"""Parquet files: one item per row, read with pyarrow one row group at a time.

The image column (``--image-column``, default ``image``) is the ``datasets`` image struct
(``{bytes, path}``: the bytes, or else the path relative to the parquet file's folder), a binary
column of encoded images, or a string column of paths. Captions and labels come from their columns
(:class:`~movq.tokenize.sources.Columns`). Listing reads the files' footers only; a decoding worker
reads the needed columns of one row group when it first needs a row of it and keeps that one row
group (so memory is bounded by the largest row group, which the run's memory check counts, never by
the file). Each row group is one source shard (one process reads it under torchrun). A row whose
image is missing or not decodable, or whose label is not an integer, is skipped and reported.
"""

from __future__ import annotations

import bisect
from pathlib import Path
from typing import Any

from movq.tokenize.sources.base import Columns, Record, SourceItem, Sources, parse_label


def _pyarrow() -> Any:
    try:
        import pyarrow.parquet as pq
    except ImportError:
        raise ValueError("reading parquet needs pyarrow: pip install 'movq[tokenize]' (or pip install pyarrow)") from None
    return pq


class ParquetRows:
    """Row reader of one parquet file for the decoding workers: ``read(row) -> Record``.

    Picklable (only the path, column names and row-group starts travel); each process opens the file
    itself and caches the one row group it last read."""

    def __init__(self, path: str, image: str, caption: str | None, label: str | None, starts: list[int]) -> None:
        self.path, self.image, self.caption, self.label, self.starts = path, image, caption, label, starts
        self._cached: tuple[int, Any] | None = None

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_cached": None}

    def _group(self, group: int) -> Any:
        if self._cached is None or self._cached[0] != group:
            self._cached = None  # free the previous row group before reading the next
            columns = [c for c in dict.fromkeys((self.image, self.caption, self.label)) if c]
            try:
                with _pyarrow().ParquetFile(self.path) as f:
                    self._cached = (group, f.read_row_group(group, columns=columns))
            except Exception as err:  # noqa: BLE001 - a damaged row group: each of its rows is skipped with this
                first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
                self._cached = (group, OSError(f"row group {group} of {self.path} is unreadable ({first})"))
        if isinstance(self._cached[1], Exception):
            raise self._cached[1]
        return self._cached[1]

    def read(self, row: int) -> Record:
        """Row ``row`` (of the file): its image bytes or path, caption and label."""
        group = bisect.bisect_right(self.starts, row) - 1
        table = self._group(group)
        i = row - self.starts[group]
        value = table.column(self.image)[i].as_py()
        if isinstance(value, dict):  # the datasets Image struct
            value = value.get("bytes") or value.get("path")
        if isinstance(value, str) and not Path(value).is_absolute():
            value = str(Path(self.path).parent / value)
        if not isinstance(value, (bytes, str)) or not value:
            raise ValueError(f"row {row}: no image in column {self.image!r}")
        caption = table.column(self.caption)[i].as_py() if self.caption else None
        label = parse_label(table.column(self.label)[i].as_py(), f"row {row}") if self.label else None
        return Record(value, None if caption is None else str(caption), label)


def from_parquet(files: list[Path], columns: Columns) -> Sources:
    """The rows of the parquet ``files`` in order (source ``<file>#<row>``)."""
    pq = _pyarrow()
    items: list[SourceItem] = []
    groups: list[int] = []
    worker_bytes = 0
    label_names: list[str] | None = None
    for path in files:
        try:
            with pq.ParquetFile(path) as f:
                meta, schema = f.metadata, f.schema_arrow
        except Exception as err:  # noqa: BLE001 - not parquet, truncated footer: one line naming the file
            raise ValueError(f"{path} is not a readable parquet file ({str(err).splitlines()[0] if str(err) else err})") from None
        image, caption, label = columns.pick(schema.names, f"parquet file {path}")
        if label and label_names is None:
            label_names = _class_names(schema, label)
        _check_image_type(path, image, schema.field(image).type)
        wanted = {c for c in (image, caption, label) if c}
        starts, row = [], 0
        for g in range(meta.num_row_groups):
            group = meta.row_group(g)
            starts.append(row)
            if group.num_rows:
                groups.append(len(items) + row)
            size = sum(group.column(c).total_uncompressed_size for c in range(group.num_columns)
                       if group.column(c).path_in_schema.split(".")[0] in wanted)
            worker_bytes = max(worker_bytes, 2 * size)  # the column chunks and the table built from them
            row += group.num_rows
        rows = ParquetRows(str(path), image, caption, label, starts)
        items.extend(SourceItem(f"{path}#{r}", table=rows, row=r) for r in range(row))
    if not items:
        raise ValueError(f"no rows in {', '.join(map(str, files))}")
    return Sources(items, "parquet", groups=groups, worker_bytes=worker_bytes, label_names=label_names)


def _class_names(schema: Any, column: str) -> list[str] | None:
    """The class names of ``column`` when the file was written by ``datasets`` with a ``ClassLabel`` feature."""
    import json

    try:
        info = json.loads((schema.metadata or {}).get(b"huggingface", b"{}"))
        feature = info["info"]["features"][column]
    except (ValueError, KeyError, TypeError, RecursionError):
        return None
    names = feature.get("names") if isinstance(feature, dict) and feature.get("_type") == "ClassLabel" else None
    return [str(n) for n in names] if isinstance(names, list) else None


def _check_image_type(path: Path, column: str, kind: Any) -> None:
    import pyarrow as pa

    ok = (pa.types.is_binary(kind) or pa.types.is_large_binary(kind) or pa.types.is_string(kind)
          or pa.types.is_large_string(kind)
          or (pa.types.is_struct(kind) and any(kind.field(i).name in ("bytes", "path") for i in range(kind.num_fields))))
    if not ok:
        raise ValueError(f"parquet file {path}: the image column {column!r} is {kind}; expected encoded image bytes, "
                         "a path string, or the datasets Image struct {bytes, path} (--image-column)")
