"""Batches of preprocessed pixels -> stored token ids or latents, computed as ``codec.encode`` does.

With ``dtype=float32`` the path is op for op ``codec.encode`` (tokens) and ``codec.encode_latents``
(latents), so the stored tokens are bit-identical to theirs. With ``bfloat16`` / ``float16`` (the
fast path) the encoder runs in that dtype and in the channels-last memory layout (faster oneDNN /
cuDNN convolutions) while the quantizer stays in float32 (full-precision codebook, float32
nearest-code search): tokens can then differ from the float32 ones where two codes are nearly
equidistant, which is why the run records its dtype.
"""

from __future__ import annotations

import torch
from torch import Tensor

from movq.images import to_tensor


def token_dtype(codebook_size: int) -> torch.dtype:
    """Smallest integer dtype holding ids ``0 .. codebook_size - 1`` (uint16 up to 65536 codes)."""
    for dtype, limit in ((torch.uint8, 2**8), (torch.uint16, 2**16), (torch.uint32, 2**32)):
        if codebook_size <= limit:
            return dtype
    return torch.int64


def prepare_codec(codec: torch.nn.Module, dtype: torch.dtype, device: torch.device) -> torch.nn.Module:
    """Move ``codec`` to ``device`` in eval mode; every submodule but the quantizer takes ``dtype``
    (and, below float32, the channels-last layout)."""
    codec = codec.to(device=device, dtype=torch.float32).eval()
    for name, child in codec.named_children():
        if name != "quantize":
            child.to(dtype)
            if dtype != torch.float32:
                child.to(memory_format=torch.channels_last)
    return codec


@torch.inference_mode()
def encode_batch(codec: torch.nn.Module, pixels: Tensor, *, latents: bool, store_dtype: torch.dtype) -> Tensor:
    """uint8 ``[B, 3, R, R]`` -> CPU tensor in ``store_dtype``: token ids ``[B, *tokens_shape]`` or
    latents ``[B, embed_dim, R/f, R/f]`` times ``config.scaling_factor``.

    Raises ``ValueError`` if a latent does not fit ``store_dtype`` (float16 overflow).
    """
    x = to_tensor(pixels.to(codec.device, non_blocking=True))[0].to(codec.dtype)
    if x.dtype != torch.float32:
        x = x.contiguous(memory_format=torch.channels_last)
    # CPU: the codec's bounded path (cache-sized slices, tiles above the memory budget), as
    # codec.encode; elsewhere one forward per batch, which the tokenizer's memory check has sized.
    bounded = x.device.type == "cpu"
    z = (codec.encode_to_prequant_bounded(x) if bounded else codec.encode_to_prequant(x)).float()
    if latents:
        out = (z * codec.config.scaling_factor).to(store_dtype)
        if not torch.isfinite(out).all():
            raise ValueError(f"latents overflow {store_dtype} (|z| up to {z.abs().max().item():.4g}); "
                             "use --latent-dtype bfloat16")
        return out.cpu()
    return codec.quantize(z).indices.to(store_dtype).cpu()
