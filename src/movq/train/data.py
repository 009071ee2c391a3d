"""Training data: a recursive image folder, random resized crops and flips, exact resume.

Files are listed and decoded by :mod:`movq.image_files`, exactly as ``movq-bench`` reads them
(EXIF orientation, 16-bit and alpha handling, the same extensions).

Augmentation randomness comes from a per-sample seed that the sampler derives from
``(seed, epoch, position)``, not from worker RNG, so a batch is the same whatever the number of
workers and whether or not the run was interrupted. Corrupt or unreadable files are replaced by
the next readable file of the folder and reported in the batch (``"skipped"``).
"""

from __future__ import annotations

import math
import os
import random
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch import Tensor
from torch.utils.data import Dataset, Sampler

from movq.image_files import list_image_files, open_rgb

DECODE_ERRORS = (OSError, ValueError, SyntaxError, EOFError, Image.DecompressionBombError)
"""What reading a broken image file can raise (PIL's errors); anything else is a bug and propagates."""


def crop_box(
    width: int, height: int, rng: random.Random, scale: tuple[float, float], ratio: tuple[float, float]
) -> tuple[int, int, int, int]:
    """Random-resized-crop box ``(left, top, right, bottom)`` (area fraction in ``scale``, aspect in ``ratio``)."""
    area = width * height
    log_ratio = (math.log(ratio[0]), math.log(ratio[1]))
    for _ in range(10):
        target = area * rng.uniform(*scale)
        aspect = math.exp(rng.uniform(*log_ratio))
        w = int(round(math.sqrt(target * aspect)))
        h = int(round(math.sqrt(target / aspect)))
        if 0 < w <= width and 0 < h <= height:
            left, top = rng.randint(0, width - w), rng.randint(0, height - h)
            return left, top, left + w, top + h
    side = min(width, height)  # fallback: centre square
    left, top = (width - side) // 2, (height - side) // 2
    return left, top, left + side, top + side


class ImageFolder(Dataset):
    """Images under ``root`` as ``[3, resolution, resolution]`` float tensors in ``[-1, 1]``.

    Indexed by ``(index, sample_seed)`` pairs (see :class:`ResumableSampler`); returns a dict with
    ``image`` and ``skipped`` (paths of unreadable files met while loading this sample).
    """

    def __init__(
        self,
        root: str | os.PathLike,
        resolution: int,
        scale: tuple[float, float] = (0.25, 1.0),
        ratio: tuple[float, float] = (3 / 4, 4 / 3),
        flip: bool = True,
    ) -> None:
        self.files = list_image_files(root)
        self.resolution, self.scale, self.ratio, self.flip = resolution, scale, ratio, flip
        self._check_one_readable()

    def _check_one_readable(self) -> None:
        """Fail at once (``ValueError``) when no file decodes, instead of inside a DataLoader worker."""
        reasons = []
        for path in self.files:
            try:
                open_rgb(path)
                return
            except DECODE_ERRORS as error:
                reasons.append(f"{path.name}: {type(error).__name__}: {error}")
        raise ValueError(
            f"none of the {len(self.files)} image files under the data folder could be decoded ({'; '.join(reasons[:3])})"
        )

    def __len__(self) -> int:
        return len(self.files)

    def load(self, path: Path, rng: random.Random) -> Tensor:
        """Read ``path`` with :func:`movq.image_files.open_rgb` (as the bench does), then crop and flip."""
        img = open_rgb(path)
        box = crop_box(img.size[0], img.size[1], rng, self.scale, self.ratio)
        img = img.resize((self.resolution, self.resolution), Image.Resampling.BICUBIC, box=box, reducing_gap=3.0)
        if self.flip and rng.random() < 0.5:
            img = img.transpose(Image.FLIP_LEFT_RIGHT)
        array = np.asarray(img, dtype=np.float32)
        return torch.from_numpy(array).permute(2, 0, 1).div(127.5).sub(1.0).contiguous()

    def __getitem__(self, key: tuple[int, int]) -> dict[str, Any]:
        index, seed = key
        skipped: list[str] = []
        for attempt in range(len(self.files)):
            path = self.files[(index + attempt) % len(self.files)]
            try:
                return {"image": self.load(path, random.Random(seed)), "skipped": skipped}
            except DECODE_ERRORS:  # unreadable file: skip it (other errors are bugs and propagate)
                skipped.append(str(path))
        raise ValueError(f"none of the {len(self.files)} files under the data folder could be decoded")


def collate(samples: list[dict[str, Any]]) -> dict[str, Any]:
    """Stack images to ``[B, 3, R, R]``; concatenate the skipped-file lists."""
    return {
        "image": torch.stack([s["image"] for s in samples]),
        "skipped": [p for s in samples for p in s["skipped"]],
    }


class Unseeded(Dataset):
    """A dataset indexed by plain ``int`` (e.g. :class:`movq.tokenize.dataset.TokenDataset`), for the
    ``(index, sample_seed)`` keys of :class:`ResumableSampler`: the seed is ignored (no augmentation)."""

    def __init__(self, dataset: Any) -> None:
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, key: tuple[int, int]) -> Any:
        return self.dataset[key[0]]


class ResumableSampler(Sampler[tuple[int, int]]):
    """Distributed, epoch-shuffled sampler that can start in the middle of an epoch.

    Each epoch is a permutation of the dataset drawn from ``(seed, epoch)``, padded to a multiple
    of ``world_size`` and split round-robin like ``DistributedSampler``; rank ``r`` yields
    ``(index, sample_seed)`` for its share, starting at ``start`` (samples already consumed this
    epoch). ``len`` is the number of samples still to come in the current epoch.
    """

    def __init__(self, size: int, seed: int, rank: int = 0, world_size: int = 1) -> None:
        self.size, self.seed, self.rank, self.world_size = size, seed, rank, world_size
        self.per_rank = math.ceil(size / world_size)
        self.epoch, self.start = 0, 0

    def set_position(self, epoch: int, start: int) -> None:
        self.epoch, self.start = epoch, start

    def __len__(self) -> int:
        return max(self.per_rank - self.start, 0)

    def __iter__(self) -> Iterator[tuple[int, int]]:
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
        order = torch.randperm(self.size, generator=g).tolist()
        order += order[: self.per_rank * self.world_size - self.size]
        mine = order[self.rank :: self.world_size]
        for position in range(self.start, self.per_rank):
            sample_seed = hash((self.seed, self.epoch, self.rank, position)) & 0x7FFFFFFF
            yield mine[position], sample_seed


VAL_SEED_OFFSET = 17
"""Keeps the validation split's generator apart from the data order's (``seed * 1_000_003 + epoch``)."""


def split_items(count: int, fraction: float, seed: int) -> tuple[list[int], list[int]]:
    """A deterministic held-out split of ``count`` items: ``(train, val)`` index lists, each sorted.

    ``val`` holds ``round(fraction * count)`` items (at least one when ``fraction > 0``) chosen by
    ``torch.randperm(count)`` from a generator seeded with ``seed * 1_000_003 + VAL_SEED_OFFSET``: the
    same ``(count, fraction, seed)`` give the same split on every machine and at every resume.
    ``ValueError`` when ``fraction`` is outside ``[0, 1)`` or no training item would be left.
    """
    if not 0 <= fraction < 1:
        raise ValueError(f"the validation fraction must be in [0, 1), got {fraction!r}")
    size = max(round(fraction * count), 1) if fraction > 0 else 0
    if size >= count:
        raise ValueError(
            f"--val-fraction {fraction:g} of {count} items leaves no training item; lower it or add data"
        )
    g = torch.Generator().manual_seed(seed * 1_000_003 + VAL_SEED_OFFSET)
    order = torch.randperm(count, generator=g)
    return sorted(order[size:].tolist()), sorted(order[:size].tolist())
