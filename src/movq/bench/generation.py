"""``movq-bench generation``: FID, sFID, Inception Score and precision / recall of generated images
against real ones, with the bench's image reader, protocols, FID Inception and writers.

Inputs (``--samples`` and ``--reference`` alike, see :func:`open_image_set`):

- a **folder**: its image files (:data:`movq.image_files.IMAGE_EXTENSIONS`), recursively, in the bench's
  sorted order, read and cropped to ``--resolution`` by the ``--protocol`` as ``movq-bench`` reads its
  data; other files (a sampling CLI's ``.npz`` beside its PNGs included) are not read and are listed;
- an **.npz** holding ``arr_0`` uint8 ``[N, H, W, 3]`` (what openai/guided-diffusion's evaluator reads:
  a sampling CLI's sample file, an ADM reference batch, ``movq-bench --export-npz``): each image goes
  through the protocol's resize and crop as a decoded file would;
- a **reference file of** ``movq-bench --save-reference``: its ``arr_0`` holds images already cropped
  by its protocol at its resolution, used as stored; both must equal this run's (checked before any
  work). As ``--reference``, its statistics (``movq_mu`` / ``movq_sigma``) give the FID directly when
  they were measured with the same feature extractor and FID mode over the images scored (no
  ``--limit`` cutting them); its images are read only for sFID and precision / recall.

Every metric comes from one pass of the feature extractor (:func:`movq.metrics.features.build_feature_extractor`,
the FID Inception by default) over the images in ``[0, 1]``; :data:`GENERATION_METRICS` says which
output each one uses. The run is one process (no ``torchrun`` sharding); precision / recall keep the
pool features of both sets in memory (2048 float32 per image).
"""

from __future__ import annotations

import functools
import math
import platform
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from PIL import Image

import movq
from movq.atomic import check_regular_file
from movq.bench.data import ImageRecord, discover, load_image
from movq.bench.npz import META_KEY, npz_image_shape, read_npz_images, read_reference
from movq.bench.runner import Resolution
from movq.image_files import DecodedImages, Preprocessing
from movq.metrics.precision_recall import DEFAULT_K
from movq.strict import NonNegativeInt, PositiveInt, StrictConfig


@dataclass(frozen=True)
class GenerationMetric:
    """One metric of ``movq-bench generation``: its report ``header`` (with the better direction),
    ``digits``, the feature extractor output it ``uses`` and its ``definition``."""

    name: str
    header: str
    digits: int
    uses: Literal["features", "logits", "spatial"]
    definition: str


GENERATION_METRICS: dict[str, GenerationMetric] = {
    m.name: m
    for m in (
        GenerationMetric("fid", "FID ↓", 3, "features",
                         "Frechet distance between Gaussians fitted to the pool features of the samples and of the "
                         "reference (float64, scipy sqrtm); biased upward for small sets (papers use 50,000 samples)"),
        GenerationMetric("sfid", "sFID ↓", 3, "spatial",
                         "Frechet distance between Gaussians fitted to the spatial features of the samples and of the "
                         "reference (Nash et al. 2021, as openai/guided-diffusion's evaluator computes it)"),
        GenerationMetric("is", "IS ↑", 3, "logits",
                         "Inception Score of the samples: exp(mean KL(p(y|x) || p(y))) over the softmax of the logits, "
                         "mean (and std, is_std) over --is-splits contiguous splits in sample order (10 by default, as "
                         "improved-gan / torchmetrics; the ADM evaluator splits into chunks of 5000)"),
        GenerationMetric("precision", "Precision ↑", 4, "features",
                         "improved precision (Kynkaanniemi et al. 2019): fraction of samples inside the reference's "
                         "k-nearest-neighbour manifold of pool features (k = --nearest-k, 3 as the ADM evaluator; "
                         "float64 distances)"),
        GenerationMetric("recall", "Recall ↑", 4, "features",
                         "improved recall (Kynkaanniemi et al. 2019): fraction of reference images inside the samples' "
                         "k-nearest-neighbour manifold of pool features (k = --nearest-k)"),
    )
}
"""The metrics of ``movq-bench generation``, each described once (CLI choices, report, definitions)."""
GENERATION_DEFAULT = ("fid", "sfid", "is", "precision", "recall")
GENERATION_CHOICES = ",".join(GENERATION_METRICS)
_OUTPUT = {"features": "pool features", "logits": "class logits", "spatial": "spatial features"}


@dataclass
class GenerationConfig(StrictConfig):
    """Everything ``movq-bench generation`` needs (the CLI fills it from its flags); every field is checked
    against its hint on construction (:class:`movq.strict.ConfigError` naming it).

    ``samples`` / ``reference``: a folder of images, an ``.npz`` with ``arr_0`` or a ``--save-reference``
    file (module docstring); ``metrics``: names of :data:`GENERATION_METRICS` (``None``: all of them that
    the feature extractor and the image counts allow, the others reported as not measured; named ones
    must be measurable); ``protocol`` / ``resize`` / ``fid_mode`` / ``feature_extractor`` /
    ``inception_weights`` / ``download``: as in ``movq-bench``; ``limit``: the first N images of each
    set; ``is_splits``: IS splits; ``nearest_k``: the neighbourhood of precision / recall.
    """

    samples: str
    reference: str
    resolution: Resolution = 256
    batch_size: PositiveInt = 32
    metrics: list[str] | None = None
    protocol: Literal["movq", "adm", "var"] = "movq"
    resize: Literal["bicubic", "lanczos"] = "bicubic"
    fid_mode: Literal["pytorch-fid", "clean"] = "pytorch-fid"
    feature_extractor: str = "inception"
    inception_weights: str | None = None
    download: bool = True
    device: str | None = None
    threads: PositiveInt | None = None
    workers: NonNegativeInt = 0
    limit: PositiveInt | None = None
    is_splits: PositiveInt = 10
    nearest_k: PositiveInt = DEFAULT_K
    progress: bool = True

    def __post_init__(self) -> None:
        super().__post_init__()
        unknown = [m for m in self.metrics or [] if m not in GENERATION_METRICS]
        if unknown or self.metrics == []:
            raise ValueError(f"--metrics: unknown metrics {unknown}; choose from {GENERATION_CHOICES}")
        Preprocessing(self.protocol, self.resize)  # --resize applies to --protocol movq only

    @property
    def preprocessing(self) -> Preprocessing:
        """The image protocol of this run."""
        return Preprocessing(self.protocol, self.resize)


@dataclass
class ImageSet:
    """One side of the comparison, as :func:`open_image_set` found it.

    ``kind``: ``"folder"`` (``records``: its image files; ``skipped``: its other files), ``"npz"``
    (``arr_0`` images of size ``side``, each cropped by the protocol) or ``"reference"`` (a
    ``--save-reference`` file: images used as stored; ``meta`` / ``stats``: its metadata and
    ``(mu, sigma)``). ``count``: the images to score (after ``--limit``).
    """

    flag: str
    path: Path
    kind: Literal["folder", "npz", "reference"]
    count: int
    records: list[ImageRecord] = field(default_factory=list)
    skipped: list[dict[str, str]] = field(default_factory=list)
    side: tuple[int, int] | None = None
    meta: dict[str, Any] | None = None
    stats: tuple[np.ndarray, np.ndarray] | None = None
    total: int = 0

    def describe(self) -> str:
        """What is read, in words (printed with the results)."""
        cut = f" (the first {self.count} of {self.total}, --limit)" if self.count < self.total else ""
        if self.kind == "folder":
            others = [s["path"] for s in self.skipped if s["path"].endswith(".npz")]
            note = (f"; not read: {', '.join(others)} (a folder is scored by its image files; pass the .npz itself "
                    f"as {self.flag} to score it)") if others else ""
            return f"folder {self.path.resolve()}: {self.count} image files{cut}{note}"
        if self.kind == "npz":
            h, w = self.side or (0, 0)
            return f"npz {self.path.resolve()}: arr_0, {self.count} images of {w}x{h}{cut}"
        return (f"movq-bench --save-reference file {self.path.resolve()}: arr_0, {self.count} images already cropped "
                f"({self.meta['protocol'] if self.meta else '?'} protocol){cut}")


def open_image_set(path: str | Path, flag: str, cfg: GenerationConfig) -> ImageSet:
    """Find what ``path`` holds (module docstring) and count its images, reading headers only.

    Raises ``ValueError`` / ``FileNotFoundError`` naming ``flag`` for a missing path, a folder without
    image files (saying so when it holds an ``.npz``), a file that is neither, an ``.npz`` without uint8
    ``[N, H, W, 3]`` ``arr_0``, or a reference file made for another protocol, resize or resolution.
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{flag} {path} does not exist (expected a folder of images or an .npz)")
    if path.is_dir():
        try:
            found = discover(path)
        except ValueError as err:
            npz = sorted(p.name for p in path.rglob("*.npz"))
            hint = f"; it holds {', '.join(npz[:3])}: pass that file as {flag} to score it" if npz else ""
            raise ValueError(f"{flag}: {err}{hint}") from None
        records = found.records[: cfg.limit] if cfg.limit else found.records
        return ImageSet(flag, path, "folder", len(records), records, found.skipped, total=len(found.records))
    check_regular_file(path, f"pass a folder of images or an .npz as {flag}")
    if path.suffix.lower() != ".npz":
        raise ValueError(f"{flag} {path}: expected a folder of images or an .npz holding arr_0 uint8 [N, H, W, 3], "
                         f"got {'a ' + path.suffix + ' file' if path.suffix else 'a file without extension'}")
    total, height, width = npz_image_shape(path, flag)
    count = min(total, cfg.limit) if cfg.limit else total
    if total == 0:
        raise ValueError(f"{flag} {path}: arr_0 holds no images")
    import zipfile

    with zipfile.ZipFile(path) as archive:
        prepared = f"{META_KEY}.npy" in archive.namelist()
    if not prepared:
        return ImageSet(flag, path, "npz", count, side=(height, width), total=total)
    expected = {"protocol": cfg.protocol, "resize": cfg.resize, "resolution": cfg.resolution}
    mu, sigma, meta = read_reference(path, expected, flag)
    if (height, width) != (cfg.resolution, cfg.resolution):
        raise ValueError(f"{flag} {path}: arr_0 holds {width}x{height} images, its metadata says {cfg.resolution}")
    return ImageSet(flag, path, "reference", count, side=(height, width), meta=meta, stats=(mu, sigma), total=total)


def image_batches(images: ImageSet, cfg: GenerationConfig) -> Any:
    """Yield ``(pixels, upscaled, skipped)`` per batch: uint8 ``[B, 3, R, R]`` (``B`` may be 0 when every file
    of a batch is unreadable), the number of images smaller than ``R`` before cropping, and the
    unreadable files as ``{"path", "reason"}``."""
    res, preprocessing = cfg.resolution, cfg.preprocessing
    if images.kind == "folder":
        loader = torch.utils.data.DataLoader(
            DecodedImages(images.records, res, functools.partial(load_image, preprocessing=preprocessing)),
            batch_size=cfg.batch_size, num_workers=cfg.workers, collate_fn=list,
        )
        for items in loader:
            good = [it for it in items if it.pixels is not None]
            bad = [{"path": f"{images.flag} {images.records[it.index].rel}", "reason": it.error} for it in items
                   if it.pixels is None]
            pixels = torch.stack([it.pixels for it in good]) if good else torch.zeros(0, 3, res, res, dtype=torch.uint8)
            yield pixels, sum(it.upscaled for it in good), bad
        return
    for block in read_npz_images(images.path, cfg.batch_size, images.count):
        if images.kind == "reference":  # already cropped by the same protocol at this resolution
            yield torch.from_numpy(block.copy()).permute(0, 3, 1, 2).contiguous(), 0, []
            continue
        crops = [preprocessing.crop(Image.fromarray(a, "RGB"), res) for a in block]
        pixels = torch.from_numpy(np.stack([np.asarray(c, dtype=np.uint8) for c, _ in crops])).permute(0, 3, 1, 2)
        yield pixels.contiguous(), sum(up for _, up in crops), []


class GenerationRun:
    """One ``movq-bench generation`` run: ``__init__`` checks everything (no network yet),
    :meth:`load` builds the feature extractor, :meth:`run` measures and returns the result dict."""

    def __init__(self, cfg: GenerationConfig) -> None:
        from movq.devices import resolve_device

        self.cfg = cfg
        self.samples = open_image_set(cfg.samples, "--samples", cfg)
        self.reference = open_image_set(cfg.reference, "--reference", cfg)
        self.device = resolve_device(cfg.device)
        self.metrics = list(cfg.metrics or GENERATION_DEFAULT)
        self.not_measured: dict[str, str] = {}
        self._check_counts()
        self.extractor: Any = None

    def _drop(self, metric: str, reason: str, flag: str) -> None:
        """A metric that cannot be measured: refused when asked for by name, else reported as not measured."""
        if metric not in self.metrics:
            return
        if self.cfg.metrics is not None:
            raise ValueError(f"{flag}: {reason}; drop {metric} from --metrics")
        self.metrics.remove(metric)
        self.not_measured[metric] = reason

    def _check_counts(self) -> None:
        cfg, s, r = self.cfg, self.samples, self.reference
        for images in (s, r):
            if images.count < 2 and ("fid" in self.metrics or "sfid" in self.metrics):
                raise ValueError(f"{images.flag} {images.path}: {images.count} image(s); FID and sFID need at least 2 "
                                 "images on each side (thousands to compare with papers)")
        if s.count < cfg.is_splits:
            self._drop("is", f"IS in {cfg.is_splits} splits needs at least {cfg.is_splits} samples, --samples has {s.count}",
                       "--is-splits")
        for images in (s, r):
            if images.count <= cfg.nearest_k:
                for metric in ("precision", "recall"):
                    self._drop(metric, f"the k = {cfg.nearest_k} nearest-neighbour manifold needs more than "
                               f"{cfg.nearest_k} images, {images.flag} has {images.count}", images.flag)

    def load(self) -> None:
        """Build the feature extractor and check what it offers against the metrics (before any image is read)."""
        from movq.metrics.features import build_feature_extractor

        cfg = self.cfg
        try:
            self.extractor = build_feature_extractor(cfg.feature_extractor, cfg.inception_weights, self.device,
                                                     download=cfg.download, fid_mode=cfg.fid_mode)
        except Exception as err:
            raise ValueError(f"--feature-extractor: {cfg.feature_extractor} unavailable: {err}") from err
        if not getattr(self.extractor, "num_classes", None):
            self._drop("is", "IS needs class logits and the feature extractor has no classifier", "--feature-extractor")
        if not getattr(self.extractor, "spatial_dim", 0):
            self._drop("sfid", "sFID needs spatial features and the feature extractor gives none", "--feature-extractor")
        ref = self.reference
        if ref.kind == "reference" and ref.count == ref.total:
            expected = {"protocol": cfg.protocol, "resize": cfg.resize, "resolution": cfg.resolution,
                        "fid_mode": cfg.fid_mode, "feature_extractor": self.extractor.description}
            read_reference(ref.path, expected, "--reference")
            if ref.stats is not None and ref.stats[0].shape[0] != self.extractor.feature_dim:
                raise ValueError(f"--reference {ref.path}: {ref.stats[0].shape[0]}-d statistics, the feature extractor "
                                 f"gives {self.extractor.feature_dim}-d features")
        else:
            ref.stats = None  # --limit: the stored statistics cover other images

    def _needs(self, images: ImageSet) -> set[str]:
        """The extractor outputs to collect for ``images``."""
        wanted = {GENERATION_METRICS[m].uses for m in self.metrics}
        if images is self.reference:
            wanted.discard("logits")  # IS is the samples'
            if images.stats is not None and not {"precision", "recall"} & set(self.metrics):
                wanted.discard("features")  # FID from the stored statistics
        return wanted

    @torch.no_grad()
    def _measure(self, images: ImageSet, bar: Any) -> dict[str, Any]:
        """One pass over ``images``: moments of the features / spatial features, logits and (for precision /
        recall) the pool features, plus the counts."""
        from movq.metrics.accumulators import MomentAccumulator

        needs = self._needs(images)
        keep_features = bool({"precision", "recall"} & set(self.metrics))
        extractor = self.extractor
        moments = {"features": MomentAccumulator(extractor.feature_dim, self.device)}
        if "spatial" in needs:
            moments["spatial"] = MomentAccumulator(extractor.spatial_dim, self.device)
        kept: dict[str, list[torch.Tensor]] = {"features": [], "logits": []}
        n, upscaled, skipped = 0, 0, []
        if not needs:
            return {"moments": moments, "features": None, "logits": None, "n": images.count, "upscaled": 0, "skipped": []}
        for pixels, up, bad in image_batches(images, self.cfg):
            skipped += bad
            upscaled += up
            if bar is not None:
                bar.update(pixels.shape[0] + len(bad))
            if pixels.shape[0] == 0:
                continue
            out = extractor(pixels.to(self.device).float() / 255.0)
            n += pixels.shape[0]
            moments["features"].update(out.features)
            if "spatial" in moments:
                moments["spatial"].update(out.spatial)
            if keep_features:
                kept["features"].append(out.features.float().cpu())
            if "logits" in needs:
                kept["logits"].append(out.logits.float().cpu())
        return {"moments": moments, "n": n, "upscaled": upscaled, "skipped": skipped,
                "features": torch.cat(kept["features"]) if kept["features"] else None,
                "logits": torch.cat(kept["logits"]) if kept["logits"] else None}

    def run(self) -> dict[str, Any]:
        """Measure both sets and return the result dict (:func:`result_json`'s ``results`` and more)."""
        from movq.metrics.frechet import frechet_distance
        from movq.metrics.inception_score import inception_score
        from movq.metrics.precision_recall import precision_recall

        if self.extractor is None:
            self.load()
        cfg, start = self.cfg, time.perf_counter()
        total = self.samples.count + (self.reference.count if self._needs(self.reference) else 0)
        bar = None
        if cfg.progress:
            from tqdm import tqdm

            bar = tqdm(total=total, unit="img", desc="movq-bench generation", dynamic_ncols=True)
        try:
            fake = self._measure(self.samples, bar)
            real = self._measure(self.reference, bar)
        finally:
            if bar is not None:
                bar.close()
        for images, measured in ((self.samples, fake), (self.reference, real)):
            if measured["n"] < 2 and ({"fid", "sfid"} & set(self.metrics)):
                reasons = "; ".join(f"{s['path']}: {s['reason']}" for s in measured["skipped"][:3])
                raise ValueError(f"{images.flag} {images.path}: only {measured['n']} of {images.count} images could be "
                                 f"read ({reasons}); FID needs at least 2")
        row: dict[str, Any] = {"n_samples": fake["n"], "n_reference": real["n"]}
        if "fid" in self.metrics:
            real_stats = self.reference.stats or real["moments"]["features"].mean_cov()
            row["fid"] = frechet_distance(*real_stats, *fake["moments"]["features"].mean_cov())
        if "sfid" in self.metrics:
            row["sfid"] = frechet_distance(*real["moments"]["spatial"].mean_cov(), *fake["moments"]["spatial"].mean_cov())
        if "is" in self.metrics:
            if fake["n"] < cfg.is_splits:
                raise ValueError(f"--is-splits: only {fake['n']} samples could be read, fewer than {cfg.is_splits} splits")
            row["is"], row["is_std"] = inception_score(fake["logits"], cfg.is_splits)
        if {"precision", "recall"} & set(self.metrics):
            row["precision"], row["recall"] = precision_recall(real["features"].to(self.device),
                                                               fake["features"].to(self.device), cfg.nearest_k)
            for metric in ("precision", "recall"):
                if metric not in self.metrics:
                    del row[metric]
        return {"results": row, "skipped": fake["skipped"] + real["skipped"],
                "upscaled": {"samples": fake["upscaled"], "reference": real["upscaled"]},
                "elapsed_s": time.perf_counter() - start}


def result_json(run: GenerationRun, outcome: dict[str, Any]) -> dict[str, Any]:
    """``{"protocol", "results", "not_measured", "skipped", "upscaled_images", "elapsed_s"}``: the protocol block
    says what was read, how it was preprocessed and which network output each metric uses."""
    from movq.metrics.inception import FID_MODES, SPATIAL_DEFINITION

    cfg, extractor = run.cfg, run.extractor
    outputs = {"features": f"pool features ({extractor.feature_dim}-d)", "logits": "class logits",
               "spatial": f"spatial features ({getattr(extractor, 'spatial_dim', 0)}-d)"}
    if type(extractor).__name__ == "FIDInceptionV3":
        outputs["logits"] = "1008 class logits: pool features x fc weights, no bias (the TF graph's softmax/logits/MatMul)"
        outputs["spatial"] = f"spatial features: {SPATIAL_DEFINITION}"
    used = {m: outputs[GENERATION_METRICS[m].uses] for m in run.metrics}
    if "is" in used:
        used["is"] += f"; {cfg.is_splits} contiguous splits"
    for metric in {"precision", "recall"} & set(used):
        used[metric] += f"; k = {cfg.nearest_k}"
    reference_fid = (f"statistics stored in --reference {run.reference.path.resolve()} (movq_mu / movq_sigma)"
                     if run.reference.stats is not None else "measured from the --reference images")
    protocol = {
        "samples": run.samples.describe(), "reference": run.reference.describe(),
        "resolution": cfg.resolution, "protocol": cfg.protocol, "resize": cfg.resize,
        "preprocessing": cfg.preprocessing.describe(cfg.resolution) + (
            "; a --save-reference file's images are used as stored (cropped so already)"
            if "reference" in (run.samples.kind, run.reference.kind) else ""),
        "fid_mode": cfg.fid_mode, "fid_preprocessing": FID_MODES[cfg.fid_mode],
        "feature_extractor": extractor.description,
        "feature_extractor_standard": bool(getattr(extractor, "is_standard", False)),
        "metrics": list(run.metrics),
        "metric_definitions": {m: GENERATION_METRICS[m].definition for m in run.metrics},
        "metric_outputs": used,
        "metric_networks": {m: f"{text} of {extractor.description}" for m, text in used.items()},
        "fid_reference": reference_fid if "fid" in run.metrics else None,
        "is_splits": cfg.is_splits if "is" in run.metrics else None,
        "nearest_k": cfg.nearest_k if {"precision", "recall"} & set(run.metrics) else None,
        "limit": cfg.limit, "batch_size": cfg.batch_size, "device": str(run.device),
        "movq_version": movq.__version__, "torch_version": torch.__version__, "python": platform.python_version(),
    }
    results = {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in outcome["results"].items()}
    return {"protocol": protocol, "results": results, "not_measured": run.not_measured,
            "skipped": outcome["skipped"], "upscaled_images": outcome["upscaled"], "elapsed_s": outcome["elapsed_s"]}


def markdown(result: dict[str, Any]) -> str:
    """The protocol as a list, then one table row: images on each side and the metrics."""
    proto, row = result["protocol"], result["results"]
    substitute = "" if proto["feature_extractor_standard"] else (
        " — **substitute network: FID / sFID / IS / precision / recall not comparable to published numbers**")
    lines = ["**Protocol**", "", f"- samples: {proto['samples']}", f"- reference: {proto['reference']}",
             f"- preprocessing (--protocol, --resolution {proto['resolution']}): {proto['preprocessing']}",
             f"- network of every metric: {proto['feature_extractor']}{substitute}",
             f"- Inception input (--fid-mode {proto['fid_mode']}): {proto['fid_preprocessing']}"]
    lines += [f"- {GENERATION_METRICS[m].header.split(' ')[0]}: {proto['metric_outputs'][m]} of that network"
              for m in proto["metrics"]]
    if proto["fid_reference"]:
        lines.append(f"- FID reference: {proto['fid_reference']}")
    lines += [f"- not measured: {m} ({why})" for m, why in result["not_measured"].items()]
    head = ["Samples", "Reference"] + [GENERATION_METRICS[m].header for m in proto["metrics"]]
    cells = [str(row["n_samples"]), str(row["n_reference"])]
    for m in proto["metrics"]:
        value, digits = row.get(m), GENERATION_METRICS[m].digits
        text = "-" if value is None else f"{value:.{digits}f}"
        if m == "is" and row.get("is_std") is not None:
            text += f" ± {row['is_std']:.{digits}f}"
        cells.append(text)
    lines += ["", "| " + " | ".join(head) + " |", "|" + "---|" * len(head), "| " + " | ".join(cells) + " |", ""]
    lines.append(f"Images skipped: {len(result['skipped'])}"
                 + "".join(f"\n- `{s['path']}`: {s['reason']}" for s in result["skipped"]))
    for side, count in result["upscaled_images"].items():
        if count:
            lines.append(f"Warning: {count} {side} image(s) smaller than {proto['resolution']} px were upscaled.")
    return "\n".join(lines) + "\n"


CSV_KEYS = ("n_samples", "n_reference", "fid", "sfid", "is", "is_std", "precision", "recall")
"""The result columns of ``--out results.csv`` (a metric not measured is an empty cell)."""


def csv_row(result: dict[str, Any]) -> tuple[list[str], list[dict[str, Any]]]:
    """``(header, [row])`` for :func:`movq.bench.report.write_csv`: what was compared, the numbers, the network."""
    proto = result["protocol"]
    head = ["samples", "reference", "resolution", "protocol", *CSV_KEYS, "feature_extractor", "feature_extractor_standard"]
    return head, [{**{k: proto[k] for k in ("samples", "reference", "resolution", "protocol", "feature_extractor",
                                             "feature_extractor_standard")}, **result["results"]}]
