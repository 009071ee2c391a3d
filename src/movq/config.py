"""Codec configuration: dataclasses that serialise to JSON, and the named presets.

A :class:`CodecConfig` fully describes the architecture of a codec; ``Codec(config)`` builds it.
The field names follow the published configs (taming-transformers / MoVQGAN ``ddconfig``), so a
published config maps onto one of these field by field.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Literal, Union

from movq.strict import dataclass_from_dict

# ---------------------------------------------------------------------------------------------
# Quantizer configs: one dataclass per quantizer; the codec passes its ``embed_dim`` as ``dim``.


@dataclass
class VQConfig:
    """Nearest-neighbour codebook trained by gradients (:class:`movq.quantizers.VectorQuantizer`)."""

    codebook_size: int = 16384
    beta: float = 0.25
    legacy: bool = True
    l2_normalize: bool = False
    code_dim: int | None = None
    groups: int = 1
    kind: Literal["vq"] = "vq"


@dataclass
class EMAConfig:
    """Codebook updated by exponential moving averages (:class:`movq.quantizers.EMAVectorQuantizer`)."""

    codebook_size: int = 16384
    decay: float = 0.99
    eps: float = 1e-5
    beta: float = 0.25
    dead_code_threshold: float = 1.0
    kmeans_init: bool = False
    kind: Literal["ema"] = "ema"


@dataclass
class GumbelConfig:
    """Gumbel-softmax quantizer (:class:`movq.quantizers.GumbelQuantizer`)."""

    codebook_size: int = 8192
    temperature: float = 1.0
    kl_weight: float = 5e-4
    hard: bool = True
    kind: Literal["gumbel"] = "gumbel"


@dataclass
class ResidualConfig:
    """Residual quantization, RQ-VAE (:class:`movq.quantizers.ResidualVectorQuantizer`)."""

    codebook_size: int = 16384
    depth: int = 4
    shared_codebook: bool = True
    beta: float = 0.25
    quantize_dropout: bool = False
    kind: Literal["residual"] = "residual"


@dataclass
class FSQConfig:
    """Finite scalar quantization (:class:`movq.quantizers.FSQ`); ``dim == len(levels)``."""

    levels: tuple[int, ...] = (8, 5, 5, 5)
    kind: Literal["fsq"] = "fsq"


@dataclass
class LFQConfig:
    """Lookup-free quantization (:class:`movq.quantizers.LFQ`); ``codebook_size == 2 ** dim``."""

    entropy_weight: float = 0.1
    commitment_weight: float = 0.25
    kind: Literal["lfq"] = "lfq"


QuantizerConfig = Union[VQConfig, EMAConfig, GumbelConfig, ResidualConfig, FSQConfig, LFQConfig]
_QUANTIZER_CONFIGS: dict[str, type] = {
    "vq": VQConfig,
    "ema": EMAConfig,
    "gumbel": GumbelConfig,
    "residual": ResidualConfig,
    "fsq": FSQConfig,
    "lfq": LFQConfig,
}


# ---------------------------------------------------------------------------------------------


@dataclass
class CodecConfig:
    """Architecture of an encoder / quantizer / decoder codec.

    ``resolution`` is the training resolution; with ``ch_mult`` it places the attention blocks
    (a level whose feature size at that resolution is in ``attn_resolutions`` gets attention).
    The codec itself runs at any size that is a multiple of ``2 ** (len(ch_mult) - 1)``.
    ``norm="spatial"`` gives the MoVQ decoder, ``norm="group"`` the plain VQGAN decoder.
    ``scaling_factor`` multiplies the continuous latents of ``Codec.encode_latents``.
    """

    name: str = "custom"
    in_channels: int = 3
    out_channels: int = 3
    ch: int = 128
    ch_mult: tuple[int, ...] = (1, 2, 2, 4)
    num_res_blocks: int = 2
    attn_resolutions: tuple[int, ...] = (32,)
    resolution: int = 256
    z_channels: int = 4
    embed_dim: int = 4
    dropout: float = 0.0
    norm: Literal["spatial", "group"] = "spatial"
    quantizer: QuantizerConfig = field(default_factory=VQConfig)
    scaling_factor: float = 1.0

    def __post_init__(self) -> None:
        self.ch_mult = tuple(self.ch_mult)
        self.attn_resolutions = tuple(self.attn_resolutions)
        if isinstance(self.quantizer, dict):
            self.quantizer = quantizer_config_from_dict(self.quantizer)
        if self.norm not in ("spatial", "group"):
            raise ValueError(f"norm must be 'spatial' (MoVQ) or 'group' (VQGAN), got {self.norm!r}")
        if not self.ch_mult or any(m < 1 for m in self.ch_mult):
            raise ValueError(f"ch_mult must be a non-empty tuple of positive ints, got {self.ch_mult}")
        if self.ch % 32 or self.ch < 32:
            raise ValueError(f"ch must be a positive multiple of 32 (GroupNorm(32)), got {self.ch}")

    @property
    def downsample_factor(self) -> int:
        """Pixels per token along each side."""
        return 2 ** (len(self.ch_mult) - 1)

    @property
    def codebook_size(self) -> int:
        """Number of distinct token ids per position (and per level / group)."""
        q = self.quantizer
        if isinstance(q, FSQConfig):
            size = 1
            for level in q.levels:
                size *= level
            return size
        if isinstance(q, LFQConfig):
            return 2**self.embed_dim
        return q.codebook_size

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-serialisable dict (tuples become lists)."""
        return asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> CodecConfig:
        """Inverse of :meth:`to_dict`; unknown keys are an error naming them."""
        return dataclass_from_dict(cls, data)

    @classmethod
    def from_json(cls, text: str) -> CodecConfig:
        return cls.from_dict(json.loads(text))

    def save(self, path: str | Path) -> None:
        Path(path).write_text(self.to_json() + "\n")

    @classmethod
    def load(cls, path: str | Path) -> CodecConfig:
        return cls.from_json(Path(path).read_text())


def quantizer_config_from_dict(data: dict[str, Any]) -> QuantizerConfig:
    """Build the quantizer config named by ``data["kind"]``."""
    kind = data.get("kind", "vq")
    if kind not in _QUANTIZER_CONFIGS:
        raise ValueError(f"unknown quantizer kind {kind!r}; expected one of {sorted(_QUANTIZER_CONFIGS)}")
    values = dict(data)
    if "levels" in values:
        values["levels"] = tuple(values["levels"])
    return dataclass_from_dict(_QUANTIZER_CONFIGS[kind], values)


# ---------------------------------------------------------------------------------------------
# Presets. Parameter counts (checked in tests) match the published models exactly.

MOVQGAN_67M = CodecConfig(name="movqgan-67m")
MOVQGAN_102M = replace(MOVQGAN_67M, name="movqgan-102m", num_res_blocks=4)
MOVQGAN_270M = replace(MOVQGAN_67M, name="movqgan-270m", ch=256)
VQGAN_F16_16384 = CodecConfig(
    name="vqgan-f16-16384",
    ch_mult=(1, 1, 2, 2, 4),
    attn_resolutions=(16,),
    z_channels=256,
    embed_dim=256,
    norm="group",
    quantizer=VQConfig(codebook_size=16384),
)
VQGAN_GUMBEL_F8_8192 = CodecConfig(
    name="vqgan-gumbel-f8-8192",
    ch_mult=(1, 1, 2, 4),
    attn_resolutions=(32,),
    z_channels=256,
    embed_dim=256,
    norm="group",
    quantizer=GumbelConfig(codebook_size=8192, kl_weight=1e-8),
)
MOVQGAN_TINY = CodecConfig(
    name="movqgan-tiny",
    ch=32,
    ch_mult=(1, 2, 2, 4),
    num_res_blocks=1,
    attn_resolutions=(8,),
    resolution=64,
    quantizer=VQConfig(codebook_size=1024),
)

PRESETS: dict[str, CodecConfig] = {
    c.name: c
    for c in (MOVQGAN_67M, MOVQGAN_102M, MOVQGAN_270M, VQGAN_F16_16384, VQGAN_GUMBEL_F8_8192, MOVQGAN_TINY)
}


def get_preset(name: str) -> CodecConfig:
    """A fresh copy of the preset config ``name``."""
    if name not in PRESETS:
        raise ValueError(f"unknown preset {name!r}; available presets: {sorted(PRESETS)}")
    return CodecConfig.from_dict(PRESETS[name].to_dict())
