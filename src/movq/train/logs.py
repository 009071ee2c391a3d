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
        """Keep the rows up to ``step``. A damaged log (not CSV, foreign columns, bad step values) is
        moved aside to ``log.csv.damaged`` with a warning and a fresh log is started."""
        try:
            with open(self.path, newline="", encoding="utf-8") as f:
                reader = csv.DictReader(f)
                if tuple(reader.fieldnames or ()) != self.fields:
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
    """Scalars to TensorBoard (``torch.utils.tensorboard``); silently off if it is not installed."""

    def __init__(self, logdir: str | os.PathLike) -> None:
        try:
            from torch.utils.tensorboard import SummaryWriter

            self.writer = SummaryWriter(str(logdir))
        except Exception:  # noqa: BLE001 - tensorboard missing or broken: no TB logs
            self.writer = None

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


def save_grid(path: str | os.PathLike, x: Tensor, x_hat: Tensor, max_rows: int = 4) -> None:
    """PNG with one row per image: input | reconstruction | |difference| (x4, clipped). Inputs ``[B, 3, H, W]`` in ``[-1, 1]``."""
    rows = []
    for a, b in zip(x[:max_rows], x_hat[:max_rows]):
        diff = ((b.float().clamp(-1, 1) - a.float()).abs() * 4.0 - 1.0).clamp(-1, 1)
        rows.append(np.concatenate([_to_uint8(a), _to_uint8(b), _to_uint8(diff)], axis=1))
    grid = Image.fromarray(np.concatenate(rows, axis=0))
    atomic_write(path, lambda tmp: grid.save(tmp, format="PNG"))


@torch.no_grad()
def dead_codes(counts: Tensor) -> tuple[int, float]:
    """Codes never used in the window and the used fraction, from a histogram ``[codebook_size]``."""
    used = int((counts > 0).sum())
    return counts.numel() - used, used / max(counts.numel(), 1)
