"""Memory layout of feature maps: which layout a device runs fastest, and nearest-neighbour
broadcasting of a low-resolution map onto a larger one without materialising the upsampled copy.

On CPU, oneDNN convolutions run 1.3-2x faster on channels-last (NHWC) tensors than on NCHW ones,
and every other op of the codec (GroupNorm, SiLU, additions, SDPA) keeps the layout. On CUDA,
``group_norm`` converts its input to NCHW, so NCHW stays the default there.
"""

from __future__ import annotations

import torch
from torch import Tensor


def preferred_memory_format(device: torch.device) -> torch.memory_format:
    """The layout the codec runs in on ``device``: channels-last on CPU, NCHW elsewhere."""
    return torch.channels_last if device.type == "cpu" else torch.contiguous_format


def memory_format_of(x: Tensor) -> torch.memory_format:
    """``torch.channels_last`` if the 4-D ``x`` is laid out channels-last (and not also NCHW), else
    ``torch.contiguous_format``: the layout new tensors derived from ``x`` should get."""
    if x.ndim == 4 and not x.is_contiguous() and x.is_contiguous(memory_format=torch.channels_last):
        return torch.channels_last
    return torch.contiguous_format


def nearest_factors(large: Tensor, small: Tensor) -> tuple[int, int] | None:
    """Integer upsampling factors ``(sh, sw)`` with ``large.shape[-2:] == small.shape[-2:] * (sh, sw)``,
    or ``None`` if the sizes are not integer multiples (nearest resizing is then not a repeat)."""
    (h_big, w_big), (h, w) = large.shape[-2:], small.shape[-2:]
    if h_big % h or w_big % w:
        return None
    return h_big // h, w_big // w


def blocks_view(x: Tensor, factors: tuple[int, int]) -> Tensor:
    """View ``x`` ``[B, C, h*sh, w*sw]`` as ``[B, C, h, sh, w, sw]`` (no copy, any layout)."""
    sh, sw = factors
    return x.unflatten(3, (x.shape[3] // sw, sw)).unflatten(2, (x.shape[2] // sh, sh))


def broadcast_view(small: Tensor) -> Tensor:
    """``[B, C, h, w]`` -> ``[B, C, h, 1, w, 1]``: broadcasts against :func:`blocks_view` of a larger map
    exactly like its nearest-neighbour upsampling would."""
    return small[:, :, :, None, :, None]
