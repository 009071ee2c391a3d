"""Writing codecs for others: the diffusers ``VQModel`` format, and uploads to the Hugging Face Hub."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

from safetensors.torch import save_file

from movq.atomic import atomic_write, atomic_write_text
from movq.config import CodecConfig
from movq.hub.diffusers import DIFFUSERS_CONFIG, DIFFUSERS_WEIGHTS, config_to_diffusers, original_to_diffusers

if TYPE_CHECKING:
    from movq.codec import Codec

FORMATS = ("movq", "diffusers")


def save_diffusers(codec: Codec, save_directory: str | os.PathLike) -> Path:
    """Write ``config.json`` + ``diffusion_pytorch_model.safetensors`` loadable by
    ``diffusers.VQModel.from_pretrained`` (MoVQ and plain VQGAN codecs with a VQ codebook)."""
    if not isinstance(codec.config, CodecConfig):
        raise ValueError(f"{type(codec).__name__} cannot be exported to diffusers (only VQGAN / MoVQ codecs)")
    config = config_to_diffusers(codec.config)
    directory = Path(save_directory)
    directory.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu() for k, v in codec.state_dict().items()}
    weights = original_to_diffusers(state)
    atomic_write(directory / DIFFUSERS_WEIGHTS, lambda tmp: save_file(weights, tmp, metadata={"format": "pt"}))
    atomic_write_text(directory / DIFFUSERS_CONFIG, json.dumps(config, indent=2) + "\n")
    return directory


def push_to_hub(
    codec: Codec,
    repo_id: str,
    *,
    format: str = "movq",  # noqa: A002
    private: bool | None = None,
    token: str | bool | None = None,
    revision: str | None = None,
    commit_message: str | None = None,
    create_pr: bool = False,
    api: Any = None,
) -> Any:
    """Save ``codec`` in ``format`` to a temporary folder and upload it to ``repo_id`` (created if
    needed). Returns the ``CommitInfo`` of the upload. ``api`` defaults to ``huggingface_hub.HfApi``."""
    if format not in FORMATS:
        raise ValueError(f"format must be one of {FORMATS}, got {format!r}")
    if api is None:
        from huggingface_hub import HfApi

        api = HfApi(token=token)
    api.create_repo(repo_id, private=private, exist_ok=True, repo_type="model")
    with tempfile.TemporaryDirectory(prefix="movq-push-") as tmp:
        codec.save_pretrained(tmp, format=format)
        return api.upload_folder(
            repo_id=repo_id,
            folder_path=tmp,
            repo_type="model",
            revision=revision,
            commit_message=commit_message or f"Upload {codec.config.name} ({format} format) with movq",
            create_pr=create_pr,
        )
