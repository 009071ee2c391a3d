"""diffusers ``VQModel`` format: key / shape / config conversion in both directions (pure functions:
no files are read or written here, and nothing of the codec is imported).

Differences from the original (taming / MoVQGAN) layout, which is the codec's own:

- ``down.{i}.block.{j}`` <-> ``down_blocks.{i}.resnets.{j}``; ``nin_shortcut`` <-> ``conv_shortcut``;
  ``downsample.conv`` <-> ``downsamplers.0.conv``; ``upsample.conv`` <-> ``upsamplers.0.conv``.
- the decoder's ``up.{i}`` is indexed by resolution level, diffusers' ``up_blocks.{k}`` in run order:
  ``k = n_levels - 1 - i``.
- ``mid.block_1`` / ``mid.attn_1`` / ``mid.block_2`` <-> ``mid_block.resnets.0`` / ``attentions.0`` /
  ``resnets.1``; ``norm_out`` <-> ``conv_norm_out``.
- attention: ``norm`` <-> ``group_norm`` (encoder, VQGAN) or ``spatial_norm`` (MoVQ decoder);
  ``q/k/v/proj_out`` 1x1 convs ``[C, C, 1, 1]`` <-> ``to_q/to_k/to_v/to_out.0`` linears ``[C, C]``
  (older diffusers files: ``query/key/value/proj_attn``, also read).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from torch import Tensor

from movq.config import CodecConfig, VQConfig
from movq.hub.formats import attention_levels
from movq.modules.norm import NUM_GROUPS

DIFFUSERS_CONFIG = "config.json"
DIFFUSERS_WEIGHTS = "diffusion_pytorch_model.safetensors"
DIFFUSERS_WEIGHTS_BIN = "diffusion_pytorch_model.bin"

CODEBOOK_LOOKUP_RANGE = (0.0, 1.0)
"""The input range of a diffusers ``VQModel`` with ``lookup_from_codebook: true``: only aMUSEd's VQ sets
it, and its pipelines feed images in ``[0, 1]`` (``VaeImageProcessor(do_normalize=False)``)."""

_ATTN_TO_ORIGINAL = {
    "to_q": "q", "to_k": "k", "to_v": "v", "to_out.0": "proj_out",
    "query": "q", "key": "k", "value": "v", "proj_attn": "proj_out",
    "group_norm": "norm", "spatial_norm": "norm",
}
_ATTN_LINEAR = ("q", "k", "v", "proj_out")


def _levels(keys: Any, pattern: str) -> int:
    found = [int(m[1]) for k in keys if (m := re.match(pattern, k))]
    return max(found) + 1 if found else 0


def diffusers_to_original(state: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """Convert a diffusers ``VQModel`` state dict to original (movq) keys and shapes."""
    n_up = _levels(state, r"decoder\.up_blocks\.(\d+)\.")
    out: dict[str, Tensor] = {}
    for key, value in state.items():
        new = key
        new = re.sub(r"^(encoder|decoder)\.mid_block\.resnets\.(\d)\.", lambda m: f"{m[1]}.mid.block_{int(m[2]) + 1}.", new)
        new = re.sub(r"^(encoder|decoder)\.mid_block\.attentions\.0\.", r"\1.mid.attn_1.", new)
        new = re.sub(r"^encoder\.down_blocks\.(\d+)\.", r"encoder.down.\1.", new)
        new = re.sub(r"^decoder\.up_blocks\.(\d+)\.", lambda m: f"decoder.up.{n_up - 1 - int(m[1])}.", new)
        new = re.sub(r"\.resnets\.(\d+)\.", r".block.\1.", new)
        new = re.sub(r"\.attentions\.(\d+)\.", r".attn.\1.", new)
        new = new.replace(".downsamplers.0.", ".downsample.").replace(".upsamplers.0.", ".upsample.")
        new = new.replace(".conv_shortcut.", ".nin_shortcut.").replace(".conv_norm_out.", ".norm_out.")
        match = re.match(r"^(.*\.(?:attn\.\d+|attn_1))\.(to_q|to_k|to_v|to_out\.0|query|key|value|proj_attn|group_norm|spatial_norm)\.(.*)$", new)
        if match:
            sub = _ATTN_TO_ORIGINAL[match[2]]
            new = f"{match[1]}.{sub}.{match[3]}"
            if sub in _ATTN_LINEAR and match[3] == "weight" and value.ndim == 2:
                value = value[:, :, None, None]
        out[new] = value
    return out


def original_to_diffusers(state: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """Convert original (movq) keys and shapes to diffusers ``VQModel`` ones."""
    n_up = _levels(state, r"decoder\.up\.(\d+)\.")
    spatial_attn = {re.sub(r"\.norm\.conv_y\.weight$", "", k) for k in state if re.search(r"attn(_1|\.\d+)\.norm\.conv_y\.weight$", k)}
    out: dict[str, Tensor] = {}
    for key, value in state.items():
        new = key
        match = re.match(r"^(.*\.(?:attn\.\d+|attn_1))\.(q|k|v|proj_out|norm)\.(.*)$", new)
        if match:
            prefix, sub, rest = match[1], match[2], match[3]
            if sub == "norm":
                sub = "spatial_norm" if prefix in spatial_attn else "group_norm"
            else:
                sub = {"q": "to_q", "k": "to_k", "v": "to_v", "proj_out": "to_out.0"}[sub]
                if rest == "weight" and value.ndim == 4:
                    value = value[:, :, 0, 0]
            new = f"{prefix}.{sub}.{rest}"
        new = re.sub(r"^(encoder|decoder)\.mid\.block_(\d)\.", lambda m: f"{m[1]}.mid_block.resnets.{int(m[2]) - 1}.", new)
        new = re.sub(r"^(encoder|decoder)\.mid\.attn_1\.", r"\1.mid_block.attentions.0.", new)
        new = re.sub(r"^encoder\.down\.(\d+)\.", r"encoder.down_blocks.\1.", new)
        new = re.sub(r"^decoder\.up\.(\d+)\.", lambda m: f"decoder.up_blocks.{n_up - 1 - int(m[1])}.", new)
        new = re.sub(r"\.block\.(\d+)\.", r".resnets.\1.", new)
        new = re.sub(r"\.attn\.(\d+)\.", r".attentions.\1.", new)
        new = new.replace(".downsample.", ".downsamplers.0.").replace(".upsample.", ".upsamplers.0.")
        new = new.replace(".nin_shortcut.", ".conv_shortcut.")
        new = re.sub(r"^(encoder|decoder)\.norm_out\.", r"\1.conv_norm_out.", new)
        out[new] = value.contiguous()
    return out


def to_diffusers(config: CodecConfig, state: Mapping[str, Tensor]) -> tuple[dict[str, Any], dict[str, Tensor]]:
    """``(config.json dict, state dict)`` of a diffusers ``VQModel`` equal to the codec of ``config``
    with weights ``state`` (original keys); ``ValueError`` if diffusers cannot express ``config``."""
    if not isinstance(config, CodecConfig):
        raise ValueError(f"{type(config).__name__} cannot be exported to diffusers (only VQGAN / MoVQ codecs)")
    diffusers_config = config_to_diffusers(config)  # first: refuses what diffusers cannot express
    return diffusers_config, original_to_diffusers({k: v.detach().cpu() for k, v in state.items()})


# ---------------------------------------------------------------------------------------------
# Configs.


def config_from_diffusers(data: Mapping[str, Any], name: str = "custom") -> CodecConfig:
    """A :class:`CodecConfig` equivalent to a diffusers ``VQModel`` ``config.json``.

    The diffusers ``scaling_factor`` is not carried over (``VQModel.encode`` / ``decode`` never
    apply it, nor do the Kandinsky pipelines for MoVQ), so ``encode_latents`` returns the raw latent.
    ``mid_block_add_attention`` becomes ``mid_attention``. ``lookup_from_codebook: true`` (set only by
    aMUSEd's VQ, whose pipeline feeds images in ``[0, 1]`` and clips the decode to ``[0, 1]``) gives
    ``input_range=(0.0, 1.0)``; decoding tokens always looks their codes up in the codebook.
    ``force_upcast`` (a float16 hint for pipelines) has no effect on the codec.
    """
    class_name = data.get("_class_name", "VQModel")
    if class_name != "VQModel":
        raise ValueError(f"diffusers config is for {class_name!r}; only VQModel codecs can be loaded")
    channels = list(data.get("block_out_channels", (64,)))
    if not channels or any(isinstance(c, bool) or not isinstance(c, int) or c < 1 for c in channels):
        raise ValueError(f"block_out_channels must be a non-empty list of positive ints, got {channels}")
    ch = channels[0]
    if any(c % ch for c in channels):
        raise ValueError(f"block_out_channels {channels} are not multiples of the first one")
    down = list(data.get("down_block_types", ("DownEncoderBlock2D",)))
    up = list(data.get("up_block_types", ("UpDecoderBlock2D",)))
    if len(down) != len(channels) or len(up) != len(channels):
        raise ValueError("block_out_channels, down_block_types and up_block_types must have the same length")
    attn_down = [i for i, t in enumerate(down) if t.startswith("Attn")]
    attn_up = sorted(len(up) - 1 - k for k, t in enumerate(up) if t.startswith("Attn"))
    if attn_down != attn_up:
        raise ValueError(f"encoder attention levels {attn_down} differ from decoder levels {attn_up}; unsupported")
    for field, expected in (("act_fn", "silu"), ("norm_num_groups", NUM_GROUPS)):
        if data.get(field, expected) != expected:
            raise ValueError(f"diffusers config {field}={data[field]!r} is not supported (movq needs {expected!r})")
    if data.get("norm_type", "group") not in ("group", "spatial"):
        raise ValueError(f"diffusers config norm_type={data['norm_type']!r} is not supported (movq reads 'group', 'spatial')")
    for field in ("mid_block_add_attention", "lookup_from_codebook", "force_upcast"):
        if not isinstance(data.get(field, False), bool):
            raise ValueError(f"diffusers config {field} must be true or false, got {data[field]!r}")
    latent = data.get("latent_channels", 3)
    resolution = 256
    # through the strict reader, so every value is type- and range-checked like a movq config.json
    return CodecConfig.from_dict({
        "name": name,
        "in_channels": data.get("in_channels", 3),
        "out_channels": data.get("out_channels", 3),
        "ch": ch,
        "ch_mult": [c // ch for c in channels],
        "num_res_blocks": data.get("layers_per_block", 1),
        "attn_resolutions": [resolution // 2**i for i in attn_down],
        "resolution": resolution,
        "z_channels": latent,
        "embed_dim": data.get("vq_embed_dim") or latent,
        "norm": "spatial" if data.get("norm_type", "group") == "spatial" else "group",
        "quantizer": {"kind": "vq", "codebook_size": data.get("num_vq_embeddings", 256)},
        "mid_attention": data.get("mid_block_add_attention", True),
        "input_range": list(CODEBOOK_LOOKUP_RANGE if data.get("lookup_from_codebook", False) else (-1.0, 1.0)),
    })


def config_to_diffusers(config: CodecConfig) -> dict[str, Any]:
    """The diffusers ``VQModel`` ``config.json`` for ``config``; ``ValueError`` if diffusers
    cannot express it (only a plain nearest-neighbour VQ codebook is supported)."""
    q = config.quantizer
    if not isinstance(q, VQConfig) or q.groups != 1 or q.code_dim is not None or q.l2_normalize:
        raise ValueError(
            "diffusers' VQModel supports only a plain VQ codebook (VQConfig with groups=1, no code_dim, "
            f"no l2_normalize); this codec has {q}"
        )
    if getattr(config, "network", "taming") != "taming":
        raise ValueError(
            f"diffusers' VQModel cannot represent the {config.network!r} network (MaskGIT's, Open-MAGVIT2's and "
            "SimVQ's blocks: bias-free convolutions, their own resampling and norms); save it in movq's format"
        )
    if getattr(config, "quant_conv_kernel", 1) != 1:
        raise ValueError(
            f"diffusers' VQModel has 1x1 quant convolutions, this codec {config.quant_conv_kernel}x"
            f"{config.quant_conv_kernel} ones (VAR's); save it in movq's format"
        )
    if tuple(config.input_range) not in ((-1.0, 1.0), CODEBOOK_LOOKUP_RANGE):
        raise ValueError(
            f"diffusers' VQModel has no field for the input range {list(config.input_range)} (only [-1, 1], "
            f"and [0, 1] written as lookup_from_codebook: true as aMUSEd does)"
        )
    levels = set(attention_levels(config))
    n = len(config.ch_mult)
    return {
        "_class_name": "VQModel",
        "in_channels": config.in_channels,
        "out_channels": config.out_channels,
        "down_block_types": ["AttnDownEncoderBlock2D" if i in levels else "DownEncoderBlock2D" for i in range(n)],
        "up_block_types": ["AttnUpDecoderBlock2D" if n - 1 - k in levels else "UpDecoderBlock2D" for k in range(n)],
        "block_out_channels": [config.ch * m for m in config.ch_mult],
        "layers_per_block": config.num_res_blocks,
        "act_fn": "silu",
        "latent_channels": config.z_channels,
        "sample_size": config.resolution,
        "num_vq_embeddings": q.codebook_size,
        "norm_num_groups": NUM_GROUPS,
        "vq_embed_dim": config.embed_dim,
        "scaling_factor": config.scaling_factor,
        "norm_type": config.norm,
        "mid_block_add_attention": config.mid_attention,
        "lookup_from_codebook": tuple(config.input_range) == CODEBOOK_LOOKUP_RANGE,
        "force_upcast": False,
    }
