"""Convolutions with oneDNN-prepacked weights for CPU inference.

At every call PyTorch reorders a convolution's weight into oneDNN's blocked layout, a cost that
rivals the convolution itself for small maps. For inference on CPU the packed weight is kept
(memoised with :func:`~movq.modules.derived.derived`: one more copy of the convolution weights in
memory) and a residual addition is fused into the convolution. This uses
``torch.ops.mkldnn._reorder_convolution_weight`` and ``_convolution_pointwise``, the ops behind
``torch.compile``'s CPU weight freezing; everywhere else (other devices, autograd, tracing, builds
without oneDNN, NCHW inputs) it is ``F.conv2d``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from movq.modules.derived import derived


def has_onednn_ops(*names: str) -> bool:
    """Whether this PyTorch build has oneDNN and every ``torch.ops.mkldnn`` op in ``names``."""
    return torch.backends.mkldnn.is_available() and all(hasattr(torch.ops.mkldnn, name) for name in names)


_OPS = has_onednn_ops("_reorder_convolution_weight", "_convolution_pointwise")


def cpu_inference(x: Tensor) -> bool:
    """Whether ``x`` takes the oneDNN inference kernels: a float32 / bfloat16 CPU tensor with
    autograd off, outside ``torch.compile`` / ``torch.export`` tracing."""
    return (
        x.device.type == "cpu"
        and x.dtype in (torch.float32, torch.bfloat16)
        and not torch.is_grad_enabled()
        and not torch.compiler.is_compiling()
    )


def _packable(x: Tensor, weight: Tensor, owner: nn.Module) -> bool:
    return (
        _OPS
        and cpu_inference(x)
        and weight.dtype == x.dtype
        and x.is_contiguous(memory_format=torch.channels_last)
        and not owner.__dict__.get("_unpackable", False)
    )


def conv2d(
    x: Tensor,
    weight: Tensor,
    bias: Tensor | None,
    *,
    owner: nn.Module,
    stride: int = 1,
    padding: int = 0,
    residual: Tensor | None = None,
) -> Tensor:
    """``F.conv2d(x, weight, bias, stride, padding) (+ residual)``; on CPU inference with a
    channels-last ``x`` the packed weight is memoised on ``owner`` and the addition fused."""
    if _packable(x, weight, owner):
        strides, paddings, dilation = [stride] * 2, [padding] * 2, [1, 1]

        def pack() -> Tensor:
            return torch.ops.mkldnn._reorder_convolution_weight(weight, paddings, strides, dilation, 1, list(x.shape))

        try:
            packed = derived(owner, "packed_weight", pack, weight, extra=tuple(x.shape))
            if residual is None:
                return torch.ops.mkldnn._convolution_pointwise(x, packed, bias, paddings, strides, dilation, 1, "none", [], "")
            return torch.ops.mkldnn._convolution_pointwise.binary(
                x, residual.contiguous(memory_format=torch.channels_last), packed, bias, paddings, strides, dilation,
                1, "add", None, None, [], None,
            )
        except RuntimeError:  # an op this build lacks or rejects: plain convolutions from now on
            owner.__dict__["_unpackable"] = True
    out = F.conv2d(x, weight, bias, stride, padding)
    if residual is None:
        return out
    return out + residual if torch.is_grad_enabled() else out.add_(residual)


def conv(module: nn.Conv2d, x: Tensor, residual: Tensor | None = None) -> Tensor:
    """``module(x) (+ residual)`` through :func:`conv2d` (square stride and padding, no groups)."""
    return conv2d(x, module.weight, module.bias, owner=module, stride=module.stride[0], padding=module.padding[0],
                  residual=residual)
