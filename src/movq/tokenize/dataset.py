"""Reading the output of ``movq-tokenize``: :class:`TokenDataset` (stored tokens or latents, memory-mapped)
and its DataLoader ``collate_fn``, :func:`collate_items`."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch


class TokenDataset(torch.utils.data.Dataset):
    """The items of a finished ``movq-tokenize`` output folder ``root``, in index order.

    ``ds[i]`` is a dict: ``"tokens"`` ``LongTensor [h, w]`` (``[depth, h, w]`` for residual /
    grouped quantizers) for a token run, or ``"latents"`` ``[C, h, w]`` in the stored dtype
    (float16 / bfloat16, already times the codec's scaling factor) for a ``--latents`` run; plus
    ``"source"`` (str) and ``"caption"`` (str or ``None``). When the source had class labels (class
    folders, ``.cls`` members, a label column) every item also has ``"label"`` (int, or ``None`` for an
    item without one; ``ds.labels`` lists them, ``ds.meta.get("label_names")`` the class names when
    known), and when it had WebDataset ``.json`` members, ``"json"`` (the parsed object or ``None``).
    ``ds.meta`` is the run's ``meta.json`` (model, config hash, resolution, preprocessing, dtype).

    The shard files are opened lazily, memory-mapped through ``safetensors``, once per process,
    so the dataset works with DataLoader workers and ``DistributedSampler``; batch it with
    ``collate_fn=movq.tokenize.dataset.collate_items`` (captions may be ``None``, which PyTorch's default collate
    refuses). Several folders (for instance one per node) combine with ``torch.utils.data.ConcatDataset``.
    """

    def __init__(self, root: str | os.PathLike) -> None:
        from movq.tokenize.meta import META_NAME, read_meta
        from movq.tokenize.shards import INDEX_NAME, SUMMARY_NAME

        self.root = Path(root)
        meta = read_meta(self.root)  # a TokenizeError (ValueError) naming the file when it is not a JSON object
        if meta is None:
            raise FileNotFoundError(f"{self.root} has no {META_NAME}: not a movq-tokenize output folder")
        if meta.get("kind") not in ("tokens", "latents"):
            raise ValueError(f"{self.root / META_NAME}: 'kind' must be 'tokens' or 'latents', got {meta.get('kind')!r}")
        index = self.root / INDEX_NAME
        if not index.is_file():
            raise FileNotFoundError(f"{index} not found: the run is not finished; rerun movq-tokenize to complete it")
        self.meta: dict[str, Any] = meta
        self.key = "latents" if meta["kind"] == "latents" else "tokens"
        sources, captions, shards, offsets, labels, extras = [], [], [], [], [], []
        with open(index, encoding="utf-8") as f:
            for n, line in enumerate(_lines(index, f), start=1):
                row = _index_row(index, n, line)
                sources.append(row["source"])
                captions.append(row["caption"])
                shards.append(row["shard"])
                offsets.append(row["offset"])
                labels.append(row.get("label"))
                extras.append(row.get("json"))
        stored = _stored_count(self.root)
        if len(sources) != stored:
            raise ValueError(f"{index} lists {len(sources)} items, but {self.root / SUMMARY_NAME} records {stored}: the "
                             "index is cut or damaged; rerun movq-tokenize to rewrite it")
        self.sources, self.captions = sources, captions
        self.labels: list[int | None] | None = labels if any(v is not None for v in labels) else None
        self.extras: list[Any] | None = extras if any(v is not None for v in extras) else None
        self.shards = np.asarray(shards, dtype=np.int64)
        self.offsets = np.asarray(offsets, dtype=np.int64)
        self._files: dict[int, Any] = {}
        self._pid = os.getpid()

    def __len__(self) -> int:
        return len(self.sources)

    def _slice(self, shard: int) -> Any:
        if self._pid != os.getpid():  # a forked DataLoader worker: open its own handles
            self._files, self._pid = {}, os.getpid()
        if shard not in self._files:
            from movq.tokenize.shards import open_shard

            self._files[shard] = open_shard(self.root, shard, self.meta)  # checked against meta.json, or ShardError
        return self._files[shard][1]

    def __getitem__(self, i: int) -> dict[str, Any]:
        if not -len(self) <= i < len(self):
            raise IndexError(f"index {i} out of range for {len(self)} items")
        i = i % len(self)
        rows = self._slice(int(self.shards[i]))
        offset = int(self.offsets[i])
        if not 0 <= offset < rows.get_shape()[0]:
            raise ValueError(f"{self.root}: item {i} points at row {offset} of shard {int(self.shards[i])}, which has "
                             f"{rows.get_shape()[0]} rows; the index does not match the shards")
        value = rows[offset]
        if self.key == "tokens":
            value = value.long()
        item = {self.key: value, "source": self.sources[i], "caption": self.captions[i]}
        if self.labels is not None:
            item["label"] = self.labels[i]
        if self.extras is not None:
            item["json"] = self.extras[i]
        return item

    def __getstate__(self) -> dict[str, Any]:  # spawned workers: do not pickle open files
        state = dict(self.__dict__)
        state["_files"] = {}
        return state


def _stored_count(root: Path) -> int:
    """The number of stored items ``summary.json`` records (written after the index: the run's last file)."""
    from movq.strict import read_json_object
    from movq.tokenize.shards import SUMMARY_NAME

    path = root / SUMMARY_NAME
    if not path.is_file():  # missing, or a FIFO / device that would block
        raise FileNotFoundError(f"{path} not found or not a regular file: the run is not finished; rerun movq-tokenize "
                                "to complete it")
    count = read_json_object(path).get("images")  # a ConfigError (ValueError) naming the file when not a JSON object
    if not isinstance(count, int) or isinstance(count, bool) or count < 0:
        raise ValueError(f"{path}: 'images' must be the non-negative count of stored items, got {count!r}; rerun "
                         "movq-tokenize to rewrite it")
    return count


def _lines(path: Path, f: Any) -> Any:
    try:
        yield from f
    except UnicodeDecodeError as err:
        raise ValueError(f"{path} is not UTF-8 text ({err.reason} at byte {err.start})") from None


def _index_row(path: Path, n: int, line: str) -> dict[str, Any]:
    """One ``index.jsonl`` row, checked; ``ValueError`` naming the file and line otherwise."""
    try:
        row = json.loads(line)
    except (json.JSONDecodeError, RecursionError):
        raise ValueError(f"{path}, line {n}: not valid JSON; the index is damaged (rerun movq-tokenize)") from None
    ok = (isinstance(row, dict) and isinstance(row.get("source"), str) and isinstance(row.get("caption", 0), (str, type(None)))
          and "caption" in row and all(isinstance(row.get(k), int) and not isinstance(row.get(k), bool) and row[k] >= 0
                                       for k in ("shard", "offset"))
          and (row.get("label") is None or (isinstance(row["label"], int) and not isinstance(row["label"], bool))))
    if not ok:
        raise ValueError(f"{path}, line {n}: expected an object with 'source', 'caption', 'shard' and 'offset' "
                         f"(non-negative ints) and an optional int 'label', got {line.strip()[:80]!r}")
    return row


def collate_items(items: list[dict[str, Any]]) -> dict[str, Any]:
    """DataLoader ``collate_fn`` for :class:`TokenDataset`: the ``"tokens"`` / ``"latents"`` stacked
    into ``[B, ...]``, ``"source"`` and ``"caption"`` kept as lists (captions may be ``None``);
    ``"label"`` (when present) a ``LongTensor [B]``, or a list when some item has none; ``"json"`` a list."""
    key = "latents" if "latents" in items[0] else "tokens"
    batch = {key: torch.stack([it[key] for it in items]), "source": [it["source"] for it in items],
             "caption": [it["caption"] for it in items]}
    if "label" in items[0]:
        labels = [it["label"] for it in items]
        batch["label"] = torch.tensor(labels, dtype=torch.long) if None not in labels else labels
    if "json" in items[0]:
        batch["json"] = [it["json"] for it in items]
    return batch
