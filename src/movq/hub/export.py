"""Writing codecs for others, as functions: the diffusers ``VQModel`` format, and uploads to the Hub.

Both are :class:`~movq.codec.Codec` methods (``save_pretrained(format=...)``, ``push_to_hub``); the
formats are :data:`movq.hub.formats.WRITE_FORMATS`.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from movq.hub.formats import DIFFUSERS

if TYPE_CHECKING:
    from movq.codec import Codec


def save_diffusers(codec: Codec, save_directory: str | os.PathLike) -> Path:
    """Write ``config.json`` + ``diffusion_pytorch_model.safetensors`` loadable by
    ``diffusers.VQModel.from_pretrained`` (MoVQ and plain VQGAN codecs with a VQ codebook)."""
    return codec.save_pretrained(save_directory, format=DIFFUSERS)


def push_to_hub(codec: Codec, repo_id: str, **kwargs: Any) -> Any:
    """``codec.push_to_hub(repo_id, **kwargs)``: save it in ``format`` ("movq" or "diffusers") and
    upload it to ``repo_id`` (created if needed); returns the ``CommitInfo`` of the upload."""
    return codec.push_to_hub(repo_id, **kwargs)
