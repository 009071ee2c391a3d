"""The types every reader shares: :class:`SourceItem`, :class:`Member`, :class:`Record`, :class:`Columns`,
:class:`Sources`, the label parser and WebDataset's key rule (the readers are :mod:`movq.tokenize.sources`)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

MANIFEST_SUFFIXES = (".jsonl", ".csv")
TAR_SUFFIXES = (".tar", ".tar.gz", ".tgz", ".tar.bz2", ".tar.xz")
PARQUET_SUFFIXES = (".parquet",)
HF_PREFIX = "hf://datasets/"
CAPTION_EXTENSIONS = ("txt",)
DEFAULT_IMAGE_COLUMN = "image"
DEFAULT_CAPTION_COLUMNS = ("caption", "text")
DEFAULT_LABEL_COLUMNS = ("label",)


@dataclass(frozen=True, slots=True)
class Member:
    """A byte range ``[offset, offset + size)`` of the file ``path`` (a tar member's data); for a
    compressed tar (``compression`` ``"gz"``, ``"bz2"`` or ``"xz"``) the range is in the decompressed
    stream, which is read forward (never held in memory)."""

    path: str
    offset: int
    size: int
    compression: str = ""


@dataclass(frozen=True, slots=True)
class SourceItem:
    """One image to tokenize.

    ``source`` is the name stored in the index (folder: path relative to the folder; manifest: the
    image value as written; tar: ``<tar path>/<key>.<ext>``; parquet: ``<file>#<row>``; Hugging Face:
    ``hf://datasets/ORG/NAME/<split>#<row>``). The pixels are the file ``path``, the byte range
    ``member`` (tars) or row ``row`` of ``table`` (parquet, Hugging Face: an object with
    ``read(row) -> Record``). ``caption`` / ``label`` are known up front (manifests, class folders)
    or read later from ``caption_path`` (folders), ``caption_member`` / ``label_member`` /
    ``json_member`` (tars) or the table row; ``None`` when absent.
    """

    source: str
    path: str | None = None
    member: Member | None = None
    caption: str | None = None
    caption_path: str | None = None
    caption_member: Member | None = None
    label: int | None = None
    label_member: Member | None = None
    json_member: Member | None = None
    table: Any = None
    row: int = -1


@dataclass
class Record:
    """What a table reader returns for one row: ``image`` (encoded bytes, or a file path), ``caption``,
    ``label``; a field the table does not have is ``None``."""

    image: bytes | str | None
    caption: str | None = None
    label: int | None = None


@dataclass
class Columns:
    """``--image-column`` / ``--caption-column`` / ``--label-column``; ``None`` means the default
    (see the module docstring)."""

    image: str | None = None
    caption: str | None = None
    label: str | None = None

    def given(self) -> dict[str, str] | None:
        """The columns named explicitly (recorded in ``meta.json``), ``None`` when none was."""
        named = {k: v for k, v in (("image", self.image), ("caption", self.caption), ("label", self.label)) if v}
        return named or None

    def pick(self, names: list[str] | tuple[str, ...], where: str, image_default: str = DEFAULT_IMAGE_COLUMN,
             ) -> tuple[str, str | None, str | None]:
        """(image, caption, label) column names for a table with the columns ``names``: a named column
        must exist (``ValueError`` naming ``where`` and the columns otherwise); defaults are used when present."""
        image = self.image or image_default
        for flag, col in (("--image-column", image), ("--caption-column", self.caption), ("--label-column", self.label)):
            if col is not None and col not in names:
                raise ValueError(f"{where} has no column {col!r} ({flag}); its columns are {', '.join(map(repr, names))}")
        caption = self.caption or next((c for c in DEFAULT_CAPTION_COLUMNS if c in names), None)
        label = self.label or next((c for c in DEFAULT_LABEL_COLUMNS if c in names), None)
        return image, caption, label


@dataclass
class Sources:
    """What :func:`discover_sources` found: ``items`` in their fixed order, ``kind``, entries ``skipped``
    while listing (``{"source", "reason"}``, e.g. tar samples without an image), ``groups`` (the first
    item index of each source shard, for tars and parquet row groups; ``None`` otherwise),
    ``worker_bytes`` (memory a decoding worker holds to read, e.g. one parquet row group) and the
    class ``label_names`` when known (folder classes, a ``datasets`` ``ClassLabel``)."""

    items: list[SourceItem]
    kind: str
    skipped: list[dict[str, str]] = field(default_factory=list)
    groups: list[int] | None = None
    worker_bytes: int = 0
    label_names: list[str] | None = None


def parse_label(value: Any, what: str) -> int | None:
    """A class label from a column or a ``.cls`` member: a non-negative int, or text holding one; ``None``
    and ``-1`` (the ``datasets`` library's missing label, e.g. ImageNet's test split) are ``None``.
    ``ValueError`` naming ``what`` otherwise (the item is then skipped and reported)."""
    label = _label(value, what)
    if label is not None and label < -1:
        raise ValueError(f"{what}: the label must be a non-negative integer, got {label}")
    return None if label == -1 else label


def _label(value: Any, what: str) -> int | None:
    if value is None:
        return None
    if isinstance(value, bytes):
        value = value.decode("utf-8", errors="replace")
    if isinstance(value, str):
        try:
            return int(value.strip())
        except ValueError:
            pass
    elif isinstance(value, int) and not isinstance(value, bool):
        return value
    elif isinstance(value, float) and value.is_integer():
        return int(value)
    raise ValueError(f"{what}: the label must be an integer, got {str(value)[:40]!r}")



def split_key(name: str) -> tuple[str, str]:
    """WebDataset's grouping rule: ``"a/b.seg.png"`` -> (``"a/b"``, ``"seg.png"``); the extension is lower-cased."""
    folder, _, base = name.rpartition("/")
    stem, dot, ext = base.partition(".")
    return (f"{folder}/{stem}" if folder else stem), (ext.lower() if dot else "")
