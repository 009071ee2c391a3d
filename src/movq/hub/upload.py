"""Uploading a model folder (or a dataset folder) to the Hugging Face Hub."""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any


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
