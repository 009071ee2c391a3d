"""Held-out reconstruction quality of a codec on an image folder: PSNR, SSIM, L1 (LPIPS), codebook usage and perplexity.

The images, reconstructions and per-image metrics are ``movq-bench``'s (:mod:`movq.bench.per_image`); training runs call it on their held-out folder:
each image is resized so the short side is ``size`` and centre-cropped to ``size x size``
(:func:`movq.image_files.load_preprocessed`), metrics are computed on ``[0, 1]`` RGB with the
reconstruction rounded to 8 bits, one value per image, averaged. Usage is the fraction of the
codebook used by all tokens of the folder (the bench's ``codebook_usage``: mean over the levels of a
residual codec).
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass
from typing import Any

import torch

from movq.bench.per_image import per_image_metrics, reconstruct
from movq.bench.stats import code_columns
from movq.codec import Codec
from movq.image_files import list_image_files, load_preprocessed
from movq.metrics.accumulators import HistogramAccumulator, MeanAccumulator


@dataclass
class EvalResult:
    """Averages over ``images`` held-out images at ``size`` px: PSNR (dB), SSIM, L1 (on [0, 1]),
    usage (0-1), LPIPS when it was asked for (else None), and the perplexity of the codes of the
    whole folder (``exp`` of the entropy of their histogram; mean over levels, like ``usage``)."""

    images: int
    size: int
    psnr: float
    ssim: float
    l1: float
    usage: float
    lpips: float | None = None
    perplexity: float | None = None

    def to_dict(self) -> dict[str, float | None]:
        return asdict(self)


@torch.no_grad()
def evaluate_folder(codec: Codec, folder: str | os.PathLike, size: int = 256, batch_size: int = 4,
                    lpips: Any = None) -> EvalResult:
    """Reconstruct every image under ``folder`` with ``codec`` (its device and dtype; inference mode)
    and average the metrics; ``lpips`` (a :class:`~movq.metrics.lpips.LPIPSMetric`) adds LPIPS."""
    metrics = ("psnr", "ssim", "l1") + (("lpips",) if lpips is not None else ())
    files = list_image_files(folder)
    means = {metric: MeanAccumulator() for metric in metrics}
    shape = codec.tokens_shape(size, size)
    codes = HistogramAccumulator(shape[0] if len(shape) == 3 else 1, codec.codebook_size)
    for start in range(0, len(files), batch_size):
        pixels = [load_preprocessed(path, size)[0] for path in files[start : start + batch_size]]
        real = torch.stack(pixels).to(codec.device).float() / 255.0  # as movq-bench
        tokens, recon = reconstruct(codec, real)
        codes.update(tokens)
        for metric, values in per_image_metrics(real, recon, metrics, lpips).items():
            means[metric].update(values)
    columns = code_columns(codes.counts, codec.codebook_size)
    return EvalResult(len(files), size, means["psnr"].mean, means["ssim"].mean, means["l1"].mean,
                      columns["codebook_usage"], means["lpips"].mean if lpips is not None else None,
                      columns["perplexity"])
