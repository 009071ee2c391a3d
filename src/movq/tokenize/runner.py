"""One ``movq-tokenize`` run: check everything, plan the shards, decode in workers, encode in batches,
write shards, merge the index and summarise.

Shard ``k`` is source items ``[k * shard_size, (k + 1) * shard_size)``; under ``torchrun`` rank ``r``
of ``W`` takes the shards ``k % W == r`` (no overlap, no gap), and rank 0 merges the index after a
barrier. Sources read sequentially (tars, parquet row groups: :attr:`Sources.groups`) are cut per
source shard instead (an output shard never crosses one) and source shard ``g`` goes to rank
``g % W`` (:func:`plan_shards`). Finished shards are skipped, so a rerun resumes where a killed run stopped.

With ``--augment`` each item is decoded into ``n_aug`` views (:class:`movq.image_files.Augment`), all
encoded in the same batch, and stored as one item ``[n_aug, *grid]``.
"""

from __future__ import annotations

import json
import os
import sys
import time
import warnings
from collections import Counter
from functools import partial
from pathlib import Path
from typing import Any

import torch

import movq
from movq import distributed as dist
from movq.atomic import atomic_write_text
from movq.dtypes import DTYPES
from movq.image_files import Augment, DecodedImage, DecodedImages
from movq.memory_budget import MemoryBudgetError, check_memory_budget
from movq.tokenize.config import LATENT_DTYPES, TokenizeConfig, TokenizeError, check_settings
from movq.tokenize.decode import decode_item
from movq.tokenize.encoding import encode_batch, token_dtype
from movq.tokenize.meta import build_meta, check_compatible, run_id, weights_hash, write_meta
from movq.tokenize.shards import (
    SUMMARY_NAME,
    ShardError,
    merge_index,
    open_shard,
    read_sidecar,
    remove_temporary_files,
    shard_paths,
    write_shard,
)
from movq.tokenize.sources import Columns, Sources, discover_sources
from movq.tokenize.stats import code_counts, code_summary, draw_histogram, latent_summary

HISTOGRAM_NAME = "code_histogram.png"
PREFETCH = 2


def plan_shards(n: int, shard_size: int, groups: list[int] | None) -> list[tuple[int, int, int]]:
    """The output shards of ``n`` source items: ``(lo, hi, unit)`` per shard, items ``[lo, hi)``, assigned
    to rank ``unit % world_size``. Without ``groups``: ``[k * shard_size, (k + 1) * shard_size)``, unit ``k``.
    With ``groups`` (the first item of each source shard): each source shard cut into pieces of at most
    ``shard_size`` items, unit = the source shard's number (empty source shards have no output shard)."""
    if groups is None:
        return [(lo, min(lo + shard_size, n), k) for k, lo in enumerate(range(0, n, shard_size))]
    bounds = [*groups, n]
    return [(lo, min(lo + shard_size, hi), g) for g, (start, hi) in enumerate(zip(bounds, bounds[1:]))
            for lo in range(start, hi, shard_size)]


CPU_THREADS = 1
"""Torch threads each process encodes with on the CPU unless ``--threads`` says otherwise. A convolution's
sums depend on how many threads share them (float32 latents differ in the last bit, float16 latents and a
few tokens then differ), so the count is fixed, not the machine's: shards are byte-identical whatever the
cores, ``OMP_NUM_THREADS`` or number of ``torchrun`` processes (1 is what ``torchrun`` gives each process;
use ``torchrun --nproc_per_node`` for more cores, or ``--threads N``, identical to other ``--threads N`` runs)."""


class Tokenizer:
    """A prepared run: every check of ``cfg`` is done in ``__init__`` (before any image is encoded);
    :meth:`run` does the work and returns the summary (on every rank; complete on rank 0)."""

    def __init__(self, cfg: TokenizeConfig) -> None:
        check_settings(cfg)
        self.cfg = cfg
        try:
            columns = Columns(cfg.image_column, cfg.caption_column, cfg.label_column)
            self.sources: Sources = discover_sources(cfg.data, exclude=cfg.out, columns=columns, split=cfg.split)
        except (FileNotFoundError, NotADirectoryError, ValueError) as err:
            raise TokenizeError(str(err)) from None
        try:
            codec = movq.load(cfg.model)
        except Exception as err:
            raise TokenizeError(f"cannot load model {cfg.model!r}: {err}") from None
        f = codec.downsample_factor
        if cfg.resolution % f:
            raise TokenizeError(f"--resolution {cfg.resolution} is not a multiple of the model's downsample factor {f}")
        if getattr(codec, "multiscale", False) and cfg.resolution != codec.quantize.side * f:
            raise TokenizeError(
                f"--resolution {cfg.resolution}: the model is multi-scale (scales {list(codec.quantize.scales)}) and "
                f"takes images of exactly {codec.quantize.side * f} px; use --resolution {codec.quantize.side * f}"
            )
        if cfg.latents and not hasattr(codec.config, "scaling_factor"):
            raise TokenizeError(f"model {cfg.model!r} has no continuous latents (--latents)")
        weights = weights_hash(codec)
        self.augment = Augment(cfg.augment, cfg.crop_range) if cfg.augment != "none" else None
        self.views = self.augment.views if self.augment is not None else 1
        self.kind = "latents" if cfg.latents else "tokens"
        if cfg.latents:
            self.store_dtype = LATENT_DTYPES[cfg.latent_dtype]
            grid = (cfg.resolution // f, cfg.resolution // f)
            item_shape = (int(codec.config.embed_dim), *grid)
        else:
            self.store_dtype = token_dtype(codec.codebook_size)
            item_shape = tuple(codec.tokens_shape(cfg.resolution, cfg.resolution))
        if self.augment is not None:
            item_shape = (self.views, *item_shape)
        self.meta = build_meta(
            model=cfg.model, codec=codec, weights=weights, kind=self.kind, resolution=cfg.resolution,
            dtype=str(DTYPES[cfg.dtype]).removeprefix("torch."), store_dtype=self.store_dtype, item_shape=item_shape,
            shard_size=cfg.shard_size, data=cfg.data, sources=[it.source for it in self.sources.items],
            augment=self.augment, groups=self.sources.groups, columns=columns.given(),
            label_names=self.sources.label_names,
        )
        self.plan = plan_shards(len(self.sources.items), cfg.shard_size, self.sources.groups)
        check_compatible(cfg.out, self.meta)
        self.run_id = run_id(self.meta)
        self.ctx = dist.setup(cfg.device)
        self._threads_before = torch.get_num_threads()
        try:
            self._check_memory(codec)
            threads = cfg.threads or (CPU_THREADS if self.ctx.device.type == "cpu" else None)
            if threads:
                torch.set_num_threads(threads)
            self.codec = codec.to(device=self.ctx.device, dtype=DTYPES[cfg.dtype]).eval()
        except BaseException:
            self.close()
            raise

    def _check_memory(self, codec: movq.Codec) -> None:
        """Refuse a resolution x batch whose encoder activations (on the device) or decoded batches
        waiting in the loader (in RAM, for every process of this machine) cannot fit, nor the source data
        each decoding worker holds (a parquet row group: :attr:`Sources.worker_bytes`); with ``--augment``
        a batch is ``batch_size x n_aug`` views."""
        cfg, device, res = self.cfg, self.ctx.device, self.cfg.resolution
        what, advice = f"--resolution {res} x --batch-size {cfg.batch_size}", "lower --resolution or --batch-size"
        if self.views > 1:
            what += f" x {self.views} views (--augment {cfg.augment})"
        views = cfg.batch_size * self.views
        buffered = (cfg.workers * PREFETCH + 1) * views * 3 * res * res
        local = int(os.environ.get("LOCAL_WORLD_SIZE", "1"))
        model = codec.inference_bytes(views, res, res, dtype=DTYPES[cfg.dtype], device=device)
        try:
            if device.type == "cpu":
                check_memory_budget(local * (model + buffered), device, what, advice)
            else:
                check_memory_budget(model, device, what, advice)
                check_memory_budget(local * buffered, "cpu", what, advice)
            reading = local * max(cfg.workers, 1) * self.sources.worker_bytes  # e.g. a parquet row group per worker
            if reading:
                held = local * (model + buffered) if device.type == "cpu" else local * buffered
                check_memory_budget(
                    held + reading, "cpu",
                    f"reading {self.sources.kind} row groups of up to {self.sources.worker_bytes / 2**20:.0f} MiB in "
                    f"{max(cfg.workers, 1)} decoding worker(s) x {local} process(es)",
                    "lower --num-workers or rewrite the files with smaller row groups (pyarrow row_group_size)")
        except MemoryBudgetError as err:
            raise TokenizeError(str(err)) from None

    # ------------------------------------------------------------------ work

    def run(self) -> dict[str, Any]:
        cfg, ctx = self.cfg, self.ctx
        num_shards = len(self.plan)
        if ctx.is_main:
            write_meta(cfg.out, self.meta)
            remove_temporary_files(cfg.out)  # left by a killed run; no process writes before the barrier
        dist.barrier(ctx)
        mine = [k for k, (_, _, unit) in enumerate(self.plan) if unit % ctx.world_size == ctx.rank]
        todo = [k for k in mine if not self._finished(k)]
        done_counts = dist.gather_objects(len(mine) - len(todo), ctx)
        if ctx.is_main and sum(done_counts):
            print(f"movq-tokenize: {sum(done_counts)} of {num_shards} shards already finished, skipping them", flush=True)
        start = time.perf_counter()
        processed = self._encode_shards(todo)
        elapsed = time.perf_counter() - start
        dist.barrier(ctx)
        totals = dist.gather_objects({"processed": processed, "elapsed": elapsed}, ctx)
        images = sum(t["processed"] for t in totals)
        wall = max(t["elapsed"] for t in totals)
        summary: dict[str, Any] = {}
        if ctx.is_main:
            summary = self._finish(num_shards)
            rate = images / wall if images and wall > 0 else 0.0
            summary["run"] = {"images_encoded_now": images, "seconds": round(wall, 3), "images_per_s": round(rate, 2),
                              "processes": ctx.world_size, "shards_skipped": sum(done_counts)}
        return summary

    def _finished(self, shard: int) -> bool:
        """Whether shard ``shard`` is finished: its sidecar is this run's and its data file passes
        :func:`~movq.tokenize.shards.open_shard` (a foreign, swapped or damaged one is redone, with a warning)."""
        if read_sidecar(self.cfg.out, shard, self.run_id) is None:
            return False
        try:
            open_shard(self.cfg.out, shard, self.meta)
        except ShardError as err:
            warnings.warn(f"redoing shard {shard}: {err.reason}", stacklevel=2)
            return False
        return True

    def _batches(self, shards: list[int]) -> tuple[list[list[int]], list[int | None]]:
        """Batches of item indices, never crossing a shard, and the shard of each (``None``: an empty
        filler batch).

        The DataLoader hands batch ``j`` to worker ``j % W``. For sources read sequentially (tars,
        parquet row groups: ``Sources.groups``) the shards are taken ``W`` at a time and their batches
        interleaved (shorter shards padded with empty batches), so that worker ``w`` reads every batch
        of one shard: each worker streams its own tar / row group instead of all workers reading all of them."""
        size = self.cfg.batch_size
        per_shard = [[list(range(s, min(s + size, hi))) for s in range(lo, hi, size)]
                     for lo, hi, _ in (self.plan[k] for k in shards)]
        workers = self.cfg.workers
        if self.sources.groups is None or workers < 2:
            return [b for bs in per_shard for b in bs], [k for k, bs in zip(shards, per_shard) for _ in bs]
        batches: list[list[int]] = []
        owners: list[int | None] = []
        for first in range(0, len(shards), workers):
            ks, bs = shards[first:first + workers], per_shard[first:first + workers]
            if len(ks) < workers:  # the last round: fill the idle workers' places too
                ks, bs = ks + [None] * (workers - len(ks)), bs + [[]] * (workers - len(bs))
            for j in range(max(len(b) for b in bs)):
                for k, b in zip(ks, bs):
                    batches.append(b[j] if j < len(b) else [])
                    owners.append(k if j < len(b) else None)
        return batches, owners

    def _encode_shards(self, shards: list[int]) -> int:
        cfg = self.cfg
        batches, owners = self._batches(shards)
        if not batches:
            return 0
        workers = cfg.workers
        loader = torch.utils.data.DataLoader(
            DecodedImages(self.sources.items, cfg.resolution, partial(decode_item, augment=self.augment)),
            batch_sampler=batches, num_workers=workers,
            collate_fn=list, pin_memory=self.ctx.device.type == "cuda",
            prefetch_factor=PREFETCH if workers else None,
        )
        bar = self._progress(sum(len(b) for b in batches))
        remaining = Counter(k for k in owners if k is not None)
        pending: dict[int, tuple[list[torch.Tensor], list[dict[str, Any]], list[dict[str, Any]]]] = {}
        processed = 0
        for shard, batch in zip(owners, loader):
            if shard is None:  # a filler batch (see _batches)
                continue
            values, rows, skipped = pending.setdefault(shard, ([], [], []))
            self._encode(batch, values, rows, skipped)
            processed += len(batch)
            if bar is not None:
                bar.update(len(batch))
            remaining[shard] -= 1
            if remaining[shard] == 0:
                del pending[shard]
                empty = torch.empty((0, *self.meta["item_shape"]), dtype=self.store_dtype)
                write_shard(cfg.out, shard, self.kind, torch.cat(values) if values else empty, rows, skipped, self.run_id)
        if bar is not None:
            bar.close()
        return processed

    def _encode(self, batch: list[DecodedImage], values: list[torch.Tensor], rows: list[dict[str, Any]],
                skipped: list[dict[str, Any]]) -> None:
        good = [it for it in batch if it.pixels is not None]
        for it in batch:
            if it.pixels is None:
                skipped.append({"item": it.index, "source": self.sources.items[it.index].source, "reason": it.error})
        if not good:
            return
        pixels = torch.stack([it.pixels for it in good])  # [B, 3, R, R], or [B, n_aug, 3, R, R] with --augment
        try:
            encoded = encode_batch(self.codec, pixels.flatten(0, 1) if self.augment is not None else pixels,
                                   latents=self.cfg.latents, store_dtype=self.store_dtype)
            values.append(encoded.unflatten(0, (len(good), self.views)) if self.augment is not None else encoded)
        except ValueError as err:
            raise TokenizeError(str(err)) from None
        for it in good:
            row = {"item": it.index, "source": self.sources.items[it.index].source, "caption": it.caption}
            if it.label is not None:
                row["label"] = it.label
            if it.extra is not None:
                row["json"] = it.extra
            rows.append(row)

    def _progress(self, total: int) -> Any:
        if not (self.cfg.progress and self.ctx.is_main):
            return None
        try:
            from tqdm import tqdm
        except ImportError:
            print("movq-tokenize: no progress bar (pip install 'movq[tokenize]' for tqdm)", file=sys.stderr)
            return None
        desc = "movq-tokenize" if self.ctx.world_size == 1 else f"movq-tokenize (rank 0 of {self.ctx.world_size})"
        return tqdm(total=total, unit="img", desc=desc, dynamic_ncols=True)

    # ------------------------------------------------------------------ end of run (rank 0)

    def _finish(self, num_shards: int) -> dict[str, Any]:
        out = Path(self.cfg.out)
        stored, skipped = merge_index(out, num_shards, self.run_id, self.meta["item_shape"], self.sources.skipped)
        summary: dict[str, Any] = {"model": self.meta["model"], "kind": self.kind, "images": stored,
                                   "skipped": skipped, "shards": num_shards, "n_aug": self.views}
        values = (self._load_shard(k).flatten(0, 1) if self.augment is not None else self._load_shard(k)
                  for k in range(num_shards))  # statistics over every view
        if self.kind == "tokens":
            size = self.meta["codebook_size"]
            counts = code_counts(values, size)
            summary.update(code_summary(counts, size))
            title = (f"{self.meta['model']}: {summary['tokens']} tokens, usage {summary['usage']:.3f}, "
                     f"perplexity {summary['perplexity']:.1f}, dead codes {summary['dead_codes']}")
            draw_histogram(counts, out / HISTOGRAM_NAME, title)
        else:
            summary.update(latent_summary(values))
        atomic_write_text(out / SUMMARY_NAME, json.dumps(summary, indent=2) + "\n")
        return summary

    def _load_shard(self, shard: int) -> torch.Tensor:
        from safetensors import safe_open

        with safe_open(str(shard_paths(self.cfg.out, shard)[0]), framework="pt") as f:
            return f.get_tensor(self.kind)

    def close(self) -> None:
        """Leave the process group (if this run joined it) and restore the caller's torch thread count."""
        torch.set_num_threads(self._threads_before)
        dist.teardown(self.ctx)
