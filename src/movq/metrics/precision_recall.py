"""Improved precision and recall of generative models (Kynkäänniemi et al. 2019), as openai/guided-diffusion's
evaluator computes them (``ManifoldEstimator`` with ``nhood_sizes=(3,)``, no radius clamping).

Each set of feature vectors spans a "manifold": the union of balls around its points whose radius is
the distance to the point's k-th nearest neighbour in the same set (the point itself, at distance 0, is
neighbour 0, as the evaluator's ``np.partition(..., k)`` counts it). **Precision** is the fraction of
generated points inside the real manifold, **recall** the fraction of real points inside the generated
one. Distances are squared Euclidean ``|a|^2 - 2 a.b + |b|^2`` clamped at 0 (the evaluator's formula;
comparing squared distances with squared radii decides the same), computed here in float64 (the
evaluator tries float16 first and falls back to float32), in row blocks so memory stays bounded.
"""

from __future__ import annotations

import torch
from torch import Tensor

DEFAULT_K = 3
"""The neighbourhood size of the ADM evaluator (and of Kynkäänniemi et al.'s recommended setting)."""
_BLOCK_ELEMENTS = 2**25
"""Distances computed at once (float64: 256 MiB)."""


def _as_float64(features: Tensor) -> Tensor:
    features = torch.as_tensor(features)
    if features.ndim != 2:
        raise ValueError(f"expected features [N, D], got {tuple(features.shape)}")
    device = torch.device("cpu") if features.device.type == "mps" else features.device  # MPS has no float64
    return features.to(device, torch.float64)


def pairwise_sq_distances(a: Tensor, b: Tensor) -> Tensor:
    """Squared Euclidean distances ``[N, M]`` between the rows of ``a [N, D]`` and ``b [M, D]`` (float64, >= 0)."""
    a = _as_float64(a)
    b = _as_float64(b).to(a.device)
    return (a.square().sum(1, keepdim=True) - 2 * a @ b.T + b.square().sum(1)[None]).clamp_min(0)


def _blocks(rows: int, cols: int) -> range:
    return range(0, rows, max(1, _BLOCK_ELEMENTS // max(cols, 1)))


def manifold_radii(features: Tensor, k: int = DEFAULT_K) -> Tensor:
    """Squared distance ``[N]`` (float64) from each row of ``features [N, D]`` to its ``k``-th nearest row
    (the row itself is the 0-th); ``ValueError`` when ``N <= k``."""
    features = _as_float64(features)
    n = features.shape[0]
    if k < 1 or n <= k:
        raise ValueError(f"the k = {k} nearest-neighbour radius needs k >= 1 and more than k feature vectors, got {n}")
    radii = torch.empty(n, dtype=torch.float64, device=features.device)
    step = _blocks(n, n).step
    for lo in range(0, n, step):
        radii[lo : lo + step] = pairwise_sq_distances(features[lo : lo + step], features).kthvalue(k + 1, dim=1).values
    return radii


def manifold_coverage(points: Tensor, manifold: Tensor, radii: Tensor) -> float:
    """Fraction of the rows of ``points [N, D]`` within ``radii`` (squared, ``[M]``) of at least one row of
    ``manifold [M, D]``."""
    points, manifold = _as_float64(points), _as_float64(manifold)
    radii = radii.to(manifold.device, torch.float64)
    inside = 0
    step = _blocks(points.shape[0], manifold.shape[0]).step
    for lo in range(0, points.shape[0], step):
        inside += int((pairwise_sq_distances(points[lo : lo + step], manifold) <= radii[None]).any(1).sum())
    return inside / points.shape[0]


def precision_recall(real: Tensor, fake: Tensor, k: int = DEFAULT_K) -> tuple[float, float]:
    """``(precision, recall)`` of generated features ``fake [N, D]`` against real features ``real [M, D]``
    (any float dtype and device; both sets need more than ``k`` rows). Precision: fraction of ``fake``
    inside the real manifold; recall: fraction of ``real`` inside the generated manifold."""
    real, fake = _as_float64(real), _as_float64(fake)
    if real.shape[1] != fake.shape[1]:
        raise ValueError(f"feature sizes differ: real {tuple(real.shape)}, fake {tuple(fake.shape)}")
    fake = fake.to(real.device)
    return (manifold_coverage(fake, real, manifold_radii(real, k)),
            manifold_coverage(real, fake, manifold_radii(fake, k)))
