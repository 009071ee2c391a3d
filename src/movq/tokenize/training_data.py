"""Training data from ``movq-tokenize``: a finished token / latent folder, or an image collection
tokenized once with a frozen codec into the run folder (what every generator trainer on top of a
codec shares).

    dataset = open_token_folder(cfg.data, Path(cfg.out) / "latents", kind="latents", codec=cfg.codec,
                                resolution=cfg.resolution, loop=loop)

The folder is :class:`movq.tokenize.dataset.TokenDataset`'s; its ``meta`` records the codec (name, config and
weights hashes), the resolution and the preprocessing. A killed tokenizing run resumes where it
stopped (``movq-tokenize`` skips finished shards), so ``--resume`` of a trainer reuses the folder.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

from movq.distributed import DistContext, barrier

DEFAULT_RESOLUTION = 256
KINDS = ("tokens", "latents")


class TrainingRun(Protocol):
    """What the tokenize-once step needs from a trainer's loop (:class:`movq.train.loop.TrainLoop` has it):
    ``cfg.device`` / ``cfg.progress``, ``dist`` (the process group) and ``print`` (rank 0 only)."""

    cfg: Any
    dist: DistContext

    def print(self, msg: str) -> None: ...


def is_token_folder(path: str | os.PathLike) -> bool:
    """Whether ``path`` is a ``movq-tokenize`` output folder (it holds ``meta.json``)."""
    from movq.tokenize.meta import META_NAME

    return (Path(path) / META_NAME).is_file()


def load_codec(name: str, flag: str = "--codec") -> Any:
    """``movq.load(name)``; a name or folder that does not load is a one-line ``ValueError``."""
    import movq

    try:
        return movq.load(name)
    except (OSError, ValueError, KeyError) as error:
        raise ValueError(f"cannot load {flag} {name!r}: {error}") from None


def data_codec(codec: Any, flag: str | None, meta: dict[str, Any], purpose: str) -> Any:
    """The codec that decodes a token / latent folder's items: ``codec`` (a codec, or a name / folder to
    load), else the ``--codec`` value ``flag``, else the codec the folder's ``meta`` records; a
    one-line ``ValueError`` naming ``purpose`` (e.g. ``"--sample-every"``) when none is known or it does not load."""
    if codec is not None and not isinstance(codec, (str, os.PathLike)):
        return codec
    name = codec or flag or meta.get("model")
    if not name:
        raise ValueError(f"{purpose} needs the codec that decodes the data, but the data records none: pass --codec")
    return load_codec(str(name), "--codec" if codec is None and flag else f"{purpose}: the data's codec")


def recorded_codec(codec: Any, name: str, weights: str | None, run: str | os.PathLike, data: str,
                   device: Any = None, check: bool = True) -> tuple[Any, bool]:
    """``(codec, loaded)``: the codec a generator run's release decodes with. ``codec`` is a codec, or a
    name / folder to load instead; ``None`` loads the recorded ``name`` (as stored, on ``device``);
    ``loaded`` says whether it was loaded here. With ``check``, a codec whose weights differ from the
    recorded ``weights`` hash is warned about: its ``data`` (``"tokens"``, ``"latents"``) would not mean
    what the model learned."""
    loaded = codec is None or isinstance(codec, (str, os.PathLike))
    if loaded:
        import movq

        codec = movq.load(codec or name, device=device)
    if check and weights:
        import warnings

        from movq.tokenize.meta import weights_hash

        if weights_hash(codec) != weights:
            warnings.warn(
                f"the codec's weights differ from those whose {data} {run} was trained on "
                f"({name!r}, weights {weights[:12]}): samples will not decode as trained",
                stacklevel=3,
            )
    return codec, loaded


def codec_identity(meta: dict[str, Any]) -> dict[str, Any]:
    """Which codec wrote a token / latent folder (its ``meta.json``): the hashes of its config and
    weights, and its name (for messages). A generator trainer records it in its checkpoints and
    compares the hashes on ``--resume``, so that a run is never continued on another codec's data."""
    return {"model": meta.get("model"), "config_hash": meta.get("config_hash"), "weights_hash": meta.get("weights_hash")}


def check_same_codec(saved: dict[str, Any] | None, meta: dict[str, Any], run_dir: str | os.PathLike) -> None:
    """Refuse to resume the run in ``run_dir`` (trained on data of the codec ``saved``, a
    :func:`codec_identity`) on data written by another codec (``meta``); ``None`` (an older
    checkpoint that did not record it) is not refused."""
    if saved is None:
        return
    now = codec_identity(meta)
    if (saved.get("config_hash"), saved.get("weights_hash")) != (now["config_hash"], now["weights_hash"]):
        raise ValueError(
            f"this run ({run_dir}) was trained on data of the codec {saved.get('model')!r} (config "
            f"{str(saved.get('config_hash'))[:12]}, weights {str(saved.get('weights_hash'))[:12]}), but --data now "
            f"holds data of {now['model']!r} (config {str(now['config_hash'])[:12]}, weights "
            f"{str(now['weights_hash'])[:12]}); pass the run's own --data, or use a new --out"
        )


def check_codec_matches(codec_name: str, meta: dict[str, Any], folder: str | os.PathLike) -> None:
    """Refuse a ``--codec`` that is not the codec whose tokens / latents ``folder`` holds (config or weights differ)."""
    from movq.tokenize.meta import config_hash, weights_hash

    codec = load_codec(codec_name)
    mine = (config_hash(codec.config), weights_hash(codec))
    theirs = (meta.get("config_hash"), meta.get("weights_hash"))
    if mine != theirs:
        what = "architecture" if mine[0] != theirs[0] else "weights"
        raise ValueError(
            f"--codec {codec_name!r} is not the codec that wrote {folder} ({meta.get('model')!r}): other {what} "
            f"(config {mine[0][:12]} vs {str(theirs[0])[:12]}, weights {mine[1][:12]} vs {str(theirs[1])[:12]}); "
            "drop --codec or pass the codec the folder came from"
        )


def prepare_token_folder(
    data: str, out: str | os.PathLike, *, kind: str, codec: str | None, resolution: int | None,
    loop: TrainingRun, batch_size: int = 32, num_workers: int = 2,
    check_sources: Callable[[list[str]], None] | None = None,
) -> Path:
    """The ``movq-tokenize`` folder to train on: ``data`` itself, or ``out`` after tokenizing the image
    collection ``data`` once with the frozen ``codec`` at ``resolution`` (``kind="latents"``: continuous
    latents). All ranks share the work under torchrun; a partly written ``out`` resumes.
    ``check_sources`` sees the listed sources (paths relative to ``data``) before anything is encoded
    and may refuse them (e.g. a layout without class folders)."""
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
    if is_token_folder(data):
        return Path(data)
    if not Path(data).exists() and not any(ch in data for ch in "*?["):
        raise FileNotFoundError(f"--data {data} does not exist")
    if not codec:
        flag = " --latents" if kind == "latents" else ""
        raise ValueError(
            f"--data {data} is not a movq-tokenize folder (no meta.json): pass --codec NAME_OR_PATH to tokenize "
            f"it once into {out}, or run movq-tokenize{flag} first"
        )
    from movq.tokenize.config import TokenizeConfig
    from movq.tokenize.runner import Tokenizer

    cfg = loop.cfg
    settings = TokenizeConfig(
        model=codec, data=data, out=str(out), resolution=resolution or DEFAULT_RESOLUTION,
        latents=kind == "latents", batch_size=batch_size, num_workers=num_workers,
        device=None if cfg.device == "auto" else cfg.device, progress=cfg.progress,
    )
    loop.print(f"tokenizing {data} ({kind}) with {codec} at {settings.resolution} px into {out}")
    tokenizer = Tokenizer(settings)
    try:
        if check_sources is not None:
            check_sources([item.source for item in tokenizer.sources.items])
        summary = tokenizer.run()
    finally:
        tokenizer.close()
    if summary:  # rank 0
        loop.print(f"{summary['images']} images in {out} ({summary['skipped']} unreadable, listed in skipped.jsonl)")
    barrier(loop.dist)  # rank 0 merges the index last
    return Path(out)


def open_token_folder(
    data: str, out: str | os.PathLike, *, kind: str, codec: str | None, resolution: int | None,
    loop: TrainingRun, batch_size: int = 32, num_workers: int = 2,
    check_sources: Callable[[list[str]], None] | None = None,
) -> Any:
    """A :class:`movq.tokenize.dataset.TokenDataset` of ``kind`` (see :func:`prepare_token_folder`), checked: the
    folder holds ``kind``, at least one item, and (for a given folder) was written by ``codec`` at
    ``resolution`` when those are given. ``check_sources``: see :func:`prepare_token_folder`."""
    folder = prepare_token_folder(
        data, out, kind=kind, codec=codec, resolution=resolution, loop=loop, batch_size=batch_size,
        num_workers=num_workers, check_sources=check_sources,
    )
    from movq.tokenize.dataset import TokenDataset

    dataset = TokenDataset(folder)
    meta = dataset.meta
    if meta.get("kind") != kind:
        hint = "tokenize with --latents" if kind == "latents" else "tokenize without --latents"
        raise ValueError(f"{folder} holds {meta.get('kind')}, not {kind}: {hint}")
    if folder == Path(data):
        if codec:
            check_codec_matches(codec, meta, folder)
        if resolution is not None and resolution != meta.get("resolution"):
            raise ValueError(
                f"--resolution {resolution}, but {folder} was tokenized at {meta.get('resolution')} px; "
                "drop --resolution or tokenize again"
            )
    if len(dataset) == 0:
        raise ValueError(f"{folder} holds no items")
    return dataset
