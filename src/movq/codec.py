"""The codec: encoder -> quantizer -> decoder, with the user-facing encode / decode API."""

from __future__ import annotations

import contextlib
import math
import os
from collections.abc import Callable, Iterator
from contextlib import nullcontext
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Protocol

import torch
from torch import Tensor, nn

from movq.config import CodecConfig, record_config
from movq.hub.diffusers import DIFFUSERS_WEIGHTS, to_diffusers
from movq.hub.formats import DIFFUSERS, MOVQ, check_write_format
from movq.hub.upload import upload_folder, write_model_card
from movq.images import (
    ImageInput,
    batch_size_of,
    check_has_data,
    check_size,
    from_tensor,
    pad_to_multiple,
    to_tensor,
)
from movq.memory_budget import (
    activation_bytes,
    build_on_meta,
    check_memory_budget,
    check_parameters_fit,
    feature_bytes_per_pixel,
    image_bytes,
    module_bytes,
)
from movq.model_folder import (
    MODEL_WEIGHTS_FILE,
    check_finite_weights,
    load_strict,
    read_model_folder,
    save_model_folder,
    write_folder,
)
from movq.modules import cpu_engine
from movq.quantizers import MultiScaleResidualVQ, Quantizer, QuantizerOutput
from movq.tiling import (
    CPU_SLICE_BYTES,
    LOCKSTEP_MAPS,
    LOWERED_DTYPE,
    LockstepGroupStats,
    SharedGroupStats,
    StatisticsMode,
    TilePlan,
    TilingPolicy,
    Window,
    lowered_statistics,
    run_sliced,
    run_tiled,
    shared_norm_stats,
    shared_norms,
)

DEFAULT_INPUT_RANGE = (-1.0, 1.0)
"""The pixel range of the codec's API, and of every network whose config names no other."""
HALF_DTYPES = (torch.bfloat16, torch.float16)
"""Network dtypes below float32: the quantizer of such a codec stays in float32 (see ``Codec._apply``)."""


class NetworkConfig(Protocol):
    """What :class:`Codec` asks of a config (:class:`~movq.config.CodecConfig`,
    :class:`~movq.dvae.DVAEConfig`, ...): its networks and a few sizes.

    The encoder maps images ``[B, 3, H, W]`` in ``[-1, 1]`` to ``[B, C, H/f, W/f]`` (any pixel mapping
    of the family inside it), the decoder ``decoder(post_quant_conv(z_q), z_q)`` back to images in
    about ``[-1, 1]``. For tiling both expose ``local_stage`` / ``global_stage`` / ``local_scale``:
    the global stage (attention, at low resolution) sees the whole image, the local stage runs in
    tiles, ``local_scale`` is the local stage's grid relative to the latent grid (a network without
    attention is all local: global stage the identity, scale 1).
    """

    name: str
    embed_dim: int
    scaling_factor: float

    @property
    def downsample_factor(self) -> int: ...

    @property
    def activation_channels(self) -> int: ...

    def build_encoder(self) -> nn.Module: ...
    def build_quant_conv(self) -> nn.Module: ...
    def build_quantizer(self) -> Quantizer: ...
    def build_post_quant_conv(self) -> nn.Module: ...
    def build_decoder(self) -> nn.Module: ...
    def describe(self) -> str: ...
    def to_dict(self) -> dict[str, Any]: ...


def parameter_bytes(config: NetworkConfig) -> int:
    """Bytes of the parameters and buffers of ``Codec(config)``, counted on a build on the meta
    device (nothing is allocated)."""
    return module_bytes(build_on_meta(lambda: Codec(config)))


def search_dtype(z: Tensor) -> Tensor:
    """The pre-quantization latent ``z`` in float32 at least: a bfloat16 / float16 network hands its
    quantizer (kept in float32) float32 latents, so the nearest-code search runs in float32."""
    return z.to(torch.promote_types(z.dtype, torch.float32))


@dataclass
class CodecOutput:
    """Result of ``Codec.forward``: ``sample`` ``[B, 3, H, W]`` (unclamped, about ``[-1, 1]``) and
    the quantizer's output (``quantizer.loss`` is the codebook loss to add during training)."""

    sample: Tensor
    quantizer: QuantizerOutput


class Codec(nn.Module):
    """Image tokenizer: images -> discrete tokens (or continuous latents) -> images.

    Built from a :class:`~movq.config.CodecConfig` (or any :class:`NetworkConfig`, e.g. the
    :class:`~movq.dvae.DVAEConfig`: the codec assembles the networks its config builds). ``encode`` accepts PIL images (or lists), uint8
    numpy ``HWC`` / ``BHWC``, float tensors ``CHW`` / ``BCHW`` in ``[-1, 1]`` (or uint8 tensors),
    whose sides are multiples of ``downsample_factor`` ``f``, and returns ``LongTensor`` tokens
    ``[B, H/f, W/f]`` (``[B, depth, H/f, W/f]`` for residual / grouped quantizers; for a multi-scale
    quantizer, VAR's, a list of ``[B, s, s]`` maps, one per scale, coarse to fine). ``decode``
    returns a float tensor ``[B, 3, H, W]`` in ``[-1, 1]``. ``forward`` is the differentiable
    training path on ``[B, 3, H, W]`` tensors in ``[-1, 1]``.

    Submodule names match the published checkpoints: ``encoder``, ``quant_conv``, ``quantize``,
    ``post_quant_conv``, ``decoder`` (the 1x1 convolutions are ``nn.Identity`` in families without them).
    Cast to bfloat16 / float16 (``to``, ``movq.load(..., dtype=)``), the networks run in that dtype
    while the quantizer's codebook and nearest-code search stay in float32.
    """

    config_class = CodecConfig
    """The config dataclass that ``config.json`` holds (subclasses with other networks override it)."""
    tiling: TilingPolicy = TilingPolicy()
    """Memory bound of the user API (``encode``, ``decode``, ``encode_latents``, ``decode_latents``,
    ``reconstruct``): batch slicing and tiling; see :meth:`enable_tiling`."""

    def __init__(self, config: NetworkConfig) -> None:
        super().__init__()
        check_parameters_fit(
            lambda: Codec(config), config.describe(),
            "the config asks for far more parameters than such a network has; check those fields",
        )
        self.config = config
        self.encoder = config.build_encoder()
        self.quant_conv = config.build_quant_conv()
        self.quantize: Quantizer = config.build_quantizer()
        self.post_quant_conv = config.build_post_quant_conv()
        self.decoder = config.build_decoder()
        self.register_state_dict_post_hook(record_config)  # the config travels with torch.save(state_dict())

    # ----------------------------------------------------------------------------- properties

    @property
    def downsample_factor(self) -> int:
        """Pixels per token along each side (8 for the MoVQGAN presets)."""
        return self.config.downsample_factor

    @property
    def codebook_size(self) -> int:
        """Number of distinct token ids; valid ids are ``0 .. codebook_size - 1``."""
        return self.quantize.codebook_size

    @property
    def device(self) -> torch.device:
        return next(self.encoder.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        """The networks' dtype (the quantizer of a bf16 / fp16 codec stays in float32)."""
        return next(self.encoder.parameters()).dtype

    def activation_bytes(
        self, batch: int, height: int, width: int, *, dtype: torch.dtype | None = None, training: bool = False
    ) -> int:
        """Estimated peak bytes of one untiled forward (and backward when ``training``) over ``batch``
        images of ``height x width`` pixels in ``dtype`` (default: the codec's); see
        :func:`movq.memory_budget.activation_bytes`."""
        return activation_bytes(self.config, batch, height, width, dtype or self.dtype, training)

    def inference_bytes(
        self, batch: int, height: int, width: int, *, dtype: torch.dtype | None = None,
        device: torch.device | str | None = None,
    ) -> int:
        """Estimated peak bytes an ``encode`` / ``decode`` of ``batch`` images of ``height x width`` pixels
        holds on the codec's device under its tiling policy: the images, plus the activations of one
        forward -- all of them with tiling off, else at most the activation budget
        (:meth:`TilingPolicy.budget`, by default a share of the device's free memory), since larger
        batches are sliced and larger images tiled. ``movq-bench`` and ``movq-tokenize`` size their
        batches with it. ``dtype`` / ``device``: those the codec will run in (default: its own)."""
        images = image_bytes(batch, height, width)
        features = activation_bytes(self.config, batch, height, width, dtype or self.dtype) - images
        if self.tiling.mode != "off":
            features = min(features, self.tiling.budget(self.device if device is None else device))
        return images + features

    def tokens_shape(self, height: int, width: int) -> tuple[int, ...]:
        """Token grid (without the batch axis) of an image of ``height x width`` pixels."""
        check_size(height, width, self.downsample_factor)
        f = self.downsample_factor
        return self.quantize.indices_shape(height // f, width // f)

    def bits_per_pixel(self, height: int, width: int) -> float:
        """Rate of the token representation of one ``height x width`` image, in bits per pixel:
        ``log2(codebook_size) x tokens / (height x width)``.

        ``codebook_size`` is the number of ids a token can take (the product of the levels for FSQ,
        ``2 ** bits`` for LFQ); tokens are all entries of :meth:`tokens_shape`, so every depth of a
        residual quantizer (and every group of a grouped one) counts, each adding
        ``bits_per_pixel / depth``. A float; ``ValueError`` for sides that are not multiples of
        ``downsample_factor``."""
        tokens = math.prod(self.tokens_shape(height, width))
        return math.log2(self.codebook_size) * tokens / (height * width)

    # ----------------------------------------------------------------------------- tensor paths

    @property
    def input_range(self) -> tuple[float, float]:
        """The pixel range the networks were trained on (``config.input_range``; ``(-1.0, 1.0)`` for
        configs without one). Every method takes and returns ``[-1, 1]``: images are mapped into this
        range before the encoder (:meth:`to_network_range`) and the decoder's output back
        (:meth:`from_network_range`)."""
        low, high = getattr(self.config, "input_range", DEFAULT_INPUT_RANGE)
        return float(low), float(high)

    def to_network_range(self, x: Tensor) -> Tensor:
        """Pixels in ``[-1, 1]`` -> the same pixels in :attr:`input_range` (identity for ``[-1, 1]``)."""
        low, high = self.input_range
        if (low, high) == DEFAULT_INPUT_RANGE:
            return x
        return (x + 1.0) * ((high - low) / 2.0) + low

    def from_network_range(self, y: Tensor) -> Tensor:
        """The decoder's pixels in :attr:`input_range` -> ``[-1, 1]`` (inverse of :meth:`to_network_range`)."""
        low, high = self.input_range
        if (low, high) == DEFAULT_INPUT_RANGE:
            return y
        return (y - low) * (2.0 / (high - low)) - 1.0

    def encode_to_prequant(self, x: Tensor) -> Tensor:
        """``[B, 3, H, W]`` in ``[-1, 1]`` -> continuous latent ``[B, embed_dim, H/f, W/f]`` (no scaling)."""
        with cpu_engine.engaged(self, x):
            return self.quant_conv(self.encoder(self.to_network_range(x)))

    def decode_from_quantized(self, z_q: Tensor) -> Tensor:
        """Quantized (or continuous) latent ``[B, embed_dim, h, w]`` -> image ``[B, 3, h*f, w*f]`` about
        ``[-1, 1]``, unclamped."""
        z_q = z_q.to(self.dtype)
        with cpu_engine.engaged(self, z_q):
            return self.from_network_range(self.decoder(self.post_quant_conv(z_q), z_q))

    def forward(self, x: Tensor) -> CodecOutput:
        """Differentiable reconstruction of ``x`` ``[B, 3, H, W]`` in ``[-1, 1]`` (for training)."""
        quantized = self.quantize(search_dtype(self.encode_to_prequant(x)))
        return CodecOutput(self.decode_from_quantized(quantized.z_q), quantized)

    def _apply(self, fn: Any, recurse: bool = True) -> Codec:
        """``to`` / ``half`` / ``bfloat16`` / ``cuda`` ...: a cast to bfloat16 or float16 reaches the
        networks but not the quantizer, whose codebook (and so the nearest-code search) stays in
        float32; a device move reaches everything."""
        if not recurse:
            return super()._apply(fn, recurse)

        def codebook_fn(t: Tensor) -> Tensor:
            target = fn(t.new_empty(0))  # where and in which dtype fn would put t
            if t.is_floating_point() and target.dtype in HALF_DTYPES:
                return t.to(device=target.device, dtype=torch.promote_types(t.dtype, torch.float32))
            return fn(t)

        for child in self.children():
            child._apply(codebook_fn if child is self.quantize else fn)
        return super()._apply(fn, recurse=False)

    # ----------------------------------------------------------------------------- memory bound

    def enable_tiling(
        self,
        tile_size: int = 512,
        overlap: int = 32,
        *,
        auto: bool = False,
        memory_budget: int | None = None,
        stat_passes: int | None = None,
        statistics: StatisticsMode | None = None,
    ) -> None:
        """Encode and decode images larger than ``tile_size`` pixels in overlapping tiles.

        ``tile_size`` and ``overlap`` are in pixels, multiples of ``downsample_factor``, with
        ``overlap < tile_size / 2``; neighbouring tiles are blended linearly across the overlap.
        ``auto=True`` restores the default: tile only images whose activations alone would exceed
        ``memory_budget`` bytes (by default half the memory free on the codec's device when the call
        starts: :func:`movq.memory_budget.device_activation_budget`). Batches above the budget are always sliced.
        The levels with attention (at latent resolution in the presets) always see the whole image;
        the others run in tiles that share the image's GroupNorm statistics. ``statistics="exact"``
        runs the tiles in lockstep, so each is normalised with the untiled statistics (tiled decode
        66-81 dB from untiled on real photos, in about 1.15x the untiled time, holding 1.25 (CPU) to 2.5
        feature maps of the whole image); ``"bf16"`` gathers them with that lockstep pass on a bfloat16 copy
        of the network (half its memory; a float32 codec), then decodes the float32 tiles with them;
        ``"passes"`` estimates them with ``stat_passes`` extra passes over the tiles (default 2; 0
        lets each tile use its own: memory of one tile, 27 to 47 dB at 1024 px); ``"auto"``
        (default) takes the first of ``"exact"`` and ``"bf16"`` that fits the memory budget, else
        ``"passes"`` (:meth:`TilingPolicy.plan`).
        """
        f = self.downsample_factor
        for name, value in (("tile_size", tile_size), ("overlap", overlap)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 0 or value % f:
                raise ValueError(f"{name} must be a non-negative multiple of the downsample factor {f}, got {value!r}")
        budget = self.tiling.memory_budget if memory_budget is None else memory_budget
        passes = self.tiling.stat_passes if stat_passes is None else stat_passes
        statistics = self.tiling.statistics if statistics is None else statistics
        self.tiling = TilingPolicy("auto" if auto else "on", tile_size // f, overlap // f, budget, passes, statistics)

    def disable_tiling(self) -> None:
        """Never tile (batches above the memory budget are still sliced); ``enable_tiling(auto=True)``
        restores the default automatic tiling."""
        self.tiling = replace(self.tiling, mode="off")

    def _bytes_per_position(self) -> float:
        """Activation bytes of one image per latent position (:func:`feature_bytes_per_pixel`)."""
        return feature_bytes_per_pixel(self.config, self.dtype) * self.downsample_factor**2

    def _plan(self, x: Tensor, in_scale: int) -> TilePlan:
        """The :class:`~movq.tiling.TilePlan` of ``x`` on a grid of ``x``'s size / ``in_scale``, with the
        budget of ``x``'s device read once for the whole call."""
        cache = CPU_SLICE_BYTES if x.device.type == "cpu" else None
        maps = cpu_engine.LOCKSTEP_MAPS if cpu_engine.engages(self, x) else LOCKSTEP_MAPS
        return self.tiling.plan(x.shape[0], x.shape[-2] // in_scale, x.shape[-1] // in_scale, self._bytes_per_position(),
                                cache, budget=self.tiling.budget(x.device), lowered=self._lowered_statistics_possible(),
                                lockstep_maps=maps)

    def _lowered_statistics_possible(self) -> bool:
        """Whether ``statistics="bf16"`` can gather the statistics on a bfloat16 copy: a float32 codec,
        on a device with bfloat16 arithmetic."""
        if self.dtype != torch.float32:
            return False
        return self.device.type != "cuda" or torch.cuda.is_bf16_supported()

    def _tiles(self, stage: Callable[[nn.Module, Window, torch.dtype], Tensor], grid: tuple[int, int],
               out_scale: int, module: nn.Module, plan: TilePlan) -> Tensor:
        """:func:`~movq.tiling.run_tiled` of ``stage(module, window, dtype)`` (the tile's output, its
        inputs cast to ``dtype``) as ``plan`` says; ``module``'s norms (if any) share statistics: exact
        (lockstep), from a bfloat16 lockstep pass, or gathered by passes (:attr:`TilePlan.statistics`)."""
        assert plan.tile is not None
        overlap = self.tiling.overlap
        stats: SharedGroupStats | None = None
        passes = self.tiling.stat_passes
        if shared_norms(module):
            if plan.statistics == "exact":
                stats = LockstepGroupStats()
            elif plan.statistics == "bf16":
                assert plan.lockstep_tile is not None
                stats, passes = lowered_statistics(module, lambda lowered, lockstep: run_tiled(
                    lambda window: stage(lowered, window, LOWERED_DTYPE), grid, tile=plan.lockstep_tile,
                    overlap=overlap, out_scale=out_scale, stats=lockstep,
                )), 0
            elif passes:
                stats = SharedGroupStats()
        with shared_norm_stats(module, stats) if stats is not None else nullcontext():
            return run_tiled(
                lambda window: stage(module, window, self.dtype), grid, tile=plan.tile, overlap=overlap,
                out_scale=out_scale, stats=stats, stat_passes=passes,
            )

    def _encode_tiled(self, x: Tensor, plan: TilePlan) -> Tensor:
        """Pre-quantization latent of ``x`` with the encoder's local stage in tiles (the attention
        levels, at latent resolution, see the whole image)."""
        f = self.downsample_factor
        grid = (x.shape[-2] // f, x.shape[-1] // f)
        x = self.to_network_range(x)
        h = self._tiles(
            lambda encoder, window, dtype: encoder.local_stage(window.crop(x, f).to(dtype)), grid,
            self.encoder.local_scale, self.encoder, plan,
        )
        return self.quant_conv(self.encoder.global_stage(h))

    def _decode_tiled(self, z_q: Tensor, plan: TilePlan) -> Tensor:
        """Image of ``z_q`` with the decoder's local stage in tiles; every tile gets the matching
        slice of ``z_q`` for its SpatialNorm layers."""
        h = self.decoder.global_stage(self.post_quant_conv(z_q), z_q)
        scale = self.decoder.local_scale
        return self.from_network_range(self._tiles(
            lambda decoder, window, dtype: decoder.local_stage(window.crop(h, scale).to(dtype), window.crop(z_q).to(dtype)),
            tuple(z_q.shape[-2:]), self.downsample_factor, self.decoder, plan,
        ))

    def encode_to_prequant_bounded(self, x: Tensor) -> Tensor:
        """:meth:`encode_to_prequant` within the memory policy: batches sliced, large images tiled."""
        plan = self._plan(x, self.downsample_factor)
        fn = self.encode_to_prequant if plan.tile is None else (lambda part: self._encode_tiled(part, plan))
        with cpu_engine.engaged(self, x):
            return run_sliced(fn, x, plan.images)

    def _decode_bounded(self, z_q: Tensor) -> Tensor:
        plan = self._plan(z_q, 1)
        fn = self.decode_from_quantized if plan.tile is None else (lambda part: self._decode_tiled(part, plan))
        with cpu_engine.engaged(self, z_q):
            return run_sliced(fn, z_q, plan.images)

    # ----------------------------------------------------------------------------- user API

    @property
    def multiscale(self) -> bool:
        """Whether the tokens are a ladder of scales (VAR's multi-scale quantizer): ``encode`` then
        returns one ``[B, s, s]`` map per scale, coarse to fine, and ``tokens_shape`` is ``(L,)``, the
        maps flattened and concatenated in that order (the layout ``movq-tokenize`` stores)."""
        return isinstance(self.quantize, MultiScaleResidualVQ)

    @torch.no_grad()
    def encode(self, images: ImageInput, *, pad: bool = False) -> Tensor | list[Tensor]:
        """Images -> ``LongTensor`` tokens ``[B, *tokens_shape(H, W)]`` on the codec's device; for a
        multi-scale codec (:attr:`multiscale`) a list of ``[B, s, s]`` maps, one per scale, coarse to
        fine (VAR's ``img_to_idxBl``, each map unflattened)."""
        x = self._prepare(images, pad)
        with self._inference():
            tokens = self.quantize.indices(search_dtype(self.encode_to_prequant_bounded(x)))
        return self.quantize.split_scales(tokens) if self.multiscale else tokens

    def flat_tokens(self, tokens: Tensor | list[Tensor]) -> Tensor:
        """Tokens as one ``[B, *tokens_shape]`` tensor: a multi-scale codec's list of per-scale maps
        (``[B, s, s]`` or VAR's ``[B, s * s]``) concatenated coarse to fine into ``[B, L]``; other
        tokens unchanged."""
        if self.multiscale and isinstance(tokens, (list, tuple)):
            return self.quantize.join_scales(tokens)
        return tokens

    @torch.no_grad()
    def decode(self, tokens: Tensor | list[Tensor], *, clamp: bool = True) -> Tensor:
        """``LongTensor`` tokens ``[B, *tokens_shape]`` -> float images ``[B, 3, H, W]`` in ``[-1, 1]``.
        A multi-scale codec takes :meth:`encode`'s list of per-scale maps (or the flat ``[B, L]``)."""
        tokens = self.flat_tokens(tokens)
        self._check_tokens(tokens)
        with self._inference():
            z_q = self.quantize.embed(tokens.to(self.device)).to(self.dtype)
            image = self._decode_bounded(z_q)
        return image.clamp(-1.0, 1.0) if clamp else image

    def encode_latents(self, images: ImageInput, *, pad: bool = False) -> Tensor:
        """Images -> continuous pre-quantization latents ``[B, embed_dim, H/f, W/f]`` times
        ``config.scaling_factor`` (for latent diffusion). Differentiable for tensor input."""
        x = self._prepare(images, pad)
        return self.encode_to_prequant_bounded(x) * self.config.scaling_factor

    def decode_latents(self, latents: Tensor, *, quantize: bool = False, clamp: bool = True) -> Tensor:
        """Scaled latents ``[B, embed_dim, h, w]`` -> images ``[B, 3, h*f, w*f]`` in ``[-1, 1]``.

        ``quantize=False`` (default) decodes the continuous latent directly, as Kandinsky's MoVQ
        does for diffusion latents; ``quantize=True`` snaps it to the codebook first.
        """
        if not isinstance(latents, Tensor) or not latents.is_floating_point() or latents.ndim != 4:
            raise TypeError(f"latents must be a float tensor [B, {self.config.embed_dim}, h, w]")
        if latents.shape[1] != self.config.embed_dim or 0 in latents.shape:
            raise ValueError(
                f"latents must have shape [B>0, {self.config.embed_dim}, h>0, w>0], got {tuple(latents.shape)}"
            )
        check_has_data(latents, "latents")
        f = self.downsample_factor
        self._check_memory(latents.shape[0], latents.shape[-2] * f, latents.shape[-1] * f, "decoding latents")
        if not torch.isfinite(latents).all():
            raise ValueError("latents contain NaN or inf values")
        z = latents.to(self.device, self.dtype) / self.config.scaling_factor
        if quantize:
            with self._inference():
                z = self.quantize(search_dtype(z)).z_q
        image = self._decode_bounded(z)
        return image.clamp(-1.0, 1.0) if clamp else image

    @torch.no_grad()
    def reconstruct(self, images: ImageInput, *, pad: bool = False) -> Any:
        """Encode and decode; returns the input's type (PIL in, PIL out; numpy in, numpy out; ...)."""
        self._check_input_memory(images, pad)
        x, fmt = to_tensor(images)
        height, width = x.shape[-2:]
        with self._inference():
            z = self.encode_to_prequant_bounded(self._fit(x, pad))
            out = self.decode(self.quantize.indices(search_dtype(z)))
        return from_tensor(out[..., :height, :width], fmt)

    def _prepare(self, images: ImageInput, pad: bool) -> Tensor:
        self._check_input_memory(images, pad)
        return self._fit(to_tensor(images)[0], pad)

    @contextlib.contextmanager
    def _inference(self) -> Iterator[None]:
        """Every submodule in eval mode for the duration (an EMA codebook is not updated by ``encode``,
        Gumbel codes are deterministic, no dropout), each one's mode restored afterwards."""
        training = [m for m in self.modules() if m.training]
        for module in training:
            module.training = False
        try:
            yield
        finally:
            for module in training:
                module.training = True

    def _check_input_memory(self, images: ImageInput, pad: bool) -> None:
        """Refuse images whose activations cannot fit, before they are converted (a huge expanded tensor)."""
        size = batch_size_of(images)
        if size is not None:
            batch, height, width = size
            f = self.downsample_factor
            if pad:
                height, width = height + (-height % f), width + (-width % f)
            self._check_memory(batch, height, width, "encoding images")

    def _check_memory(self, batch: int, height: int, width: int, what: str) -> None:
        """``MemoryBudgetError`` (a ``ValueError``) when the activations of ``batch`` images of
        ``height x width`` cannot fit on the codec's device."""
        if min(batch, height, width) < 1:
            return
        check_memory_budget(
            self.inference_bytes(batch, height, width), self.device, f"{what}: {batch} image(s) of {height}x{width} pixels",
            "use smaller images or fewer at a time",
        )

    def _fit(self, x: Tensor, pad: bool) -> Tensor:
        """Pad ``x`` to valid sizes (or check them) and move it to the codec's device and dtype."""
        if pad:
            x = pad_to_multiple(x, self.downsample_factor)
        else:
            check_size(x.shape[-2], x.shape[-1], self.downsample_factor)
        return x.to(self.device, self.dtype)

    def _check_tokens(self, tokens: Tensor) -> None:
        if not isinstance(tokens, Tensor):
            raise TypeError(f"tokens must be a torch.LongTensor, got {type(tokens).__name__}")
        if tokens.is_floating_point() or tokens.is_complex() or tokens.dtype == torch.bool:
            raise TypeError(f"tokens must be an integer tensor (torch.long), got dtype {tokens.dtype}")
        if self.multiscale:
            return self._check_multiscale_tokens(tokens)
        grid_rank = len(self.quantize.indices_shape(1, 1))
        if tokens.ndim != grid_rank + 1:
            expected = "[B, h, w]" if grid_rank == 2 else "[B, depth, h, w]"
            raise ValueError(f"tokens must have shape {expected} (batch first), got {tuple(tokens.shape)}")
        if tokens.shape[0] == 0 or tokens.numel() == 0:
            raise ValueError(f"empty batch: tokens have shape {tuple(tokens.shape)}")
        check_has_data(tokens, "tokens")
        h, w = tokens.shape[-2:]
        expected_grid = self.quantize.indices_shape(h, w)
        if tuple(tokens.shape[1:]) != tuple(expected_grid):
            raise ValueError(f"token grid {tuple(tokens.shape[1:])} does not match this codec's {expected_grid}")
        if torch.compiler.is_compiling():  # data-dependent: not part of a traced graph
            return
        f = self.downsample_factor
        self._check_memory(tokens.shape[0], h * f, w * f, "decoding tokens")
        low, high = tokens.min().item(), tokens.max().item()
        if low < 0 or high >= self.codebook_size:
            raise ValueError(
                f"token ids must be in [0, {self.codebook_size}), got values in [{low}, {high}]"
            )

    def _check_multiscale_tokens(self, tokens: Tensor) -> None:
        """The checks of :meth:`_check_tokens` for a multi-scale codec's flat tokens ``[B, L]``."""
        quantize = self.quantize
        if tokens.ndim != 2 or tokens.shape[0] == 0 or tokens.shape[1] != quantize.token_count:
            raise ValueError(
                f"tokens must be a list of {len(quantize.scales)} maps [B, s, s] (scales {list(quantize.scales)}) "
                f"or their concatenation [B, {quantize.token_count}], got a tensor of shape {tuple(tokens.shape)}"
            )
        check_has_data(tokens, "tokens")
        if torch.compiler.is_compiling():
            return
        side = quantize.side * self.downsample_factor
        self._check_memory(tokens.shape[0], side, side, "decoding tokens")
        low, high = tokens.min().item(), tokens.max().item()
        if low < 0 or high >= self.codebook_size:
            raise ValueError(f"token ids must be in [0, {self.codebook_size}), got values in [{low}, {high}]")

    # ----------------------------------------------------------------------------- persistence

    def save_pretrained(
        self, save_directory: str | os.PathLike, format: str = MOVQ, *, license: str | None = None
    ) -> Path:
        """Write ``config.json`` and ``model.safetensors`` into ``save_directory`` (atomically), and
        the model card ``README.md`` (:func:`movq.hub.upload.model_card`: ``library_name: movq``, tags,
        ``license`` -- a Hub license id, ``"other"`` when not given -- and the preprocessing) unless
        the folder already has a ``README.md``, which is kept. Returns the folder.

        ``format="diffusers"`` writes ``config.json`` + ``diffusion_pytorch_model.safetensors`` for
        ``diffusers.VQModel.from_pretrained`` instead (converted by :func:`movq.hub.diffusers.to_diffusers`);
        a codec ``VQModel`` cannot represent is refused with a ``ValueError`` before anything is written.
        """
        return self._save_folder(save_directory, format, license=license)

    def _save_folder(
        self, save_directory: str | os.PathLike, format: str, *, license: str | None = None, repo_id: str | None = None
    ) -> Path:
        check_write_format(format)
        if format == DIFFUSERS:
            try:
                config, state = to_diffusers(self.config, self.state_dict())
            except ValueError as error:
                raise ValueError(f"{error}; save this codec in the movq format (format={MOVQ!r})") from None
            folder = write_folder(save_directory, config, state, weights_file=DIFFUSERS_WEIGHTS)
        else:
            folder = save_model_folder(save_directory, self, self.config)
        write_model_card(folder, self.config, format=format, repo_id=repo_id, license=license)
        return folder

    def push_to_hub(
        self,
        repo_id: str,
        *,
        format: str = MOVQ,
        private: bool | None = None,
        token: str | bool | None = None,
        revision: str | None = None,
        commit_message: str | None = None,
        create_pr: bool = False,
        api: Any = None,
        license: str | None = None,
    ) -> Any:
        """Save this codec in ``format`` ("movq" or "diffusers") to a temporary folder, with its model
        card (``README.md``, whose usage snippet names ``repo_id``; ``license`` as in
        :meth:`save_pretrained`), and upload it to the Hugging Face Hub repo ``repo_id`` (created if
        needed). Returns the upload's ``CommitInfo``; ``api`` defaults to ``huggingface_hub.HfApi(token=token)``."""
        check_write_format(format)
        return upload_folder(
            lambda folder: self._save_folder(folder, format, license=license, repo_id=repo_id),
            repo_id,
            commit_message=commit_message or f"Upload {self.config.name} ({format} format) with movq",
            private=private, token=token, revision=revision, create_pr=create_pr, api=api,
        )

    @classmethod
    def from_pretrained(
        cls,
        directory: str | os.PathLike,
        *,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> Codec:
        """Load a folder written by :meth:`save_pretrained`, strictly (every key must match); a
        bad ``config.json`` or ``model.safetensors`` is an error naming the file and the problem.

        This is ``movq.load``'s reader of movq folders (``movq.load(directory)`` calls it).
        """
        config, state = read_model_folder(directory, cls.config_class, "a movq codec folder")
        try:
            codec = cls.from_state_dict(config, state)
        except ValueError as error:  # the weights do not match the config
            raise ValueError(f"{Path(directory) / MODEL_WEIGHTS_FILE}: {error}") from None
        return codec.to(device=device, dtype=dtype)

    @classmethod
    def from_state_dict(cls, config: Any, state: dict[str, Tensor]) -> Codec:
        """Build ``cls(config)`` and load ``state`` strictly (:meth:`load_state_dict_strict`); eval mode."""
        codec = cls(config)
        codec.load_state_dict_strict(state)
        return codec.eval()

    def load_state_dict_strict(self, state: dict[str, Tensor]) -> None:
        """Load ``state`` requiring exactly this codec's keys and shapes, and finite values; the error
        lists any mismatch (NaN / inf weights would silently give NaN images, decoded as black)."""
        check_finite_weights(state)
        load_strict(self, state, f"checkpoint does not match codec {self.config.name!r}")
