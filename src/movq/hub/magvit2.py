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

from torch import Tensor

from movq.config import CodecConfig, get_preset
from movq.hub.formats import magvit2_config
from movq.hub.llamagen import codec_shapes
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


def read_magvit2(
    state: Mapping[str, Tensor], preset: str | None = None, source: str = "checkpoint"
) -> tuple[CodecConfig, dict[str, Tensor]]:
    """``(config, state in movq's key names)`` from an Open-MAGVIT2 / SimVQ state dict (training
    extras and EMA already resolved). The architecture is ``preset``'s, or read from the shapes
    (:func:`movq.hub.formats.magvit2_config`). The keys are checked strictly against it *in the file's names*: a
    missing, unexpected or mis-shaped key is a ``ValueError`` listing them, naming ``source``."""
    config = get_preset(preset) if preset is not None else magvit2_config(state, source)
    expected = {movq_key_to_magvit2(k): v for k, v in codec_shapes(config).items()}
    problems = state_dict_mismatches(expected, state)
    if problems:
        raise ValueError(f"{source}: Open-MAGVIT2 / SimVQ checkpoint does not match {config.describe()}: " + "; ".join(problems))
    return config, {magvit2_key_to_movq(k): v for k, v in state.items()}
