"""The CPU inference engine: the codec's encoder and decoder, computed faster on CPU.

The modules of :mod:`movq.modules` are plain PyTorch. For eager CPU inference (:func:`eager_cpu_inference`:
a float32 / bfloat16 CPU input, autograd off, not traced by ``torch.compile`` / ``torch.export`` / the
JIT) the codec runs inside :func:`engaged`, which swaps in, for the duration, forwards that compute
the same results with these tricks:

- **layout**: feature maps run channels-last (as the plain stages do on CPU,
  :func:`~movq.modules.blocks.preferred_memory_format`), which the packed convolutions need;
- **prepacked convolutions** (:func:`conv2d`): the weight reordered into oneDNN's blocked layout is
  kept (one more copy of the convolution weights), and a residual addition is fused into the
  convolution (``torch.ops.mkldnn._reorder_convolution_weight`` / ``_convolution_pointwise``, the ops
  behind ``torch.compile``'s CPU weight freezing);
- **fused norms** (:func:`norm`): GroupNorm / SpatialNorm, modulation and SiLU in place, three passes
  over the feature map instead of eight; SpatialNorm's 1x1 convolutions and affine folded into one
  product at ``zq``'s resolution, broadcast over the map without building the upsampled copy;
- **attention** (:func:`attention`): q, k, v as one stacked 1x1 convolution, then
  ``softmax(q k^T / sqrt(C)) v`` with oneDNN products (``torch.ops.mkldnn._linear_pointwise``) in
  float32, a chunk of queries at a time (at least :data:`MIN_CHUNK_ROWS`, score rows within
  :data:`SCORE_CHUNK_BYTES`): on some CPUs (AMD Zen) MKL's GEMM behind SDPA runs at half the speed;
- **sub-pixel upsampling**: nearest x2 + 3x3 convolution as one 2x2 convolution with four sets of
  outputs, one per output phase (4/9 of the multiply-adds), interleaved into the output;
- **derived weights** (:func:`derived`): stacked, folded, phase and packed weights are memoised on
  their module and rebuilt when a source changes (new storage, in-place update, dtype or device).

Everywhere else (CUDA, autograd, tracing, builds without the oneDNN ops) nothing is swapped and the
plain modules run. This is the only file of ``movq`` that calls ``torch.ops``.
"""

from __future__ import annotations

import itertools
import weakref
from collections.abc import Callable, Hashable, Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from types import MethodType
from typing import Any, TypeVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from movq.modules.blocks import AttnBlock, Downsample, ResnetBlock, Upsample
from movq.modules.decoder import Decoder
from movq.modules.encoder import Encoder
from movq.modules.norm import EPS, NUM_GROUPS, AdaptiveGroupNorm, GroupNorm, SpatialNorm, shared_stats_of

SCORE_CHUNK_BYTES = 4 << 20  # float32 score rows computed at once: cache-sized, bounds memory at any length
MIN_CHUNK_ROWS = 128  # but never fewer queries per product than this (long sequences: large images)
T = TypeVar("T")


def has_onednn_ops(*names: str) -> bool:
    """Whether this PyTorch build has oneDNN and every ``torch.ops.mkldnn`` op in ``names``."""
    return torch.backends.mkldnn.is_available() and all(hasattr(torch.ops.mkldnn, name) for name in names)


_CONV_OPS = has_onednn_ops("_reorder_convolution_weight", "_convolution_pointwise")
_LINEAR_OP = has_onednn_ops("_linear_pointwise")


def eager_cpu_inference(x: Tensor) -> bool:
    """Whether ``x`` is computed by the engine: a float32 / bfloat16 CPU tensor with autograd off,
    outside ``torch.compile`` / ``torch.export`` / JIT tracing."""
    return (
        x.device.type == "cpu"
        and x.dtype in (torch.float32, torch.bfloat16)
        and not torch.is_grad_enabled()
        and not torch.compiler.is_compiling()
        and not torch.jit.is_tracing()
    )


# ------------------------------------------------------------------------------------- layout


def memory_format_of(x: Tensor) -> torch.memory_format:
    """``torch.channels_last`` if the 4-D ``x`` is laid out channels-last (and not also NCHW), else
    ``torch.contiguous_format``: the layout new tensors derived from ``x`` should get."""
    if x.ndim == 4 and not x.is_contiguous() and x.is_contiguous(memory_format=torch.channels_last):
        return torch.channels_last
    return torch.contiguous_format


def _channels_last(x: Tensor) -> Tensor:
    return x.contiguous(memory_format=torch.channels_last)


def _blocks_view(x: Tensor, factors: tuple[int, int]) -> Tensor:
    """View ``x`` ``[B, C, h*sh, w*sw]`` as ``[B, C, h, sh, w, sw]`` (no copy, any layout)."""
    sh, sw = factors
    return x.unflatten(3, (x.shape[3] // sw, sw)).unflatten(2, (x.shape[2] // sh, sh))


# ------------------------------------------------------------------------------ derived weights


def _version(t: Tensor) -> int:
    """In-place update counter; inference tensors (made under ``inference_mode``) have none."""
    return 0 if t.is_inference() else t._version


_builds = itertools.count(1)


def _stamped(value: T) -> T:
    """Mark the tensors of a freshly built ``value`` with a unique build number, so that a weight
    derived from them (a packed copy of a stacked weight) is rebuilt with them even when the new
    tensor reuses a freed one's memory address."""
    for t in value if isinstance(value, tuple) else (value,):
        if isinstance(t, Tensor):
            t._movq_build = next(_builds)
    return value


def derived(module: nn.Module, name: str, build: Callable[[], T], *sources: Tensor, extra: Hashable = None) -> T:
    """``build()``, memoised on ``module`` under ``name`` (inference only: never with autograd on).
    ``sources`` are the tensors ``build`` reads (parameters, or what another ``derived`` built); a
    change of one (storage, in-place update, dtype, device) or of ``extra`` rebuilds it (one entry
    per ``name`` is kept)."""
    key = (extra, *((t.data_ptr(), _version(t), t.dtype, t.device, getattr(t, "_movq_build", 0)) for t in sources))
    store: dict[str, tuple[tuple, T]] = module.__dict__.setdefault("_derived_weights", {})
    hit = store.get(name)
    if hit is None or hit[0] != key:
        hit = store[name] = (key, _stamped(build()))
    return hit[1]


# ------------------------------------------------------------------------------- convolutions


def conv2d(
    x: Tensor, weight: Tensor, bias: Tensor | None, *, owner: nn.Module, stride: int = 1, padding: int = 0,
    residual: Tensor | None = None,
) -> Tensor:
    """``F.conv2d(x, weight, bias, stride, padding) (+ residual)``; for eager CPU inference on a
    channels-last ``x`` the packed weight is memoised on ``owner`` and the addition fused."""
    packable = (
        _CONV_OPS and eager_cpu_inference(x) and weight.dtype == x.dtype
        and x.is_contiguous(memory_format=torch.channels_last) and not owner.__dict__.get("_unpackable", False)
    )
    if packable:
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


# -------------------------------------------------------------------------------------- norms


def _modulate(x: Tensor, scale: Tensor, shift: Tensor, out: Tensor) -> Tensor:
    """``out = x * scale + shift`` where ``scale`` / ``shift`` ``[B, C, h, w]`` (any strides, ``x``'s
    dtype) are resized to ``x``'s ``[B, C, H, W]`` by nearest neighbour: broadcast without copies
    when ``H / h`` and ``W / w`` are integers. ``out`` may be ``x`` itself."""
    (height, width), (h, w) = x.shape[-2:], scale.shape[-2:]
    if height % h or width % w:  # not integer multiples: materialise the resized maps
        scale, shift = (F.interpolate(t, size=(height, width), mode="nearest") for t in (scale, shift))
        h, w = height, width
    factors = (height // h, width // w)
    scale, shift = scale[:, :, :, None, :, None], shift[:, :, :, None, :, None]  # broadcast over the blocks
    torch.addcmul(shift, _blocks_view(x, factors), scale, out=_blocks_view(out, factors))
    return out


def _spatial_modulation(norm: SpatialNorm, zq: Tensor, dtype: torch.dtype) -> tuple[Tensor, Tensor]:
    """``(scale, shift)``, ``[B, channels, h, w]`` in ``dtype`` at ``zq``'s resolution, such that
    ``SpatialNorm(f) = normalise(f) * scale + shift``: ``scale = gamma * conv_y(zq)``, ``shift = beta *
    conv_y(zq) + conv_b(zq)`` as one product with the affine folded in (in float32, memoised), since a
    1x1 convolution commutes with nearest resizing."""
    params = (norm.conv_y.weight, norm.conv_y.bias, norm.conv_b.weight, norm.conv_b.bias,
              norm.norm_layer.weight, norm.norm_layer.bias)

    def build() -> tuple[Tensor, Tensor]:
        wy, by, wb, bb, gamma, beta = (p.float().flatten(1) if p.ndim > 1 else p.float() for p in params)
        weight = torch.cat([gamma[:, None] * wy, beta[:, None] * wy + wb])
        bias = torch.cat([gamma * by, beta * by + bb])
        return weight.to(dtype), bias.to(dtype)

    weight, bias = derived(norm, f"folded:{dtype}", build, *params)
    both = F.linear(zq.to(dtype).permute(0, 2, 3, 1), weight, bias).permute(0, 3, 1, 2)  # channels-last views
    return both[:, : weight.shape[0] // 2], both[:, weight.shape[0] // 2 :]


def norm(module: nn.Module, f: Tensor, zq: Tensor | None = None, *, silu: bool = False) -> Tensor:
    """``module(f, zq)`` (a :class:`GroupNorm` or :class:`SpatialNorm`), then SiLU if ``silu``; for
    eager CPU inference in place on one new map, in ``f``'s layout (image-wide statistics from
    tiling folded into the modulation: one pass over ``f``)."""
    if not eager_cpu_inference(f):
        out = module(f, zq)
        return F.silu(out) if silu else out
    if isinstance(module, SpatialNorm):
        def modulation(dtype: torch.dtype) -> tuple[Tensor, Tensor]:
            return _spatial_modulation(module, zq, dtype)
    else:
        def modulation(dtype: torch.dtype) -> tuple[Tensor, Tensor]:
            return module.weight.to(dtype)[None, :, None, None], module.bias.to(dtype)[None, :, None, None]
    stats = shared_stats_of(module, f)
    if stats is not None:
        mean, rstd = stats
        scale, shift = modulation(torch.float32)
        scale = scale * rstd
        shift = shift - mean * scale
        out = _modulate(f, scale.to(f.dtype), shift.to(f.dtype), torch.empty_like(f))
    elif isinstance(module, GroupNorm):  # the native kernel applies the per-channel affine itself
        out = F.group_norm(f, NUM_GROUPS, module.weight, module.bias, EPS)
    else:
        out = F.group_norm(f, NUM_GROUPS, eps=EPS)
        out = _modulate(out, *modulation(f.dtype), out)
    return F.silu(out, inplace=True) if silu else out


# ---------------------------------------------------------------------------------- attention


def _product(x: Tensor, weight: Tensor) -> Tensor:
    """``x @ weight.T`` for contiguous float32 matrices, by oneDNN."""
    return torch.ops.mkldnn._linear_pointwise(x, weight, None, "none", [], "")


def attention(q: Tensor, k: Tensor, v: Tensor) -> Tensor:
    """``softmax(q k^T / sqrt(C)) v`` for ``q``, ``k``, ``v`` ``[B, L, C]`` (any strides, one dtype);
    returns ``[B, L, C]`` in that dtype (float32 scores for bfloat16 too)."""
    if not (_LINEAR_OP and eager_cpu_inference(q)):
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


# ------------------------------------------------------------------------ the engine's forwards


def _resnet_block(block: ResnetBlock, x: Tensor, zq: Tensor | None = None) -> Tensor:
    return _resnet_block_taking(block, [x], zq, owned=False)


def _resnet_block_taking(block: ResnetBlock, inputs: list[Tensor], zq: Tensor | None, *, owned: bool) -> Tensor:
    """The ResNet block on the tensor it pops from ``inputs``. Tiles in lockstep wait in the second
    norm, holding what is alive there: when the block ``owned`` its input (no other reference), the
    shortcut is computed first, so the input is freed before the wait (the first block of a decoder
    level, whose input is wider than its output, then holds two maps of the output width instead of
    one of the input width and one of the output width); else after the wait, so that the caller's
    input and the normalised map are all it holds."""
    x = inputs.pop()
    h = conv(block.conv1, norm(block.norm1, x, zq, silu=True))
    if owned and block.nin_shortcut is not None:
        x = conv(block.nin_shortcut, x)  # the last reference to the block's input
    h = block.dropout(norm(block.norm2, h, zq, silu=True))
    if not owned and block.nin_shortcut is not None:
        x = conv(block.nin_shortcut, x)
    return conv(block.conv2, h, residual=x)


def _attn_block(block: AttnBlock, x: Tensor, zq: Tensor | None = None) -> Tensor:
    if not eager_cpu_inference(x):
        return AttnBlock.forward(block, x, zq)
    batch, channels, height, width = x.shape
    params = (block.q.weight, block.k.weight, block.v.weight, block.q.bias, block.k.bias, block.v.bias)
    weight, bias = derived(block, "qkv", lambda: (torch.cat(params[:3]), torch.cat(params[3:])), *params)
    qkv = conv2d(norm(block.norm, x, zq), weight, bias, owner=block)
    tokens = qkv.permute(0, 2, 3, 1).reshape(batch, height * width, 3 * channels)  # a view if channels-last
    h = attention(*tokens.chunk(3, dim=-1))
    h = h.reshape(batch, height, width, channels).permute(0, 3, 1, 2)
    return conv(block.proj_out, h.contiguous(memory_format=memory_format_of(x)), residual=x)


# Nearest x2 upsampling followed by a 3x3 convolution (padding 1) equals, for each of the four
# output phases (a, b) = (row % 2, column % 2), a 2x2 convolution of the small input: along each
# axis, phase 0 reads input rows (i-1, i) with taps (w0, w1 + w2) and phase 1 reads (i, i+1) with
# (w0 + w1, w2). PHASE_TAPS[a] maps the 3 taps of the kernel to the 2 taps of phase a.
PHASE_TAPS = torch.tensor([[[1.0, 0.0, 0.0], [0.0, 1.0, 1.0]], [[1.0, 1.0, 0.0], [0.0, 0.0, 1.0]]])


def _upsample(up: Upsample, x: Tensor) -> Tensor:
    if not eager_cpu_inference(x):
        return Upsample.forward(up, x)
    weight, bias = up.conv.weight, up.conv.bias

    def build() -> tuple[Tensor, Tensor]:  # weight [4C, C, 2, 2], phases (0, 0), (0, 1), (1, 0), (1, 1)
        taps = PHASE_TAPS.to(weight.device, weight.dtype)
        phases = torch.einsum("apk,oikl,bql->aboipq", taps, weight, taps)
        return phases.flatten(0, 2), bias.repeat(4)

    batch, channels, height, width = x.shape
    y = conv2d(x, *derived(up, "phases", build, weight, bias), owner=up, padding=1)  # [B, 4C, H+1, W+1]
    out = torch.empty(
        (batch, channels, 2 * height, 2 * width), dtype=y.dtype, device=y.device, memory_format=memory_format_of(x)
    )
    view = _blocks_view(out, (2, 2))  # [B, C, H, 2, W, 2]
    for index, phase in enumerate(y.split(channels, dim=1)):
        a, b = divmod(index, 2)
        view[:, :, :, a, :, b] = phase[:, :, a : a + height, b : b + width]
    return out


def _downsample(down: Downsample, x: Tensor) -> Tensor:
    return conv(down.conv, F.pad(x, (0, 1, 0, 1)))


def _encoder_local_stage(encoder: Encoder, x: Tensor) -> Tensor:
    return encoder.run_levels(conv(encoder.conv_in, _channels_last(x)), 0, encoder.local_levels)


def _encoder_global_stage(encoder: Encoder, h: Tensor) -> Tensor:
    h = encoder.mid(encoder.run_levels(_channels_last(h), encoder.local_levels, len(encoder.down)))
    return conv(encoder.conv_out, norm(encoder.norm_out, h, silu=True)).contiguous()


def _decoder_global_stage(decoder: Decoder, z: Tensor, zq: Tensor | None = None) -> Tensor:
    zq = decoder.check_zq(zq)
    return decoder.run_levels(decoder.mid(conv(decoder.conv_in, _channels_last(z)), zq), zq, 0, decoder.global_levels)


def _decoder_run_levels(decoder: Decoder, h: Tensor, zq: Tensor | None, start: int, stop: int,
                        style: Tensor | None = None) -> Tensor:
    """:meth:`Decoder.run_levels` handing each ResNet block its input, which nothing else then keeps
    (:func:`_resnet_block_taking`): the memory of decoding in lockstep tiles at full resolution."""
    assert decoder.adaptive is None, "the engine does not compute adaptive norms (handles)"
    run_order = list(reversed(decoder.up))
    for r in range(start, stop):
        if r > 0:
            h = run_order[r - 1].upsample(h)
        for layer in run_order[r].layers():
            if type(layer) is ResnetBlock:
                inputs = [h]
                del h
                h = _resnet_block_taking(layer, inputs, zq, owned=True)
            else:
                h = layer(h, zq)
    return h


def _decoder_local_stage(decoder: Decoder, h: Tensor, zq: Tensor | None = None) -> Tensor:
    zq = decoder.check_zq(zq)
    h = decoder.run_levels(_channels_last(h), zq, decoder.global_levels, len(decoder.up))
    return conv(decoder.conv_out, norm(decoder.norm_out, h, zq, silu=True)).contiguous()


FORWARDS: dict[type, dict[str, Callable[..., Tensor]]] = {
    ResnetBlock: {"forward": _resnet_block},
    AttnBlock: {"forward": _attn_block},
    Upsample: {"forward": _upsample},
    Downsample: {"forward": _downsample},
    Encoder: {"local_stage": _encoder_local_stage, "global_stage": _encoder_global_stage},
    Decoder: {"global_stage": _decoder_global_stage, "local_stage": _decoder_local_stage, "run_levels": _decoder_run_levels},
}
"""The methods the engine replaces, by module class (exact type: a subclass keeps its own)."""

# root -> (ids of its children, [(module or None for the root itself, method name, engine forward)])
_PLANS: weakref.WeakKeyDictionary[nn.Module, tuple[tuple[int, ...], list[tuple[Any, str, Callable]]]] = (
    weakref.WeakKeyDictionary()
)


def _plan(root: nn.Module) -> list[tuple[Any, str, Callable]]:
    """The swaps for ``root``'s modules, found once and rebuilt when a child of ``root`` is replaced."""
    key = tuple(map(id, root.children()))
    cached = _PLANS.get(root)
    if cached is None or cached[0] != key:
        swaps = [(None if module is root else module, name, fn)
                 for module in root.modules() for name, fn in FORWARDS.get(type(module), {}).items()]
        if not handles(root):  # MaskGIT's blocks: the plain forwards, everywhere in root
            swaps = []
        cached = _PLANS[root] = (key, swaps)
    return cached[1]


LOCKSTEP_MAPS = 1.25
"""The engine's :data:`movq.tiling.LOCKSTEP_MAPS`: tiles in lockstep wait holding one map of the
widest full-resolution width (a decoder block's input, or its output and shortcut,
:func:`_decoder_run_levels`); measured on MoVQGAN-67M's bfloat16 statistics pass at 1024 px in
tiles of 40 positions: 0.83 GiB, of which 0.6 the waiting tiles (1.2 maps of the covered area, in
bfloat16) and the rest the working tile, the network's copy and the allocator."""


def engages(root: nn.Module, x: Tensor) -> bool:
    """Whether :func:`engaged` runs ``root`` with the engine's forwards for input ``x``."""
    return _CONV_OPS and _LINEAR_OP and eager_cpu_inference(x) and bool(_plan(root))


def engaged(root: nn.Module, x: Tensor) -> AbstractContextManager[None]:
    """A context that runs the movq modules inside ``root`` (``root`` included) with the engine's
    forwards when ``x``, the input about to go in, is :func:`eager_cpu_inference` (and the oneDNN ops
    exist); otherwise a ``nullcontext`` (what ``torch.compile`` / ``torch.export`` trace). Nested
    engagements leave the outer one's swaps alone. Modules it does not compute (:func:`handles`) keep
    their own forwards. The swap is per module instance: another thread
    running the same modules meanwhile gets the engine too, whose kernels check
    :func:`eager_cpu_inference` at every call and fall back to the plain computation."""
    return _swapped(root) if engages(root, x) else nullcontext()


def handles(root: nn.Module) -> bool:
    """Whether the engine's forwards compute what ``root``'s modules do: not for MaskGIT's blocks
    (ResNet shortcuts on the block's output, average-pool downsampling) nor Open-MAGVIT2's / SimVQ's
    (centred downsampling, depth-to-space upsampling, adaptive norms), which run as written."""
    return not any(
        (isinstance(m, ResnetBlock) and m.shortcut_from_output)
        or (isinstance(m, Downsample) and m.kind != "conv")
        or (isinstance(m, Upsample) and m.kind != "nearest")
        or isinstance(m, AdaptiveGroupNorm)
        for m in root.modules()
    )


@contextmanager
def _swapped(root: nn.Module) -> Iterator[None]:
    installed = []
    for module, name, fn in _plan(root):
        module = root if module is None else module
        if name not in module.__dict__:
            module.__dict__[name] = MethodType(fn, module)
            installed.append((module, name))
    try:
        yield
    finally:
        for module, name in installed:
            del module.__dict__[name]
