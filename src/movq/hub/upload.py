"""Publishing a folder on the Hugging Face Hub: a codec's model card, and the upload of a model
folder (or a dataset folder).

The model card is the ``README.md`` that ``Codec.save_pretrained`` writes next to the weights, a
``huggingface_hub.ModelCard``: YAML front matter (``library_name: movq``, ``tags``, ``license`` and a
``movq`` entry with the preprocessing) and a short body with the same facts and a usage snippet.
Like ``huggingface_hub.PyTorchModelHubMixin.save_pretrained``, a ``README.md`` that is already in the
folder is kept (a card the user wrote is never overwritten). Loading never reads the card: a
folder's ``config.json`` is the only source of the architecture.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from movq.atomic import atomic_write_text

MODEL_CARD_FILE = "README.md"
"""The model card's file name in a model folder (the name the Hub shows)."""
LIBRARY_NAME = "movq"
UNKNOWN_LICENSE = "other"
"""The card's ``license`` when none is given: the Hub's value for "not one of the listed licenses"."""


def family_of(config: Any) -> str:
    """The codec family of a config, for tags and card titles: a config's own ``architecture``
    (``"dalle-dvae"``...), else ``"movqgan"`` (SpatialNorm decoder) or ``"vqgan"`` (GroupNorm)."""
    architecture = getattr(config, "architecture", None)
    if isinstance(architecture, str):
        return architecture
    return "movqgan" if getattr(config, "norm", None) == "spatial" else "vqgan"


def preprocessing(config: Any) -> dict[str, Any]:
    """What a user of the weights must know to feed them: the training ``resolution`` (when the
    config has one), the ``input_range`` the networks were trained on, the range ``movq``'s API
    takes (always ``[-1, 1]``: the codec maps it), how to get there from 8-bit pixels, the pixels
    per token and the codebook size."""
    low, high = getattr(config, "input_range", (-1.0, 1.0))
    facts: dict[str, Any] = {}
    if isinstance(getattr(config, "resolution", None), int):
        facts["resolution"] = config.resolution
    facts.update({
        "input_range": [float(low), float(high)],
        "api_input_range": [-1.0, 1.0],
        "normalisation": "RGB, x / 127.5 - 1 (movq converts PIL / uint8 input itself)",
        "downsample_factor": config.downsample_factor,
        "codebook_size": config.codebook_size,
    })
    return facts


def model_card(config: Any, *, format: str = "movq", repo_id: str | None = None, license: str | None = None) -> Any:
    """The ``huggingface_hub.ModelCard`` of a codec of ``config`` saved in ``format`` (``"movq"`` or
    ``"diffusers"``); ``repo_id`` goes into the usage snippet (a placeholder when ``None``);
    ``license`` (a Hub license id such as ``"apache-2.0"``) defaults to ``"other"``."""
    from huggingface_hub import ModelCard, ModelCardData

    family = family_of(config)
    facts = preprocessing(config)
    quantizer = getattr(getattr(config, "quantizer", None), "kind", None)
    tags = ["movq", "image-tokenizer", "vq", family] + ([quantizer] if isinstance(quantizer, str) else [])
    data = ModelCardData(
        library_name=LIBRARY_NAME,
        license=license or UNKNOWN_LICENSE,
        tags=list(dict.fromkeys(tags)),
        movq={"format": format, "family": family, "name": getattr(config, "name", family), **facts},
    )
    where = repo_id or "path/or/owner-name"
    low, high = facts["input_range"]
    lines = [
        f"# {getattr(config, 'name', family)}",
        "",
        f"An image tokenizer ({family}) saved with [movq](https://pypi.org/project/movq/) in the `{format}` format.",
        "",
        "## Preprocessing",
        "",
        *(f"- {key.replace('_', ' ')}: {value}" for key, value in facts.items()),
        "",
        f"The networks were trained on pixels in [{low:g}, {high:g}]; `movq` takes and returns [-1, 1] and maps "
        "between the two itself.",
        "",
        "## Usage",
        "",
        "```python",
        "import movq",
        "",
        f'codec = movq.load("{where}")',
        "tokens = codec.encode(images)   # PIL images, uint8 arrays, or float tensors in [-1, 1]",
        "images = codec.decode(tokens)   # float tensors [B, 3, H, W] in [-1, 1]",
        "```",
    ]
    if format == "diffusers":
        lines += ["", "The folder is also a diffusers `VQModel`: `diffusers.VQModel.from_pretrained(...)`."]
    if not license:
        lines += ["", "License: not stated when this card was written (`license: other`)."]
    return ModelCard(f"---\n{data.to_yaml()}\n---\n\n" + "\n".join(lines) + "\n")


def write_model_card(
    directory: str | os.PathLike,
    config: Any,
    *,
    format: str = "movq",
    repo_id: str | None = None,
    license: str | None = None,
) -> Path | None:
    """Write :func:`model_card` as ``directory/README.md`` (atomically) unless that file exists
    (kept as the user wrote it, as ``PyTorchModelHubMixin`` does); the path written, or ``None``."""
    path = Path(directory) / MODEL_CARD_FILE
    if path.exists():
        return None
    return atomic_write_text(path, str(model_card(config, format=format, repo_id=repo_id, license=license)))


def upload_folder(
    write: Callable[[Path], object],
    repo_id: str,
    *,
    commit_message: str,
    private: bool | None = None,
    token: str | bool | None = None,
    revision: str | None = None,
    create_pr: bool = False,
    api: Any = None,
    repo_type: str = "model",
) -> Any:
    """Create the repo ``repo_id`` (a ``repo_type`` repo: ``"model"``, or ``"dataset"`` for
    ``movq.tokenize.export.push_to_hub``) if needed, let ``write`` fill a temporary folder, upload that
    folder in one commit and return its ``CommitInfo``. ``api`` defaults to ``huggingface_hub.HfApi``."""
    if api is None:
        from huggingface_hub import HfApi

        api = HfApi(token=token)
    api.create_repo(repo_id, private=private, exist_ok=True, repo_type=repo_type)
    with tempfile.TemporaryDirectory(prefix="movq-push-") as tmp:
        write(Path(tmp))
        return api.upload_folder(
            repo_id=repo_id,
            folder_path=tmp,
            repo_type=repo_type,
            revision=revision,
            commit_message=commit_message,
            create_pr=create_pr,
        )
