"""Run logs: a CSV of every loss term, optional TensorBoard, PNG grids input | reconstruction | |difference|."""

from __future__ import annotations

import csv
import os
import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import Tensor

from movq.atomic import atomic_write, check_regular_file


class CSVLog:
    """Appends one row per logging step to ``path`` with the columns ``fields`` (missing values empty;
    the first column is ``step``).

    ``truncate_after(step)`` drops rows past ``step`` (rows a killed run wrote after its last checkpoint).
    A ``path`` that exists but is not a regular file (a FIFO...) is refused with a ``ValueError``.
    """

    def __init__(self, path: str | os.PathLike, fields: Sequence[str]) -> None:
        self.path, self.fields = Path(path), tuple(fields)
        check_regular_file(self.path, "the run's log must be a regular file: remove it, or use another --out")
        if not self.path.exists():
            with open(self.path, "w", newline="") as f:
                csv.writer(f).writerow(self.fields)

    def truncate_after(self, step: int) -> None:
        """Keep the rows up to ``step``. A log of an older version whose columns are a subset of ``fields``
        keeps its rows under the current header (new columns empty). A damaged log (not CSV, foreign
        columns, bad step values) is moved aside to ``log.csv.damaged`` with a warning and a fresh log is started."""
        try:
            with open(self.path, newline="", encoding="utf-8") as f:
                reader = csv.DictReader(f)
                columns = tuple(reader.fieldnames or ())
                if not columns or columns[0] != "step" or not set(columns) <= set(self.fields):
                    raise ValueError(f"unexpected columns {reader.fieldnames}")
                kept = [r for r in reader if int(r["step"]) <= step]
        except (OSError, UnicodeDecodeError, ValueError, TypeError, csv.Error) as error:
            aside = self.path.with_name(self.path.name + ".damaged")
            os.replace(self.path, aside)
            warnings.warn(f"{self.path} is damaged ({error}); moved to {aside}, starting a new log", stacklevel=2)
            kept = []
        with open(self.path, "w", newline="") as f:
            writer = csv.DictWriter(f, self.fields, extrasaction="ignore")
            writer.writeheader()
            writer.writerows(kept)

    def write(self, row: dict[str, float | int]) -> None:
        with open(self.path, "a", newline="") as f:
            csv.DictWriter(f, self.fields, extrasaction="ignore").writerow(
                {k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in row.items()}
            )


class TensorBoardLog:
    """Scalars to TensorBoard (``torch.utils.tensorboard``). When it cannot be imported or started
    (``tensorboard`` not installed, or broken), a ``UserWarning`` says so and the run goes on
    without TensorBoard logs (``log.csv`` has every value)."""

    def __init__(self, logdir: str | os.PathLike) -> None:
        try:
            from torch.utils.tensorboard import SummaryWriter

            self.writer = SummaryWriter(str(logdir))
        except Exception as error:  # noqa: BLE001 - tensorboard missing or broken: no TB logs, said so
            self.writer = None
            reason = str(error).splitlines()[0] if str(error) else type(error).__name__
            warnings.warn(
                f"--tensorboard: TensorBoard cannot be used ({reason}); training goes on without TensorBoard logs "
                "(log.csv has every value). pip install tensorboard to get them",
                stacklevel=2,
            )

    def write(self, row: dict[str, float | int]) -> None:
        if self.writer is None:
            return
        step = int(row["step"])
        for key, value in row.items():
            if key != "step" and isinstance(value, (int, float)):
                self.writer.add_scalar(f"train/{key}", value, step)
        self.writer.flush()


def _to_uint8(x: Tensor) -> np.ndarray:
    """``[3, H, W]`` in ``[-1, 1]`` -> ``[H, W, 3]`` uint8."""
    return ((x.detach().float().clamp(-1, 1) + 1) * 127.5).round().byte().permute(1, 2, 0).cpu().numpy()


def image_grid(images: Tensor, columns: int) -> Image.Image:
    """``images`` ``[N, 3, H, W]`` in ``[-1, 1]`` as one RGB image of ``ceil(N / columns)`` rows of
    ``columns`` cells, row by row, without gaps (``columns * W`` by ``rows * H`` pixels; empty
    cells of the last row are black)."""
    if images.ndim != 4 or images.shape[1] != 3 or images.shape[0] < 1:
        raise ValueError(f"images must be [N >= 1, 3, H, W], got {tuple(images.shape)}")
    n, _, h, w = images.shape
    columns = max(1, min(columns, n))
    rows = -(-n // columns)
    grid = np.zeros((rows * h, columns * w, 3), dtype=np.uint8)
    for i, image in enumerate(images):
        r, c = divmod(i, columns)
        grid[r * h:(r + 1) * h, c * w:(c + 1) * w] = _to_uint8(image)
    return Image.fromarray(grid)


def save_image_grid(path: str | os.PathLike, images: Tensor, columns: int) -> Path:
    """Write :func:`image_grid` of ``images`` as a PNG at ``path`` (atomically); returns the path."""
    grid = image_grid(images, columns)
    return atomic_write(path, lambda tmp: grid.save(tmp, format="PNG"))


def save_grid(path: str | os.PathLike, x: Tensor, x_hat: Tensor, max_rows: int = 4) -> None:
    """PNG with one row per image: input | reconstruction | |difference| (x4, clipped). Inputs ``[B, 3, H, W]`` in ``[-1, 1]``."""
    cells = []
    for a, b in zip(x[:max_rows], x_hat[:max_rows]):
        diff = ((b.float().clamp(-1, 1) - a.float()).abs() * 4.0 - 1.0).clamp(-1, 1)
        cells += [a.float(), b.float(), diff]
    save_image_grid(path, torch.stack(cells), columns=3)


@torch.no_grad()
def dead_codes(counts: Tensor) -> tuple[int, float]:
    """Codes never used in the window and the used fraction, from a histogram ``[codebook_size]``."""
    used = int((counts > 0).sum())
    return counts.numel() - used, used / max(counts.numel(), 1)
