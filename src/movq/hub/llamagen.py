"""LlamaGen's VQ tokenizers (``FoundationVision/LlamaGen``): their key names, read into movq's codec.

LlamaGen's ``tokenizer/tokenizer_image/vq_model.py`` is taming-transformers' VQGAN network (group
norm, attention at the lowest resolution only, same blocks and parameter names inside them) with
an 8-dimensional, l2-normalised codebook of 16384 codes. So the family is a config
(:data:`movq.config.LLAMAGEN_VQ16`, :data:`movq.config.LLAMAGEN_VQ8`: ``VQConfig(l2_normalize=True)``)
and the key map below; nothing else differs. The published files hold ``{"model": state_dict}``.

=====================================================  =====================================
LlamaGen key                                           movq key
=====================================================  =====================================
``encoder.conv_blocks.{i}.res.{j}.*``                  ``encoder.down.{i}.block.{j}.*``
``encoder.conv_blocks.{i}.attn.{j}.*``                 ``encoder.down.{i}.attn.{j}.*``
``encoder.conv_blocks.{i}.downsample.*``               ``encoder.down.{i}.downsample.*``
``{encoder,decoder}.mid.{0,1,2}.*``                    ``{encoder,decoder}.mid.{block_1,attn_1,block_2}.*``
``decoder.conv_blocks.{r}.res|attn|upsample.*``        ``decoder.up.{L-1-r}.block|attn|upsample.*``
``quantize.codebook_used``                             (dropped: the training-time usage log)
=====================================================  =====================================

The decoder's ``conv_blocks`` are numbered in execution order (0: the lowest resolution), movq's
``up`` by resolution level (0: full size); ``L`` is the number of levels. Every other key
(``conv_in``, ``norm_out``, ``conv_out``, ``quant_conv``, ``post_quant_conv``,
``quantize.embedding.weight``) is the same in both.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping
from dataclasses import replace

from torch import Tensor

from movq.config import CodecConfig, VQConfig, get_preset
from movq.hub.formats import infer_config
from movq.memory_budget import build_on_meta
from movq.strict import state_dict_mismatches

logger = logging.getLogger(__name__)

IGNORED_KEYS = ("quantize.codebook_used",)
"""LlamaGen buffers that are not weights: ``codebook_used`` logs the ids of the last 65536 training
positions (for the usage statistic shown while training); dropped on load."""
MID_NAMES = ("block_1", "attn_1", "block_2")
"""movq's names of LlamaGen's ``mid.0``, ``mid.1``, ``mid.2``."""
LEVEL_PARTS = {"res": "block", "attn": "attn", "downsample": "downsample", "upsample": "upsample"}
"""LlamaGen's sub-module names inside a ``conv_blocks`` level -> movq's, inside a ``down`` / ``up`` level."""

_LEVEL_KEY = re.compile(r"^(encoder|decoder)\.conv_blocks\.(\d+)\.([a-z_]+)\.(.*)$")
_MID_KEY = re.compile(r"^(encoder|decoder)\.mid\.(\d+)\.(.*)$")
_MOVQ_LEVEL_KEY = re.compile(r"^(encoder|decoder)\.(down|up)\.(\d+)\.([a-z_]+)\.(.*)$")
_MOVQ_MID_KEY = re.compile(r"^(encoder|decoder)\.mid\.(block_1|attn_1|block_2)\.(.*)$")


def decoder_levels(state: Mapping[str, object]) -> int:
    """Number of resolution levels of a LlamaGen state dict (its ``decoder.conv_blocks``; else the encoder's)."""
    for net in ("decoder", "encoder"):
        found = [int(m[2]) for m in map(_LEVEL_KEY.match, state) if m and m[1] == net]
        if found:
            return max(found) + 1
    return 0


def llamagen_key_to_movq(key: str, levels: int) -> str:
    """One LlamaGen key -> movq's (keys outside the map come back unchanged); ``levels`` is the
    number of resolution levels (:func:`decoder_levels`)."""
    match = _LEVEL_KEY.match(key)
    if match and match[3] in LEVEL_PARTS:
        net, index, part, rest = match[1], int(match[2]), match[3], match[4]
        level = index if net == "encoder" else levels - 1 - index
        if level < 0:
            return key
        return f"{net}.{'down' if net == 'encoder' else 'up'}.{level}.{LEVEL_PARTS[part]}.{rest}"
    match = _MID_KEY.match(key)
    if match and int(match[2]) < len(MID_NAMES):
        return f"{match[1]}.mid.{MID_NAMES[int(match[2])]}.{match[3]}"
    return key


def movq_key_to_llamagen(key: str, levels: int) -> str:
    """The inverse of :func:`llamagen_key_to_movq` (to name keys in errors as the file names them)."""
    match = _MOVQ_LEVEL_KEY.match(key)
    if match:
        net, level, part, rest = match[1], int(match[3]), match[4], match[5]
        index = level if net == "encoder" else levels - 1 - level
        part = {v: k for k, v in LEVEL_PARTS.items()}.get(part, part)
        return f"{net}.conv_blocks.{index}.{part}.{rest}"
    match = _MOVQ_MID_KEY.match(key)
    if match:
        return f"{match[1]}.mid.{MID_NAMES.index(match[2])}.{match[3]}"
    return key


def llamagen_config(state: Mapping[str, Tensor], source: str = "checkpoint") -> CodecConfig:
    """The codec config of a LlamaGen state dict already in movq's key names: the architecture read
    from the shapes (the presets' names when they match), with LlamaGen's quantizer: l2-normalised
    latents and codes, ``beta`` on the commitment term (``legacy=False``)."""
    config = infer_config(state, None, source)
    if not isinstance(config.quantizer, VQConfig):
        raise ValueError(f"{source}: LlamaGen keys, but the quantizer tensors are not a VQ codebook")
    if config.quantizer.l2_normalize:  # one of the LlamaGen presets, complete as it is
        return config
    quantizer = replace(config.quantizer, l2_normalize=True, legacy=False)
    return replace(config, name="llamagen-custom", quantizer=quantizer)


def codec_shapes(config: CodecConfig) -> dict[str, Tensor]:
    """The state dict of ``Codec(config)`` on the meta device (shapes only, nothing allocated), from the
    config's builders under the codec's submodule names (:class:`movq.codec.Codec` imports this package)."""
    parts = {
        "encoder": config.build_encoder, "quant_conv": config.build_quant_conv, "quantize": config.build_quantizer,
        "post_quant_conv": config.build_post_quant_conv, "decoder": config.build_decoder,
    }
    return {
        f"{name}.{key}": value
        for name, build in parts.items()
        for key, value in build_on_meta(build).state_dict().items()  # type: ignore[arg-type]
    }


def read_llamagen(
    state: Mapping[str, Tensor], preset: str | None = None, source: str = "checkpoint"
) -> tuple[CodecConfig, dict[str, Tensor]]:
    """``(config, state in movq's key names)`` from a LlamaGen state dict.

    ``quantize.codebook_used`` is dropped (logged). The architecture is ``preset``'s, or read from
    the shapes (:func:`llamagen_config`). The keys are checked strictly against that architecture
    *in LlamaGen's names*: a missing, unexpected or mis-shaped key is a ``ValueError`` listing them,
    naming ``source``.
    """
    ignored = sorted(k for k in state if k in IGNORED_KEYS)
    if ignored:
        logger.info("%s: ignoring %s (LlamaGen's training-time codebook usage log, not a weight)", source, ignored)
    given = {k: v for k, v in state.items() if k not in IGNORED_KEYS}
    levels = decoder_levels(given)
    converted = {llamagen_key_to_movq(k, levels): v for k, v in given.items()}
    config = get_preset(preset) if preset is not None else llamagen_config(converted, source)
    levels = len(config.ch_mult)
    expected = {movq_key_to_llamagen(k, levels): v for k, v in codec_shapes(config).items()}
    problems = state_dict_mismatches(expected, given)
    if problems:
        raise ValueError(f"{source}: LlamaGen checkpoint does not match {config.describe()}: " + "; ".join(problems))
    return config, {llamagen_key_to_movq(k, levels): v for k, v in given.items()}
