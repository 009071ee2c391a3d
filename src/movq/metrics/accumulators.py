"""Streaming, mergeable statistics: data never has to sit in memory, shards add up exactly.

Each accumulator holds sums (float64) that are merged by addition, so per-shard results combine
with :meth:`merge` or with one ``torch.distributed.all_reduce(SUM)`` per tensor
(:meth:`all_reduce`). ``state_dict`` / ``from_state_dict`` make them cacheable with ``torch.save``.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor


class _Sums:
    """Base: a fixed set of named float64 tensors that merge by addition."""

    _fields: tuple[str, ...] = ()

    def tensors(self) -> list[Tensor]:
        return [getattr(self, name) for name in self._fields]

    def merge(self, other: "_Sums") -> "_Sums":
        """Add ``other``'s sums into this accumulator (in place) and return ``self``."""
        if type(other) is not type(self):
            raise TypeError(f"cannot merge {type(other).__name__} into {type(self).__name__}")
        for name in self._fields:
            mine, theirs = getattr(self, name), getattr(other, name)
            if mine.shape != theirs.shape:
                raise ValueError(f"{type(self).__name__}.{name}: shapes {tuple(mine.shape)} and {tuple(theirs.shape)} differ")
            mine += theirs.to(mine.device)
        return self

    def all_reduce(self, group: object | None = None) -> "_Sums":
        """Sum this accumulator over all ranks of ``torch.distributed`` (in place); returns ``self``.

        The tensors are moved to the backend's device for the reduction (CUDA for NCCL).
        """
        import torch.distributed as dist

        device = torch.device("cuda", torch.cuda.current_device()) if dist.get_backend(group) == "nccl" else torch.device("cpu")
        for name in self._fields:
            local = getattr(self, name)
            buf = local.to(device).clone()
            dist.all_reduce(buf, op=dist.ReduceOp.SUM, group=group)
            setattr(self, name, buf.to(local.device))
        return self

    def state_dict(self) -> dict[str, Tensor]:
        return {name: getattr(self, name).detach().cpu().clone() for name in self._fields}

    def load_state_dict(self, state: dict[str, Tensor]) -> None:
        for name in self._fields:
            setattr(self, name, state[name].to(torch.float64).clone())


class MeanAccumulator(_Sums):
    """Running mean of per-sample scalars: ``update(values [N])``, ``mean`` (NaN when empty)."""

    _fields = ("total", "n")

    def __init__(self) -> None:
        self.total = torch.zeros((), dtype=torch.float64)
        self.n = torch.zeros((), dtype=torch.float64)

    def update(self, values: Tensor) -> None:
        values = values.detach().reshape(-1).to(torch.float64).cpu()
        self.total += values.sum()
        self.n += values.numel()

    @property
    def count(self) -> int:
        return int(self.n.item())

    @property
    def mean(self) -> float:
        return float("nan") if self.count == 0 else float(self.total.item() / self.n.item())


class MomentAccumulator(_Sums):
    """Streaming mean and covariance of ``D``-dimensional features.

    ``update(features [N, D])`` adds ``N`` rows (any float dtype, any device; the sums stay float64
    on ``device``). ``mean_cov()`` returns numpy float64 ``mu [D]`` and the unbiased covariance
    ``sigma [D, D]`` (as ``np.cov(rowvar=False)``); it needs at least 2 rows.
    """

    _fields = ("n", "sum", "sum_outer")

    def __init__(self, dim: int, device: torch.device | str = "cpu") -> None:
        self.dim = dim
        self.n = torch.zeros((), dtype=torch.float64, device=device)
        self.sum = torch.zeros(dim, dtype=torch.float64, device=device)
        self.sum_outer = torch.zeros(dim, dim, dtype=torch.float64, device=device)

    def update(self, features: Tensor) -> None:
        if features.ndim != 2 or features.shape[1] != self.dim:
            raise ValueError(f"expected features [N, {self.dim}], got {tuple(features.shape)}")
        f = features.detach().to(self.sum.device, torch.float64)
        self.n += f.shape[0]
        self.sum += f.sum(0)
        self.sum_outer += f.T @ f

    @property
    def count(self) -> int:
        return int(self.n.item())

    def mean_cov(self) -> tuple[np.ndarray, np.ndarray]:
        n = self.n.item()
        if n < 2:
            raise ValueError(f"covariance needs at least 2 samples, have {int(n)}")
        mu = self.sum / n
        cov = (self.sum_outer - n * torch.outer(mu, mu)) / (n - 1)
        cov = (cov + cov.T) / 2
        return mu.cpu().numpy(), cov.cpu().numpy()

    def load_state_dict(self, state: dict[str, Tensor]) -> None:
        device = self.sum.device
        super().load_state_dict(state)
        self.n, self.sum, self.sum_outer = (t.to(device) for t in (self.n, self.sum, self.sum_outer))
        self.dim = self.sum.shape[0]


class PosteriorAccumulator(_Sums):
    """Streaming Inception Score over class posteriors ``p(y|x)``.

    ``update(probs [N, C])`` with rows summing to 1. Keeps ``sum_p = sum_x p(y|x)`` and
    ``sum_neg_entropy = sum_x sum_y p log p``, which give the single-split IS exactly:
    ``IS = exp(mean_x KL(p(y|x) || p(y)))``, ``p(y) = sum_p / N``.
    """

    _fields = ("n", "sum_p", "sum_neg_entropy")

    def __init__(self, num_classes: int) -> None:
        self.n = torch.zeros((), dtype=torch.float64)
        self.sum_p = torch.zeros(num_classes, dtype=torch.float64)
        self.sum_neg_entropy = torch.zeros((), dtype=torch.float64)

    def update(self, probs: Tensor) -> None:
        p = probs.detach().to("cpu", torch.float64)
        self.n += p.shape[0]
        self.sum_p += p.sum(0)
        self.sum_neg_entropy += torch.special.xlogy(p, p).sum()

    @property
    def count(self) -> int:
        return int(self.n.item())

    def score(self) -> float:
        """Single-split Inception Score (NaN when empty)."""
        n = self.n.item()
        if n == 0:
            return float("nan")
        marginal = self.sum_p / n
        mean_kl = self.sum_neg_entropy / n - torch.special.xlogy(marginal, marginal).sum()
        return float(torch.exp(mean_kl).item())


class HistogramAccumulator(_Sums):
    """Counts of integer ids (codebook tokens) per level, over a whole set: ``counts [levels, bins]``.

    ``update(ids)`` takes ``LongTensor`` ids ``[B, H, W]`` (one level) or ``[B, levels, H, W]`` (a
    residual quantizer's depths, a grouped quantizer's groups), any device; ids ``-1`` (no code: a
    dropped residual level) are not counted, other ids must lie in ``[0, bins)``. Shards and ranks add up.
    """

    _fields = ("counts",)

    def __init__(self, levels: int, bins: int) -> None:
        self.levels, self.bins = levels, bins
        self.counts = torch.zeros(levels, bins, dtype=torch.float64)

    def update(self, ids: Tensor) -> None:
        ids = ids.detach().long().cpu()
        rows = ids.reshape(1, -1) if self.levels == 1 else ids.transpose(0, 1).reshape(self.levels, -1)
        for level, row in enumerate(rows):
            row = row[row >= 0]
            if row.numel() and int(row.max()) >= self.bins:
                raise ValueError(f"id {int(row.max())} outside the histogram's [0, {self.bins})")
            self.counts[level] += torch.bincount(row, minlength=self.bins).to(torch.float64)


class PerImageAccumulator(_Sums):
    """One scalar per image of a fixed, indexed set of ``n`` images (e.g. the bench's PSNR of each file),
    filled in any order by any shard: ``update(index [N], values [N])``; ``values()`` gives ``[n]``
    float64 with NaN for the images never measured. Shards add up (each image is measured by one)."""

    _fields = ("total", "seen")

    def __init__(self, n: int) -> None:
        self.total = torch.zeros(n, dtype=torch.float64)
        self.seen = torch.zeros(n, dtype=torch.float64)

    def update(self, index: Tensor, values: Tensor) -> None:
        index = index.detach().long().cpu().reshape(-1)
        self.total.index_add_(0, index, values.detach().to("cpu", torch.float64).reshape(-1))
        self.seen.index_add_(0, index, torch.ones(index.shape, dtype=torch.float64))

    def values(self) -> Tensor:
        return torch.where(self.seen > 0, self.total / self.seen.clamp(min=1), torch.nan)
