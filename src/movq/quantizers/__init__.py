"""Quantizers: turn a continuous latent ``[B, D, H, W]`` into discrete codes and back.

Every quantizer file holds the quantizer and its config dataclass; :data:`QUANTIZERS` maps each
``kind`` (the name in JSON configs) to its class. A new quantizer is one file: a
:class:`QuantizerConfig` subclass with ``kind: Literal["name"] = "name"``, and a :class:`Quantizer`
subclass declaring ``kind``, ``config_class`` and ``from_config``, added with
:func:`register_quantizer`.
"""

from __future__ import annotations

from dataclasses import fields, is_dataclass
from typing import Any

from .base import (
    DEFAULT_CHUNK_SIZE,
    LOG_EPS,
    Quantizer,
    QuantizerConfig,
    QuantizerOutput,
    code_statistics,
    histogram_perplexity,
    nearest_code,
)
from .ema import EMAConfig, EMAVectorQuantizer
from .fsq import FSQ, FSQConfig
from .gumbel import GumbelConfig, GumbelQuantizer
from .lfq import LFQ, LFQConfig
from .residual import ResidualConfig, ResidualVectorQuantizer
from .vq import VectorQuantizer, VQConfig

__all__ = [
    "DEFAULT_CHUNK_SIZE",
    "DEFAULT_KIND",
    "FSQ",
    "LFQ",
    "LOG_EPS",
    "QUANTIZERS",
    "EMAConfig",
    "EMAVectorQuantizer",
    "FSQConfig",
    "GumbelConfig",
    "GumbelQuantizer",
    "LFQConfig",
    "Quantizer",
    "QuantizerConfig",
    "QuantizerOutput",
    "ResidualConfig",
    "ResidualVectorQuantizer",
    "VQConfig",
    "VectorQuantizer",
    "build_quantizer",
    "code_statistics",
    "histogram_perplexity",
    "nearest_code",
    "quantizer_class",
    "quantizer_configs",
    "register_quantizer",
]

QUANTIZERS: dict[str, type[Quantizer]] = {
    cls.kind: cls for cls in (VectorQuantizer, EMAVectorQuantizer, GumbelQuantizer, ResidualVectorQuantizer, FSQ, LFQ)
}
"""The quantizer table ``{kind: class}``: codec configs are read and quantizers built through it."""
DEFAULT_KIND = VectorQuantizer.kind
"""Kind of a quantizer config dict that has no ``kind`` key."""


def register_quantizer(cls: type[Quantizer]) -> type[Quantizer]:
    """Add ``cls`` to :data:`QUANTIZERS` under ``cls.kind`` (also a class decorator); returns ``cls``.

    ``cls`` must declare ``kind`` and ``config_class``, a dataclass whose ``kind`` field defaults to
    ``cls.kind``. ``ValueError`` if another class already has that kind.
    """
    if not (isinstance(cls, type) and issubclass(cls, Quantizer)):
        raise TypeError(f"register_quantizer expects a Quantizer subclass, got {cls!r}")
    kind, config_class = getattr(cls, "kind", None), getattr(cls, "config_class", None)
    if not isinstance(kind, str) or not (isinstance(config_class, type) and is_dataclass(config_class)):
        raise TypeError(f"{cls.__name__} must declare kind (a str) and config_class (a dataclass)")
    kind_field = {f.name: f for f in fields(config_class)}.get("kind")
    if kind_field is None or kind_field.default != kind:
        raise ValueError(f"{config_class.__name__} needs a field kind: Literal[{kind!r}] = {kind!r}")
    if QUANTIZERS.get(kind, cls) is not cls:
        raise ValueError(f"quantizer kind {kind!r} is already taken by {QUANTIZERS[kind].__name__}")
    QUANTIZERS[kind] = cls
    return cls


def quantizer_configs() -> dict[str, type[Any]]:
    """``{kind: config dataclass}`` of the quantizers in :data:`QUANTIZERS`."""
    return {kind: cls.config_class for kind, cls in QUANTIZERS.items()}


def quantizer_class(config: Any) -> type[Quantizer]:
    """The class in :data:`QUANTIZERS` that ``config`` (a quantizer config dataclass) describes."""
    kind = getattr(config, "kind", None) if is_dataclass(config) else None
    cls = QUANTIZERS.get(kind) if isinstance(kind, str) else None
    if cls is None or not isinstance(config, cls.config_class):
        accepted = ", ".join(c.config_class.__name__ for c in QUANTIZERS.values())
        raise ValueError(f"expected a quantizer config (one of {accepted}), got {type(config).__name__}")
    return cls


def build_quantizer(config: Any, dim: int) -> Quantizer:
    """The quantizer described by ``config`` (a quantizer config dataclass, e.g. :class:`VQConfig`).

    ``dim`` is the channel count of the latent it will quantize (the codec's ``embed_dim``).
    """
    return quantizer_class(config).from_config(config, dim)
