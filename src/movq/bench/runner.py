"""The reconstruction benchmark loop: shard the images, reconstruct with every model, accumulate, reduce."""

from __future__ import annotations

import functools
import math
import os
import shutil
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal

import numpy as np
import torch
from torch import Tensor

import movq
from movq import distributed as dist
from movq.bench.cache import ShardCache, describe_model_source, fingerprint_files, run_id
from movq.bench.data import ALL, discover, load_image
from movq.bench.metric_table import DEFAULT_METRICS, check_metrics
from movq.bench.per_image import per_image_metrics, reconstruct
from movq.bench.stats import BenchStats, codebook_layout
from movq.dtypes import DTYPES, DTypeName
from movq.image_files import DecodedImage, DecodedImages, Preprocessing
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

    ``protocol`` / ``resize``: the preprocessing (:class:`movq.image_files.Preprocessing`);
    ``fid_mode``: the Inception input handling (:data:`movq.metrics.inception.FID_MODES`);
    ``save_reference`` / ``reference``: write / reuse the ADM reference batch with the Inception
    statistics of the cropped inputs; ``export_npz``: the reconstructions for the ADM evaluator
    (one model); see :mod:`movq.bench.npz`.
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
    protocol: Literal["movq", "adm", "var"] = "movq"
    resize: Literal["bicubic", "lanczos"] = "bicubic"
    fid_mode: Literal["pytorch-fid", "clean"] = "pytorch-fid"
    save_reference: str | None = None
    reference: str | None = None
    export_npz: str | None = None

    def __post_init__(self) -> None:
        super().__post_init__()
        self.preprocessing  # --protocol adm takes only --resize bicubic  # noqa: B018
        if self.save_reference and self.reference:
            raise ValueError("give --save-reference (write the statistics of the cropped inputs) or --reference "
                             "(reuse them), not both")
        stats_flag = "--save-reference" if self.save_reference else "--reference" if self.reference else None
        if stats_flag and "fid" not in [m.strip().lower() for m in self.metrics]:
            raise ValueError(f"{stats_flag} holds FID statistics: add fid to --metrics")
        for flag, value in (("--save-reference", self.save_reference), ("--reference", self.reference),
                            ("--export-npz", self.export_npz)):
            if value and self.by_domain:
                raise ValueError(f"{flag} is one set of images in the bench's order: drop --by-domain")
            if value and not str(value).endswith(".npz"):
                raise ValueError(f"{flag} must name a .npz file, got {value!r}")
        if self.export_npz and len(self.models) != 1:
            raise ValueError(f"--export-npz writes one model's reconstructions: give one --model, got {len(self.models)}")
        outputs = [v for v in (self.save_reference, self.export_npz) if v]
        if len({os.path.abspath(v) for v in outputs}) < len(outputs):
            raise ValueError("--save-reference and --export-npz name the same file")

    @property
    def preprocessing(self) -> Preprocessing:
        """The image protocol of this run."""
        return Preprocessing(self.protocol, self.resize)


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
        if getattr(codec, "multiscale", False) and cfg.resolution != codec.quantize.side * f:
            raise BenchError(
                f"--resolution {cfg.resolution}: {spec} is multi-scale (scales {list(codec.quantize.scales)}) and takes "
                f"images of exactly {codec.quantize.side * f} px; use --resolution {codec.quantize.side * f}"
            )
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
        self.reference: tuple[np.ndarray, np.ndarray] | None = None
        try:
            self.records, self.skipped, self.domains = select_records(cfg)
            if cfg.reference:  # the file's protocol, resolution and image list first: before any model loads
                self._read_reference(check_extractor=False)
            self.codecs = load_models(cfg, self.ctx.device)
            check_codec_memory(self.codecs.values(), cfg.batch_size, cfg.resolution, self.ctx.device)
            self.extractor = self._feature_extractor()
            if cfg.reference:
                self._read_reference(check_extractor=True)
            self.lpips = self._lpips()
        except Exception:
            dist.teardown(self.ctx)  # a failed start leaves no process group behind
            raise
        self.chunk = math.ceil(max(cfg.chunk_size, cfg.batch_size) / cfg.batch_size) * cfg.batch_size
        self.n_chunks = math.ceil(len(self.records) / self.chunk)
        self.stage_kinds = [k for k, on in (("inputs", cfg.save_reference), ("recon", cfg.export_npz)) if on]
        self.stage: Any = None  # movq.bench.npz.PixelStage while images are staged for the .npz outputs

    # ------------------------------------------------------------------ setup helpers

    def _feature_extractor(self) -> Any:
        if not {"fid", "is"} & set(self.cfg.metrics):
            return None
        from movq.metrics.features import build_feature_extractor

        try:
            extractor = build_feature_extractor(
                self.cfg.feature_extractor, self.cfg.inception_weights, self.ctx.device, download=self.cfg.download,
                fid_mode=self.cfg.fid_mode,
            )
        except Exception as err:
            raise BenchError(f"feature extractor for FID/IS unavailable: {err}") from err
        if "is" in self.cfg.metrics and not extractor.num_classes:
            raise BenchError(f"IS needs class logits, but {extractor.description} has no classifier; drop 'is' from --metrics")
        return extractor

    def _lpips(self) -> dict[str, Any]:
        """``{metric: LPIPSMetric}`` for the LPIPS metrics asked for (``lpips`` follows ``--lpips-net``;
        ``lpips_alex`` / ``lpips_vgg`` fix the network); one network per (net, weights)."""
        from movq.bench.metric_table import METRICS

        wanted = {m: METRICS[m].lpips_net or self.cfg.lpips_net for m in self.cfg.metrics if METRICS[m].lpips_net is not None
                  or m == "lpips"}
        if not wanted:
            return {}
        from movq.metrics.lpips import LPIPSMetric

        built: dict[tuple[str, str | None], Any] = {}
        out = {}
        for metric, net in wanted.items():
            weights = self.cfg.lpips_weights if net == self.cfg.lpips_net else None
            if (net, weights) not in built:
                try:
                    built[(net, weights)] = LPIPSMetric(net, weights).to(self.ctx.device)
                except RuntimeError as err:
                    raise BenchError(f"{metric}: {err}") from err
            out[metric] = built[(net, weights)]
        return out

    def _image_list_hash(self) -> str:
        from movq.bench.npz import image_list_hash

        return image_list_hash((r.rel, os.stat(r.path).st_size) for r in self.records)

    def reference_fields(self) -> dict[str, Any]:
        """What a reference file records and must match (:data:`movq.bench.npz.MATCHED`)."""
        cfg = self.cfg
        return {"protocol": cfg.protocol, "resize": cfg.resize, "resolution": cfg.resolution, "fid_mode": cfg.fid_mode,
                "feature_extractor": getattr(getattr(self, "extractor", None), "description", None),
                "images": self._image_list_hash()}

    def _read_reference(self, check_extractor: bool) -> None:
        """Load ``--reference`` and check it against this run (the feature extractor only once it is built)."""
        from movq.bench.npz import read_reference

        expected = self.reference_fields()
        if not check_extractor:
            del expected["feature_extractor"]
        try:
            mu, sigma, _ = read_reference(self.cfg.reference, expected)
        except ValueError as err:
            raise BenchError(str(err)) from None
        if check_extractor and mu.shape[0] != getattr(self.extractor, "feature_dim", -1):
            raise BenchError(f"--reference {self.cfg.reference}: {mu.shape[0]}-d statistics, the feature extractor gives "
                             f"{getattr(self.extractor, 'feature_dim', None)}-d features")
        self.reference = (mu, sigma)

    def cache_key(self) -> dict[str, Any]:
        import os

        entries = [(r.rel, os.stat(r.path).st_size, os.stat(r.path).st_mtime_ns) for r in self.records]
        cfg = self.cfg
        return {
            "files": fingerprint_files(entries), "models": [describe_model_source(m) for m in cfg.models],
            "resolution": cfg.resolution, "batch_size": cfg.batch_size, "chunk": self.chunk, "metrics": cfg.metrics,
            "by_domain": cfg.by_domain, "dtype": cfg.dtype, "limit": cfg.limit,
            "features": getattr(self.extractor, "description", None),
            "lpips": {m: net.description for m, net in self.lpips.items()} or None,
            "device_type": self.ctx.device.type, "world_size": self.ctx.world_size,
            "protocol": [cfg.protocol, cfg.resize], "fid_mode": cfg.fid_mode, "real_features": self._needs_real_features(),
            "staged": self.stage_kinds,
        }

    def _needs_real_features(self) -> bool:
        """Whether the originals go through the feature extractor (not for FID alone with ``--reference``)."""
        return self.extractor is not None and ("is" in self.cfg.metrics or self.reference is None)

    # ------------------------------------------------------------------ main loop

    def run(self) -> dict[str, Any]:
        cfg, ctx = self.cfg, self.ctx
        extractor = self.extractor

        def fresh_stats() -> BenchStats:
            return BenchStats(
                list(self.codecs), self.domains, cfg.metrics,
                feature_dim=getattr(extractor, "feature_dim", 0), num_classes=getattr(extractor, "num_classes", None),
                device=ctx.device, image_count=len(self.records), reference=self.reference,
                codebooks={name: layout for name, codec in self.codecs.items()
                           if (layout := codebook_layout(codec, cfg.resolution)) is not None},
            )

        stats = fresh_stats()
        my_chunks = [c for c in range(self.n_chunks) if c % ctx.world_size == ctx.rank]
        done: list[int] = []
        skipped_local: list[dict[str, str]] = []
        key = self.cache_key()
        cache = ShardCache(cfg.cache, key, ctx.rank, ctx.world_size) if cfg.cache else None
        if self.stage_kinds:
            from movq.bench.npz import PixelStage

            first_output = Path(cfg.save_reference or cfg.export_npz)
            folder = cache.folder / "pixels" if cache is not None else first_output.parent / f".movq-bench-{run_id(key)}.parts"
            self.stage = PixelStage(folder)
        pixels: dict[str, list[np.ndarray]] = {kind: [] for kind in self.stage_kinds}
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
            DecodedImages(self.records, cfg.resolution, functools.partial(load_image, preprocessing=cfg.preprocessing)),
            batch_sampler=batches, num_workers=cfg.workers, collate_fn=list,
        )
        for (chunk_id, is_last), items in zip(ends, loader):
            self._process(items, stats, skipped_local, pixels)
            processed += len(items)
            if bar is not None:
                bar.update(len(items))
            if not is_last:
                continue
            for kind, arrays in pixels.items():  # staged before the cache marks the chunk done
                empty = np.zeros((0, cfg.resolution, cfg.resolution, 3), np.uint8)
                self.stage.save(kind, chunk_id, np.concatenate(arrays) if arrays else empty)
                arrays.clear()
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
        outcome = self._reduce(stats, skipped_local, processed, elapsed)
        if self.stage_kinds:
            self._write_npz(outcome["stats"])
        return outcome

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
    def _process(self, items: list[DecodedImage], stats: BenchStats, skipped: list[dict[str, str]],
                 pixels: dict[str, list[np.ndarray]] | None = None) -> None:
        """Measure one batch; ``pixels`` collects the uint8 ``[n, R, R, 3]`` images of the ``.npz`` outputs
        (``"inputs"``: the cropped inputs, ``"recon"``: the reconstructions)."""
        pixels = pixels if pixels is not None else {}
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
        if "inputs" in pixels:
            pixels["inputs"].append(torch.stack([it.pixels for it in good]).permute(0, 2, 3, 1).numpy())
        if self._needs_real_features():
            self._update_features(self.extractor(real), groups, stats.real_moments, stats.real_post)
        for name, codec in self.codecs.items():
            tokens, recon = reconstruct(codec, real)
            if "recon" in pixels:
                pixels["recon"].append((recon * 255).round().to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy())
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

    def _write_npz(self, stats: BenchStats) -> None:
        """Rank 0, once every rank has staged its chunks: the ``--save-reference`` / ``--export-npz`` files,
        images in the bench's order (:mod:`movq.bench.npz`)."""
        from movq.bench.npz import reference_arrays, reference_meta, write_images_npz

        dist.barrier(self.ctx)
        if not self.ctx.is_main:
            return
        cfg, res = self.cfg, self.cfg.resolution
        outputs = {"inputs": cfg.save_reference, "recon": cfg.export_npz}
        try:
            for kind in self.stage_kinds:
                count = self.stage.count(kind, self.n_chunks)
                extra = None
                if kind == "inputs":
                    real = stats.real_moments[ALL]
                    if real.count != count:
                        raise BenchError(f"--save-reference: {count} staged images but {real.count} measured")
                    mu, sigma = real.mean_cov()
                    extra = reference_arrays(mu, sigma, reference_meta(**self.reference_fields(), n_images=count,
                                                                       data=str(Path(cfg.data).resolve()), limit=cfg.limit,
                                                                       preprocessing=cfg.preprocessing.describe(res)))
                write_images_npz(outputs[kind], self.stage.blocks(kind, self.n_chunks), count, res, extra)
        except ValueError as err:
            raise BenchError(str(err)) from None
        if not cfg.cache:
            shutil.rmtree(self.stage.folder, ignore_errors=True)

    def close(self) -> None:
        if self.stage is not None and not self.cfg.cache and self.ctx.is_main:
            shutil.rmtree(self.stage.folder, ignore_errors=True)  # a failed run leaves no staged images behind
        dist.teardown(self.ctx)
