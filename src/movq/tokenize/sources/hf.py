"""Hugging Face datasets: ``hf://datasets/ORG/NAME`` with ``--split``, through the ``datasets`` library.

``datasets.load_dataset(ORG/NAME, split=SPLIT)`` downloads (or finds in its cache, or in a local
folder of that name) the split; the image column is read undecoded (``Image(decode=False)``:
``{bytes, path}``), so the decoding workers see the same bytes as every other reader. Captions and
labels come from their columns (:class:`~movq.tokenize.sources.Columns`); a ``ClassLabel`` label
column's names are recorded as the class names.
"""

from __future__ import annotations

from typing import Any

from movq.tokenize.sources.base import HF_PREFIX, Columns, Record, SourceItem, Sources, parse_label


class DatasetRows:
    """Row reader of a ``datasets.Dataset`` for the decoding workers: ``read(row) -> Record``
    (the dataset pickles as references to its memory-mapped Arrow files)."""

    def __init__(self, dataset: Any, image: str, caption: str | None, label: str | None) -> None:
        self.dataset, self.image, self.caption, self.label = dataset, image, caption, label

    def read(self, row: int) -> Record:
        """Row ``row``: its image bytes (or path), caption and label."""
        values = self.dataset[row]
        value = values[self.image]
        if isinstance(value, dict):
            value = value.get("bytes") or value.get("path")
        if not isinstance(value, (bytes, str)) or not value:
            raise ValueError(f"row {row}: no image in column {self.image!r}")
        caption = values[self.caption] if self.caption else None
        label = parse_label(values[self.label], f"row {row}") if self.label else None
        return Record(value, None if caption is None else str(caption), label)


def from_hub(text: str, split: str | None, columns: Columns) -> Sources:
    """The rows of split ``split`` of the dataset ``text`` (``hf://datasets/ORG/NAME``)."""
    if not text.startswith(HF_PREFIX) or not text.removeprefix(HF_PREFIX).strip("/"):
        raise ValueError(f"data {text}: a Hugging Face dataset is written {HF_PREFIX}ORG/NAME")
    if not split:
        raise ValueError(f"data {text} needs --split (e.g. train, validation)")
    try:
        import datasets
    except ImportError:
        raise ValueError(f"reading {text} needs the datasets library: pip install datasets") from None
    name = text.removeprefix(HF_PREFIX).strip("/")
    try:
        dataset = datasets.load_dataset(name, split=split)
    except Exception as err:  # noqa: BLE001 - unknown dataset / split, no network: one line
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise ValueError(f"cannot load {text} split {split!r} with datasets ({first})") from None
    image, caption, label = columns.pick(dataset.column_names, f"dataset {text}")
    feature = dataset.features[image]
    if isinstance(feature, datasets.Image):
        dataset = dataset.cast_column(image, datasets.Image(decode=False))
    names = getattr(dataset.features[label], "names", None) if label else None
    rows = DatasetRows(dataset, image, caption, label)
    items = [SourceItem(f"{text.rstrip('/')}/{split}#{r}", table=rows, row=r) for r in range(len(dataset))]
    if not items:
        raise ValueError(f"{text} split {split!r} has no rows")
    return Sources(items, "hf", label_names=list(names) if names else None)
