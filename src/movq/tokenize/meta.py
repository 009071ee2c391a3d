"""``meta.json``: what an output folder holds (model, preprocessing, layout) and the refusal to mix runs.

The *identity* of a run is everything that changes the stored values or their layout: the kind
(tokens / latents), the model's config hash and weights hash, the resolution and preprocessing,
the compute and storage dtypes, the shard size and the list of sources. A folder whose
``meta.json`` has another identity is refused before any compute; so is a folder that holds shards
but no ``meta.json``. Batch size, worker count and process count are not part of it (they do not
change the output).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import torch

from movq.atomic import atomic_write_text
from movq.image_files import PREPROCESSING
from movq.tokenize.config import TokenizeError

FORMAT = "movq-tokenize/1"
META_NAME = "meta.json"
IDENTITY = ("format", "kind", "config_hash", "weights_hash", "resolution", "preprocessing", "dtype", "store_dtype",
            "item_shape", "shard_size", "num_sources", "sources_hash")
OPTIONAL_IDENTITY = ("augment", "columns")
"""Identity fields a run records only when it uses them (a run without them keeps its older run id)."""


def _sha256_json(value: Any) -> str:
    return hashlib.sha256(json.dumps(value, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def config_hash(config: Any) -> str:
    """SHA-256 of the config's canonical JSON without its ``name`` (a renamed copy is the same model)."""
    data = {k: v for k, v in config.to_dict().items() if k != "name"}
    return _sha256_json(data)


def weights_hash(module: torch.nn.Module) -> str:
    """SHA-256 over the state dict (sorted keys, dtype, shape, bytes) of ``module`` as loaded."""
    digest = hashlib.sha256()
    for key, tensor in sorted(module.state_dict().items()):
        t = tensor.detach().cpu().contiguous()
        digest.update(f"{key}|{t.dtype}|{tuple(t.shape)}|".encode())
        digest.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def sources_hash(sources: list[str], groups: list[int] | None = None) -> str:
    """SHA-256 of the ordered source names and, when given, the first item of each source shard (a
    changed list or grouping shifts every shard, so it is refused)."""
    digest = hashlib.sha256()
    for s in sources:
        digest.update(s.encode("utf-8", errors="surrogatepass") + b"\n")
    if groups is not None:
        digest.update(b"groups:" + ",".join(map(str, groups)).encode())
    return digest.hexdigest()


def build_meta(*, model: str, codec: torch.nn.Module, weights: str, kind: str, resolution: int, dtype: str,
               store_dtype: torch.dtype, item_shape: tuple[int, ...], shard_size: int, data: str,
               sources: list[str], augment: Any = None, groups: list[int] | None = None,
               columns: dict[str, str] | None = None, label_names: list[str] | None = None) -> dict[str, Any]:
    """The ``meta.json`` of a run (``weights``: :func:`weights_hash` of the codec before any dtype cast).

    ``groups``: the first item of each source shard (tars, parquet row groups); ``columns`` (added as
    ``"columns"``, an identity field): the columns named on the command line; ``label_names``: the class
    names when the source has them.

    ``augment`` (a :class:`movq.image_files.Augment` other than ``"none"``) adds ``"augment"``:
    ``{"mode", "crop_range" (ten-crop only, else None), "n_aug"}``; ``item_shape`` then starts with ``n_aug``
    and ``"preprocessing"`` describes the views."""
    from movq import __version__

    config = codec.config
    augmented = augment is not None and augment.mode != "none"
    preprocessing = augment.describe(resolution) if augmented else PREPROCESSING.format(res=resolution)
    meta = {
        "format": FORMAT, "kind": kind, "model": model, "model_name": getattr(config, "name", None),
        "config_hash": config_hash(config), "weights_hash": weights, "config": config.to_dict(),
        "resolution": resolution, "preprocessing": preprocessing, "dtype": dtype,
        "store_dtype": str(store_dtype).removeprefix("torch."), "item_shape": list(item_shape),
        "codebook_size": int(codec.codebook_size), "scaling_factor": float(getattr(config, "scaling_factor", 1.0)),
        "downsample_factor": int(codec.downsample_factor), "shard_size": shard_size, "data": data,
        "num_sources": len(sources), "sources_hash": sources_hash(sources, groups), "movq_version": __version__,
    }
    if augmented:
        crop_range = float(augment.crop_range) if augment.mode == "ten-crop" else None
        meta["augment"] = {"mode": augment.mode, "crop_range": crop_range, "n_aug": augment.views}
    if columns:
        meta["columns"] = columns
    if label_names is not None:
        meta["label_names"] = label_names
    return meta


def views_per_item(meta: dict[str, Any]) -> int:
    """``n_aug`` of a run's ``meta`` (1 without ``--augment``, whose items have no view axis)."""
    augment = meta.get("augment")
    return int(augment["n_aug"]) if isinstance(augment, dict) and isinstance(augment.get("n_aug"), int) else 1


def identity(meta: dict[str, Any]) -> dict[str, Any]:
    """The fields of ``meta`` that must match for two runs to share a folder."""
    return {k: meta.get(k) for k in IDENTITY + tuple(k for k in OPTIONAL_IDENTITY if k in meta)}


def run_id(meta: dict[str, Any]) -> str:
    """Short hash of :func:`identity`, stamped into every shard's sidecar."""
    return _sha256_json(identity(meta))[:16]


def read_meta(out: str | Path) -> dict[str, Any] | None:
    """The folder's ``meta.json``, ``None`` if there is none."""
    from movq.strict import ConfigError, read_json_object

    path = Path(out) / META_NAME
    if not path.exists():  # a FIFO or device is refused by read_json_object, naming it
        return None
    try:  # a JSON object, else one line naming the file (not JSON, not UTF-8, a list, nested too deeply)
        return read_json_object(path)
    except ConfigError as err:
        raise TokenizeError(f"{err}; it is not a movq-tokenize output folder") from None


def check_compatible(out: str | Path, meta: dict[str, Any]) -> bool:
    """Whether ``out`` already belongs to this run (``True``) or is fresh (``False``); a
    :class:`TokenizeError` naming the difference when it holds another run."""
    old = read_meta(out)
    if old is None:
        if any((Path(out) / "shards").glob("shard-*")):
            raise TokenizeError(f"--out {out} holds shards but no {META_NAME}: use an empty folder")
        return False
    if old.get("format") != FORMAT:
        raise TokenizeError(f"--out {out} holds a {old.get('format')!r} run, not {FORMAT!r}: use another folder")
    if (old.get("config_hash"), old.get("weights_hash")) != (meta["config_hash"], meta["weights_hash"]):
        raise TokenizeError(
            f"--out {out} holds a run of another model ({old.get('model')!r}, config {str(old.get('config_hash'))[:12]}, "
            f"weights {str(old.get('weights_hash'))[:12]}); this run is {meta['model']!r} (config "
            f"{meta['config_hash'][:12]}, weights {meta['weights_hash'][:12]}): use another --out"
        )
    def show(key: str, value: Any) -> str:
        return repr(value[:12] + "...") if key.endswith("_hash") and isinstance(value, str) else repr(value)

    keys = IDENTITY + tuple(k for k in OPTIONAL_IDENTITY if k in old or k in meta)
    diffs = [f"{k}: {show(k, old.get(k))} there, {show(k, meta.get(k))} now" for k in keys if old.get(k) != meta.get(k)]
    if diffs:
        raise TokenizeError(f"--out {out} holds a run with other settings ({'; '.join(diffs)}): use another --out")
    return True


def write_meta(out: str | Path, meta: dict[str, Any]) -> None:
    atomic_write_text(Path(out) / META_NAME, json.dumps(meta, indent=2) + "\n")
