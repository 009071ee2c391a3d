"""Quantizers: turn a continuous latent ``[B, D, H, W]`` into discrete codes and back."""

from __future__ import annotations

from ..config import EMAConfig, FSQConfig, GumbelConfig, LFQConfig, ResidualConfig, VQConfig
from .base import DEFAULT_CHUNK_SIZE, Quantizer, QuantizerOutput, code_statistics, nearest_code
from .ema import EMAVectorQuantizer
from .fsq import FSQ
from .gumbel import GumbelQuantizer
from .lfq import LFQ
from .residual import ResidualVectorQuantizer
from .vq import VectorQuantizer

__all__ = [
    "DEFAULT_CHUNK_SIZE",
    "EMAVectorQuantizer",
    "FSQ",
    "GumbelQuantizer",
    "LFQ",
    "Quantizer",
    "QuantizerOutput",
    "ResidualVectorQuantizer",
    "VectorQuantizer",
    "build_quantizer",
    "code_statistics",
    "nearest_code",
]


def build_quantizer(config: object, dim: int) -> Quantizer:
    """The quantizer described by ``config`` (a quantizer dataclass of :mod:`movq.config`).

    ``dim`` is the channel count of the latent it will quantize (the codec's ``embed_dim``).
    """
    if isinstance(config, VQConfig):
        return VectorQuantizer(
            config.codebook_size,
            dim,
            beta=config.beta,
            legacy=config.legacy,
            l2_normalize=config.l2_normalize,
            code_dim=config.code_dim,
            groups=config.groups,
        )
    if isinstance(config, EMAConfig):
        return EMAVectorQuantizer(
            config.codebook_size,
            dim,
            decay=config.decay,
            eps=config.eps,
            beta=config.beta,
            dead_code_threshold=config.dead_code_threshold,
            kmeans_init=config.kmeans_init,
        )
    if isinstance(config, GumbelConfig):
        return GumbelQuantizer(
            config.codebook_size,
            dim,
            in_channels=dim,
            temperature=config.temperature,
            kl_weight=config.kl_weight,
            hard=config.hard,
        )
    if isinstance(config, ResidualConfig):
        return ResidualVectorQuantizer(
            config.codebook_size,
            dim,
            config.depth,
            shared_codebook=config.shared_codebook,
            beta=config.beta,
            quantize_dropout=config.quantize_dropout,
        )
    if isinstance(config, FSQConfig):
        return FSQ(config.levels, dim=dim)
    if isinstance(config, LFQConfig):
        return LFQ(dim=dim, entropy_weight=config.entropy_weight, commitment_weight=config.commitment_weight)
    accepted = "VQConfig, EMAConfig, GumbelConfig, ResidualConfig, FSQConfig, LFQConfig"
    raise ValueError(
        f"build_quantizer expects one of {accepted} from movq.config, got {type(config).__name__}"
    )
