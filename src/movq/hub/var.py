"""VAR's multi-scale VQVAE (FoundationVision/VAR ``models/vqvae.py``, ``quant.py``, ``basic_vae.py``):
its published ``vae_ch160v4096z32.pth``, read into movq's codec.

The network is taming's f16 VQGAN at ``ch=160`` with 32-dim latents and 3x3 quant convolutions
(:data:`movq.config.VAR_F16_4096`), the quantizer VAR's ``VectorQuantizer2``
(:class:`movq.quantizers.MultiScaleResidualVQ`). The file is ``torch.save(vae.state_dict())``; its
keys are movq's but for these:

===============================================  ================================================
VAR key                                          movq key
===============================================  ================================================
``*.attn*.qkv.{weight,bias}`` (``[3C, C, 1, 1]``)  ``*.attn*.{q,k,v}.{weight,bias}`` (its thirds)
``quantize.quant_resi.qresi_ls.{k}.*``           ``quantize.quant_resi.{k}.*`` (partially shared)
``quantize.quant_resi.qresi.*``                  ``quantize.quant_resi.0.*`` (fully shared)
``quantize.quant_resi.{k}.*``                    the same (one Phi per scale)
``quantize.ema_vocab_hit_SV`` (``[scales, V]``)  dropped: a training-time usage log
===============================================  ================================================

VAR's attention computes ``softmax(q^T k / sqrt(C)) v`` from one 1x1 convolution to ``3C``
channels, split as ``reshape(B, 3, C, H, W)``: rows ``[0, C)`` of ``qkv`` are ``q``, ``[C, 2C)``
``k``, ``[2C, 3C)`` ``v``; movq's attention block is that computation with three convolutions.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

import torch
from torch import Tensor

from movq.config import CodecConfig
from movq.hub.formats import infer_config
from movq.quantizers.multiscale import VAR_SCALES

USAGE_LOG = "quantize.ema_vocab_hit_SV"
"""VAR's per-scale code-hit EMA ``[scales, codebook_size]``: only used to log usage in training."""
_QKV_KEY = re.compile(r"^(.*)\.qkv\.(weight|bias)$")
_PHI_KEY = re.compile(r"^quantize\.quant_resi\.(?:qresi_ls\.(\d+)|qresi)\.(weight|bias)$")


def var_to_movq(state: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """VAR's state dict in movq's key names (see the module's table); tensors are shared, not copied."""
    out: dict[str, Tensor] = {}
    for key, value in state.items():
        if key == USAGE_LOG:
            continue
        qkv = _QKV_KEY.match(key)
        phi = _PHI_KEY.match(key)
        if qkv and value.shape[0] % 3 == 0:
            for name, part in zip("qkv", value.chunk(3, dim=0)):
                out[f"{qkv[1]}.{name}.{qkv[2]}"] = part.contiguous()
        elif phi:
            out[f"quantize.quant_resi.{phi[1] or 0}.{phi[2]}"] = value
        else:
            out[key] = value
    return out


def movq_to_var(state: Mapping[str, Tensor], scales: int, phi_count: int) -> dict[str, Tensor]:
    """The inverse of :func:`var_to_movq`: a movq multi-scale codec's state dict in VAR's key names,
    for VAR's own ``VQVAE.load_state_dict`` (``scales`` / ``phi_count``: its quantizer's number of
    scales and of Phi convolutions, which choose VAR's Phi container: ``PhiShared`` for one,
    ``PhiNonShared`` for one per scale, else ``PhiPartiallyShared``); the usage log is zeros."""
    out: dict[str, Tensor] = {}
    codebook = None
    for key, value in state.items():
        parts = key.rsplit(".", 2)
        if len(parts) == 3 and parts[1] in ("q", "k", "v") and key.startswith(("encoder.", "decoder.")) and ".attn" in key:
            if parts[1] == "q":
                thirds = [state[f"{parts[0]}.{n}.{parts[2]}"] for n in "qkv"]
                out[f"{parts[0]}.qkv.{parts[2]}"] = torch.cat(thirds, dim=0)
            continue
        phi = re.fullmatch(r"quantize\.quant_resi\.(\d+)\.(weight|bias)", key)
        if phi and phi_count == 1:
            key = f"quantize.quant_resi.qresi.{phi[2]}"
        elif phi and phi_count != scales:
            key = f"quantize.quant_resi.qresi_ls.{phi[1]}.{phi[2]}"
        if key == "quantize.embedding.weight":
            codebook = value
        out[key] = value
    if codebook is not None:
        out[USAGE_LOG] = torch.zeros(scales, codebook.shape[0], dtype=codebook.dtype)
    return out


def read_var(
    state: Mapping[str, Tensor], preset: str | None = None, source: str = "checkpoint"
) -> tuple[CodecConfig, dict[str, Tensor]]:
    """``(config, state in movq's key names)`` from VAR's VQVAE state dict.

    The architecture is ``preset``'s, or read from the shapes (:func:`movq.hub.formats.infer_config`:
    the Phi convolutions make the quantizer multi-scale, the ``quant_conv`` kernel is read, and the
    published network is the preset :data:`movq.config.VAR_F16_4096`). The scales are VAR's ten
    (1 .. 16): a usage log over another number of scales is a ``ValueError`` asking for ``preset=``.
    """
    log = state.get(USAGE_LOG)
    if preset is None and log is not None and log.ndim == 2 and log.shape[0] != len(VAR_SCALES):
        raise ValueError(
            f"{source}: VAR checkpoint with {log.shape[0]} scales ({USAGE_LOG} {tuple(log.shape)}); the tensors do "
            f"not say their sides and movq reads VAR's {len(VAR_SCALES)} ({list(VAR_SCALES)}) from the shapes: "
            "pass preset= naming a config with its scales"
        )
    converted = var_to_movq(state)
    return infer_config(converted, preset, source), converted
