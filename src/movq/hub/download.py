"""Fetching registered weights: Hugging Face Hub (cache, revision, offline), plain URLs, package folders.

Every failure to get a file becomes :class:`WeightsNotAvailableError` (a ``FileNotFoundError``)
that names the repo / URL, the file, and how to provide it locally, instead of a traceback from
the network stack.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Sequence
from pathlib import Path

from movq.hub import registry
from movq.hub.registry import ModelSpec


class WeightsNotAvailableError(FileNotFoundError):
    """The weights of a registered model could not be found locally nor downloaded."""


def _offline() -> bool:
    from huggingface_hub import constants

    env = os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on")
    return env or bool(constants.HF_HUB_OFFLINE)


def fetch(
    spec: ModelSpec,
    *,
    files: Sequence[str] | None = None,
    revision: str | None = None,
    local_files_only: bool = False,
    cache_dir: str | os.PathLike | None = None,
    token: str | bool | None = None,
) -> list[Path]:
    """Local paths of ``spec``'s files (one per ``spec.filenames``; for ``package`` models, the folder).

    ``files`` fetches only those of ``spec.filenames`` (e.g. a diffusers ``config.json`` alone).
    ``revision`` overrides the registry's pinned revision. ``local_files_only=True`` or
    ``HF_HUB_OFFLINE=1`` never touches the network. ``token`` defaults to the usual Hub
    environment (``HF_TOKEN`` / ``huggingface-cli login``).
    """
    if spec.source == "package":
        folder = package_folder(spec)
        if not (folder / "config.json").is_file() or not (folder / "model.safetensors").is_file():
            raise WeightsNotAvailableError(
                f"model {spec.name!r} is shipped inside the package at {folder}, but config.json and "
                "model.safetensors are not there (yet). Put a folder written by Codec.save_pretrained "
                "there, or load such a folder by path: movq.load('/path/to/folder')."
            )
        return [folder]
    if spec.source == "manual":
        raise WeightsNotAvailableError(
            f"model {spec.name!r} is published only at {spec.location}, which no program can download: "
            f"download {spec.filenames[0]} from there and load it by path: movq.load('/path/to/{spec.filenames[0]}')."
        )
    wanted = spec.filenames if files is None else tuple(files)
    unknown = sorted(set(wanted) - set(spec.filenames))
    if unknown:
        raise ValueError(f"model {spec.name!r} has no files {unknown}; its files: {list(spec.filenames)}")
    if spec.source == "hub":
        return [_hub_file(spec, name, revision, local_files_only, cache_dir, token) for name in wanted]
    return [
        _url_file(spec, url, name, local_files_only, cache_dir)
        for url, name in zip(spec.urls, spec.filenames)
        if name in wanted
    ]


def package_folder(spec: ModelSpec) -> Path:
    """Where a ``package`` model's folder lives (``movq/weights/<name>``)."""
    return registry.PACKAGE_WEIGHTS / (spec.package_dir or spec.name)


def _hub_file(
    spec: ModelSpec,
    filename: str,
    revision: str | None,
    local_files_only: bool,
    cache_dir: str | os.PathLike | None,
    token: str | bool | None,
) -> Path:
    from huggingface_hub import hf_hub_download

    rev = revision or spec.revision
    offline = local_files_only or _offline()
    path = f"{spec.subfolder + '/' if spec.subfolder else ''}{filename}"
    try:
        return Path(
            hf_hub_download(
                spec.repo_id, filename, subfolder=spec.subfolder, revision=rev,
                local_files_only=offline, cache_dir=cache_dir, token=token,
            )
        )
    except _hub_errors() as error:
        raise _not_available(
            repr(spec.name), f"{spec.repo_id}/{path}@{rev}", error, offline,
            f"`huggingface-cli download {spec.repo_id} {path} --revision {rev}`",
            f"pass the local file to movq.load('/path/to/{filename}'{_preset_hint(spec)})",
        ) from None


def fetch_repo_folder(
    repo_id: str,
    *,
    subfolder: str | None = None,
    patterns: Sequence[str],
    revision: str | None = None,
    local_files_only: bool = False,
    cache_dir: str | os.PathLike | None = None,
    token: str | bool | None = None,
) -> Path:
    """The local folder of ``repo_id`` (``/subfolder``) at ``revision`` (default ``main``), holding the
    files of it that match ``patterns`` (``fnmatch`` patterns relative to the subfolder, e.g.
    ``"config.json"``): ``huggingface_hub.snapshot_download`` with ``allow_patterns``, so nothing else is
    downloaded. ``local_files_only=True`` or ``HF_HUB_OFFLINE=1`` reads the Hub cache only (the cached
    snapshot of that revision, which may hold fewer files). The folder may lack files, or not exist,
    when the repo holds none that match: the caller says what it found. Errors as :func:`fetch`."""
    from huggingface_hub import snapshot_download

    rev = revision or "main"
    offline = local_files_only or _offline()
    prefix = f"{subfolder.strip('/')}/" if subfolder else ""
    try:
        root = snapshot_download(
            repo_id, revision=rev, allow_patterns=[prefix + p for p in patterns],
            local_files_only=offline, cache_dir=cache_dir, token=token,
        )
    except _hub_errors() as error:
        raise _not_available(
            f"the repo {repo_id!r}", f"{repo_id}{'/' + prefix.rstrip('/') if prefix else ''}@{rev}", error, offline,
            f"`huggingface-cli download {repo_id} --revision {rev}`",
            "pass the local folder to movq.load('/path/to/folder')",
        ) from None
    return Path(root) / prefix if prefix else Path(root)


def repo_folder_files(
    repo_id: str,
    subfolder: str | None,
    folder: Path,
    *,
    revision: str | None = None,
    local_files_only: bool = False,
    cache_dir: str | os.PathLike | None = None,
    token: str | bool | None = None,
) -> str:
    """The files of ``repo_id`` (``/subfolder``) for an error message: asked from the Hub when online
    (``HfApi.list_repo_files``), else those in ``folder``, its cached snapshot (marked ``(in the Hub
    cache)``); at most 20 names. ``cache_dir`` is accepted for symmetry with :func:`fetch_repo_folder`."""
    prefix = f"{subfolder.strip('/')}/" if subfolder else ""
    names, where = None, ""
    if not (local_files_only or _offline()):
        try:
            from huggingface_hub import HfApi

            files = HfApi(token=token).list_repo_files(repo_id, revision=revision or "main")
            names = sorted(f[len(prefix):] for f in files if f.startswith(prefix))
        except Exception:  # the listing only decorates an error: fall back to what is cached
            names = None
    if names is None:
        names = sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file()) if folder.is_dir() else []
        where = " (in the Hub cache)"
    return f"{names[:20]}{' ...' if len(names) > 20 else ''}{where}"


def _hub_errors() -> tuple[type[BaseException], ...]:
    from huggingface_hub.errors import (
        EntryNotFoundError,
        LocalEntryNotFoundError,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    return (LocalEntryNotFoundError, EntryNotFoundError, RepositoryNotFoundError, RevisionNotFoundError, OSError)


def _not_available(what: str, where: str, error: BaseException, offline: bool, download: str, local: str) -> WeightsNotAvailableError:
    """The one error for a Hub file or folder that could not be had: ``what`` could not be had from
    ``hf://where``, why (offline and not cached, or the download error), and the two ways out."""
    reason = (
        "offline (HF_HUB_OFFLINE=1 or local_files_only=True) and it is not in the Hub cache"
        if offline
        else f"download failed ({type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''})"
    )
    return WeightsNotAvailableError(
        f"cannot get {what} from the Hugging Face Hub: hf://{where}: {reason}. To use it without "
        f"network, download it once ({download}), or {local}."
    )


def _preset_hint(spec: ModelSpec) -> str:
    return f", preset={spec.preset!r}" if spec.preset else ""


def url_cache_dir(cache_dir: str | os.PathLike | None = None) -> Path:
    """Cache of files that come from plain URLs: ``<HF_HUB_CACHE>/movq-urls``."""
    if cache_dir is not None:
        return Path(cache_dir) / "movq-urls"
    from huggingface_hub import constants

    return Path(os.environ.get("HF_HUB_CACHE", constants.HF_HUB_CACHE)) / "movq-urls"


def _url_file(
    spec: ModelSpec, url: str, filename: str, local_files_only: bool, cache_dir: str | os.PathLike | None
) -> Path:
    target = url_cache_dir(cache_dir) / hashlib.sha256(url.encode()).hexdigest()[:16] / filename
    if target.is_file():
        return target
    how = (
        f"Download {url} yourself and save it as {target}, or pass the local file to "
        f"movq.load('/path/to/{filename}'{_preset_hint(spec)})."
    )
    if local_files_only or _offline():
        raise WeightsNotAvailableError(
            f"cannot get {spec.name!r}: offline (HF_HUB_OFFLINE=1 or local_files_only=True) and "
            f"{filename} is not cached. {how}"
        )
    from huggingface_hub.file_download import http_get

    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(target.name + ".incomplete")
    try:
        with open(partial, "wb") as handle:
            http_get(url, handle)
        os.replace(partial, target)
    except Exception as error:  # network stack errors vary by backend; report them uniformly
        partial.unlink(missing_ok=True)
        raise WeightsNotAvailableError(f"cannot download {spec.name!r} ({filename}) from {url}: {error}. {how}") from None
    return target
