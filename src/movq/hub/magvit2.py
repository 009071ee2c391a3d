"""Open-MAGVIT2 (TencentARC/SEED-Voken ``src/Open_MAGVIT2``) and SimVQ (youngsheen/SimVQ): their
Lightning checkpoints, read into movq's codec.

Both networks are ``improved_model.py``'s ``Encoder`` / ``Decoder`` (:data:`movq.config.OPEN_MAGVIT2_F16_262144`,
:data:`movq.config.SIMVQ_F8_1024`: ``CodecConfig(network="magvit2")`` / ``"simvq"``); SimVQ's copy
lacks the decoder's ``adaptive`` norms, which is how the two are told apart. The quantizer is
Open-MAGVIT2's LFQ (no tensors: ``LFQConfig(bit_order="lsb_first")`` over ``z_channels`` bits) or
SimVQ's (``quantize.embedding.weight`` and ``quantize.embedding_proj.*``, movq's names too). The
published files are Lightning checkpoints whose ``state_dict`` also holds the loss (``loss.*``) and
LitEma's shadows (``model_ema.*``, read instead of the raw weights). Keys are movq's but for these:

==============================================  ==============================================
Open-MAGVIT2 / SimVQ key                        movq key
==============================================  ==============================================
``{encoder,decoder}.mid_block.{k}.*``           ``{encoder,decoder}.mid.block.{k}.*``
``encoder.down.{i}.downsample.{weight,bias}``   ``encoder.down.{i}.downsample.conv.{weight,bias}``
``decoder.up.{i}.upsample.conv1.*``             ``decoder.up.{i}.upsample.conv.*``
==============================================  ==============================================
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import replace

from torch import Tensor

from movq.config import (
    OPEN_MAGVIT2_F16_262144,
    PRESETS,
    CodecConfig,
    LFQConfig,
    SimVQConfig,
    get_preset,
)
from movq.strict import state_dict_mismatches

_RULES = (
    (re.compile(r"^(encoder|decoder)\.mid_block\.(\d+)\.(.*)$"), r"\1.mid.block.\2.\3"),
    (re.compile(r"^encoder\.down\.(\d+)\.downsample\.(weight|bias)$"), r"encoder.down.\1.downsample.conv.\2"),
    (re.compile(r"^decoder\.up\.(\d+)\.upsample\.conv1\.(.*)$"), r"decoder.up.\1.upsample.conv.\2"),
)
_INVERSE = (
    (re.compile(r"^(encoder|decoder)\.mid\.block\.(\d+)\.(.*)$"), r"\1.mid_block.\2.\3"),
    (re.compile(r"^encoder\.down\.(\d+)\.downsample\.conv\.(weight|bias)$"), r"encoder.down.\1.downsample.\2"),
    (re.compile(r"^decoder\.up\.(\d+)\.upsample\.conv\.(.*)$"), r"decoder.up.\1.upsample.conv1.\2"),
)
MID_BLOCK_KEY = re.compile(r"^(encoder|decoder)\.mid_block\.\d+\.")
"""Keys only Open-MAGVIT2's and SimVQ's checkpoints have (diffusers' ``mid_block`` is not numbered)."""
_LEVEL = re.compile(r"^encoder\.down\.(\d+)\.block\.(\d+)\.conv2\.weight$")


def _apply(rules: tuple[tuple[re.Pattern[str], str], ...], key: str) -> str:
    for pattern, target in rules:
        if pattern.match(key):
            return pattern.sub(target, key)
    return key


def magvit2_key_to_movq(key: str) -> str:
    """One Open-MAGVIT2 / SimVQ key -> movq's (keys outside the map come back unchanged)."""
    return _apply(_RULES, key)


def movq_key_to_magvit2(key: str) -> str:
    """The inverse of :func:`magvit2_key_to_movq` (to name keys in errors as the file names them)."""
    return _apply(_INVERSE, key)


def is_magvit2_state(state: Mapping[str, object]) -> bool:
    """Whether ``state`` in movq's names is Open-MAGVIT2's / SimVQ's network (a mid block of
    numbered ResNet blocks, no ``quant_conv``): a movq state dict without its saved config."""
    return "quant_conv.weight" not in state and "encoder.mid.block.0.conv1.weight" in state


def magvit2_config(state: Mapping[str, Tensor], source: str = "checkpoint") -> CodecConfig:
    """The codec config of an Open-MAGVIT2 / SimVQ state dict (their key names or movq's: the keys
    read here are the same in both), from the shapes: a preset when they are its (up to the training
    ``resolution``, which no tensor sets), else a ``magvit2-custom`` / ``simvq-custom`` config.
    ``ValueError`` naming ``source`` when a needed key is missing or the shapes fit no network."""
    levels: dict[int, dict[int, int]] = {}
    for key, value in state.items():
        match = _LEVEL.match(key)
        if match:
            levels.setdefault(int(match[1]), {})[int(match[2])] = value.shape[0]
    needed = ("encoder.conv_in.weight", "encoder.conv_out.weight")
    missing = [k for k in needed if k not in state] + ([] if levels else ["encoder.down.0.block.0.conv2.weight"])
    if missing:
        raise ValueError(f"{source}: Open-MAGVIT2 / SimVQ keys, but {missing} are missing")
    ch = state["encoder.conv_in.weight"].shape[0]
    widths = [levels.get(i, {}).get(0, 0) for i in range(max(levels) + 1)]
    if any(w == 0 or w % ch for w in widths):
        raise ValueError(f"{source}: Open-MAGVIT2 level widths {widths} are not multiples of ch={ch}")
    z_channels = state["encoder.conv_out.weight"].shape[0]
    network = "magvit2" if any(k.startswith("decoder.adaptive.") for k in state) else "simvq"
    if "quantize.embedding_proj.weight" in state and "quantize.embedding.weight" in state:
        quantizer: LFQConfig | SimVQConfig = SimVQConfig(
            codebook_size=state["quantize.embedding.weight"].shape[0],
            projection_bias="quantize.embedding_proj.bias" in state,
        )
    elif any(k.startswith("quantize.") for k in state):
        found = sorted(k for k in state if k.startswith("quantize."))[:4]
        raise ValueError(f"{source}: Open-MAGVIT2 network with quantizer tensors {found}: movq reads LFQ and SimVQ only")
    else:
        quantizer = LFQConfig(bit_order="lsb_first")
    try:
        config = replace(
            OPEN_MAGVIT2_F16_262144, name=f"{network}-custom", ch=ch, ch_mult=tuple(w // ch for w in widths),
            num_res_blocks=len(levels[0]), z_channels=z_channels, embed_dim=z_channels, quantizer=quantizer,
            network=network,
        )
    except ValueError as error:
        raise ValueError(f"{source}: the Open-MAGVIT2 / SimVQ shapes fit no network: {error}") from None
    for preset in PRESETS.values():
        if replace(config, name=preset.name, resolution=preset.resolution) == preset:
            return get_preset(preset.name)
    return CodecConfig.from_dict(config.to_dict())  # checks every field


def read_magvit2(
    state: Mapping[str, Tensor], preset: str | None = None, source: str = "checkpoint"
) -> tuple[CodecConfig, dict[str, Tensor]]:
    """``(config, state in movq's key names)`` from an Open-MAGVIT2 / SimVQ state dict (training
    extras and EMA already resolved). The architecture is ``preset``'s, or read from the shapes
    (:func:`magvit2_config`). The keys are checked strictly against it *in the file's names*: a
    missing, unexpected or mis-shaped key is a ``ValueError`` listing them, naming ``source``."""
    from movq.hub.llamagen import codec_shapes  # llamagen imports formats, which imports this module

    config = get_preset(preset) if preset is not None else magvit2_config(state, source)
    expected = {movq_key_to_magvit2(k): v for k, v in codec_shapes(config).items()}
    problems = state_dict_mismatches(expected, state)
    if problems:
        raise ValueError(f"{source}: Open-MAGVIT2 / SimVQ checkpoint does not match {config.describe()}: " + "; ".join(problems))
    return config, {magvit2_key_to_movq(k): v for k, v in state.items()}
