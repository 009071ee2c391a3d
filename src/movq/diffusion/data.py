"""Training data for diffusion: codec latents or images, with optional class labels and conditioning vectors.

The latents are the pre-computed ones of a ``movq-tokenize --latents`` folder
(:class:`movq.tokenize.dataset.TokenDataset`). Class labels come from the top-level subfolder of each source
image (the ImageNet layout ``DATA/<class>/<image>``), mapped to indices in sorted name order;
conditioning vectors (e.g. CLIP image embeddings) from a ``.safetensors`` file holding ``cond``
``[N, D]`` in the folder's item order.

Pixel-space diffusion (``movq-diffusion-train --pixels``) trains on the images themselves:
:class:`PixelImages` lists ``--data`` and decodes it once as ``movq-tokenize`` does (the same sources,
readers and the bench's preprocessing: shorter side to the resolution, PIL bicubic, centre crop),
keeping uint8 pixels in memory; :func:`labelled_pixels` makes them the trainer's
:class:`LatentItems` (items ``[3, R, R]`` in ``[-1, 1]``).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import PurePosixPath
from typing import Any, Literal, get_args

import torch
from torch import Tensor
from torch.utils.data import Dataset

from movq.atomic import require_regular_file
from movq.images import to_tensor

LabelMode = Literal["auto", "folder", "none"]
"""Where class labels come from: class folders when the data has them, class folders (required), none."""
LABEL_MODES: tuple[str, ...] = get_args(LabelMode)
MANIFEST_SUFFIXES = (".jsonl", ".json", ".csv", ".tsv", ".txt", ".tar")
"""``movq-tokenize --data`` values that are not image folders: their sources' folders are not classes."""
SCALE_ITEMS = 16384
"""At most this many items (evenly spaced) estimate the latents' spread."""


def folder_labels(sources: Sequence[str]) -> tuple[list[int], list[str]] | None:
    """Label of each source from its top-level folder, and the sorted class names; ``None`` when a
    source has no folder (e.g. a flat image folder)."""
    tops = []
    for source in sources:
        parts = PurePosixPath(source.replace("\\", "/")).parts
        if len(parts) < 2:
            return None
        tops.append(parts[0])
    names = sorted(set(tops))
    index = {name: i for i, name in enumerate(names)}
    return [index[t] for t in tops], names


def check_label_layout(sources: Sequence[str], mode: str, root: object) -> None:
    """Refuse (``ValueError``, one line) an unknown label ``mode``, or ``mode="folder"`` with a source (a path
    relative to the data folder ``root``) outside any class folder. Runs on the listed sources, before any
    image is encoded."""
    if mode not in LABEL_MODES:
        raise ValueError(f"labels must be one of {LABEL_MODES}, got {mode!r}")
    if mode == "folder" and folder_labels(sources) is None:
        flat = next(s for s in sources if len(PurePosixPath(s.replace("\\", "/")).parts) < 2)
        raise ValueError(
            f"--labels folder: {flat!r} of {root} is not inside a class folder; class labels need the "
            "layout DATA/<class>/<image> (or --labels none)"
        )


class LatentItems(Dataset):
    """The diffusion trainer's data: ``ds[i]`` is ``{"latents": [C, h, w]}`` plus ``"label"`` (int) when
    ``labels`` are given and ``"cond"`` (float ``[D]``) when ``cond`` is.

    ``latents``: a tensor ``[N, C, h, w]`` or an int-indexed dataset of dicts with ``"latents"`` (a
    :class:`movq.tokenize.dataset.TokenDataset` of a ``--latents`` run). ``labels``: ``N`` ints in
    ``[0, len(label_names))``; ``label_names`` default to ``"0"``, ``"1"``, ... ``cond``: ``[N, D]``.
    ``meta`` describes where the latents came from (a TokenDataset's ``meta`` by default).
    """

    def __init__(
        self,
        latents: Any,
        labels: Sequence[int] | Tensor | None = None,
        label_names: Sequence[str] | None = None,
        cond: Tensor | None = None,
        meta: dict[str, Any] | None = None,
    ) -> None:
        self.latents = latents
        n = len(latents)
        if n == 0:
            raise ValueError("no latents to train on")
        first = self._latent(0)
        if first.ndim != 3 or not first.is_floating_point():
            raise ValueError(f"latents must be float [C, h, w] per item, got {first.dtype} {tuple(first.shape)}")
        self.latent_shape = tuple(first.shape)
        self.labels = None if labels is None else torch.as_tensor(labels, dtype=torch.long)
        if self.labels is not None:
            if tuple(self.labels.shape) != (n,):
                raise ValueError(f"labels must be {n} ints (one per item), got shape {tuple(self.labels.shape)}")
            count = int(self.labels.max()) + 1 if label_names is None else len(label_names)
            if int(self.labels.min()) < 0 or int(self.labels.max()) >= count:
                raise ValueError(f"labels must be in [0, {count}), got [{int(self.labels.min())}, {int(self.labels.max())}]")
            label_names = [str(i) for i in range(count)] if label_names is None else list(label_names)
        elif label_names is not None:
            raise ValueError("label_names given without labels")
        self.label_names: list[str] | None = None if label_names is None else list(label_names)
        if cond is not None and (not isinstance(cond, Tensor) or cond.ndim != 2 or cond.shape[0] != n
                                 or not cond.is_floating_point()):
            got = tuple(cond.shape) if isinstance(cond, Tensor) else type(cond).__name__
            raise ValueError(f"cond must be a float tensor [{n}, D] (one vector per item), got {got}")
        self.cond = cond
        self.meta: dict[str, Any] = dict(meta if meta is not None else getattr(latents, "meta", {}))

    @property
    def num_classes(self) -> int | None:
        return None if self.label_names is None else len(self.label_names)

    @property
    def cond_dim(self) -> int | None:
        return None if self.cond is None else int(self.cond.shape[1])

    def __len__(self) -> int:
        return len(self.latents)

    def _latent(self, i: int) -> Tensor:
        item = self.latents[i]
        return item if isinstance(item, Tensor) else item["latents"]

    def __getitem__(self, i: int) -> dict[str, Any]:
        out: dict[str, Any] = {"latents": self._latent(i)}
        if self.labels is not None:
            out["label"] = self.labels[i]
        if self.cond is not None:
            out["cond"] = self.cond[i]
        return out


def collate_latents(items: list[dict[str, Any]]) -> dict[str, Tensor]:
    """Batch :class:`LatentItems` items: ``latents`` float32 ``[B, C, h, w]``, ``y`` long ``[B]``, ``cond`` ``[B, D]``."""
    batch = {"latents": torch.stack([it["latents"] for it in items]).float()}
    if "label" in items[0]:
        batch["y"] = torch.stack([torch.as_tensor(it["label"]) for it in items]).long()
    if "cond" in items[0]:
        batch["cond"] = torch.stack([it["cond"] for it in items]).float()
    return batch


def load_cond_file(path: str | os.PathLike, count: int) -> Tensor:
    """The ``cond`` tensor ``[count, D]`` of a ``.safetensors`` file (one vector per latent item, in order)."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    require_regular_file(path, "--cond expects a .safetensors file holding 'cond' [N, D]", ValueError)
    try:
        tensors = load_file(str(path))
    except (OSError, SafetensorError) as error:
        raise ValueError(f"--cond {path}: not a readable .safetensors file ({error})") from None
    if "cond" not in tensors:
        raise ValueError(f"--cond {path} holds {sorted(tensors)}, not a tensor named 'cond' [N, D]")
    cond = tensors["cond"]
    if cond.ndim != 2 or cond.shape[0] != count or not cond.is_floating_point():
        raise ValueError(f"--cond {path}: 'cond' must be float [{count}, D] (one vector per item), got "
                         f"{cond.dtype} {tuple(cond.shape)}")
    return cond.float()


def _from_folder(meta: dict[str, Any]) -> bool:
    """Whether a tokenize run read an image folder (not a manifest, tar shards or a glob)."""
    data = str(meta.get("data", ""))
    return not data.lower().endswith(MANIFEST_SUFFIXES) and not any(ch in data for ch in "*?[")


def labelled_latents(dataset: Any, mode: str = "auto", cond_file: str | None = None) -> LatentItems:
    """:class:`LatentItems` over a ``--latents`` :class:`movq.tokenize.dataset.TokenDataset`: labels from the top-level
    folders of its sources (``mode``: ``auto`` when the run read an image folder, every source has a
    class folder and there are at least two,
    ``folder`` always (an error otherwise), ``none`` never) and vectors from ``cond_file``."""
    check_label_layout(dataset.sources, mode, dataset.root)
    found = folder_labels(dataset.sources) if mode != "none" else None
    if mode == "auto" and found is not None and (len(found[1]) < 2 or not _from_folder(dataset.meta)):
        found = None
    cond = None if cond_file is None else load_cond_file(cond_file, len(dataset))
    labels, names = found if found is not None else (None, None)
    return LatentItems(dataset, labels, names, cond)


def latent_std(dataset: Any, max_items: int = SCALE_ITEMS) -> float:
    """The spread of the latents: RMS over channels of each channel's standard deviation (per-channel
    means removed, as ``movq-tokenize``'s ``summary.json`` ``overall_std``), from at most ``max_items``
    evenly spaced items; deterministic."""
    from movq.tokenize.stats import latent_summary

    n = len(dataset)
    picks = torch.linspace(0, n - 1, min(n, max_items)).round().long().unique().tolist()
    chunks = (torch.stack([dataset[i]["latents"] for i in picks[s:s + 1024]]) for s in range(0, len(picks), 1024))
    summary = latent_summary(chunks)
    std = float(summary.get("overall_std", 0.0))
    if not std > 0:
        raise ValueError("the latents have no spread (all equal): cannot scale them to unit variance; pass --latent-scale")
    return std


DECODE_BATCH = 64
"""Images per DataLoader batch while :class:`PixelImages` decodes a collection."""


class PixelImages(Dataset):
    """A collection of images decoded once and held in memory: ``ds[i]`` is ``{"latents": [3, R, R]}``,
    float32 in ``[-1, 1]`` (named as the latents the diffusion trainer takes; stored as uint8).

    Built by :meth:`read`; ``pixels`` uint8 ``[N, 3, R, R]``, ``sources`` (each image's name, as
    ``movq-tokenize`` stores it), ``labels`` (each image's class index, ``None`` where it has none),
    ``label_names`` (the class names when known), ``skipped`` (``{"source", "reason"}`` of the items that
    could not be read) and ``meta`` (``space="pixel"``, ``data``, ``resolution``, ``preprocessing``).
    """

    def __init__(self, pixels: Tensor, sources: Sequence[str], labels: Sequence[int | None],
                 label_names: Sequence[str] | None = None, skipped: list[dict[str, str]] | None = None,
                 meta: dict[str, Any] | None = None) -> None:
        if pixels.dtype != torch.uint8 or pixels.ndim != 4 or pixels.shape[1] != 3 or len(pixels) == 0:
            raise ValueError(f"pixels must be uint8 [N>0, 3, R, R], got {pixels.dtype} {tuple(pixels.shape)}")
        if not len(sources) == len(labels) == len(pixels):
            raise ValueError(f"{len(pixels)} images but {len(sources)} sources and {len(labels)} labels")
        self.pixels, self.sources, self.labels = pixels, list(sources), list(labels)
        self.label_names = None if label_names is None else list(label_names)
        self.skipped = list(skipped or [])
        self.meta = dict(meta or {})

    @classmethod
    def read(cls, data: str | os.PathLike, resolution: int, *, num_workers: int = 0,
             exclude: str | os.PathLike | None = None, labels: str = "auto") -> PixelImages:
        """Decode the image collection ``data`` (an image folder, manifest, tar shards, parquet files:
        whatever ``movq-tokenize --data`` reads; images under ``exclude`` left out) at ``resolution`` with
        ``num_workers`` DataLoader workers. ``labels="folder"`` refuses, before decoding, a folder without
        class folders. Raises ``ValueError`` when no image decodes or the pixels cannot fit in memory."""
        from movq.image_files import DecodedImages, Preprocessing
        from movq.memory_budget import check_memory_budget
        from movq.tokenize.decode import decode_item
        from movq.tokenize.sources import discover_sources

        if labels not in LABEL_MODES:
            raise ValueError(f"labels must be one of {LABEL_MODES}, got {labels!r}")
        sources = discover_sources(data, exclude=exclude)
        if labels == "folder" and sources.kind == "folder" and sources.label_names is None:
            raise ValueError(
                f"--labels folder: the images of {data} are not in class folders; class labels need the layout "
                "DATA/<class>/<image> with at least two classes (or --labels none)"
            )
        count = len(sources.items)
        check_memory_budget(count * 3 * resolution * resolution, "cpu",
                            f"holding {count} images of {resolution}x{resolution} px in memory",
                            "use fewer images or a smaller --resolution")
        loader = torch.utils.data.DataLoader(
            DecodedImages(sources.items, resolution, decode_item), batch_size=DECODE_BATCH,
            num_workers=num_workers, collate_fn=list,
        )
        pixels, names, found, skipped = [], [], [], list(sources.skipped)
        for batch in loader:
            for decoded in batch:
                item = sources.items[decoded.index]
                if decoded.pixels is None:
                    skipped.append({"source": item.source, "reason": decoded.error})
                    continue
                pixels.append(decoded.pixels)
                names.append(item.source)
                found.append(decoded.label)
        if not pixels:
            reasons = "; ".join(f"{s['source']}: {s['reason']}" for s in skipped[:3])
            raise ValueError(f"none of the {count} images of {data} could be decoded ({reasons})")
        meta = {"space": "pixel", "data": str(data), "resolution": resolution, "images": len(pixels),
                "preprocessing": Preprocessing().describe(resolution)}
        return cls(torch.stack(pixels), names, found, sources.label_names, skipped, meta)

    def __len__(self) -> int:
        return len(self.pixels)

    def __getitem__(self, i: int) -> dict[str, Tensor]:
        return {"latents": to_tensor(self.pixels[i])[0][0]}


def labelled_pixels(images: PixelImages, mode: str = "auto", cond_file: str | None = None) -> LatentItems:
    """:class:`LatentItems` over decoded images: class labels (``mode``: ``auto`` when every image has one and
    there are at least two classes, ``folder`` always (an error otherwise), ``none`` never) and vectors
    from ``cond_file`` (one per decoded image, so no image may have been skipped)."""
    if mode not in LABEL_MODES:
        raise ValueError(f"labels must be one of {LABEL_MODES}, got {mode!r}")
    known = [label for label in images.labels if label is not None]
    labelled = len(known) == len(images) and len(set(known)) >= 2
    if mode == "folder" and not labelled:
        raise ValueError(
            f"--labels folder: the images of {images.meta.get('data')} do not all have a class (layout "
            "DATA/<class>/<image>, .cls members or a label column, at least two classes); or use --labels none"
        )
    cond = None
    if cond_file is not None:
        if images.skipped:
            raise ValueError(f"--cond holds one vector per image, but {len(images.skipped)} image(s) could not be "
                             f"read (e.g. {images.skipped[0]['source']}): the vectors would no longer line up")
        cond = load_cond_file(cond_file, len(images))
    if mode == "none" or not labelled:
        return LatentItems(images, cond=cond, meta=images.meta)
    names = images.label_names or [str(i) for i in range(max(known) + 1)]
    return LatentItems(images, known, names, cond, meta=images.meta)
