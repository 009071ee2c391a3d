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
from dataclasses import replace

from torch import Tensor

from movq.config import MASKGIT_VQGAN_F16_1024, PRESETS, CodecConfig, VQConfig, get_preset
from movq.hub.llamagen import codec_shapes
from movq.strict import state_dict_mismatches

MID_NAMES = ("block_1", "block_2")
"""movq's names of MaskGIT's ``mid.0``, ``mid.1``."""
_MID_KEY = re.compile(r"^(encoder|decoder)\.mid\.(\d+)\.(.*)$")
_UPSAMPLE_KEY = re.compile(r"^decoder\.up\.(\d+)\.upsample_conv\.(.*)$")
_MOVQ_MID_KEY = re.compile(r"^(encoder|decoder)\.mid\.(block_1|block_2)\.(.*)$")
_MOVQ_UPSAMPLE_KEY = re.compile(r"^decoder\.up\.(\d+)\.upsample\.conv\.(.*)$")
_LEVEL = re.compile(r"^encoder\.down\.(\d+)\.block\.(\d+)\.conv2\.weight$")


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


def maskgit_config(state: Mapping[str, Tensor], source: str = "checkpoint") -> CodecConfig:
    """The codec config of a MaskGIT state dict (MaskGIT's key names), read from the shapes: the
    preset :data:`~movq.config.MASKGIT_VQGAN_F16_1024` when they are its, else a ``maskgit-custom``
    config with its network. ``ValueError`` naming ``source`` when a needed key is missing."""
    levels: dict[int, dict[int, int]] = {}
    for key, value in state.items():
        match = _LEVEL.match(key)
        if match:
            levels.setdefault(int(match[1]), {})[int(match[2])] = value.shape[0]
    needed = ("encoder.conv_in.weight", "encoder.conv_out.weight", "quantize.embedding.weight")
    missing = [k for k in needed if k not in state] + ([] if levels else ["encoder.down.0.block.0.conv2.weight"])
    if missing:
        raise ValueError(f"{source}: MaskGIT VQGAN keys, but {missing} are missing")
    ch = state["encoder.conv_in.weight"].shape[0]
    widths = [levels[i].get(0, 0) for i in range(max(levels) + 1)]
    if any(w % ch for w in widths):
        raise ValueError(f"{source}: MaskGIT level widths {widths} are not multiples of ch={ch}")
    codebook = state["quantize.embedding.weight"]
    z_channels = state["encoder.conv_out.weight"].shape[0]
    config = replace(
        MASKGIT_VQGAN_F16_1024, name="maskgit-custom", ch=ch, ch_mult=tuple(w // ch for w in widths),
        num_res_blocks=len(levels[0]), z_channels=z_channels, embed_dim=z_channels,
        quantizer=VQConfig(codebook_size=codebook.shape[0]),
    )
    for preset in PRESETS.values():
        if replace(config, name=preset.name) == preset:
            return get_preset(preset.name)
    return CodecConfig.from_dict(config.to_dict())  # checks every field


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
