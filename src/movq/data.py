"""Datasets over the output of ``movq-tokenize``: stored tokens or latents, memory-mapped."""

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
    ``"source"`` (str) and ``"caption"`` (str or ``None``). ``ds.meta`` is the run's ``meta.json``
    (model, config hash, resolution, preprocessing, dtype).

    The shard files are opened lazily, memory-mapped through ``safetensors``, once per process,
    so the dataset works with DataLoader workers and ``DistributedSampler``; batch it with
    ``collate_fn=movq.data.collate_items`` (captions may be ``None``, which PyTorch's default collate
    refuses). Several folders (for instance one per node) combine with ``torch.utils.data.ConcatDataset``.
    """

    def __init__(self, root: str | os.PathLike) -> None:
        from movq.tokenize.meta import META_NAME, read_meta
        from movq.tokenize.shards import INDEX_NAME

        self.root = Path(root)
        meta = read_meta(self.root)
        if meta is None:
            raise FileNotFoundError(f"{self.root} has no {META_NAME}: not a movq-tokenize output folder")
        index = self.root / INDEX_NAME
        if not index.is_file():
            raise FileNotFoundError(f"{index} not found: the run is not finished; rerun movq-tokenize to complete it")
        self.meta: dict[str, Any] = meta
        self.key = "latents" if meta["kind"] == "latents" else "tokens"
        sources, captions, shards, offsets = [], [], [], []
        with open(index, encoding="utf-8") as f:
            for line in f:
                row = json.loads(line)
                sources.append(row["source"])
                captions.append(row["caption"])
                shards.append(row["shard"])
                offsets.append(row["offset"])
        self.sources, self.captions = sources, captions
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
            from safetensors import safe_open

            from movq.tokenize.shards import shard_paths

            handle = safe_open(str(shard_paths(self.root, shard)[0]), framework="pt")
            self._files[shard] = (handle, handle.get_slice(self.key))
        return self._files[shard][1]

    def __getitem__(self, i: int) -> dict[str, Any]:
        if not -len(self) <= i < len(self):
            raise IndexError(f"index {i} out of range for {len(self)} items")
        i = i % len(self)
        value = self._slice(int(self.shards[i]))[int(self.offsets[i])]
        if self.key == "tokens":
            value = value.long()
        return {self.key: value, "source": self.sources[i], "caption": self.captions[i]}

    def __getstate__(self) -> dict[str, Any]:  # spawned workers: do not pickle open files
        state = dict(self.__dict__)
        state["_files"] = {}
        return state


def collate_items(items: list[dict[str, Any]]) -> dict[str, Any]:
    """DataLoader ``collate_fn`` for :class:`TokenDataset`: the ``"tokens"`` / ``"latents"`` stacked
    into ``[B, ...]``, ``"source"`` and ``"caption"`` kept as lists (captions may be ``None``)."""
    key = "latents" if "latents" in items[0] else "tokens"
    return {key: torch.stack([it[key] for it in items]), "source": [it["source"] for it in items],
            "caption": [it["caption"] for it in items]}
