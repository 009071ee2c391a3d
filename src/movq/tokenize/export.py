"""``movq-tokenize export``: a finished token folder rewritten in the layout another trainer reads.

Usage::

    movq-tokenize export codes/ --format parquet    --out exported/   # data/train-00000-of-00001.parquet + README.md
    movq-tokenize export codes/ --format webdataset --out exported/   # shard-000000.tar: KEY.tokens.npy, KEY.txt, KEY.cls, KEY.json
    movq-tokenize export codes/ --format llamagen   --out exported/   # imagenet{R}_codes/{i}.npy + imagenet{R}_labels/{i}.npy
    movq-tokenize export codes/ --format parquet --push-to-hub ORG/NAME [--private]   # a dataset repo with a card

Every item of the folder's index (in its order) becomes one record whose key is its position, zero
padded (``00000042``); the source name travels along. Formats:

- **parquet** (``data/train-KKKKK-of-NNNNN.parquet``, ``--shard-size`` rows per file, ``--row-group-size``
  rows per row group; the Hub's split naming, so ``datasets.load_dataset(folder)`` finds a ``train``
  split). Columns: ``key`` (string), ``source`` (string), ``tokens`` (a flat ``list<uint8|uint16|uint32>``
  in the stored dtype: ``reshape(shape)`` gives the item; latents: ``list<float16|float32>``,
  bfloat16 widened to float32), ``shape`` (``list<int32>``: ``[h, w]``, ``[n_aug, h, w]`` with
  ``--augment``), ``label`` (int64, null when absent) and ``caption`` (string, null when absent).
  ``tokens`` is a list, not fixed-size binary, because every reader (pyarrow, ``datasets``, pandas,
  polars, DuckDB) decodes it to numbers without knowing the dtype or byte order, and parquet's
  dictionary / bit-packing compresses it as well as the raw bytes.
- **webdataset** (``shard-KKKKKK.tar``, ``--shard-size`` items per tar): members ``KEY.tokens.npy``
  (``numpy.save`` of the item in its stored dtype; ``KEY.latents.npy`` for latent runs), ``KEY.txt``
  (the caption, when there is one), ``KEY.cls`` (the label as decimal text, when there is one) and
  ``KEY.json`` (``{"source", "shape"}``); tar headers carry no time or owner, so exports are
  byte-identical.
- **llamagen**: LlamaGen's ``extract_codes_c2i.py`` layout, read unchanged by its
  ``dataset/imagenet.py`` ``CustomDataset`` / ``train_c2i.py``: ``{out}/imagenet{R}_codes/{i}.npy``
  (int64 ``[1, n_aug, h*w]``) and ``{out}/imagenet{R}_labels/{i}.npy`` (int64 ``[1]``), ``R`` the
  resolution. Token runs with a single ``[h, w]`` grid and a label per item only. LlamaGen picks one
  of the ``n_aug`` views per item only when its code path contains ``flip`` (``'flip' in
  feature_dir``), so an ``--augment`` export needs an ``--out`` whose path contains ``flip``
  (LlamaGen's own scripts use ``..._flip_ten_crop``); its ``CustomDataset`` also lists exactly
  1281167 files (ImageNet-1k train): other datasets need that number changed there.

Every file is written atomically, and ``{out}/movq-export.json`` (the source run's id and the format)
is written first and marked complete last: an ``--out`` that is not empty is refused unless it is a
previous export of the same folder to the same format (it is then redone, stale shards removed) or
``--overwrite`` is given (a previous export's files are replaced; other files are left alone).
``README.md`` is a Hugging Face dataset card (YAML front matter: ``library_name: movq``, the codec,
its hashes, the preprocessing), what :func:`push_to_hub` uploads with the data.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import re
import shutil
import sys
import tarfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch

from movq.atomic import atomic_write, atomic_write_text, check_writable_dir
from movq.strict import ConfigError, PositiveInt, StrictConfig, error_line
from movq.tokenize.config import TokenizeError

PROG = "movq-tokenize export"
EXIT_ERROR = 2
FORMATS = ("parquet", "webdataset", "llamagen")
MARKER_NAME = "movq-export.json"
CARD_NAME = "README.md"
EXPORT_FORMAT = "movq-export/1"
PUSHABLE = ("parquet", "webdataset")
LLAMAGEN_ITEMS = 1281167  # the file count LlamaGen's CustomDataset lists (ImageNet-1k train)

ExportFormat = Literal["parquet", "webdataset", "llamagen"]


@dataclass
class ExportConfig(StrictConfig):
    """What ``movq-tokenize export`` does (the CLI fills it from its flags; fields checked on construction).

    ``folder`` is a finished ``movq-tokenize`` output folder; ``out`` the export folder (``None`` only
    with ``push_to_hub``, which then exports into a temporary folder); ``shard_size`` items per parquet
    file / tar; ``row_group_size`` rows per parquet row group.
    """

    folder: str
    format: ExportFormat
    out: str | None = None
    shard_size: PositiveInt = 10000
    row_group_size: PositiveInt = 1000
    overwrite: bool = False
    push_to_hub: str | None = None
    private: bool = False


# ------------------------------------------------------------------ the source folder


def open_source_folder(folder: str | os.PathLike) -> Any:
    """:class:`~movq.tokenize.dataset.TokenDataset` of ``folder`` (every view, stored dtype kept by
    :func:`_stored`); a one-line :class:`TokenizeError` naming the folder when it is not a finished run."""
    from movq.tokenize.dataset import TokenDataset

    try:
        return TokenDataset(folder)
    except (OSError, ValueError) as err:
        raise TokenizeError(f"cannot export {folder}: {err}") from None


def _stored(ds: Any, value: torch.Tensor) -> np.ndarray:
    """An item as numpy in its stored dtype (bfloat16, which numpy lacks, widened to float32)."""
    dtype = getattr(torch, ds.meta["store_dtype"])
    value = value.to(dtype)
    return (value.float() if dtype == torch.bfloat16 else value).numpy()


def _items(ds: Any) -> Any:
    """``(position, item)`` in index order, every shard opened once (through ``TokenDataset``'s checks)."""
    for i in range(len(ds)):
        yield i, ds[i]


def key_of(i: int, n: int) -> str:
    """The record key of item ``i`` of ``n``: its position, zero-padded to at least 8 digits."""
    return f"{i:0{max(8, len(str(max(n - 1, 0))))}d}"


# ------------------------------------------------------------------ checks before any work


def check_export(cfg: ExportConfig, ds: Any) -> None:
    """Refuse (one-line :class:`TokenizeError` naming the flag) what the format cannot hold and an
    ``--out`` that holds something else; nothing is written here."""
    meta, fmt = ds.meta, cfg.format
    if fmt == "parquet":
        try:
            import pyarrow  # noqa: F401
        except ImportError:
            raise TokenizeError("--format parquet needs pyarrow: pip install 'movq[tokenize]'") from None
    if fmt == "llamagen":
        shape = list(meta.get("item_shape", []))
        grid = shape[1:] if "augment" in meta else shape
        if meta.get("kind") != "tokens":
            raise TokenizeError(f"--format llamagen stores token codes; {cfg.folder} holds {meta.get('kind')}")
        if len(grid) != 2:
            raise TokenizeError(f"--format llamagen stores one [h, w] grid per view; {cfg.folder} holds items of shape "
                                f"{shape} (a residual / grouped codec): use --format parquet or webdataset")
        missing = sum(label is None for label in ds.labels)
        if missing:
            raise TokenizeError(f"--format llamagen needs a class label per item (LlamaGen's c2i trainer); {missing} of "
                                f"{len(ds)} items of {cfg.folder} have none: tokenize a labelled source")
        if ds.n_aug > 1 and cfg.out is not None and "flip" not in str(cfg.out):
            raise TokenizeError(f"--out {cfg.out}: LlamaGen picks one of the {ds.n_aug} views per item only when the "
                                "code path contains 'flip' (its CustomDataset tests 'flip' in feature_dir); use e.g. "
                                "--out codes_c2i_flip_ten_crop")
    if cfg.push_to_hub is not None:
        if fmt not in PUSHABLE:
            raise TokenizeError(f"--push-to-hub uploads --format {' or '.join(PUSHABLE)}, not {fmt} (one file per item)")
        from huggingface_hub.utils import HFValidationError, validate_repo_id

        try:
            validate_repo_id(cfg.push_to_hub)
        except HFValidationError as err:
            raise TokenizeError(f"--push-to-hub {cfg.push_to_hub!r} is not a Hub repo id ({err})") from None
    elif cfg.out is None:
        raise TokenizeError("--out is required (or --push-to-hub ORG/NAME)")
    if cfg.out is not None:
        check_out(cfg, ds)


def _marker(ds: Any, fmt: str, complete: bool, **extra: Any) -> dict[str, Any]:
    from movq.tokenize.meta import run_id

    return {"format": EXPORT_FORMAT, "export": fmt, "run": run_id(ds.meta), "source": str(ds.root),
            "resolution": ds.meta.get("resolution"), "items": len(ds), "complete": complete, **extra}


def read_marker(out: str | os.PathLike) -> dict[str, Any] | None:
    """The ``movq-export.json`` of a previous export in ``out``; ``None`` if there is none or it is unreadable."""
    path = Path(out) / MARKER_NAME
    if not path.is_file():
        return None
    try:
        marker = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return marker if isinstance(marker, dict) and marker.get("format") == EXPORT_FORMAT else None


def check_out(cfg: ExportConfig, ds: Any) -> None:
    """``--out`` must be writable, outside the token folder, and empty, a previous export of the same
    run to the same format, or ``--overwrite``."""
    from movq.tokenize.meta import run_id

    out = Path(cfg.out)
    if out.resolve() == Path(cfg.folder).resolve() or out.resolve().is_relative_to(Path(cfg.folder).resolve()):
        raise TokenizeError(f"--out {out} lies inside the token folder {cfg.folder}: use another folder")
    try:
        check_writable_dir(out)
    except ValueError as err:
        raise TokenizeError(str(err)) from None
    if not any(p for p in out.iterdir() if not p.name.startswith(".movq-write-test")):
        return
    marker = read_marker(out)
    if marker is not None and (marker.get("run"), marker.get("export")) == (run_id(ds.meta), cfg.format):
        return
    if cfg.overwrite:
        return
    what = (f"an export of another run or format ({marker.get('export')} of {marker.get('source')})" if marker
            else "files that are not a movq export")
    raise TokenizeError(f"--out {out} is not empty: it holds {what}; use an empty folder or --overwrite")


# ------------------------------------------------------------------ writers


def _previous_files(out: Path, marker: dict[str, Any] | None) -> set[Path]:
    """The files a previous export (``marker``) wrote in ``out``."""
    if marker is None:
        return set()
    fmt = marker.get("export")
    if fmt == "parquet":
        return set((out / "data").glob("train-*-of-*.parquet"))
    if fmt == "webdataset":
        return set(out.glob("shard-*.tar"))
    if fmt == "llamagen":
        res = marker.get("resolution")
        return {p for kind in ("codes", "labels") for p in (out / f"imagenet{res}_{kind}").glob("*.npy")
                if re.fullmatch(r"\d+\.npy", p.name)}
    return set()


def export_tokens(folder: str | os.PathLike, out: str | os.PathLike, format: str, *, shard_size: int = 10000,
                  row_group_size: int = 1000, overwrite: bool = False) -> dict[str, Any]:
    """Export the token folder ``folder`` to ``out`` in ``format`` (see the module docstring); returns
    ``{"format", "items", "files", "out"}``. Every check runs before anything is written
    (:class:`TokenizeError`, a ``ValueError``, naming the flag)."""
    cfg = _config(folder=str(folder), format=format, out=str(out), shard_size=shard_size,
                  row_group_size=row_group_size, overwrite=overwrite)
    ds = open_source_folder(cfg.folder)
    check_export(cfg, ds)
    return _write(cfg, ds, Path(cfg.out))


def _config(**fields: Any) -> ExportConfig:
    try:
        return ExportConfig(**fields)
    except ConfigError as err:
        raise TokenizeError(error_line(PROG, err, ExportConfig).removeprefix(f"{PROG}: error: ")) from None


def _write(cfg: ExportConfig, ds: Any, out: Path) -> dict[str, Any]:
    out.mkdir(parents=True, exist_ok=True)
    previous = _previous_files(out, read_marker(out))
    atomic_write_text(out / MARKER_NAME, json.dumps(_marker(ds, cfg.format, False), indent=2) + "\n")
    writer = {"parquet": _write_parquet, "webdataset": _write_webdataset, "llamagen": _write_llamagen}[cfg.format]
    written = writer(cfg, ds, out)
    for stale in previous - set(written):
        stale.unlink(missing_ok=True)
    atomic_write_text(out / CARD_NAME, dataset_card(ds.meta, cfg.format, len(ds), shards=len(written)))
    files = [p.relative_to(out).as_posix() for p in written] if cfg.format != "llamagen" else []
    atomic_write_text(out / MARKER_NAME, json.dumps(_marker(ds, cfg.format, True, files=files), indent=2) + "\n")
    return {"format": cfg.format, "items": len(ds), "files": len(written), "out": str(out)}


def _chunks(n: int, size: int) -> list[range]:
    return [range(lo, min(lo + size, n)) for lo in range(0, n, size)] or [range(0, 0)]


def parquet_schema(meta: dict[str, Any]) -> Any:
    """The arrow schema of a parquet export of a run with ``meta`` (``meta.json``)."""
    import pyarrow as pa

    store = meta["store_dtype"]
    value = {"uint8": pa.uint8(), "uint16": pa.uint16(), "uint32": pa.uint32(), "int64": pa.int64(),
             "float16": pa.float16(), "bfloat16": pa.float32(), "float32": pa.float32()}[store]
    info = {"format": EXPORT_FORMAT, "kind": meta["kind"], "model": meta.get("model"),
            "item_shape": meta.get("item_shape"), "store_dtype": store, "augment": meta.get("augment")}
    return pa.schema([("key", pa.string()), ("source", pa.string()), ("tokens", pa.list_(value)),
                      ("shape", pa.list_(pa.int32())), ("label", pa.int64()), ("caption", pa.string())],
                     metadata={"movq": json.dumps(info)})


def _write_parquet(cfg: ExportConfig, ds: Any, out: Path) -> list[Path]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    schema, n = parquet_schema(ds.meta), len(ds)
    chunks = _chunks(n, cfg.shard_size)
    written = []
    for k, chunk in enumerate(chunks):
        path = out / "data" / f"train-{k:05d}-of-{len(chunks):05d}.parquet"

        def write(tmp: str, chunk: range = chunk) -> None:
            with pq.ParquetWriter(tmp, schema) as writer:
                for group in _chunks(len(chunk), cfg.row_group_size):
                    rows: dict[str, list] = {name: [] for name in schema.names}
                    for i in (chunk[j] for j in group):
                        item = ds[i]
                        value = _stored(ds, item[ds.key])
                        rows["key"].append(key_of(i, n))
                        rows["source"].append(item["source"])
                        rows["tokens"].append(value.reshape(-1))
                        rows["shape"].append(list(value.shape))
                        rows["label"].append(item["label"])
                        rows["caption"].append(item["caption"])
                    writer.write_table(pa.table(rows, schema=schema), row_group_size=cfg.row_group_size)

        written.append(atomic_write(path, write))
    return written


def _tar_member(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size, info.mode, info.mtime = len(data), 0o644, 0
    tar.addfile(info, io.BytesIO(data))


def _npy(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array, allow_pickle=False)
    return buffer.getvalue()


def _write_webdataset(cfg: ExportConfig, ds: Any, out: Path) -> list[Path]:
    n, written = len(ds), []
    for k, chunk in enumerate(_chunks(n, cfg.shard_size)):

        def write(tmp: str, chunk: range = chunk) -> None:
            with tarfile.open(tmp, "w", format=tarfile.USTAR_FORMAT) as tar:
                for i in chunk:
                    item, key = ds[i], key_of(i, n)
                    value = _stored(ds, item[ds.key])
                    _tar_member(tar, f"{key}.{ds.key}.npy", _npy(value))
                    if item["caption"] is not None:
                        _tar_member(tar, f"{key}.txt", item["caption"].encode("utf-8"))
                    if item["label"] is not None:
                        _tar_member(tar, f"{key}.cls", str(item["label"]).encode())
                    info = {"source": item["source"], "shape": list(value.shape)}
                    _tar_member(tar, f"{key}.json", json.dumps(info, ensure_ascii=False).encode("utf-8"))

        written.append(atomic_write(out / f"shard-{k:06d}.tar", write))
    return written


def _write_llamagen(cfg: ExportConfig, ds: Any, out: Path) -> list[Path]:
    res = ds.meta["resolution"]
    codes, labels = out / f"imagenet{res}_codes", out / f"imagenet{res}_labels"
    written = []
    for i, item in _items(ds):
        tokens = item["tokens"].to(torch.int64)  # [h, w] or [n_aug, h, w]; LlamaGen's indices are int64
        views = tokens.reshape(1, ds.n_aug, -1).numpy()  # [1, n_aug, h*w]
        for path, array in ((codes / f"{i}.npy", views), (labels / f"{i}.npy", np.array([item["label"]], np.int64))):
            written.append(atomic_write(path, lambda tmp, a=array: _save_npy(tmp, a)))
    return written


def _save_npy(path: str, array: np.ndarray) -> None:
    with open(path, "wb") as f:  # np.save(path) would append ".npy" to the temporary name
        np.save(f, array, allow_pickle=False)


# ------------------------------------------------------------------ the dataset card and the Hub


def dataset_card(meta: dict[str, Any], fmt: str, items: int, shards: int = 1) -> str:
    """``README.md`` of an export: YAML front matter (``library_name: movq``, the Hub's ``configs`` for
    parquet / webdataset, and a ``movq`` block: the codec, its config and weights hashes, kind,
    resolution, preprocessing, augmentation, item shape, dtype) and a short description with how to read
    it (``shards``: the number of tars of a webdataset export)."""
    from huggingface_hub import DatasetCardData

    data_files = {"parquet": "data/train-*.parquet", "webdataset": "shard-*.tar"}.get(fmt)
    block = {"codec": meta.get("model"), "codec_name": meta.get("model_name"), "config_hash": meta.get("config_hash"),
             "weights_hash": meta.get("weights_hash"), "kind": meta.get("kind"), "resolution": meta.get("resolution"),
             "preprocessing": meta.get("preprocessing"), "augment": meta.get("augment"),
             "item_shape": meta.get("item_shape"), "store_dtype": meta.get("store_dtype"),
             "codebook_size": meta.get("codebook_size"), "downsample_factor": meta.get("downsample_factor"),
             "format": fmt, "items": items, "movq_version": meta.get("movq_version")}
    fields: dict[str, Any] = {"library_name": "movq", "tags": ["movq", "image-tokens", meta.get("kind", "tokens")]}
    if data_files:
        fields["configs"] = [{"config_name": "default", "data_files": [{"split": "train", "path": data_files}]}]
    yaml = DatasetCardData(**fields, movq=block).to_yaml()
    view = f", {meta['augment']['n_aug']} views each ({meta['augment']['mode']})" if meta.get("augment") else ""
    read = {
        "parquet": ("```python\nimport datasets, numpy as np\nds = datasets.load_dataset(\"parquet\", "
                    "data_files=\"data/*.parquet\", split=\"train\")\nrow = ds[0]\ntokens = "
                    "np.asarray(row[\"tokens\"]).reshape(row[\"shape\"])\n```"),
        "webdataset": (f"```python\nimport webdataset as wds\nurls = \"shard-{{000000..{max(shards - 1, 0):06d}}}.tar\"\n"
                       f"for sample in wds.WebDataset(urls, shardshuffle=False).decode():\n"
                       f"    tokens = sample[\"{meta.get('kind')}.npy\"]  # plus sample[\"cls\"], sample[\"txt\"]\n```"),
        "llamagen": (f"LlamaGen layout: `imagenet{meta.get('resolution')}_codes/{{i}}.npy` (int64 `[1, n_aug, h*w]`) and "
                     f"`imagenet{meta.get('resolution')}_labels/{{i}}.npy` (int64 `[1]`), for LlamaGen's "
                     "`train_c2i.py --code-path`."),
    }[fmt]
    return (f"---\n{yaml}\n---\n\n# Image tokens of `{meta.get('model')}`\n\n"
            f"{items} images tokenized with [movq](https://pypi.org/project/movq/) (`movq-tokenize`), exported as "
            f"{fmt}: {meta.get('kind')} of shape {meta.get('item_shape')} ({meta.get('store_dtype')}) per image{view}.\n\n"
            f"- codec: `{meta.get('model')}` (config {meta.get('config_hash')}, weights {meta.get('weights_hash')})\n"
            f"- preprocessing: {meta.get('preprocessing')}\n\n{read}\n")


def push_to_hub(folder: str | os.PathLike, repo_id: str, *, format: str = "parquet", private: bool | None = None,
                token: str | bool | None = None, revision: str | None = None, commit_message: str | None = None,
                create_pr: bool = False, api: Any = None, shard_size: int = 10000, row_group_size: int = 1000,
                exported: str | os.PathLike | None = None) -> Any:
    """Export the token folder ``folder`` as ``format`` (``"parquet"`` or ``"webdataset"``) with its
    dataset card into a temporary folder and upload it to the Hub dataset repo ``repo_id`` (created if
    needed) in one commit (:func:`movq.hub.upload.upload_folder`); returns its ``CommitInfo``.
    ``exported``: a folder this export already wrote, uploaded as it is (hard links where possible).
    ``api`` defaults to ``huggingface_hub.HfApi(token=token)``."""
    from movq.hub.upload import upload_folder

    cfg = _config(folder=str(folder), format=format, out=None if exported is None else str(exported),
                  shard_size=shard_size, row_group_size=row_group_size, push_to_hub=repo_id,
                  private=bool(private), overwrite=True)
    ds = open_source_folder(cfg.folder)
    if exported is None:
        check_export(cfg, ds)

        def write(tmp: Path) -> None:
            _write(cfg, ds, tmp)
    else:
        marker = read_marker(exported)
        if marker is None or not marker.get("complete") or marker.get("export") != format:
            raise TokenizeError(f"{exported} holds no complete {format} export to upload")

        def write(tmp: Path) -> None:
            shutil.copytree(exported, tmp, dirs_exist_ok=True, copy_function=_link_or_copy)

    message = commit_message or f"Upload {ds.meta.get('model')} tokens ({len(ds)} images, {format}) with movq"
    return upload_folder(write, repo_id, commit_message=message, private=private, token=token, revision=revision,
                         create_pr=create_pr, api=api, repo_type="dataset")


def _link_or_copy(src: str, dst: str) -> None:
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)


# ------------------------------------------------------------------ command line


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=PROG, description="Export a movq-tokenize output folder for other trainers.")
    p.add_argument("folder", help="a finished movq-tokenize output folder")
    p.add_argument("--format", required=True, choices=FORMATS, help="parquet, webdataset or llamagen (see the docs)")
    p.add_argument("--out", help="export folder (empty, or a previous export of the same folder and format)")
    p.add_argument("--shard-size", type=int, default=10000, help="items per parquet file / tar (default 10000)")
    p.add_argument("--row-group-size", type=int, default=1000, help="rows per parquet row group (default 1000)")
    p.add_argument("--overwrite", action="store_true", help="write into a non-empty --out (a previous export's files "
                                                            "are replaced, others left alone)")
    p.add_argument("--push-to-hub", metavar="ORG/NAME", help="upload the export (parquet / webdataset) with a dataset "
                                                             "card to this Hub dataset repo")
    p.add_argument("--private", action="store_true", help="create the --push-to-hub repo private")
    return p


def main(argv: list[str] | None = None) -> int:
    """``movq-tokenize export``; returns the exit status (0 ok, 2 user error)."""
    args = build_parser().parse_args(sys.argv[1:] if argv is None else argv)
    try:
        cfg = _config(folder=args.folder, format=args.format, out=args.out, shard_size=args.shard_size,
                      row_group_size=args.row_group_size, overwrite=args.overwrite, push_to_hub=args.push_to_hub,
                      private=args.private)
        ds = open_source_folder(cfg.folder)
        check_export(cfg, ds)
        if cfg.out is not None:
            result = _write(cfg, ds, Path(cfg.out))
            print(f"{PROG}: {result['items']} items -> {result['files']} {cfg.format} file(s) in {cfg.out}")
        if cfg.push_to_hub is not None:
            info = push_to_hub(cfg.folder, cfg.push_to_hub, format=cfg.format, private=cfg.private or None,
                               shard_size=cfg.shard_size, row_group_size=cfg.row_group_size, exported=cfg.out)
            print(f"{PROG}: uploaded to https://huggingface.co/datasets/{cfg.push_to_hub} "
                  f"({getattr(info, 'commit_url', info)})")
    except (TokenizeError, ConfigError) as err:
        print(error_line(PROG, err, ExportConfig), file=sys.stderr)
        return EXIT_ERROR
    return 0
