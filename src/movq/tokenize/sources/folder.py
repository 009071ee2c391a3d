"""Image folders: every image file under the folder (recursive, sorted, hidden files skipped).

The caption of ``a/b.jpg`` is ``a/b.txt`` when it exists (read by the decoding worker). When every
image lies in a class folder (``DATA/<class>/<image>``) and there are at least two classes, the
label is the class folder's index in sorted name order (as ``torchvision.datasets.ImageFolder``).
"""

from __future__ import annotations

import os
from pathlib import Path, PurePosixPath

from movq.image_files import is_image_file, list_image_files
from movq.tokenize.sources.base import SourceItem, Sources


def holds_images(root: Path) -> bool:
    """Whether any image file lies under ``root`` (recursively)."""
    return any(is_image_file(p) for p in root.rglob("*"))


def class_labels(sources: list[str]) -> tuple[list[int], list[str]] | None:
    """Label of each relative path from its top-level folder and the sorted class names; ``None``
    when an image is not inside a class folder or there are fewer than two classes."""
    tops = []
    for source in sources:
        parts = PurePosixPath(source).parts
        if len(parts) < 2:
            return None
        tops.append(parts[0])
    names = sorted(set(tops))
    if len(names) < 2:
        return None
    index = {name: i for i, name in enumerate(names)}
    return [index[t] for t in tops], names


def from_folder(root: Path, exclude: str | os.PathLike | None) -> Sources:
    """The items of the image folder ``root``, leaving out images under ``exclude`` (the output folder)."""
    found = []
    skip = Path(exclude).resolve() if exclude is not None else None
    if skip is not None and not skip.is_relative_to(root.resolve()):
        skip = None
    for path in list_image_files(root):
        if skip is not None and path.resolve().is_relative_to(skip):
            continue
        found.append(path)
    if not found:
        raise ValueError(f"no image files under {root} outside the output folder {exclude}")
    names = [p.relative_to(root).as_posix() for p in found]
    labels = class_labels(names)
    items = [SourceItem(name, path=str(path), caption_path=str(path.with_suffix(".txt")),
                        label=labels[0][i] if labels else None) for i, (name, path) in enumerate(zip(names, found))]
    return Sources(items, "folder", label_names=labels[1] if labels else None)
