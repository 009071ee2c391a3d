"""Quantizers: turn a continuous latent ``[B, D, H, W]`` into discrete codes and back.

Every quantizer file holds the quantizer and its config dataclass; :data:`QuantizerConfig` is the
union of the configs, which codec configs hold (in JSON, ``{"kind": "vq", ...}`` says which) and
which build their quantizer (``config.build(dim)``). A new quantizer is one file: a
:class:`QuantizerConfigBase` subclass with ``kind: Literal["name"] = "name"`` and ``build(dim)``,
and a :class:`Quantizer` subclass; then its config joins the union below.
"""

from __future__ import annotations

from typing import get_args

from .base import Quantizer, QuantizerConfigBase, QuantizerOutput
from .codes import (
    DEFAULT_CHUNK_SIZE,
    DENSE_HISTOGRAM_MAX,
    LOG_EPS,
    code_statistics,
    histogram_perplexity,
    histogram_statistics,
    nearest_code,
)
from .ema import EMAConfig, EMAVectorQuantizer
from .fsq import FSQ, FSQConfig
from .gumbel import GumbelConfig, GumbelQuantizer
from .index_propagation import IBQConfig, IndexPropagationQuantizer
from .lfq import LFQ, LFQConfig
from .multiscale import MultiScaleConfig, MultiScaleResidualVQ
from .projected import ProjectedConfig, ProjectedQuantizer
from .residual import ResidualConfig, ResidualVectorQuantizer
from .simvq import SimVQ, SimVQConfig
from .vq import VectorQuantizer, VQConfig

__all__ = [
    "DEFAULT_CHUNK_SIZE",
    "DENSE_HISTOGRAM_MAX",
    "FSQ",
    "LFQ",
    "LOG_EPS",
    "EMAConfig",
    "EMAVectorQuantizer",
    "FSQConfig",
    "GumbelConfig",
    "GumbelQuantizer",
    "IBQConfig",
    "IndexPropagationQuantizer",
    "LFQConfig",
    "MultiScaleConfig",
    "MultiScaleResidualVQ",
    "ProjectedConfig",
    "ProjectedQuantizer",
    "Quantizer",
    "QuantizerConfig",
    "QuantizerConfigBase",
    "QuantizerOutput",
    "ResidualConfig",
    "ResidualVectorQuantizer",
    "SimVQ",
    "SimVQConfig",
    "VQConfig",
    "VectorQuantizer",
    "build_quantizer",
    "code_statistics",
    "histogram_perplexity",
    "histogram_statistics",
    "nearest_code",
]

QuantizerConfig = (
    VQConfig | EMAConfig | GumbelConfig | ResidualConfig | FSQConfig | LFQConfig | IBQConfig | ProjectedConfig
    | MultiScaleConfig | SimVQConfig
)
"""Any quantizer config, told apart by its ``kind`` (``"vq"``, the first member's, when a dict has none)."""


def build_quantizer(config: QuantizerConfig, dim: int) -> Quantizer:
    """``config.build(dim)``: the quantizer described by ``config`` (one of :data:`QuantizerConfig`)
    for a latent of ``dim`` channels (the codec's ``embed_dim``); ``ValueError`` for anything else."""
    if not isinstance(config, QuantizerConfig):
        accepted = ", ".join(member.__name__ for member in get_args(QuantizerConfig))
        raise ValueError(f"expected a quantizer config (one of {accepted}), got {type(config).__name__}")
    return config.build(dim)
