"""All running statistics of one bench run, keyed by model and domain; mergeable and cacheable."""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import Tensor

from movq.bench.metric_table import PER_IMAGE
from movq.metrics.accumulators import MeanAccumulator, MomentAccumulator, PosteriorAccumulator
from movq.metrics.frechet import fid_from_moments, frechet_distance


class BenchStats:
    """Per (model, domain): means of the per-image metrics, feature moments and IS posteriors of the
    reconstructions; per domain: moments / posteriors of the originals; plus the image count and
    the number of upscaled images. ``feature_dim`` / ``num_classes`` are 0 / None when unused.
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

    def accumulators(self) -> list[tuple[str, object]]:
        """Every accumulator with a stable name, in a fixed order (for caching and all-reduce)."""
        named: list[tuple[str, object]] = [("upscaled", self.upscaled)]
        named += [(f"n/{d}", a) for d, a in self.n_images.items()]
        named += [(f"scalar/{m}/{d}/{k}", a) for (m, d, k), a in self.scalars.items()]
        named += [(f"real_moments/{d}", a) for d, a in self.real_moments.items()]
        named += [(f"fake_moments/{m}/{d}", a) for (m, d), a in self.fake_moments.items()]
        named += [(f"real_post/{d}", a) for d, a in self.real_post.items()]
        named += [(f"fake_post/{m}/{d}", a) for (m, d), a in self.fake_post.items()]
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
        return row

    def _weighted_all(self, model: str, rows: list[dict[str, object]]) -> dict[str, object]:
        out: dict[str, object] = {"model": model, "domain": "all", "n_images": sum(int(r["n_images"]) for r in rows)}
        keys = [k for k in rows[0] if k not in ("model", "domain", "n_images")] if rows else []
        for key in keys:
            pairs = [(float(r[key]), int(r["n_images"])) for r in rows if not math.isnan(float(r[key]))]
            weight = sum(n for _, n in pairs)
            out[key] = sum(v * n for v, n in pairs) / weight if weight else float("nan")
        return out
