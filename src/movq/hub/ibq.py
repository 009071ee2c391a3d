"""IBQ's tokenizers (TencentARC/SEED-Voken ``src/IBQ``): recognised from the shapes of their weights.

IBQ's network is taming-transformers' VQGAN with taming's key names, so its published Lightning
checkpoints (``TencentARC/IBQ-Tokenizer-*``: ``state_dict`` with the codec, the loss's LPIPS and
discriminator, and LitEma's ``model_ema.*`` shadows of every trainable weight, the discriminator's
too) read as the ``lightning`` format. Only the quantizer differs, and its tensor
(``quantize.embedding.weight``) looks like a VQ codebook: what tells IBQ apart is its network, 4 res
blocks per level at ``ch_mult`` (1, 1, 2, 2, 4), attention at 16 and 256-dim codes (taming's own
f16 VQGAN has 2 res blocks). A codec with exactly that network read from a checkpoint without
movq's saved config gets IBQ's dot-product quantizer.
"""

from __future__ import annotations

from dataclasses import replace

from movq.config import IBQ_F16_16384, CodecConfig, IBQConfig, VQConfig

NETWORK_FIELDS = ("in_channels", "out_channels", "ch", "ch_mult", "num_res_blocks", "attn_resolutions",
                  "z_channels", "embed_dim", "norm")
"""The :class:`~movq.config.CodecConfig` fields that must equal IBQ's for a checkpoint to be read as IBQ."""


def is_ibq_network(config: CodecConfig) -> bool:
    """Whether ``config`` has IBQ's network (the fields of :data:`NETWORK_FIELDS`) and a plain VQ codebook's tensors."""
    quantizer = config.quantizer
    plain = isinstance(quantizer, VQConfig) and quantizer.groups == 1 and quantizer.code_dim is None
    return plain and all(getattr(config, f) == getattr(IBQ_F16_16384, f) for f in NETWORK_FIELDS)


def recognise_ibq(config: CodecConfig) -> CodecConfig:
    """``config`` (read from a checkpoint's shapes) with IBQ's quantizer if it has IBQ's network
    (:func:`is_ibq_network`), unchanged otherwise."""
    if not is_ibq_network(config):
        return config
    return replace(config, quantizer=IBQConfig(codebook_size=config.quantizer.codebook_size))  # type: ignore[union-attr]
