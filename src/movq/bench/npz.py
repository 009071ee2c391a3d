"""The ``.npz`` files of ``movq-bench`` for openai/guided-diffusion's ADM evaluator
(``evaluations/evaluator.py``): the reference batch (``--save-reference`` / ``--reference``) and the
reconstructions (``--export-npz``).

Both hold the images as ``arr_0``: uint8 ``[N, H, W, 3]`` in the bench's image order (sorted
relative paths, unreadable files left out), the array the evaluator streams with
``open_npz_array(path, "arr_0")``. A reference also holds the Inception statistics of those
cropped inputs and what they were measured with, so a later run reuses them only for the same
images, protocol, resolution, FID mode and feature extractor:

- ``movq_mu`` ``[D]`` / ``movq_sigma`` ``[D, D]`` float64: mean and covariance of the features;
- ``movq_meta``: a JSON text (a numpy unicode scalar) with ``format``, ``protocol``, ``resize``,
  ``resolution``, ``fid_mode``, ``feature_extractor``, ``images`` (the image list's hash) and
  ``n_images``.

The statistics are not stored as ``mu`` / ``sigma``: the evaluator's ``read_statistics`` takes a
file with a ``mu`` key for precomputed TensorFlow statistics and then also needs ``mu_s`` /
``sigma_s`` (its spatial sFID features), so those names would make it fail, or mix movq's
feature space with its own. Without them it computes its own statistics from ``arr_0``.

Nothing is pickled: ``np.load(path, allow_pickle=False)`` reads every entry. The images are written
as they are produced: each chunk is staged as a ``.npy`` file (:class:`PixelStage`; in the
``--cache`` run folder, so a resumed run keeps them; else in a hidden ``.movq-bench-<run>.parts``
folder beside the output, removed at the end), and rank 0 streams the chunks in order into the
final file (:func:`write_images_npz`, written atomically). Under ``torchrun`` on several machines
that folder must be on a file system every rank sees.
"""

from __future__ import annotations

import hashlib
import json
import os
import zipfile
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

from movq.atomic import atomic_write, check_regular_file

REFERENCE_FORMAT = "movq-bench reference v1"
IMAGES_KEY, MU_KEY, SIGMA_KEY, META_KEY = "arr_0", "movq_mu", "movq_sigma", "movq_meta"
MATCHED = ("protocol", "resize", "resolution", "fid_mode", "feature_extractor", "images")
"""The reference metadata that must equal the run's for ``--reference`` to be used."""
_FLAG = {"protocol": "--protocol", "resize": "--resize", "resolution": "--resolution", "fid_mode": "--fid-mode",
         "feature_extractor": "--feature-extractor", "images": "--data / --limit"}


def image_list_hash(entries: Iterable[tuple[str, int]]) -> str:
    """sha256 of the ``(relative path, size in bytes)`` pairs of the bench's image list, in order."""
    digest = hashlib.sha256()
    for rel, size in entries:
        digest.update(f"{rel}\0{size}\n".encode())
    return digest.hexdigest()


def _write_array(archive: zipfile.ZipFile, name: str, array: np.ndarray) -> None:
    with archive.open(f"{name}.npy", "w", force_zip64=True) as f:
        np.lib.format.write_array(f, np.asarray(array), allow_pickle=False)


def write_images_npz(
    path: str | os.PathLike, blocks: Iterable[np.ndarray], count: int, side: int | tuple[int, int],
    extra: dict[str, np.ndarray] | None = None
) -> Path:
    """Write ``arr_0`` uint8 ``[count, H, W, 3]`` from ``blocks`` (uint8 ``[n_i, H, W, 3]``, in order,
    ``sum(n_i) == count``) plus the ``extra`` arrays, to ``path`` atomically; ``side`` is ``H = W`` or ``(H, W)``.

    The images stream into the zip entry block by block, so memory stays at one block.
    """
    height, width = (side, side) if isinstance(side, int) else side
    header = {"descr": np.lib.format.dtype_to_descr(np.dtype(np.uint8)), "fortran_order": False,
              "shape": (count, height, width, 3)}

    def write(tmp: str) -> None:
        written = 0
        with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_STORED, allowZip64=True) as archive:
            with archive.open(f"{IMAGES_KEY}.npy", "w", force_zip64=True) as f:
                np.lib.format.write_array_header_1_0(f, header)
                for block in blocks:
                    if block.dtype != np.uint8 or block.shape[1:] != (height, width, 3):
                        raise ValueError(f"image block {block.dtype} {block.shape} is not uint8 [n, {height}, {width}, 3]")
                    f.write(np.ascontiguousarray(block).tobytes())
                    written += block.shape[0]
            if written != count:
                raise ValueError(f"wrote {written} images, expected {count}")
            for name, array in (extra or {}).items():
                _write_array(archive, name, array)

    return atomic_write(path, write)


def reference_meta(**fields: Any) -> dict[str, Any]:
    """The reference's metadata dict (``format`` plus ``fields``)."""
    return {"format": REFERENCE_FORMAT, **fields}


def reference_arrays(mu: np.ndarray, sigma: np.ndarray, meta: dict[str, Any]) -> dict[str, np.ndarray]:
    """The entries besides ``arr_0`` of a reference file: statistics (float64) and the metadata text."""
    return {MU_KEY: np.asarray(mu, np.float64), SIGMA_KEY: np.asarray(sigma, np.float64),
            META_KEY: np.array(json.dumps(meta, sort_keys=True))}


def read_reference(path: str | os.PathLike, expected: dict[str, Any], flag: str = "--reference",
                   ) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
    """Read a ``--save-reference`` file and check it against this run: ``(mu, sigma, meta)``.

    ``expected`` holds the run's values of :data:`MATCHED` (those it leaves out are not checked). Raises ``ValueError`` (naming
    ``flag``, the file and the flag that differs) for a file that is missing, not an ``.npz`` of ``movq-bench``, or made for
    another protocol, resolution, FID mode, feature extractor or image list.
    """
    path = Path(path)
    check_regular_file(path, "pass the .npz written by --save-reference")
    if not path.is_file():
        raise ValueError(f"{flag} {path}: no such file (write one first with --save-reference)")
    try:
        with np.load(path, allow_pickle=False) as data:
            missing = [k for k in (MU_KEY, SIGMA_KEY, META_KEY) if k not in data.files]
            if missing:
                raise ValueError(f"it has no {', '.join(missing)} (keys: {', '.join(data.files)}); only files written "
                                 "by movq-bench --save-reference are accepted (never train or ADM statistics)")
            mu, sigma, meta = data[MU_KEY], data[SIGMA_KEY], json.loads(str(data[META_KEY]))
    except ValueError as err:
        raise ValueError(f"{flag} {path} is not a movq-bench reference: {err}") from None
    except (OSError, zipfile.BadZipFile, EOFError) as err:
        raise ValueError(f"{flag} {path} is not a readable .npz file: {err}") from None
    if not isinstance(meta, dict) or meta.get("format") != REFERENCE_FORMAT:
        raise ValueError(f"{flag} {path} is not a {REFERENCE_FORMAT!r} file (format {meta.get('format') if isinstance(meta, dict) else meta!r})")
    for key in (k for k in MATCHED if k in expected):
        if meta.get(key) != expected[key]:
            what = "another image list" if key == "images" else f"{_FLAG[key]} {meta.get(key)}"
            now = "" if key == "images" else f" (this run: {expected[key]})"
            raise ValueError(f"{flag} {path} was saved for {what}{now}; its statistics are those of other "
                             f"cropped inputs: write a reference for this run with --save-reference")
    if mu.ndim != 1 or sigma.shape != (mu.size, mu.size):
        raise ValueError(f"{flag} {path}: statistics of shapes {mu.shape} / {sigma.shape}, expected [D] and [D, D]")
    return mu.astype(np.float64), sigma.astype(np.float64), meta


class PixelStage:
    """Per-chunk uint8 images ``[n, R, R, 3]`` staged as ``<kind>-<chunk>.npy`` in ``folder`` (each
    written atomically), then read back in chunk order by the rank that writes the ``.npz``."""

    def __init__(self, folder: str | os.PathLike) -> None:
        self.folder = Path(folder)

    def path(self, kind: str, chunk: int) -> Path:
        """The staged file of ``kind`` (``"inputs"`` / ``"recon"``) for chunk ``chunk``."""
        return self.folder / f"{kind}-{chunk:06d}.npy"

    def save(self, kind: str, chunk: int, images: np.ndarray) -> None:
        """Stage uint8 ``[n, R, R, 3]`` images of one chunk (atomically; ``n`` may be 0)."""
        self.folder.mkdir(parents=True, exist_ok=True)

        def write(tmp: str) -> None:
            with open(tmp, "wb") as f:
                np.save(f, images, allow_pickle=False)

        atomic_write(self.path(kind, chunk), write)

    def count(self, kind: str, chunks: int) -> int:
        """Images staged for ``kind`` over chunks ``0 .. chunks-1`` (headers only); ``ValueError`` if one is missing."""
        total = 0
        for c in range(chunks):
            path = self.path(kind, c)
            if not path.is_file():
                raise ValueError(f"the staged images {path} are missing (a cache from another run?); "
                                 "delete the --cache folder to measure again")
            with open(path, "rb") as f:
                total += _read_header(f)[0][0]
        return total

    def blocks(self, kind: str, chunks: int) -> Iterable[np.ndarray]:
        """The staged arrays of chunks ``0 .. chunks-1``, in order, one at a time."""
        for c in range(chunks):
            yield np.load(self.path(kind, c), allow_pickle=False)


def npz_image_shape(path: str | os.PathLike, flag: str) -> tuple[int, int, int]:
    """``(N, H, W)`` of the ``arr_0`` images of an ``.npz`` (the ADM evaluator's sample / reference batch,
    ``--export-npz``, ``--save-reference``), from its header alone. ``ValueError`` naming ``flag`` and the
    file when it is not a readable ``.npz`` holding ``arr_0`` as uint8 ``[N, H, W, 3]`` (C order)."""
    path = Path(path)
    try:
        with zipfile.ZipFile(path) as archive, archive.open(f"{IMAGES_KEY}.npy") as f:
            shape, fortran, dtype = _read_header(f)
    except KeyError:
        raise ValueError(f"{flag} {path} holds no {IMAGES_KEY} (the images, uint8 [N, H, W, 3], as the ADM evaluator "
                         "reads them)") from None
    except (OSError, zipfile.BadZipFile, EOFError, ValueError) as err:
        raise ValueError(f"{flag} {path} is not a readable .npz file: {err}") from None
    if dtype != np.uint8 or len(shape) != 4 or shape[3] != 3 or fortran or min(shape[1:3], default=0) < 1:
        raise ValueError(f"{flag} {path}: {IMAGES_KEY} is {dtype} {list(shape)}{' (Fortran order)' if fortran else ''}, "
                         "expected uint8 [N, H, W, 3] images in C order")
    return int(shape[0]), int(shape[1]), int(shape[2])


def read_npz_images(path: str | os.PathLike, batch_size: int, limit: int | None = None) -> Iterator[np.ndarray]:
    """The ``arr_0`` images of an ``.npz`` (checked by :func:`npz_image_shape`) in blocks of uint8
    ``[<= batch_size, H, W, 3]``, streamed from the zip entry (stored or deflated) as the ADM evaluator's
    ``open_npz_array`` does: memory stays at one block. ``limit``: the first images only."""
    count, height, width = npz_image_shape(path, "npz")
    count = min(count, limit) if limit is not None else count
    image_bytes = height * width * 3
    with zipfile.ZipFile(path) as archive, archive.open(f"{IMAGES_KEY}.npy") as f:
        _read_header(f)
        for lo in range(0, count, batch_size):
            n = min(batch_size, count - lo)
            data = f.read(n * image_bytes)
            if len(data) != n * image_bytes:
                raise ValueError(f"{path}: {IMAGES_KEY} ends after {lo + len(data) // image_bytes} of {count} images")
            yield np.frombuffer(data, np.uint8).reshape(n, height, width, 3)


def _read_header(f: Any) -> tuple[tuple[int, ...], bool, np.dtype]:
    """``(shape, fortran_order, dtype)`` of the ``.npy`` stream ``f`` (positioned after the header)."""
    major, _ = np.lib.format.read_magic(f)
    read = np.lib.format.read_array_header_1_0 if major == 1 else np.lib.format.read_array_header_2_0
    return read(f)
