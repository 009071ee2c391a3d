"""Reading one :class:`~movq.tokenize.sources.SourceItem` in a DataLoader worker: bytes, caption, preprocessing.

The pixels go through :func:`movq.image_files.load_preprocessed`, the preprocessing of
``movq-bench`` (shorter side to the resolution, PIL bicubic, centre crop), so the stored tokens are
``codec.encode`` of what the bench measures.
"""

from __future__ import annotations

import io
import os

from movq.atomic import check_regular_file, require_regular_file
from movq.image_files import Augment, DecodedImage, decode_image
from movq.tokenize.sources import Member, SourceItem


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
        check_regular_file(item.caption_path, "a caption must be a text file")  # a FIFO would block
        if not os.path.exists(item.caption_path):  # captions are optional
            return None
        with open(item.caption_path, "rb") as f:
            raw = f.read()
    else:
        return None
    return raw.decode("utf-8", errors="replace").strip()


def decode_item(item: SourceItem, index: int, resolution: int, augment: Augment | None = None) -> DecodedImage:
    """Decode and preprocess one item (with ``augment``: its views, uint8 ``[n_aug, 3, R, R]``) and read
    its caption; never raises for bad data (the error is returned)."""

    def open_item() -> tuple[str | io.BytesIO, str | None]:
        if item.member is None:  # a manifest may name a missing file, a FIFO or a device
            require_regular_file(item.path, "expected an image file", ValueError)
        image = io.BytesIO(read_member(item.member)) if item.member is not None else item.path
        return image, read_caption(item)

    return decode_image(index, resolution, open_item, augment)
