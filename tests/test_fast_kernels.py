"""The CPU engine's fused / layout-aware kernels equal the plain modules' textbook formulas, with and
without autograd (the engine then steps aside), in NCHW and channels-last, and keep their input's
memory layout."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from movq.modules import AttnBlock, GroupNorm, SpatialNorm, Upsample, cpu_engine
from movq.modules.blocks import preferred_memory_format
from movq.modules.cpu_engine import memory_format_of

LAYOUTS = [torch.contiguous_format, torch.channels_last]


def spatial_norm_reference(norm: SpatialNorm, f: torch.Tensor, zq: torch.Tensor) -> torch.Tensor:
    zq = F.interpolate(zq, size=f.shape[-2:], mode="nearest")
    return norm.norm_layer(f) * norm.conv_y(zq) + norm.conv_b(zq)


def randomize(module: torch.nn.Module, seed: int) -> torch.nn.Module:
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in module.named_parameters():  # norm scales around 1, everything else around 0
            scale_of_norm = p.ndim == 1 and name.endswith("weight")
            p.copy_(torch.randn(p.shape, generator=gen) * 0.3 + (1.0 if scale_of_norm else 0.0))
    return module


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("grad", [False, True])
@pytest.mark.parametrize("size,zq_size", [((16, 24), (4, 3)), ((10, 14), (4, 6)), ((8, 8), (8, 8))])
def test_spatial_norm_with_silu_equals_formula(layout, grad, size, zq_size):
    torch.manual_seed(0)
    norm = randomize(SpatialNorm(64, 4), 1)
    f = (torch.randn(2, 64, *size) * 3 + 1).contiguous(memory_format=layout)
    zq = torch.randn(2, 4, *zq_size)
    expected = F.silu(spatial_norm_reference(norm, f, zq))
    with torch.set_grad_enabled(grad):
        out = cpu_engine.norm(norm, f, zq, silu=True)
    torch.testing.assert_close(out, expected, atol=2e-5, rtol=1e-5)
    assert memory_format_of(out) == memory_format_of(f)
    if grad:  # differentiable: gradients reach the input and every parameter
        out.square().sum().backward()
        assert all(p.grad is not None for p in norm.parameters())


def test_group_norm_silu_in_place_path_equals_out_of_place():
    norm = randomize(GroupNorm(64), 2)
    f = torch.randn(2, 64, 6, 5).contiguous(memory_format=torch.channels_last)
    expected = F.silu(F.group_norm(f, 32, norm.weight, norm.bias, 1e-6))
    with torch.no_grad():
        torch.testing.assert_close(cpu_engine.norm(norm, f, silu=True), expected)
    torch.testing.assert_close(cpu_engine.norm(norm, f, None, silu=True), expected)


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("grad", [False, True])
def test_upsample_phase_convolution_equals_nearest_then_conv(layout, grad):
    torch.manual_seed(0)
    up = Upsample(32)
    x = torch.randn(2, 32, 5, 7).contiguous(memory_format=layout)
    expected = up.conv(F.interpolate(x, scale_factor=2.0, mode="nearest"))
    with torch.set_grad_enabled(grad), cpu_engine.engaged(up, x):
        out = up(x)
    assert out.shape == (2, 32, 10, 14) and memory_format_of(out) == memory_format_of(x)
    torch.testing.assert_close(out, expected, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("zq_channels", [None, 4])
def test_attention_fused_qkv_in_both_layouts_and_modes(layout, zq_channels):
    torch.manual_seed(0)
    block = AttnBlock(32, zq_channels).eval()
    x = torch.randn(2, 32, 5, 7).contiguous(memory_format=layout)
    zq = torch.randn(2, 4, 5, 7) if zq_channels else None
    h = block.norm(x, zq)
    q, k, v = (p(h).flatten(2) for p in (block.q, block.k, block.v))
    weights = torch.softmax(q.transpose(1, 2) @ k / 32**0.5, dim=-1)
    expected = x + block.proj_out((v @ weights.transpose(1, 2)).reshape(2, 32, 5, 7))
    torch.testing.assert_close(block(x, zq), expected, atol=1e-5, rtol=1e-5)
    with torch.no_grad(), cpu_engine.engaged(block, x):
        out = block(x, zq)
    torch.testing.assert_close(out, expected, atol=1e-5, rtol=1e-5)
    assert memory_format_of(out) == memory_format_of(x)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("chunk_bytes", [cpu_engine.SCORE_CHUNK_BYTES, 3 * 4 * 50])  # one chunk; 3 rows
def test_cpu_attention_equals_softmax_formula_in_every_chunking(monkeypatch, dtype, chunk_bytes):
    monkeypatch.setattr(cpu_engine, "SCORE_CHUNK_BYTES", chunk_bytes)
    monkeypatch.setattr(cpu_engine, "MIN_CHUNK_ROWS", 1)
    gen = torch.Generator().manual_seed(0)
    qkv = (torch.randn(2, 50, 3 * 24, generator=gen) * 2).to(dtype)  # q, k, v interleaved like AttnBlock's
    q, k, v = qkv.chunk(3, dim=-1)
    scores = q.double() @ k.double().transpose(1, 2) / 24**0.5
    expected = torch.softmax(scores, dim=-1) @ v.double()
    tol = {"atol": 1e-5, "rtol": 1e-5} if dtype == torch.float32 else {"atol": 0.02, "rtol": 0.01}
    with torch.no_grad():
        out = cpu_engine.attention(q, k, v)
    assert out.dtype == dtype and out.shape == q.shape
    torch.testing.assert_close(out.double(), expected, **tol)
    sdpa = cpu_engine.attention(q, k, v)  # autograd on: torch's own kernel, same result
    torch.testing.assert_close(out.double(), sdpa.double(), **tol)
    if dtype == torch.bfloat16:  # float32 scores inside: closer to the exact result than bf16 SDPA
        error = (out.double() - expected).abs().max()
        assert error <= (sdpa.double() - expected).abs().max() + 1e-3


def test_preferred_layout_is_channels_last_on_cpu_only():
    assert preferred_memory_format(torch.device("cpu")) == torch.channels_last
    assert preferred_memory_format(torch.device("cuda", 0)) == torch.contiguous_format


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_prepacked_convolution_equals_conv2d_and_follows_weight_updates(dtype):
    torch.manual_seed(0)
    conv = torch.nn.Conv2d(16, 8, 3, padding=1).to(dtype)
    x = torch.randn(2, 16, 9, 7, dtype=dtype).contiguous(memory_format=torch.channels_last)
    residual = torch.randn(2, 8, 9, 7, dtype=dtype)
    tol = {"atol": 1e-5, "rtol": 1e-5} if dtype == torch.float32 else {"atol": 0.05, "rtol": 0.02}
    with torch.no_grad():
        torch.testing.assert_close(cpu_engine.conv(conv, x), conv(x), **tol)
        torch.testing.assert_close(cpu_engine.conv(conv, x, residual=residual), conv(x) + residual, **tol)
        conv.weight.mul_(-2.0)  # an in-place update: the memoised packed weight must follow
        torch.testing.assert_close(cpu_engine.conv(conv, x), conv(x), **tol)
        smaller = x[:1, :, :5]  # another input size
        torch.testing.assert_close(cpu_engine.conv(conv, smaller), conv(smaller), **tol)
    out = cpu_engine.conv(conv, x, residual=residual)  # autograd: the plain path, differentiable
    out.sum().backward()
    assert conv.weight.grad is not None


def test_a_weight_derived_from_a_derived_weight_follows_its_rebuilds():
    from torch import nn

    from movq.modules.cpu_engine import derived

    module, weight = nn.Module(), nn.Parameter(torch.ones(4))
    with torch.inference_mode():  # an inference tensor has no version counter, like a fresh torch.cat
        buffer = torch.empty(4)  # every rebuild of "stacked" lands at this address, as freed memory can

    def stacked() -> torch.Tensor:
        buffer.copy_(weight.detach() * 2)
        return buffer[:]

    with torch.inference_mode():
        first = derived(module, "stacked", stacked, weight)
        packed = derived(module, "packed", lambda: first + 1, first)
        assert derived(module, "packed", lambda: first + 1, first) is packed  # memoised
    with torch.no_grad():
        weight.add_(1)
    with torch.inference_mode():
        second = derived(module, "stacked", stacked, weight)
        assert second.data_ptr() == first.data_ptr()
        assert torch.equal(derived(module, "packed", lambda: second + 1, second), torch.full((4,), 5.0))
