"""Batches of preprocessed pixels -> stored token ids or latents, by the codec's own encode.

Tokens are ``codec.encode`` and latents ``codec.encode_latents`` of the uint8 batch (the codec
slices and tiles as its memory policy says), so a float32 run stores exactly what they return. A
``bfloat16`` / ``float16`` run uses the codec's reduced-precision mode (``codec.to(dtype)``: the
networks in that dtype, the codebook and the nearest-code search in float32): tokens can then differ
from the float32 ones where two codes are nearly equidistant, which is why the run records its dtype.
"""

from __future__ import annotations

import torch
from torch import Tensor

from movq.codec import Codec


def token_dtype(codebook_size: int) -> torch.dtype:
    """Smallest integer dtype holding ids ``0 .. codebook_size - 1`` (uint16 up to 65536 codes)."""
    for dtype, limit in ((torch.uint8, 2**8), (torch.uint16, 2**16), (torch.uint32, 2**32)):
        if codebook_size <= limit:
            return dtype
    return torch.int64


@torch.inference_mode()
def encode_batch(codec: Codec, pixels: Tensor, *, latents: bool, store_dtype: torch.dtype) -> Tensor:
    """uint8 ``[B, 3, R, R]`` -> CPU tensor in ``store_dtype``: token ids ``[B, *tokens_shape]``
    (``codec.encode``; a multi-scale codec's per-scale maps concatenated coarse to fine, ``[B, L]``:
    :meth:`~movq.Codec.flat_tokens`) or latents ``[B, embed_dim, R/f, R/f]`` times ``config.scaling_factor``
    (``codec.encode_latents``).

    Raises ``ValueError`` if a latent does not fit ``store_dtype`` (float16 overflow).
    """
    pixels = pixels.to(codec.device, non_blocking=True)
    if not latents:
        return codec.flat_tokens(codec.encode(pixels)).to(store_dtype).cpu()
    z = codec.encode_latents(pixels).float()
    out = z.to(store_dtype)
    if not torch.isfinite(out).all():
        raise ValueError(f"latents overflow {store_dtype} (|latent| up to {z.abs().max().item():.4g}); "
                         "use --latent-dtype bfloat16")
    return out.cpu()
