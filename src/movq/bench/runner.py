"""The reconstruction benchmark loop: shard the images, reconstruct with every model, accumulate, reduce."""

from __future__ import annotations

import math
import time
import warnings
from dataclasses import dataclass, field
from typing import Annotated, Any, Literal

import torch
from torch import Tensor

import movq
from movq import distributed as dist
from movq.bench.cache import ShardCache, describe_model_source, fingerprint_files
from movq.bench.data import ALL, discover, load_image
from movq.bench.metric_table import DEFAULT_METRICS, check_metrics
from movq.bench.per_image import per_image_metrics, reconstruct
from movq.bench.stats import BenchStats, codebook_layout
from movq.dtypes import DTYPES, DTypeName
from movq.image_files import DecodedImage, DecodedImages
from movq.metrics import image as image_metrics
from movq.strict import MinLength, NonNegativeInt, PositiveInt, Range, StrictConfig


class BenchError(RuntimeError):
    """A user-facing error (bad data folder, unknown model, unavailable metric); printed without a traceback."""


class BenchInterrupted(RuntimeError):
    """Raised after ``max_chunks`` new chunks (testing / time-boxed runs); the cache holds the progress."""


Resolution = Annotated[int, Range(min=8)]
"""The image side of ``movq-bench`` and ``movq-bench speed`` (a config field's hint)."""


@dataclass
class BenchConfig(StrictConfig):
    """Everything a bench run needs (the CLI fills it from its arguments); every field is checked
    against its hint on construction (:class:`movq.strict.ConfigError` naming it).

    ``limit`` images at most (per domain with ``by_domain``); ``threads`` sets ``torch.set_num_threads``
    (the CLI does). The metric names and the metrics' needs (``ms_ssim`` needs a large enough
    ``resolution``) are checked by :class:`Runner`.
    """

    models: Annotated[list[str], MinLength(1)]
    data: str
    resolution: Resolution = 256
    batch_size: PositiveInt = 32
    metrics: list[str] = field(default_factory=lambda: list(DEFAULT_METRICS))
    by_domain: bool = False
    limit: PositiveInt | None = None
    device: str | None = None
    dtype: DTypeName = "float32"
    cache: str | None = None
    cache_interval: float = 60.0
    chunk_size: PositiveInt = 256
    workers: NonNegativeInt = 0
    feature_extractor: str = "inception"
    inception_weights: str | None = None
    lpips_net: Literal["alex", "vgg"] = "alex"
    lpips_weights: str | None = None
    download: bool = True
    progress: bool = True
    max_chunks: int | None = None
    threads: PositiveInt | None = None


def load_models(cfg: BenchConfig, device: torch.device) -> dict[str, Any]:
    """``movq.load`` every model (eval mode, ``cfg.dtype``); unknown names and bad resolutions are ``BenchError``."""
    codecs: dict[str, Any] = {}
    for spec in cfg.models:
        if spec in codecs:
            raise BenchError(f"model {spec!r} given twice")
        try:
            codec = movq.load(spec, device=device, dtype=DTYPES[cfg.dtype])
        except Exception as err:
            raise BenchError(f"cannot load model {spec!r}: {err}") from err
        f = getattr(codec, "downsample_factor", 1)
        if cfg.resolution % f:
            raise BenchError(f"--resolution {cfg.resolution} is not a multiple of {spec}'s downsample factor {f}")
        codecs[spec] = codec
    return codecs


def check_codec_memory(codecs: Any, batch_size: int, resolution: int, device: torch.device) -> None:
    """Refuse (as :class:`BenchError`) a resolution x batch whose activations cannot fit on ``device``."""
    from movq.memory_budget import MemoryBudgetError, check_memory_budget

    for codec in codecs:
        if not callable(getattr(codec, "inference_bytes", None)):  # a wrapped foreign codec: no estimate
            continue
        config = codec.config
        needed = codec.inference_bytes(batch_size, resolution, resolution)  # the codec slices and tiles as needed
        try:
            check_memory_budget(
                needed, device, f"--resolution {resolution} x --batch-size {batch_size} with {config.name!r}",
                "lower --resolution or --batch-size",
            )
        except MemoryBudgetError as err:
            raise BenchError(str(err)) from None


def select_records(cfg: BenchConfig) -> tuple[list[Any], list[dict[str, str]], list[str]]:
    """Discover images; ``limit`` keeps the first N (per domain with ``by_domain``)."""
    try:
        found = discover(cfg.data, cfg.by_domain)
    except (FileNotFoundError, NotADirectoryError, ValueError) as err:
        raise BenchError(str(err)) from err
    records = found.records
    if cfg.limit is not None:
        kept: dict[str, int] = {}
        selected = []
        for record in records:
            if kept.get(record.domain, 0) < cfg.limit:
                kept[record.domain] = kept.get(record.domain, 0) + 1
                selected.append(record)
        records = selected
    domains = sorted({r.domain for r in records}) if cfg.by_domain else [ALL]
    return records, found.skipped, domains


class Runner:
    """One bench run. ``run()`` returns the raw pieces that :mod:`movq.bench.report` formats."""

    def __init__(self, cfg: BenchConfig) -> None:
        try:
            check_metrics(cfg.metrics)
        except ValueError as err:
            raise BenchError(str(err)) from None
        if "ms_ssim" in cfg.metrics and cfg.resolution < image_metrics.MS_SSIM_MIN_SIDE:
            raise BenchError(f"ms_ssim needs --resolution >= {image_metrics.MS_SSIM_MIN_SIDE}")
        self.cfg = cfg
        self.ctx = dist.setup(cfg.device)
        try:
            self.records, self.skipped, self.domains = select_records(cfg)
            self.codecs = load_models(cfg, self.ctx.device)
            check_codec_memory(self.codecs.values(), cfg.batch_size, cfg.resolution, self.ctx.device)
            self.extractor = self._feature_extractor()
            self.lpips = self._lpips()
        except Exception:
            dist.teardown(self.ctx)  # a failed start leaves no process group behind
            raise
        self.chunk = math.ceil(max(cfg.chunk_size, cfg.batch_size) / cfg.batch_size) * cfg.batch_size
        self.n_chunks = math.ceil(len(self.records) / self.chunk)

    # ------------------------------------------------------------------ setup helpers

    def _feature_extractor(self) -> Any:
        if not {"fid", "is"} & set(self.cfg.metrics):
            return None
        from movq.metrics.features import build_feature_extractor

        try:
            extractor = build_feature_extractor(
                self.cfg.feature_extractor, self.cfg.inception_weights, self.ctx.device, download=self.cfg.download
            )
        except Exception as err:
            raise BenchError(f"feature extractor for FID/IS unavailable: {err}") from err
        if "is" in self.cfg.metrics and not extractor.num_classes:
            raise BenchError(f"IS needs class logits, but {extractor.description} has no classifier; drop 'is' from --metrics")
        return extractor

    def _lpips(self) -> Any:
        if "lpips" not in self.cfg.metrics:
            return None
        from movq.metrics.lpips import LPIPSMetric

        try:
            return LPIPSMetric(self.cfg.lpips_net, self.cfg.lpips_weights).to(self.ctx.device)
        except RuntimeError as err:
            raise BenchError(str(err)) from err

    def cache_key(self) -> dict[str, Any]:
        import os

        entries = [(r.rel, os.stat(r.path).st_size, os.stat(r.path).st_mtime_ns) for r in self.records]
        cfg = self.cfg
        return {
            "files": fingerprint_files(entries), "models": [describe_model_source(m) for m in cfg.models],
            "resolution": cfg.resolution, "batch_size": cfg.batch_size, "chunk": self.chunk, "metrics": cfg.metrics,
            "by_domain": cfg.by_domain, "dtype": cfg.dtype, "limit": cfg.limit,
            "features": getattr(self.extractor, "description", None), "lpips": getattr(self.lpips, "description", None),
            "device_type": self.ctx.device.type, "world_size": self.ctx.world_size,
        }

    # ------------------------------------------------------------------ main loop

    def run(self) -> dict[str, Any]:
        cfg, ctx = self.cfg, self.ctx
        extractor = self.extractor

        def fresh_stats() -> BenchStats:
            return BenchStats(
                list(self.codecs), self.domains, cfg.metrics,
                feature_dim=getattr(extractor, "feature_dim", 0), num_classes=getattr(extractor, "num_classes", None),
                device=ctx.device, image_count=len(self.records),
                codebooks={name: layout for name, codec in self.codecs.items()
                           if (layout := codebook_layout(codec, cfg.resolution)) is not None},
            )

        stats = fresh_stats()
        my_chunks = [c for c in range(self.n_chunks) if c % ctx.world_size == ctx.rank]
        done: list[int] = []
        skipped_local: list[dict[str, str]] = []
        cache = ShardCache(cfg.cache, self.cache_key(), ctx.rank, ctx.world_size) if cfg.cache else None
        if cache is not None and (state := cache.load()) is not None:
            try:
                stats.load_state_dict(state["stats"])
                done, skipped_local = [int(c) for c in state["done"]], [dict(s) for s in state["skipped"]]
            except Exception as err:  # noqa: BLE001 - a foreign or damaged payload: this shard starts again
                warnings.warn(f"ignoring the unusable bench cache {cache.path} ({type(err).__name__}: {err}); "
                              "this shard is measured again", stacklevel=2)
                stats, done, skipped_local = fresh_stats(), [], []
        todo = [c for c in my_chunks if c not in set(done)]
        batches, ends = self._batches(todo)
        total_left = sum(len(b) for b in batches)
        processed, chunks_now, last_save = 0, 0, time.monotonic()
        start = time.perf_counter()
        bar = self._progress(total_left, len(self.records) - total_left if ctx.world_size == 1 else 0)
        loader = torch.utils.data.DataLoader(
            DecodedImages(self.records, cfg.resolution, load_image), batch_sampler=batches, num_workers=cfg.workers, collate_fn=list
        )
        for (chunk_id, is_last), items in zip(ends, loader):
            self._process(items, stats, skipped_local)
            processed += len(items)
            if bar is not None:
                bar.update(len(items))
            if not is_last:
                continue
            done.append(chunk_id)
            chunks_now += 1
            interrupt = cfg.max_chunks is not None and chunks_now >= cfg.max_chunks and len(done) < len(my_chunks)
            if cache is not None and (interrupt or time.monotonic() - last_save >= cfg.cache_interval):
                cache.save({"done": done, "stats": stats.state_dict(), "skipped": skipped_local})
                last_save = time.monotonic()
            if interrupt:
                if bar is not None:
                    bar.close()
                raise BenchInterrupted(f"stopped after {chunks_now} chunks; rerun with the same --cache to resume")
        if bar is not None:
            bar.close()
        if cache is not None and todo:
            cache.save({"done": done, "stats": stats.state_dict(), "skipped": skipped_local})
        if ctx.device.type == "cuda":
            torch.cuda.synchronize(ctx.device)
        elapsed = time.perf_counter() - start
        return self._reduce(stats, skipped_local, processed, elapsed)

    def _batches(self, chunks: list[int]) -> tuple[list[list[int]], list[tuple[int, bool]]]:
        batches, ends = [], []
        for c in chunks:
            lo, hi = c * self.chunk, min((c + 1) * self.chunk, len(self.records))
            starts = list(range(lo, hi, self.cfg.batch_size))
            for s in starts:
                batches.append(list(range(s, min(s + self.cfg.batch_size, hi))))
                ends.append((c, s == starts[-1]))
        return batches, ends

    def _progress(self, total: int, initial: int) -> Any:
        if not (self.cfg.progress and self.ctx.is_main):
            return None
        from tqdm import tqdm

        unit_total = total + initial if self.ctx.world_size == 1 else total
        return tqdm(total=unit_total, initial=initial, unit="img", desc="movq-bench", dynamic_ncols=True)

    @torch.no_grad()
    def _process(self, items: list[DecodedImage], stats: BenchStats, skipped: list[dict[str, str]]) -> None:
        good = [it for it in items if it.pixels is not None]
        for it in items:
            if it.pixels is None:
                skipped.append({"path": self.records[it.index].rel, "reason": it.error})
        if not good:
            return
        device = self.ctx.device
        stats.upscaled.update(torch.tensor([float(it.upscaled) for it in good]))
        real = torch.stack([it.pixels for it in good]).to(device).float() / 255.0
        domains = [self.records[it.index].domain for it in good]
        groups = {d: torch.tensor([i for i, x in enumerate(domains) if x == d], device=device) for d in sorted(set(domains))}
        for d, idx in groups.items():
            stats.n_images[d].update(torch.ones(len(idx)))
        if self.extractor is not None:
            self._update_features(self.extractor(real), groups, stats.real_moments, stats.real_post)
        for name, codec in self.codecs.items():
            tokens, recon = reconstruct(codec, real)
            values = per_image_metrics(real, recon, self.cfg.metrics, self.lpips)
            for d, idx in groups.items():
                for metric, v in values.items():
                    stats.scalars[(name, d, metric)].update(v[idx])
                if (name, d) in stats.codes:
                    stats.codes[(name, d)].update(tokens[idx])
            if name in stats.image_psnr:
                stats.image_psnr[name].update(torch.tensor([it.index for it in good]), values["psnr"])
            if self.extractor is not None:
                moments = {d: stats.fake_moments[(name, d)] for d in groups} if stats.fake_moments else {}
                post = {d: stats.fake_post[(name, d)] for d in groups} if stats.fake_post else {}
                self._update_features(self.extractor(recon), groups, moments, post)

    @staticmethod
    def _update_features(output: Any, groups: dict[str, Tensor], moments: dict, posteriors: dict) -> None:
        for d, idx in groups.items():
            if d in moments:
                moments[d].update(output.features[idx])
            if d in posteriors and output.logits is not None:
                posteriors[d].update(torch.softmax(output.logits[idx].double(), dim=1))

    def _reduce(self, stats: BenchStats, skipped_local: list[dict[str, str]], processed: int, elapsed: float) -> dict[str, Any]:
        ctx = self.ctx
        if ctx.world_size > 1:
            stats.all_reduce()
        gathered = dist.gather_objects({"skipped": skipped_local, "processed": processed, "elapsed": elapsed}, ctx)
        skipped = sorted(self.skipped + [s for g in gathered for s in g["skipped"]], key=lambda s: s["path"])
        total_processed = sum(g["processed"] for g in gathered)
        wall = max(g["elapsed"] for g in gathered)
        measured = sum(a.count for a in stats.n_images.values())
        if measured == 0:
            reasons = "; ".join(f"{s['path']}: {s['reason']}" for s in skipped[:3])
            raise BenchError(f"none of the {len(self.records)} image file(s) under {self.cfg.data} could be read ({reasons})")
        return {
            "stats": stats, "skipped": skipped, "upscaled": stats.upscaled.total.item(),
            "throughput": total_processed / wall if total_processed and wall > 0 else None,
            "processed_now": total_processed, "elapsed_s": wall,
        }

    def close(self) -> None:
        dist.teardown(self.ctx)
