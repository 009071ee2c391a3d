"""Reading the output of ``movq-tokenize``: :class:`TokenDataset` (stored tokens or latents, memory-mapped)
and its DataLoader ``collate_fn``, :func:`collate_items`."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch

from movq.atomic import require_regular_file


class TokenDataset(torch.utils.data.Dataset):
    """The items of a finished ``movq-tokenize`` output folder ``root``, in index order.

    ``ds[i]`` is a dict: ``"tokens"`` ``LongTensor [h, w]`` (``[depth, h, w]`` for residual /
    grouped quantizers) for a token run, or ``"latents"`` ``[C, h, w]`` in the stored dtype
    (float16 / bfloat16, already times the codec's scaling factor) for a ``--latents`` run; plus
    ``"source"`` (str), ``"caption"`` (str or ``None``) and ``"label"`` (the index row's class label,
    an int, or ``None``: from class folders, ``.cls`` members or a label column; ``ds.meta.get("label_names")``
    are the class names when the source has them); when the source had WebDataset ``.json`` members,
    also ``"json"`` (the parsed object, or ``None``). ``ds.meta`` is the run's ``meta.json``
    (model, config hash, resolution, preprocessing, dtype).

    A run with ``--augment`` stores ``n_aug`` views per item (``ds.n_aug``; 2 for ``flip``, 10 for
    ``ten-crop``); ``augmentation`` says what ``ds[i]`` returns of them:

    - ``"all"`` (default): every view, ``tokens`` ``[n_aug, h, w]`` as stored;
    - an int ``k``: view ``k`` always, ``[h, w]``;
    - ``"random"``: one view per item and epoch, ``[h, w]``, drawn from ``numpy.random.default_rng((seed,
      epoch, i))``: the same for a given ``seed``, :meth:`set_epoch` value and index, in any process or
      DataLoader worker, and a new draw each epoch (call ``ds.set_epoch(epoch)`` before each epoch's
      iterator, as with ``DistributedSampler.set_epoch``; persistent workers keep the epoch they started with).

    With an int or ``"random"`` the item also holds ``"view"`` (the view's number). For a run without
    ``--augment`` (``n_aug`` 1, no view axis) every setting returns the stored item.

    The shard files are opened lazily, memory-mapped through ``safetensors``, once per process,
    so the dataset works with DataLoader workers and ``DistributedSampler``; batch it with
    ``collate_fn=movq.tokenize.dataset.collate_items`` (captions may be ``None``, which PyTorch's default collate
    refuses). Several folders (for instance one per node) combine with ``torch.utils.data.ConcatDataset``.
    """

    def __init__(self, root: str | os.PathLike, augmentation: str | int = "all", seed: int = 0) -> None:
        from movq.tokenize.meta import META_NAME, read_meta, views_per_item
        from movq.tokenize.shards import INDEX_NAME, SUMMARY_NAME

        self.root = Path(root)
        meta = read_meta(self.root)  # a TokenizeError (ValueError) naming the file when it is not a JSON object
        if meta is None:
            raise FileNotFoundError(f"{self.root} has no {META_NAME}: not a movq-tokenize output folder")
        if meta.get("kind") not in ("tokens", "latents"):
            raise ValueError(f"{self.root / META_NAME}: 'kind' must be 'tokens' or 'latents', got {meta.get('kind')!r}")
        index = self.root / INDEX_NAME
        require_regular_file(index, "the run is not finished; rerun movq-tokenize to complete it")
        self.meta: dict[str, Any] = meta
        self.key = "latents" if meta["kind"] == "latents" else "tokens"
        self.n_aug = views_per_item(meta)
        self.augmented = "augment" in meta
        if not (augmentation in ("all", "random") or (isinstance(augmentation, int) and not isinstance(augmentation, bool)
                                                       and 0 <= augmentation < self.n_aug)):
            raise ValueError(f"augmentation must be 'all', 'random' or a view in [0, {self.n_aug}), got {augmentation!r}")
        if not isinstance(seed, int) or isinstance(seed, bool):
            raise TypeError(f"seed must be an int, got {seed!r}")
        self.augmentation, self.seed, self.epoch = augmentation, seed, 0
        sources, captions, labels, shards, offsets, extras = [], [], [], [], [], []
        with open(index, encoding="utf-8") as f:
            for n, line in enumerate(_lines(index, f), start=1):
                row = _index_row(index, n, line)
                sources.append(row["source"])
                captions.append(row["caption"])
                labels.append(row.get("label"))
                shards.append(row["shard"])
                offsets.append(row["offset"])
                extras.append(row.get("json"))
        stored = _stored_count(self.root)
        if len(sources) != stored:
            raise ValueError(f"{index} lists {len(sources)} items, but {self.root / SUMMARY_NAME} records {stored}: the "
                             "index is cut or damaged; rerun movq-tokenize to rewrite it")
        self.sources, self.captions, self.labels = sources, captions, labels
        self.extras: list[Any] | None = extras if any(v is not None for v in extras) else None
        self.shards = np.asarray(shards, dtype=np.int64)
        self.offsets = np.asarray(offsets, dtype=np.int64)
        self._files: dict[int, Any] = {}
        self._pid = os.getpid()

    def __len__(self) -> int:
        return len(self.sources)

    def set_epoch(self, epoch: int) -> None:
        """The epoch whose views ``augmentation="random"`` returns (call before each epoch's iterator)."""
        self.epoch = int(epoch)

    def view_of(self, i: int) -> int:
        """The view ``ds[i]`` returns (``augmentation`` an int or ``"random"``; 0 for ``"all"``)."""
        if isinstance(self.augmentation, int):
            return self.augmentation
        if self.augmentation == "random" and self.n_aug > 1:
            return int(np.random.default_rng((self.seed, self.epoch, i % len(self))).integers(self.n_aug))
        return 0

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
        view = None
        if self.augmentation != "all":
            view = self.view_of(i)
            if self.augmented:
                value = value[view]
        if self.key == "tokens":
            value = value.long()
        item = {self.key: value, "source": self.sources[i], "caption": self.captions[i], "label": self.labels[i]}
        if view is not None:
            item["view"] = view
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
    require_regular_file(path, "the run is not finished; rerun movq-tokenize to complete it")
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
          and "caption" in row and (row.get("label") is None or _is_count(row["label"]))
          and all(_is_count(row.get(k)) for k in ("shard", "offset")))
    if not ok:
        raise ValueError(f"{path}, line {n}: expected an object with 'source', 'caption', 'shard' and 'offset' "
                         f"(non-negative ints) and an optional 'label' (a non-negative int or null), got {line.strip()[:80]!r}")
    return row


def _is_count(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def collate_items(items: list[dict[str, Any]]) -> dict[str, Any]:
    """DataLoader ``collate_fn`` for :class:`TokenDataset`: the ``"tokens"`` / ``"latents"`` stacked
    into ``[B, ...]``, the other fields (``"source"``, ``"caption"``, ...) kept as lists (captions may be ``None``)."""
    key = "latents" if "latents" in items[0] else "tokens"
    return {key: torch.stack([it[key] for it in items]), **{name: [it[name] for it in items] for name in items[0]
                                                             if name != key}}
