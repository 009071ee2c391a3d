"""MaskGIT's VQGAN (google-research/maskgit), as its PyTorch conversion publishes it
(``maskgit-vqgan-imagenet-f16-256.bin`` in ``fun-research/TiTok``; the network is
bytedance/1d-tokenizer ``modeling/modules/maskgit_vqgan.py``): its key names, read into movq's codec.

The network is :data:`movq.config.MASKGIT_VQGAN_F16_1024` (``CodecConfig(network="maskgit")``: no
attention, bias-free ResNet convolutions, average-pool downsampling, a 1x1 encoder output, no
``quant_conv``; trained on pixels in ``[0, 1]``). The file is ``torch.save(state_dict)``; its keys
are movq's but for these:

==========================================  ==========================================
MaskGIT key                                 movq key
==========================================  ==========================================
``{encoder,decoder}.mid.{0,1}.*``           ``{encoder,decoder}.mid.{block_1,block_2}.*``
``decoder.up.{i}.upsample_conv.*``          ``decoder.up.{i}.upsample.conv.*``
==========================================  ==========================================
"""

from __future__ import annotations

import re
from collections.abc import Mapping

from torch import Tensor

from movq.config import CodecConfig, get_preset
from movq.hub.formats import maskgit_config
from movq.hub.llamagen import codec_shapes
from movq.strict import state_dict_mismatches

MID_NAMES = ("block_1", "block_2")
"""movq's names of MaskGIT's ``mid.0``, ``mid.1``."""
_MID_KEY = re.compile(r"^(encoder|decoder)\.mid\.(\d+)\.(.*)$")
_UPSAMPLE_KEY = re.compile(r"^decoder\.up\.(\d+)\.upsample_conv\.(.*)$")
_MOVQ_MID_KEY = re.compile(r"^(encoder|decoder)\.mid\.(block_1|block_2)\.(.*)$")
_MOVQ_UPSAMPLE_KEY = re.compile(r"^decoder\.up\.(\d+)\.upsample\.conv\.(.*)$")


def maskgit_key_to_movq(key: str) -> str:
    """One MaskGIT key -> movq's (keys outside the map come back unchanged)."""
    match = _MID_KEY.match(key)
    if match and int(match[2]) < len(MID_NAMES):
        return f"{match[1]}.mid.{MID_NAMES[int(match[2])]}.{match[3]}"
    match = _UPSAMPLE_KEY.match(key)
    if match:
        return f"decoder.up.{match[1]}.upsample.conv.{match[2]}"
    return key


def movq_key_to_maskgit(key: str) -> str:
    """The inverse of :func:`maskgit_key_to_movq` (to name keys in errors as the file names them)."""
    match = _MOVQ_MID_KEY.match(key)
    if match:
        return f"{match[1]}.mid.{MID_NAMES.index(match[2])}.{match[3]}"
    match = _MOVQ_UPSAMPLE_KEY.match(key)
    if match:
        return f"decoder.up.{match[1]}.upsample_conv.{match[2]}"
    return key


def read_maskgit(
    state: Mapping[str, Tensor], preset: str | None = None, source: str = "checkpoint"
) -> tuple[CodecConfig, dict[str, Tensor]]:
    """``(config, state in movq's key names)`` from a MaskGIT VQGAN state dict.

    The architecture is ``preset``'s, or read from the shapes (:func:`maskgit_config`). The keys are
    checked strictly against it *in MaskGIT's names*: a missing, unexpected or mis-shaped key is a
    ``ValueError`` listing them, naming ``source``.
    """
    config = get_preset(preset) if preset is not None else maskgit_config(state, source)
    expected = {movq_key_to_maskgit(k): v for k, v in codec_shapes(config).items()}
    problems = state_dict_mismatches(expected, state)
    if problems:
        raise ValueError(f"{source}: MaskGIT VQGAN checkpoint does not match {config.describe()}: " + "; ".join(problems))
    return config, {maskgit_key_to_movq(k): v for k, v in state.items()}
