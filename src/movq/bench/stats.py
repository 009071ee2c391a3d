"""All running statistics of one bench run, keyed by model and domain; mergeable and cacheable."""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import Tensor

from movq.bench.metric_table import PER_IMAGE
from movq.metrics.accumulators import (
    HistogramAccumulator,
    MeanAccumulator,
    MomentAccumulator,
    PerImageAccumulator,
    PosteriorAccumulator,
)
from movq.metrics.frechet import fid_from_moments, frechet_distance
from movq.quantizers import DENSE_HISTOGRAM_MAX, histogram_statistics

CODE_KEYS = ("codebook_usage", "perplexity", "codebook_usage_per_level", "perplexity_per_level")
"""The row keys measured from the code histograms (not averaged over domains: summed histograms give them)."""


def codebook_layout(codec: object, resolution: int) -> tuple[int, int] | None:
    """``(levels, codebook_size)`` of ``codec``'s tokens at ``resolution`` (levels: the depth of a
    residual quantizer, the groups of a grouped one, else 1), or None when its codes are not counted
    (a codebook above :data:`~movq.quantizers.DENSE_HISTOGRAM_MAX` ids per level, or no tokens)."""
    size = getattr(codec, "codebook_size", None)
    try:
        shape = codec.tokens_shape(resolution, resolution)  # type: ignore[attr-defined]
    except Exception:
        return None
    if not isinstance(size, int) or size > DENSE_HISTOGRAM_MAX:
        return None
    return (shape[0] if len(shape) == 3 else 1), size


def code_columns(counts: Tensor, codebook_size: int) -> dict[str, object]:
    """Usage (fraction of the codebook used) and perplexity (``exp`` of the entropy of the empirical
    code distribution) of a histogram ``counts [levels, codebook_size]``: per level, and their means
    over levels as the headline numbers (one level: the value itself)."""
    per_level = [histogram_statistics(row, codebook_size) for row in counts]
    perplexity = [float(p) for p, _ in per_level]
    usage = [float(u) for _, u in per_level]
    return {"codebook_usage": sum(usage) / len(usage), "perplexity": sum(perplexity) / len(perplexity),
            "codebook_usage_per_level": usage, "perplexity_per_level": perplexity}


class BenchStats:
    """Per (model, domain): means of the per-image metrics, feature moments and IS posteriors of the
    reconstructions; per domain: moments / posteriors of the originals; plus the image count and
    the number of upscaled images. ``feature_dim`` / ``num_classes`` are 0 / None when unused.

    ``codebooks`` (model -> ``(levels, codebook_size)``, see :func:`codebook_layout`) adds the code
    histogram of each (model, domain) (codebook usage and perplexity over the whole set);
    ``image_count`` (the number of image records) adds each model's PSNR per image (``image_psnr``,
    indexed like the records; when ``psnr`` is measured), which picks the worst images of a comparison.

    ``reference`` ``(mu [D], sigma [D, D])``: FID against these statistics of the originals
    (``--reference``) instead of the accumulated ones.
    """

    def __init__(
        self,
        models: list[str],
        domains: list[str],
        metrics: list[str],
        feature_dim: int = 0,
        num_classes: int | None = None,
        device: torch.device | str = "cpu",
        codebooks: dict[str, tuple[int, int]] | None = None,
        image_count: int = 0,
        reference: tuple[np.ndarray, np.ndarray] | None = None,
    ) -> None:
        self.models, self.domains, self.metrics = list(models), list(domains), list(metrics)
        self.reference = reference
        self.n_images = {d: MeanAccumulator() for d in domains}
        self.upscaled = MeanAccumulator()
        self.scalars = {(m, d, k): MeanAccumulator() for m in models for d in domains for k in metrics if k in PER_IMAGE}
        use_fid, use_is = "fid" in metrics, "is" in metrics
        self.real_moments = {d: MomentAccumulator(feature_dim, device) for d in domains} if use_fid else {}
        self.fake_moments = {(m, d): MomentAccumulator(feature_dim, device) for m in models for d in domains} if use_fid else {}
        self.real_post = {d: PosteriorAccumulator(num_classes or 0) for d in domains} if use_is else {}
        self.fake_post = {(m, d): PosteriorAccumulator(num_classes or 0) for m in models for d in domains} if use_is else {}
        self.codebooks = {m: c for m, c in (codebooks or {}).items() if m in self.models}
        self.codes = {(m, d): HistogramAccumulator(*c) for m, c in self.codebooks.items() for d in domains}
        use_psnr = "psnr" in metrics and image_count > 0
        self.image_psnr = {m: PerImageAccumulator(image_count) for m in models} if use_psnr else {}

    def accumulators(self) -> list[tuple[str, object]]:
        """Every accumulator with a stable name, in a fixed order (for caching and all-reduce)."""
        named: list[tuple[str, object]] = [("upscaled", self.upscaled)]
        named += [(f"n/{d}", a) for d, a in self.n_images.items()]
        named += [(f"scalar/{m}/{d}/{k}", a) for (m, d, k), a in self.scalars.items()]
        named += [(f"real_moments/{d}", a) for d, a in self.real_moments.items()]
        named += [(f"fake_moments/{m}/{d}", a) for (m, d), a in self.fake_moments.items()]
        named += [(f"real_post/{d}", a) for d, a in self.real_post.items()]
        named += [(f"fake_post/{m}/{d}", a) for (m, d), a in self.fake_post.items()]
        named += [(f"codes/{m}/{d}", a) for (m, d), a in self.codes.items()]
        named += [(f"image_psnr/{m}", a) for m, a in self.image_psnr.items()]
        return named

    def state_dict(self) -> dict[str, dict[str, Tensor]]:
        return {name: acc.state_dict() for name, acc in self.accumulators()}  # type: ignore[attr-defined]

    def load_state_dict(self, state: dict[str, dict[str, Tensor]]) -> None:
        for name, acc in self.accumulators():
            acc.load_state_dict(state[name])  # type: ignore[attr-defined]

    def all_reduce(self) -> None:
        for _, acc in self.accumulators():
            acc.all_reduce()  # type: ignore[attr-defined]

    def rows(self) -> list[dict[str, object]]:
        """One result dict per (model, domain), then per model an ``"all"`` row when there are several domains
        (count-weighted mean of the domain rows, as seed 000's COCO tables)."""
        rows: list[dict[str, object]] = []
        for model in self.models:
            domain_rows = [self._row(model, d) for d in self.domains]
            rows += domain_rows
            if len(self.domains) > 1:
                rows.append(self._weighted_all(model, domain_rows))
        return rows

    def _row(self, model: str, domain: str) -> dict[str, object]:
        row: dict[str, object] = {"model": model, "domain": domain, "n_images": self.n_images[domain].count}
        for metric in self.metrics:
            if metric in PER_IMAGE:
                row[metric] = self.scalars[(model, domain, metric)].mean
            elif metric == "fid":
                fake = self.fake_moments[(model, domain)]
                if self.reference is None:
                    row["fid"] = fid_from_moments(self.real_moments[domain], fake)
                else:
                    row["fid"] = frechet_distance(*self.reference, *fake.mean_cov()) if fake.count >= 2 else float("nan")
            elif metric == "is":
                row["is"] = self.fake_post[(model, domain)].score()
                row["is_real"] = self.real_post[domain].score()
        if model in self.codebooks:
            row.update(code_columns(self.codes[(model, domain)].counts, self.codebooks[model][1]))
        return row

    def _weighted_all(self, model: str, rows: list[dict[str, object]]) -> dict[str, object]:
        out: dict[str, object] = {"model": model, "domain": "all", "n_images": sum(int(r["n_images"]) for r in rows)}
        keys = [k for k in rows[0] if k not in ("model", "domain", "n_images", *CODE_KEYS)] if rows else []
        for key in keys:
            pairs = [(float(r[key]), int(r["n_images"])) for r in rows if not math.isnan(float(r[key]))]
            weight = sum(n for _, n in pairs)
            out[key] = sum(v * n for v, n in pairs) / weight if weight else float("nan")
        if model in self.codebooks:  # from the summed histograms: usage is not a mean of the domains' usages
            counts = sum(self.codes[(model, d)].counts for d in self.domains)
            out.update(code_columns(counts, self.codebooks[model][1]))
        return out
