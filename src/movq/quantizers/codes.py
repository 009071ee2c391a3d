"""What quantizers share about codes: the nearest-code search and the code statistics (usage, perplexity)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

LOG_EPS = 1e-10
"""Floor of a probability before its logarithm (entropies, KL), so that ``0 * log 0`` stays 0."""
DENSE_HISTOGRAM_MAX = 2**20
"""Largest codebook whose :func:`code_statistics` counts codes in a fixed-size histogram (one float
per code); larger, implicit codebooks (LFQ, FSQ) count only the ids that occur."""
DEFAULT_CHUNK_SIZE = 4096
"""Rows of the flattened latent compared against the codebook at once (memory is chunk x K)."""
SCORE_ELEMENTS = 2**21
"""Most code scores held at once by ``nearest_code`` (8 MiB of float32: a block that stays in cache)."""



def nearest_code(z: Tensor, codebook: Tensor, chunk_size: int = DEFAULT_CHUNK_SIZE) -> Tensor:
    """Index of the nearest codebook row (squared L2) for every row of ``z``.

    ``z`` is ``[N, D]``, ``codebook`` ``[K, D]``; returns ``LongTensor [N]``. Distances are computed
    in float32 as ``|c|^2 - 2 z.c`` (the row constant ``|z|^2`` does not move the argmin), one fused
    matrix product per chunk of at most ``chunk_size`` rows and at most ``SCORE_ELEMENTS`` scores,
    so the score block stays in cache and memory is ``O(min(chunk_size x K, SCORE_ELEMENTS))``.
    """
    z = z.float()
    codebook = codebook.float()
    code_sq = codebook.pow(2).sum(dim=1)
    codebook_t = codebook.t()
    rows = max(1, min(chunk_size, SCORE_ELEMENTS // max(1, codebook.shape[0])))
    if z.shape[0] <= rows:
        return torch.addmm(code_sq, z, codebook_t, alpha=-2.0).argmin(dim=1)
    out = torch.empty(z.shape[0], dtype=torch.long, device=z.device)
    for start in range(0, z.shape[0], rows):
        scores = torch.addmm(code_sq, z[start : start + rows], codebook_t, alpha=-2.0)
        out[start : start + rows] = scores.argmin(dim=1)
    return out


def code_statistics(indices: Tensor, codebook_size: int) -> tuple[Tensor, Tensor]:
    """Perplexity ``exp(H(histogram))`` and used fraction of the codebook for a batch of indices."""
    flat = indices.reshape(-1)
    if codebook_size <= DENSE_HISTOGRAM_MAX:  # a fixed-size histogram (unlike bincount's) keeps torch.compile graphs whole
        ones = torch.ones(flat.shape, dtype=torch.float32, device=flat.device)
        counts = torch.zeros(codebook_size, dtype=torch.float32, device=flat.device).index_add_(0, flat, ones)
    else:  # huge implicit codebooks (LFQ, FSQ): histogram of the ids that occur only
        counts = torch.unique(flat, return_counts=True)[1].float()
    return histogram_statistics(counts, codebook_size)


def histogram_statistics(counts: Tensor, codebook_size: int) -> tuple[Tensor, Tensor]:
    """``(perplexity, usage)`` of a code histogram: ``counts`` (float, one entry per code, or only the
    codes that occur) -> ``exp(H)`` of the empirical distribution and the fraction of the
    ``codebook_size`` codes with a count above 0 (scalar float tensors)."""
    return histogram_perplexity(counts), (counts > 0).sum().float() / codebook_size


def histogram_perplexity(counts: Tensor) -> Tensor:
    """``exp(H)`` of the distribution of the float ``counts`` (a histogram of codes; 1 when empty)."""
    probs = counts / counts.sum().clamp(min=1.0)
    return (-(probs * torch.log(probs.clamp(min=LOG_EPS))).sum()).exp()


def rotate_to(x: Tensor, q: Tensor, eps: float = 1e-6) -> Tensor:
    """The rotation trick (Fifty et al. 2024, "Restructuring Vector Quantization with the Rotation
    Trick", section 4.2): ``q`` in value, with the gradient of ``x`` rotated and scaled onto ``q``.

    ``x`` and ``q`` are ``[..., D]`` (latent and its code, last axis the vector). Returns
    ``s R x`` with ``R`` the rotation taking ``x / |x|`` onto ``q / |q|`` and ``s = |q| / |x|``, both
    treated as constants, so the value is ``q`` (up to rounding) and ``dL/dx = s R^T dL/dq`` instead
    of straight-through's ``dL/dx = dL/dq``. ``R = I - 2 w w^T + 2 q_hat u^T`` with ``u = x / |x|``,
    ``q_hat = q / |q|``, ``w = (u + q_hat) / |u + q_hat|`` (norms floored at ``eps``), applied
    without forming the ``D x D`` matrix; vector-quantize-pytorch's ``rotate_to``.
    """
    x_norm = x.norm(dim=-1, keepdim=True)
    q_norm = q.norm(dim=-1, keepdim=True)
    u = (x / x_norm.clamp(min=eps)).detach()
    q_hat = (q / q_norm.clamp(min=eps)).detach()
    w = F.normalize(u + q_hat, dim=-1, eps=eps).detach()
    rotated = x - 2 * (x * w).sum(-1, keepdim=True) * w + 2 * (x * u).sum(-1, keepdim=True) * q_hat
    return rotated * (q_norm / x_norm.clamp(min=eps)).detach()


def gradient_estimator(x: Tensor, q: Tensor, rotation_trick: bool) -> Tensor:
    """``q`` in value with gradients to ``x`` (both ``[..., D]``): straight-through ``x + sg[q - x]``,
    or :func:`rotate_to` when ``rotation_trick``."""
    return rotate_to(x, q) if rotation_trick else x + (q - x).detach()
