"""Reading one :class:`~movq.tokenize.sources.SourceItem` in a DataLoader worker: bytes, caption, preprocessing.

The pixels go through :func:`movq.image_files.load_preprocessed`, the preprocessing of
``movq-bench`` (shorter side to the resolution, PIL bicubic, centre crop), so the stored tokens are
``codec.encode`` of what the bench measures.
"""

from __future__ import annotations

import io
import os
from dataclasses import dataclass

import torch
from torch import Tensor

from movq.image_files import load_preprocessed
from movq.tokenize.sources import Member, SourceItem


@dataclass
class DecodedItem:
    """Item ``index`` (global position in the source list): uint8 ``pixels`` ``[3, R, R]`` and its
    ``caption``, or ``pixels=None`` with the ``error`` that made it unreadable."""

    index: int
    pixels: Tensor | None
    caption: str | None = None
    error: str = ""


def read_member(member: Member) -> bytes:
    """The bytes of a tar member (one seek and one read)."""
    if member.offset + member.size > os.path.getsize(member.path):  # a header claiming more than the file holds
        raise OSError(f"{member.path} is truncated: expected {member.size} bytes at offset {member.offset}")
    with open(member.path, "rb") as f:
        f.seek(member.offset)
        data = f.read(member.size)
    if len(data) != member.size:
        raise OSError(f"{member.path} is truncated: expected {member.size} bytes at offset {member.offset}")
    return data


def read_caption(item: SourceItem) -> str | None:
    """The item's caption (UTF-8, stripped), ``None`` when it has none."""
    if item.caption is not None:
        return item.caption
    if item.caption_member is not None:
        raw = read_member(item.caption_member)
    elif item.caption_path is not None:
        if not os.path.isfile(item.caption_path):  # absent, or a FIFO / device that would block or never end
            return None
        with open(item.caption_path, "rb") as f:
            raw = f.read()
    else:
        return None
    return raw.decode("utf-8", errors="replace").strip()


def decode_item(item: SourceItem, index: int, resolution: int) -> DecodedItem:
    """Decode and preprocess one item; never raises for bad data (the error is returned)."""
    try:
        if item.member is None and not os.path.isfile(item.path):  # a manifest may name a FIFO or a device
            raise ValueError(f"{item.path} is not a regular file")
        image = io.BytesIO(read_member(item.member)) if item.member is not None else item.path
        pixels, _ = load_preprocessed(image, resolution)
        caption = read_caption(item)
    except Exception as err:  # corrupt, truncated, missing, unsupported: listed, not fatal
        return DecodedItem(index, None, error=f"{type(err).__name__}: {err}")
    return DecodedItem(index, pixels, caption)


class SourceDataset(torch.utils.data.Dataset):
    """Map-style dataset over ``items``: ``ds[i]`` -> :class:`DecodedItem` (pixels uint8 ``[3, R, R]``)."""

    def __init__(self, items: list[SourceItem], resolution: int) -> None:
        self.items, self.resolution = items, resolution

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> DecodedItem:
        return decode_item(self.items[index], index, self.resolution)
