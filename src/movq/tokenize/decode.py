"""Reading one :class:`~movq.tokenize.sources.SourceItem` in a DataLoader worker: bytes, caption,
label, preprocessing.

The pixels go through :func:`movq.image_files.load_preprocessed`, the preprocessing of
``movq-bench`` (shorter side to the resolution, PIL bicubic, centre crop), so the stored tokens are
``codec.encode`` of what the bench measures.
"""

from __future__ import annotations

import io
import json
import os
from typing import IO, Any

from movq.atomic import check_regular_file, require_regular_file
from movq.image_files import Augment, DecodedImage, decode_image
from movq.tokenize.sources import Member, SourceItem, parse_label

_STREAMS: dict[str, IO[bytes]] = {}
"""This process's open decompressed stream of the compressed tar it last read (read forward)."""


def _stream(member: Member) -> IO[bytes]:
    """The open decompressed stream of ``member``'s tar, positioned forward-only; one per process."""
    stream = _STREAMS.get(member.path)
    if stream is None or stream.tell() > member.offset:  # another tar, or an earlier member: start again
        for old in _STREAMS.values():
            old.close()
        _STREAMS.clear()
        if member.compression == "gz":
            import gzip

            stream = gzip.open(member.path, "rb")
        elif member.compression == "bz2":
            import bz2

            stream = bz2.open(member.path, "rb")
        else:
            import lzma

            stream = lzma.open(member.path, "rb")
        _STREAMS[member.path] = stream
    return stream


def read_member(member: Member) -> bytes:
    """The bytes of a tar member: one seek and one read (uncompressed tar), or reading forward in the
    decompressed stream (compressed tar)."""
    if member.compression:
        stream = _stream(member)
        stream.seek(member.offset)  # forward: decompresses (and drops) what lies between
        data = stream.read(member.size)
    else:
        if member.offset + member.size > os.path.getsize(member.path):  # a header claiming more than the file holds
            raise OSError(f"{member.path} is truncated: expected {member.size} bytes at offset {member.offset}")
        with open(member.path, "rb") as f:
            f.seek(member.offset)
            data = f.read(member.size)
    if len(data) != member.size:
        raise OSError(f"{member.path} is truncated: expected {member.size} bytes at offset {member.offset}")
    return data


def read_members(members: list[Member]) -> dict[Member, bytes]:
    """The bytes of several members of one tar (a WebDataset sample: image, caption, label, json), in tar
    order; adjacent members of an uncompressed tar (the usual layout) come from one read."""
    members = sorted(members, key=lambda m: m.offset)
    first, last = members[0], members[-1]
    span = last.offset + last.size - first.offset
    if first.compression or span > sum(m.size for m in members) + 1024 * len(members):
        return {m: read_member(m) for m in members}
    block = read_member(Member(first.path, first.offset, span))
    return {m: block[m.offset - first.offset: m.offset - first.offset + m.size] for m in members}


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
    its caption, label and ``.json``; never raises for bad data (the error is returned)."""
    found: dict[str, Any] = {}

    def open_item() -> tuple[str | io.BytesIO, str | None]:
        if item.table is not None:
            record = item.table.read(item.row)
            found["label"] = record.label
            image = io.BytesIO(record.image) if isinstance(record.image, bytes) else record.image
            if isinstance(image, str):  # a path column: a missing file, a FIFO or a device is refused
                require_regular_file(image, "expected an image file", ValueError)
            return image, record.caption
        if item.member is None:  # a manifest may name a missing file, a FIFO or a device
            require_regular_file(item.path, "expected an image file", ValueError)
        members = [m for m in (item.member, item.caption_member, item.label_member, item.json_member) if m]
        data = read_members(members) if members else {}
        found["label"] = item.label
        if item.label_member is not None:
            found["label"] = parse_label(data[item.label_member], f"{item.source}: .cls")
        if item.json_member is not None:
            try:
                found["json"] = json.loads(data[item.json_member])
            except (ValueError, RecursionError):
                raise ValueError(f"{item.source}: the .json member is not valid JSON") from None
        image = io.BytesIO(data[item.member]) if item.member is not None else item.path
        caption = item.caption
        if item.caption_member is not None:
            caption = data[item.caption_member].decode("utf-8", errors="replace").strip()
        elif item.member is None:
            caption = read_caption(item)
        return image, caption

    decoded = decode_image(index, resolution, open_item, augment)
    if decoded.pixels is not None:
        decoded.label, decoded.extra = found.get("label"), found.get("json")
    return decoded
