"""WebDataset tar shards: ``.tar`` and compressed ``.tar.gz`` / ``.tgz`` / ``.tar.bz2`` / ``.tar.xz``.

Members are grouped into samples as WebDataset does (:func:`~movq.tokenize.sources.split_key`: the
key is the member path up to the first dot of its file name); a sample's image is its first member
with an image extension, its caption the ``.txt`` member, its label the ``.cls`` member (an integer
as text) and its ``.json`` member is carried into the index. Tars are read with the standard
``tarfile`` module and indexed once (byte offsets of each member's data): an uncompressed tar is then
read with one seek per member; a compressed one cannot be seeked, so it is *streamed*: the decoding
worker keeps the decompressed stream open and reads forward (nothing but the current member in
memory). Each tar is one source shard (one process reads it under torchrun).
"""

from __future__ import annotations

import tarfile
import zlib
from pathlib import Path

from movq.image_files import IMAGE_EXTENSIONS, is_hidden
from movq.tokenize.sources.base import CAPTION_EXTENSIONS, Member, SourceItem, Sources, split_key

COMPRESSION = {".gz": "gz", ".tgz": "gz", ".bz2": "bz2", ".xz": "xz"}
"""File suffix -> ``tarfile`` compression name."""


def compression_of(path: Path) -> str:
    """``""`` for an uncompressed tar, else ``"gz"``, ``"bz2"`` or ``"xz"`` (from the file name)."""
    return COMPRESSION.get(path.suffix.lower(), "")


def from_tars(tars: list[Path]) -> Sources:
    """The samples of the tar files ``tars`` in order; samples without an image are listed as skipped."""
    items: list[SourceItem] = []
    skipped: list[dict[str, str]] = []
    groups: list[int] = []
    for tar in tars:
        groups.append(len(items))
        for key, members in index_tar(tar).items():
            images = [(ext, m) for ext, m in members.items() if "." + ext.rsplit(".", 1)[-1] in IMAGE_EXTENSIONS]
            if not images:
                skipped.append({"source": f"{tar}/{key}", "reason": f"no image in sample (members: {sorted(members)})"})
                continue
            ext, member = images[0]
            caption = next((members[c] for c in CAPTION_EXTENSIONS if c in members), None)
            items.append(SourceItem(f"{tar}/{key}.{ext}", member=member, caption_member=caption,
                                    label_member=members.get("cls"), json_member=members.get("json")))
    if not items:
        raise ValueError(f"no image samples ({', '.join(IMAGE_EXTENSIONS)}) found in {', '.join(map(str, tars))}")
    return Sources(items, "tar", skipped, groups=groups)


def index_tar(tar: Path) -> dict[str, dict[str, Member]]:
    """``{key: {extension: Member}}`` in tar order (hidden members skipped). A compressed tar is read
    through once (decompressed as a stream, never held in memory)."""
    compression = compression_of(tar)
    try:
        archive = tarfile.open(tar, mode=f"r:{compression}")  # noqa: SIM115 (closed below)
    except (tarfile.TarError, OSError, EOFError, zlib.error) as err:
        kind = f"a {compression}-compressed tar" if compression else "an uncompressed tar"
        raise ValueError(f"{tar} is not {kind} ({err})") from None
    samples: dict[str, dict[str, Member]] = {}
    with archive:
        try:
            for info in archive:
                if not info.isfile() or is_hidden(info.name):
                    continue
                key, ext = split_key(info.name)
                samples.setdefault(key, {}).setdefault(ext, Member(str(tar), info.offset_data, info.size, compression))
        except (tarfile.TarError, OSError, EOFError, zlib.error) as err:  # cut short, a corrupt header or stream
            raise ValueError(f"{tar} is truncated or corrupt ({err}); repair or remove it") from None
    return samples
