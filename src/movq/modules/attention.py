"""Single-head softmax attention: ``F.scaled_dot_product_attention``, or oneDNN products on CPU.

PyTorch's CPU attention kernel and ``torch.matmul`` in float32 go through MKL's GEMM, which on
some CPUs (AMD Zen among them) runs at half the speed of oneDNN's. For CPU inference
:func:`attention` therefore computes ``softmax(q k^T / sqrt(C)) v`` with oneDNN matrix products
(``torch.ops.mkldnn._linear_pointwise``, the op behind ``torch.compile``'s CPU linear fusion) in
float32, a chunk of queries at a time so the score rows stay within :data:`SCORE_CHUNK_BYTES`
(at least :data:`MIN_CHUNK_ROWS` queries): about 2x the fused kernel at 1024 and 4096 positions,
with float32 scores for bfloat16 inputs as well. Everywhere else (CUDA, autograd, tracing, builds
without the op) it is ``F.scaled_dot_product_attention``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from movq.modules.prepacked import cpu_inference, has_onednn_ops

SCORE_CHUNK_BYTES = 4 << 20  # float32 score rows computed at once: cache-sized, bounds memory at any length
MIN_CHUNK_ROWS = 128  # but never fewer queries per product than this (long sequences: large images)

_OP = has_onednn_ops("_linear_pointwise")


def _product(x: Tensor, weight: Tensor) -> Tensor:
    """``x @ weight.T`` for contiguous float32 matrices, by oneDNN."""
    return torch.ops.mkldnn._linear_pointwise(x, weight, None, "none", [], "")


def attention(q: Tensor, k: Tensor, v: Tensor) -> Tensor:
    """``softmax(q k^T / sqrt(C)) v`` for ``q``, ``k``, ``v`` ``[B, L, C]`` (any strides, one dtype);
    returns ``[B, L, C]`` in that dtype."""
    if not (_OP and cpu_inference(q)):
        return F.scaled_dot_product_attention(q[:, None], k[:, None], v[:, None])[:, 0]
    batch, length, channels = q.shape
    rows = max(MIN_CHUNK_ROWS, SCORE_CHUNK_BYTES // (4 * k.shape[1]))
    out = torch.empty_like(q, memory_format=torch.contiguous_format)
    for b in range(batch):
        queries = q[b].float() * channels**-0.5
        keys = k[b].float().contiguous()
        values_t = v[b].float().T.contiguous()
        for start in range(0, length, rows):
            scores = _product(queries[start : start + rows], keys)
            out[b, start : start + rows] = _product(scores.softmax(dim=-1), values_t)
    return out
