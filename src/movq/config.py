"""Codec configuration: dataclasses that serialise to JSON, and the named presets.

A :class:`CodecConfig` fully describes the architecture of a codec; ``Codec(config)`` builds it.
The field names follow the published configs (taming-transformers / MoVQGAN ``ddconfig``), so a
published config maps onto one of these field by field.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, replace
from typing import Annotated, Any, Literal

from torch import nn

from movq.modules import Decoder, Encoder
from movq.modules.blocks import MAGVIT2_NETWORKS
from movq.modules.norm import NUM_GROUPS

# The quantizer configs live next to their quantizers in movq.quantizers; re-exported here, where
# users import them.
from movq.quantizers import (
    EMAConfig,
    FSQConfig,
    GumbelConfig,
    IBQConfig,
    LFQConfig,
    MultiScaleConfig,
    ProjectedConfig,
    Quantizer,
    QuantizerConfig,
    ResidualConfig,
    SimVQConfig,
    VQConfig,
    build_quantizer,
)
from movq.strict import (
    MAX_BLOCKS,
    MAX_LEVELS,
    MaxLength,
    MinLength,
    MultipleOf,
    PositiveFloat,
    PositiveInt,
    Probability,
    Range,
    StrictConfig,
    dataclass_from_dict,
    unknown_name_error,
    value_from_hint,
)

__all__ = [
    "MOVQGAN_67M",
    "MOVQGAN_102M",
    "MOVQGAN_270M",
    "MOVQGAN_TINY",
    "PRESETS",
    "STATE_DICT_CONFIG_KEY",
    "VQGAN_F16_16384",
    "VQGAN_GUMBEL_F8_8192",
    "CodecConfig",
    "EMAConfig",
    "FSQConfig",
    "GumbelConfig",
    "IBQConfig",
    "IBQ_F16_1024",
    "IBQ_F16_8192",
    "IBQ_F16_16384",
    "IBQ_F16_262144",
    "LFQConfig",
    "LLAMAGEN_VQ8",
    "LLAMAGEN_VQ16",
    "MASKGIT_VQGAN_F16_1024",
    "MultiScaleConfig",
    "OPEN_MAGVIT2_F8_262144",
    "OPEN_MAGVIT2_F16_262144",
    "SIMVQ_F8_1024",
    "SimVQConfig",
    "VAR_F16_4096",
    "ProjectedConfig",
    "VQGAN_LC_F16_100K",
    "QuantizerConfig",
    "ResidualConfig",
    "VQConfig",
    "get_preset",
    "quantizer_config_from_dict",
    "record_config",
]

@dataclass
class CodecConfig(StrictConfig):
    """Architecture of an encoder / quantizer / decoder codec.

    ``resolution`` is the training resolution; with ``ch_mult`` it places the attention blocks
    (a level whose feature size at that resolution is in ``attn_resolutions`` gets attention).
    The codec itself runs at any size that is a multiple of ``2 ** (len(ch_mult) - 1)``.
    ``norm="spatial"`` gives the MoVQ decoder, ``norm="group"`` the plain VQGAN decoder.
    ``scaling_factor`` multiplies the continuous latents of ``Codec.encode_latents``.
    ``mid_attention=False`` drops the self-attention of the encoder's and decoder's mid blocks
    (diffusers' ``mid_block_add_attention``; aMUSEd's VQ). ``input_range`` is the pixel range the
    network was trained on (``(0.0, 1.0)`` for aMUSEd's VQ); the codec's API stays ``[-1, 1]``:
    ``Codec`` maps images into this range before the encoder and the decoder's output back.
    ``network="maskgit"`` is MaskGIT's VQGAN variant of the network (google-research/maskgit, its
    PyTorch conversion in bytedance/1d-tokenizer): bias-free ResNet convolutions and encoder
    ``conv_in``, ResNet shortcuts applied to the block's output
    (:class:`~movq.modules.blocks.ResnetBlock` ``shortcut_from_output``), 2x2 average-pool
    downsampling, ``num_res_blocks`` (not ``+ 1``) blocks per decoder level, a 1x1 encoder
    ``conv_out`` and no ``quant_conv`` / ``post_quant_conv``; it has no attention
    (``attn_resolutions=()``, ``mid_attention=False``, checked).
    ``quant_conv_kernel`` is the kernel size of ``quant_conv`` / ``post_quant_conv`` (1 in taming; 3
    in VAR's VQVAE, whose attention's fused ``qkv`` convolution is movq's ``q`` / ``k`` / ``v`` split:
    the same computation). A multi-scale quantizer (:class:`~movq.quantizers.MultiScaleConfig`)
    quantizes a latent of exactly its last scale: ``resolution / downsample_factor`` must equal it.
    ``network="magvit2"`` is Open-MAGVIT2's network (TencentARC/SEED-Voken ``improved_model.py``):
    bias-free ResNet convolutions and encoder ``conv_in``, stride-2 3x3 downsampling padded on every
    side, ``num_res_blocks`` ResNet blocks in the mid block and per decoder level, a 1x1 encoder
    ``conv_out``, no ``quant_conv`` / ``post_quant_conv``, depth-to-space upsampling and, before each
    decoder level, an :class:`~movq.modules.norm.AdaptiveGroupNorm` read from the latent's
    per-channel mean and standard deviation; no attention. ``network="simvq"`` is the same network
    without the adaptive norms (youngsheen/SimVQ ``improved_model.py``).
    ``quantizer`` is one of the configs of :data:`movq.quantizers.QuantizerConfig` (in a dict, its
    ``kind`` says which; ``"vq"`` when absent). Every field is checked against its hint on
    construction (:class:`movq.strict.ConfigError` naming it).
    """

    name: str = "custom"
    in_channels: PositiveInt = 3
    out_channels: PositiveInt = 3
    ch: Annotated[int, Range(min=NUM_GROUPS), MultipleOf(NUM_GROUPS)] = 128  # GroupNorm(32) over every level
    ch_mult: Annotated[tuple[PositiveInt, ...], MinLength(1), MaxLength(MAX_LEVELS)] = (1, 2, 2, 4)
    num_res_blocks: Annotated[int, Range(1, MAX_BLOCKS)] = 2
    attn_resolutions: Annotated[tuple[PositiveInt, ...], MaxLength(MAX_LEVELS)] = (32,)
    resolution: PositiveInt = 256
    z_channels: PositiveInt = 4
    embed_dim: PositiveInt = 4
    dropout: Probability = 0.0
    norm: Literal["spatial", "group"] = "spatial"
    quantizer: QuantizerConfig = field(default_factory=VQConfig)
    scaling_factor: PositiveFloat = 1.0
    mid_attention: bool = True
    input_range: tuple[float, float] = (-1.0, 1.0)
    network: Literal["taming", "maskgit", "magvit2", "simvq"] = "taming"
    quant_conv_kernel: Literal[1, 3] = 1

    def __post_init__(self) -> None:
        super().__post_init__()
        self._check_magvit2_network()
        low, high = self.input_range
        if not low < high:
            raise ValueError(f"input_range must be (low, high) with low < high, got {list(self.input_range)}")
        if isinstance(self.quantizer, MultiScaleConfig) and self.resolution != self.quantizer.scales[-1] * self.downsample_factor:
            raise ValueError(
                f"a multi-scale quantizer quantizes a latent of its last scale ({self.quantizer.scales[-1]}): "
                f"resolution must be {self.quantizer.scales[-1] * self.downsample_factor} (the last scale x the "
                f"downsample factor {self.downsample_factor}), got {self.resolution}"
            )
        if self.network == "maskgit" and self.quant_conv_kernel != 1:
            raise ValueError(f"network='maskgit' has no quant_conv: quant_conv_kernel must be 1, got {self.quant_conv_kernel}")
        if self.network == "maskgit" and self.num_res_blocks != 2:
            raise ValueError(
                "network='maskgit' has num_res_blocks ResNet blocks in its mid block and movq's mid block "
                f"holds two: num_res_blocks must be 2, got {self.num_res_blocks}"
            )
        if self.network == "maskgit" and self.embed_dim != self.z_channels:
            raise ValueError(
                f"network='maskgit' has no quant_conv: embed_dim must equal z_channels, got {self.embed_dim} "
                f"and {self.z_channels}"
            )
        if self.network == "maskgit" and (self.attn_resolutions or self.mid_attention or self.norm != "group"):
            raise ValueError(
                "network='maskgit' has no attention and plain group norms: it needs attn_resolutions=(), "
                f"mid_attention=False and norm='group', got {list(self.attn_resolutions)}, "
                f"{self.mid_attention}, {self.norm!r}"
            )

    def _check_magvit2_network(self) -> None:
        """``ValueError`` unless a ``"magvit2"`` / ``"simvq"`` network has no attention, plain group
        norms and ``embed_dim == z_channels`` (it has no quant convs)."""
        if self.network not in MAGVIT2_NETWORKS:
            return
        if self.attn_resolutions or self.mid_attention or self.norm != "group" or self.embed_dim != self.z_channels:
            raise ValueError(
                f"network={self.network!r} has no attention, plain group norms and no quant_conv: it needs "
                "attn_resolutions=(), mid_attention=False, norm='group' and embed_dim == z_channels, got "
                f"{list(self.attn_resolutions)}, {self.mid_attention}, {self.norm!r}, {self.embed_dim} and {self.z_channels}"
            )
        if self.quant_conv_kernel != 1:
            raise ValueError(f"network={self.network!r} has no quant_conv: quant_conv_kernel must be 1, got {self.quant_conv_kernel}")

    @property
    def downsample_factor(self) -> int:
        """Pixels per token along each side."""
        return 2 ** (len(self.ch_mult) - 1)

    @property
    def codebook_size(self) -> int:
        """Number of distinct token ids per position (and per level / group)."""
        return self.quantizer.codebook_size_for(self.embed_dim)

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-serialisable dict (tuples become lists)."""
        return asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> CodecConfig:
        """Inverse of :meth:`to_dict`; unknown keys and badly typed or out-of-range fields are a
        :class:`movq.strict.ConfigError` naming them."""
        return dataclass_from_dict(cls, data)

    @classmethod
    def from_json(cls, text: str) -> CodecConfig:
        return cls.from_dict(json.loads(text))

    # --------------------------------------------------------------- the network (``Codec`` assembles it)

    def build_encoder(self) -> Encoder:
        return Encoder(self)

    def build_quant_conv(self) -> nn.Module:
        """The 1x1 (``quant_conv_kernel``) convolution ``z_channels -> embed_dim`` before the quantizer
        (``nn.Identity`` for ``network="maskgit"`` / ``"magvit2"`` / ``"simvq"``, which have none and
        need ``embed_dim == z_channels``)."""
        if self.network == "maskgit" or self.network in MAGVIT2_NETWORKS:
            return nn.Identity()
        k = self.quant_conv_kernel
        return nn.Conv2d(self.z_channels, self.embed_dim, kernel_size=k, padding=k // 2)

    def build_quantizer(self) -> Quantizer:
        return build_quantizer(self.quantizer, self.embed_dim)

    def build_post_quant_conv(self) -> nn.Module:
        """The 1x1 (``quant_conv_kernel``) convolution ``embed_dim -> z_channels`` after the quantizer
        (``nn.Identity`` for ``network="maskgit"`` / ``"magvit2"`` / ``"simvq"``)."""
        if self.network == "maskgit" or self.network in MAGVIT2_NETWORKS:
            return nn.Identity()
        k = self.quant_conv_kernel
        return nn.Conv2d(self.embed_dim, self.z_channels, kernel_size=k, padding=k // 2)

    def build_decoder(self) -> Decoder:
        return Decoder(self)

    @property
    def activation_channels(self) -> int:
        """Channels of the widest full-resolution feature map (the decoder's last upsampling runs at
        full resolution with ``ch * ch_mult[1]`` channels): sizes the activation-memory estimate."""
        return self.ch * max(self.ch_mult[:2])

    def describe(self) -> str:
        """The fields that set the size of the network (for error messages)."""
        return (
            f"the codec config {self.name!r} (ch={self.ch}, ch_mult={list(self.ch_mult)}, "
            f"num_res_blocks={self.num_res_blocks}, codebook_size={getattr(self.quantizer, 'codebook_size', None)})"
        )


def quantizer_config_from_dict(data: dict[str, Any]) -> QuantizerConfig:
    """The quantizer config named by ``data["kind"]`` (``"vq"`` when absent), checked field by field."""
    return value_from_hint(data, QuantizerConfig, "quantizer")


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

# LlamaGen's tokenizers (FoundationVision/LlamaGen vq_model.py VQ_16 / VQ_8): taming's VQGAN network
# with attention at the lowest resolution only and an 8-dim l2-normalised codebook of 16384 codes.
LLAMAGEN_VQ16 = CodecConfig(
    name="llamagen-vq16",
    ch_mult=(1, 1, 2, 2, 4),
    attn_resolutions=(16,),
    z_channels=256,
    embed_dim=8,
    norm="group",
    quantizer=VQConfig(codebook_size=16384, l2_normalize=True, legacy=False),
)
LLAMAGEN_VQ8 = replace(LLAMAGEN_VQ16, name="llamagen-vq8", ch_mult=(1, 2, 2, 4), attn_resolutions=(32,))

# IBQ's tokenizers (TencentARC/SEED-Voken src/IBQ, configs/IBQ/gpu/imagenet_ibqgan_*.yaml): taming's
# VQGAN network with 4 res blocks per level, 256-dim codes chosen by the largest dot product.
IBQ_F16_16384 = CodecConfig(
    name="ibq-f16-16384",
    ch_mult=(1, 1, 2, 2, 4),
    num_res_blocks=4,
    attn_resolutions=(16,),
    z_channels=256,
    embed_dim=256,
    norm="group",
    quantizer=IBQConfig(codebook_size=16384),
)
IBQ_F16_1024 = replace(IBQ_F16_16384, name="ibq-f16-1024", quantizer=IBQConfig(codebook_size=1024))
IBQ_F16_8192 = replace(IBQ_F16_16384, name="ibq-f16-8192", quantizer=IBQConfig(codebook_size=8192))
IBQ_F16_262144 = replace(IBQ_F16_16384, name="ibq-f16-262144", quantizer=IBQConfig(codebook_size=262144))

# MaskGIT's VQGAN (google-research/maskgit; PyTorch conversion fun-research/TiTok
# maskgit-vqgan-imagenet-f16-256.bin, bytedance/1d-tokenizer PretrainedTokenizer): no attention,
# 1024 codes of 256 dims, trained on pixels in [0, 1].
MASKGIT_VQGAN_F16_1024 = CodecConfig(
    name="maskgit-vqgan-f16-1024",
    ch_mult=(1, 1, 2, 2, 4),
    attn_resolutions=(),
    z_channels=256,
    embed_dim=256,
    norm="group",
    quantizer=VQConfig(codebook_size=1024),
    mid_attention=False,
    input_range=(0.0, 1.0),
    network="maskgit",
)

# VQGAN-LC (zh460045050/VQGAN-LC vqgan-gpt-lc, vqgan_configs/vq-f16.yaml, --embed_dim 8
# --use_cblinear 1): taming's f16 VQGAN with 8-dim latents searched against a linear projection of a
# frozen 100,000 x 768 codebook of CLIP features.
VQGAN_LC_F16_100K = replace(
    VQGAN_F16_16384, name="vqgan-lc-f16-100k", embed_dim=8,
    quantizer=ProjectedConfig(codebook_size=100000, codebook_dim=768),
)

# VAR's multi-scale VQVAE (FoundationVision/VAR models/vqvae.py, build_vae_var; vae_ch160v4096z32.pth):
# taming's f16 network at ch=160 with 32-dim latents, 3x3 quant convs, and one 4096-code codebook
# searched at ten scales 1..16 with four partially shared Phi convolutions.
VAR_F16_4096 = CodecConfig(
    name="var-f16-4096",
    ch=160,
    ch_mult=(1, 1, 2, 2, 4),
    attn_resolutions=(16,),
    z_channels=32,
    embed_dim=32,
    norm="group",
    quantizer=MultiScaleConfig(),
    quant_conv_kernel=3,
)

# Open-MAGVIT2's tokenizers (TencentARC/SEED-Voken src/Open_MAGVIT2, configs/Open-MAGVIT2/gpu/
# imagenet_lfqgan_{128,256}_L.yaml): bias-free convolutions without attention, adaptive group norms
# in the decoder, depth-to-space upsampling, lookup-free quantization of 18 channels (2^18 codes,
# channel 0 the token id's least significant bit).
OPEN_MAGVIT2_F16_262144 = CodecConfig(
    name="open-magvit2-f16-262144",
    ch_mult=(1, 1, 2, 2, 4),
    num_res_blocks=4,
    attn_resolutions=(),
    z_channels=18,
    embed_dim=18,
    norm="group",
    quantizer=LFQConfig(bit_order="lsb_first"),
    mid_attention=False,
    network="magvit2",
)
OPEN_MAGVIT2_F8_262144 = replace(OPEN_MAGVIT2_F16_262144, name="open-magvit2-f8-262144", ch_mult=(1, 2, 2, 4),
                                 resolution=128)

# SimVQ (youngsheen/SimVQ configs/imagenet_simvq_128_B.yaml): Open-MAGVIT2's network without the
# adaptive norms, 128-dim latents searched against a linear map of a frozen codebook of 1024 codes.
SIMVQ_F8_1024 = CodecConfig(
    name="simvq-f8-1024",
    ch_mult=(1, 2, 2, 4),
    attn_resolutions=(),
    resolution=128,
    z_channels=128,
    embed_dim=128,
    norm="group",
    quantizer=SimVQConfig(codebook_size=1024),
    mid_attention=False,
    network="simvq",
)

PRESETS: dict[str, CodecConfig] = {
    c.name: c
    for c in (MOVQGAN_67M, MOVQGAN_102M, MOVQGAN_270M, VQGAN_F16_16384, VQGAN_GUMBEL_F8_8192, MOVQGAN_TINY,
              LLAMAGEN_VQ16, LLAMAGEN_VQ8, IBQ_F16_1024, IBQ_F16_8192, IBQ_F16_16384, IBQ_F16_262144,
              MASKGIT_VQGAN_F16_1024, VQGAN_LC_F16_100K, VAR_F16_4096, OPEN_MAGVIT2_F16_262144,
              OPEN_MAGVIT2_F8_262144, SIMVQ_F8_1024)
}


def get_preset(name: str) -> CodecConfig:
    """A fresh copy of the preset config ``name``; an unknown name suggests the closest ones."""
    if name not in PRESETS:
        raise ValueError(unknown_name_error("preset", name, PRESETS, listing="available presets"))
    return CodecConfig.from_dict(PRESETS[name].to_dict())


# ---------------------------------------------------------------------------------------------
# The config inside a plain ``torch.save(codec.state_dict())``.

STATE_DICT_CONFIG_KEY = "movq_config"
"""Key of the codec's config (``config.to_dict()``) in the state dict's ``_metadata`` entry of the
codec's prefix, next to PyTorch's ``version``. ``torch.save`` keeps ``_metadata``; so
``movq.load`` rebuilds the exact architecture from a bare state-dict file, even the quantizers
whose tensors do not reveal it (FSQ, LFQ, residual depth)."""


def record_config(module: Any, state_dict: Any, prefix: str, local_metadata: dict[str, Any]) -> None:
    """``state_dict`` post-hook of codecs: store ``module.config.to_dict()`` in ``local_metadata``
    under :data:`STATE_DICT_CONFIG_KEY` (register with ``module.register_state_dict_post_hook``)."""
    local_metadata[STATE_DICT_CONFIG_KEY] = module.config.to_dict()
