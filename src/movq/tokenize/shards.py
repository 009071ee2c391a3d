"""The shard files of an output folder: write them atomically, tell finished from missing, merge the index.

Layout of ``OUT/``::

    meta.json                    model, config hash, preprocessing, dtype, shapes (movq.tokenize.meta)
    shards/shard-000000.safetensors   one tensor "tokens" [n, *grid] (uint8/16/32) or "latents" [n, C, h, w]
                                      ([n, n_aug, ...] with --augment: meta.json's "augment" records n_aug)
    shards/shard-000000.json     sidecar: the shard's items (source, caption, offset) and skipped files
    index.jsonl                  one line per stored item: source, caption, [label, json,] shape, shard, offset
    skipped.jsonl                one line per file left out: source, reason
    summary.json, code_histogram.png

Shard ``k`` holds source items ``[k * shard_size, (k + 1) * shard_size)`` minus the unreadable
ones, in order, so its bytes do not depend on how many processes ran. The data file is written
first, the sidecar (which records the data file's size) second, both atomically: a shard is
finished when its sidecar carries this run's id and the data file has the recorded size and passes
:func:`open_shard` (its own run id and number, item shape, dtype and values match ``meta.json``).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file

from movq.atomic import atomic_write, atomic_write_text, require_regular_file
from movq.tokenize.meta import run_id

SHARDS_DIR = "shards"
INDEX_NAME = "index.jsonl"
SKIPPED_NAME = "skipped.jsonl"
SUMMARY_NAME = "summary.json"


def shard_paths(out: str | Path, shard: int) -> tuple[Path, Path]:
    """(data file, sidecar) of shard number ``shard``."""
    stem = Path(out) / SHARDS_DIR / f"shard-{shard:06d}"
    return stem.with_suffix(".safetensors"), stem.with_suffix(".json")


def write_shard(out: str | Path, shard: int, key: str, values: torch.Tensor, items: list[dict[str, Any]],
                skipped: list[dict[str, str]], run: str) -> None:
    """Write shard ``shard``: ``values`` ``[n, ...]`` under ``key`` (n = ``len(items)``), then its sidecar.

    ``items`` are ``{"item", "source", "caption"}`` rows (plus ``"label"`` / ``"json"`` when the source
    has them) in order (their offset is their position);
    ``skipped`` the ``{"item", "source", "reason"}`` rows of unreadable files of the shard.
    """
    data_path, sidecar_path = shard_paths(out, shard)
    # one metadata key only: safetensors writes several in a random order, and shards must be byte-identical
    metadata = {"movq": json.dumps({"run": run, "shard": shard})}
    atomic_write(data_path, lambda tmp: save_file({key: values.contiguous()}, tmp, metadata=metadata))
    rows = [{**row, "offset": i} for i, row in enumerate(items)]
    sidecar = {"shard": shard, "run": run, "file": data_path.name, "bytes": data_path.stat().st_size, "count": len(rows),
               "items": rows, "skipped": skipped}
    atomic_write_text(sidecar_path, json.dumps(sidecar, ensure_ascii=False) + "\n")


class ShardError(ValueError):
    """A shard data file that is not the one its folder's ``meta.json`` describes. ``reason`` names the
    file and says what is wrong; the message adds how to go on."""

    def __init__(self, reason: str) -> None:
        super().__init__(f"{reason}; rerun movq-tokenize to rewrite it")
        self.reason = reason


def open_shard(out: str | Path, shard: int, meta: dict[str, Any]) -> tuple[Any, Any]:
    """Open the data file of shard ``shard`` of the folder ``out`` memory-mapped (safetensors) and check it
    against the folder's ``meta`` (its ``meta.json``) in one pass over its values.

    Returns ``(handle, rows)``: the open file and the slice of its ``"tokens"`` / ``"latents"`` tensor
    (``rows[i]`` is item ``i``). Raises :class:`ShardError` naming the file when it is missing or not a
    regular file (a FIFO would block), unreadable, stamped with another run id or shard number (a shard
    of another run, or another shard copied over it), of another item shape or dtype than ``meta``
    records, or holds token ids outside ``[0, codebook_size)`` / float tokens (token runs) or NaN / inf
    (latent runs).
    """
    from safetensors import safe_open

    path = shard_paths(out, shard)[0]
    require_regular_file(path, "rerun movq-tokenize to redo the shard", ShardError)
    key = "latents" if meta.get("kind") == "latents" else "tokens"
    try:
        handle = safe_open(str(path), framework="pt")
        rows = handle.get_slice(key)
        stamp = json.loads((handle.metadata() or {}).get("movq", "null"))
        values = handle.get_tensor(key)
    except Exception as err:  # noqa: BLE001 - truncated, foreign, another key: name the file
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise ShardError(f"cannot read the shard {path} ({first})") from None
    run = run_id(meta)
    if not isinstance(stamp, dict) or (stamp.get("run"), stamp.get("shard")) != (run, shard):
        found = f"run {stamp.get('run')!r}, shard {stamp.get('shard')!r}" if isinstance(stamp, dict) else "no run id"
        raise ShardError(f"the shard {path} records {found}, but its folder's meta.json is run {run!r} and the "
                         f"file is shard {shard} (a shard of another run, or another shard copied over it)")
    shape, dtype = list(values.shape[1:]), str(values.dtype).removeprefix("torch.")
    if shape != list(meta.get("item_shape", [])):
        if "augment" in meta:  # [n_aug, *grid]: say which axis is the views
            n_aug = (meta.get("augment") or {}).get("n_aug")
            raise ShardError(f"the shard {path} holds items of shape {shape} ({shape[0] if shape else 0} views), but "
                             f"meta.json records {meta.get('item_shape')} (n_aug {n_aug}: [n_aug, ...])")
        raise ShardError(f"the shard {path} holds items of shape {shape}, but meta.json records {meta.get('item_shape')}")
    if key == "tokens" and values.is_floating_point():
        raise ShardError(f"the shard {path} holds {dtype} tokens; token ids are integers")
    if dtype != meta.get("store_dtype"):
        raise ShardError(f"the shard {path} holds {dtype} values, but meta.json records {meta.get('store_dtype')!r}")
    if values.numel() and key == "tokens":
        low, high = (int(v) for v in values.to(torch.int64).aminmax())
        size = meta.get("codebook_size")
        if low < 0 or not isinstance(size, int) or high >= size:
            raise ShardError(f"the shard {path} holds token ids in [{low}, {high}], outside [0, codebook_size) "
                             f"with codebook_size {size!r} (meta.json)")
    elif values.numel() and not torch.isfinite(values).all():
        raise ShardError(f"the shard {path} holds NaN or infinite latents")
    return handle, rows


def remove_temporary_files(out: str | Path) -> int:
    """Delete the temporary files a killed run left in ``OUT/shards`` (call before any process writes)."""
    stale = list((Path(out) / SHARDS_DIR).glob(".shard-*.tmp"))
    for path in stale:
        path.unlink(missing_ok=True)
    return len(stale)


def read_sidecar(out: str | Path, shard: int, run: str) -> dict[str, Any] | None:
    """The sidecar of a finished shard of run ``run``; ``None`` when the shard must be (re)done."""
    data_path, sidecar_path = shard_paths(out, shard)
    if not sidecar_path.is_file():  # missing, or a FIFO / device that would block
        return None
    try:
        sidecar = json.loads(sidecar_path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(sidecar, dict) or sidecar.get("run") != run or sidecar.get("shard") != shard:
        return None
    try:
        complete = data_path.stat().st_size == sidecar.get("bytes")
    except OSError:
        return None
    return sidecar if complete else None


def merge_index(out: str | Path, num_shards: int, run: str, item_shape: list[int],
                listing_skipped: list[dict[str, str]]) -> tuple[int, int]:
    """Write ``index.jsonl`` and ``skipped.jsonl`` from the sidecars of all ``num_shards`` shards.

    ``listing_skipped`` are entries left out before decoding (e.g. tar samples without an image).
    Returns (items stored, files skipped). Raises ``RuntimeError`` if a shard is not finished.
    """
    index_lines, skipped = [], list(listing_skipped)
    for shard in range(num_shards):
        sidecar = read_sidecar(out, shard, run)
        if sidecar is None:
            raise RuntimeError(f"shard {shard} of {out} is not finished; rerun movq-tokenize to complete it")
        for row in sidecar["items"]:
            entry = {"source": row["source"], "caption": row["caption"]}
            entry.update({k: row[k] for k in ("label", "json") if k in row})  # only when the source has them
            entry.update({"shape": item_shape, "shard": shard, "offset": row["offset"]})
            index_lines.append(json.dumps(entry, ensure_ascii=False))
        skipped.extend({"source": s["source"], "reason": s["reason"]} for s in sidecar["skipped"])
    atomic_write_text(Path(out) / SKIPPED_NAME, "".join(json.dumps(s, ensure_ascii=False) + "\n" for s in skipped))
    atomic_write_text(Path(out) / INDEX_NAME, "".join(line + "\n" for line in index_lines))
    return len(index_lines), len(skipped)
