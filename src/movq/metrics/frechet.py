"""Fréchet distance between Gaussians fitted to feature sets (the FID formula)."""

from __future__ import annotations

import warnings

import numpy as np

DEFAULT_EPS = 1e-6
IMAG_ATOL = 1e-3


def _sqrtm(matrix: np.ndarray) -> np.ndarray:
    from scipy import linalg

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return linalg.sqrtm(matrix)


def frechet_distance(
    mu1: np.ndarray, sigma1: np.ndarray, mu2: np.ndarray, sigma2: np.ndarray, eps: float = DEFAULT_EPS
) -> float:
    """``||mu1 - mu2||^2 + Tr(sigma1 + sigma2 - 2 sqrt(sigma1 sigma2))`` in float64.

    In: means ``[D]`` and covariances ``[D, D]`` (numpy or anything ``np.asarray`` accepts).
    Out: a Python float >= 0 (up to rounding). The matrix square root is scipy's ``sqrtm``; when
    it is not finite or has a noticeable imaginary part (singular covariances, e.g. fewer samples
    than dimensions) it is recomputed with ``eps`` added to both diagonals. A tiny imaginary part
    from rounding is dropped; a large one (> 1e-3 on the diagonal) after the retry raises
    ``ValueError``.
    """
    mu1, mu2 = np.atleast_1d(np.asarray(mu1, np.float64)), np.atleast_1d(np.asarray(mu2, np.float64))
    sigma1, sigma2 = np.atleast_2d(np.asarray(sigma1, np.float64)), np.atleast_2d(np.asarray(sigma2, np.float64))
    if mu1.shape != mu2.shape or sigma1.shape != sigma2.shape or sigma1.shape != (mu1.size, mu1.size):
        raise ValueError(
            f"shape mismatch: mu {mu1.shape} / {mu2.shape}, sigma {sigma1.shape} / {sigma2.shape}; expected [D] and [D, D]"
        )
    diff = mu1 - mu2
    covmean = _sqrtm(sigma1 @ sigma2)
    if not _acceptable(covmean):
        offset = np.eye(sigma1.shape[0]) * eps
        covmean = _sqrtm((sigma1 + offset) @ (sigma2 + offset))
    if not np.isfinite(covmean).all():
        raise ValueError("matrix square root is not finite even after regularisation; check the features")
    if np.iscomplexobj(covmean):
        largest = np.max(np.abs(np.diagonal(covmean).imag))
        if largest > IMAG_ATOL:
            raise ValueError(f"matrix square root has an imaginary component {largest:.3g}; covariances are degenerate")
        covmean = covmean.real
    return float(diff @ diff + np.trace(sigma1) + np.trace(sigma2) - 2.0 * np.trace(covmean))


def _acceptable(covmean: np.ndarray) -> bool:
    if not np.isfinite(covmean).all():
        return False
    if np.iscomplexobj(covmean):
        return bool(np.max(np.abs(np.diagonal(covmean).imag)) <= IMAG_ATOL)
    return True


def fid_from_moments(real: "MomentAccumulator", fake: "MomentAccumulator") -> float:  # noqa: F821
    """FID between two :class:`~movq.metrics.accumulators.MomentAccumulator` s (NaN if either has < 2 samples)."""
    if real.count < 2 or fake.count < 2:
        return float("nan")
    mu1, sigma1 = real.mean_cov()
    mu2, sigma2 = fake.mean_cov()
    return frechet_distance(mu1, sigma1, mu2, sigma2)
