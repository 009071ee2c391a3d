"""VQGAN-LC (zh460045050/VQGAN-LC ``vqgan-gpt-lc/models/models_vq.py``): its training checkpoint,
read into movq's codec.

VQGAN-LC is taming's VQGAN network with a projected-codebook quantizer
(:class:`movq.quantizers.ProjectedQuantizer`): a frozen ``tok_embeddings`` codebook (100,000 x 768
CLIP features) and a trainable ``codebook_projection`` (``nn.Linear(768, embed_dim)``). Its published
checkpoint is ``util/misc.py``'s ``save_model``: ``{"model": state_dict, "optimizer", "epoch",
"scaler", "args"}`` (``args`` an ``argparse.Namespace``, read inertly), the state dict holding the
codec, the ``discriminator.*`` and the LPIPS ``perceptual_loss.*`` (both dropped on load). Its keys
are taming's (= movq's) but for the quantizer's:

=================================  ===========================
VQGAN-LC key                       movq key
=================================  ===========================
``tok_embeddings.weight``          ``quantize.codebook``
``codebook_projection.weight``     ``quantize.projection.weight``
``codebook_projection.bias``       ``quantize.projection.bias``
=================================  ===========================
"""

from __future__ import annotations

from collections.abc import Mapping

from torch import Tensor

from movq.config import CodecConfig, get_preset
from movq.hub.formats import infer_config

KEY_MAP = {
    "tok_embeddings.weight": "quantize.codebook",
    "codebook_projection.weight": "quantize.projection.weight",
    "codebook_projection.bias": "quantize.projection.bias",
}
"""VQGAN-LC's quantizer keys -> movq's; every other key is the same in both."""


def read_vqgan_lc(
    state: Mapping[str, Tensor], preset: str | None = None, source: str = "checkpoint"
) -> tuple[CodecConfig, dict[str, Tensor]]:
    """``(config, state in movq's key names)`` from a VQGAN-LC state dict (training extras already
    dropped). The architecture is ``preset``'s or read from the shapes (the preset
    :data:`movq.config.VQGAN_LC_F16_100K` when they are its). The MLP projector (``--use_cblinear 2``,
    ``codebook_projection.0.*``) is a ``ValueError``: movq's projection is linear."""
    mlp = sorted(k for k in state if k.startswith("codebook_projection.") and k not in KEY_MAP)
    if mlp:
        raise ValueError(
            f"{source}: VQGAN-LC checkpoint with an MLP codebook projector ({mlp[:4]}); movq reads the "
            "linear projector (--use_cblinear 1) only"
        )
    converted = {KEY_MAP.get(k, k): v for k, v in state.items()}
    config = get_preset(preset) if preset is not None else infer_config(converted, None, source)
    return config, converted
