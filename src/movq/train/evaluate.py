"""Held-out reconstruction quality of a codec on an image folder: PSNR, SSIM, L1, codebook usage.

Images are resized so the short side is ``size`` and centre-cropped to ``size x size``; metrics
are computed on ``[0, 1]`` RGB with the reconstruction rounded to 8 bits (PSNR per image, averaged; SSIM from ``pytorch_msssim``; L1 mean
absolute error). Usage is the fraction of the codebook used by all tokens of the folder.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass

import numpy as np
import torch

from movq.codec import Codec
from movq.image_files import list_image_files, load_preprocessed
from movq.metrics.image import l1, psnr, ssim, to_unit_range


@dataclass
class EvalResult:
    """Averages over ``images`` held-out images at ``size`` px: PSNR (dB), SSIM, L1 (on [0, 1]), usage (0-1)."""

    images: int
    size: int
    psnr: float
    ssim: float
    l1: float
    usage: float

    def to_dict(self) -> dict[str, float]:
        return asdict(self)


def center_crop(path: str | os.PathLike, size: int) -> torch.Tensor:
    """``[3, size, size]`` float in ``[-1, 1]``: the bench's preprocessing (RGB, short side to ``size``, centre crop)."""
    pixels, _ = load_preprocessed(path, size)
    return pixels.float() / 127.5 - 1


@torch.no_grad()
def evaluate_folder(codec: Codec, folder: str | os.PathLike, size: int = 256, batch_size: int = 4) -> EvalResult:
    """Reconstruct every image under ``folder`` with ``codec`` (eval mode, its device) and average the metrics."""
    codec.eval()
    files = list_image_files(folder)
    psnrs, ssims, l1s = [], [], []
    counts = torch.zeros(codec.codebook_size)
    for start in range(0, len(files), batch_size):
        x = torch.stack([center_crop(p, size) for p in files[start : start + batch_size]]).to(codec.device)
        quant = codec.quantize(codec.encode_to_prequant(x.to(codec.dtype)))
        counts += torch.bincount(quant.indices.reshape(-1).cpu(), minlength=codec.codebook_size)[: codec.codebook_size].float()
        a = to_unit_range(x, quantize=False)
        b = to_unit_range(codec.decode_from_quantized(quant.z_q))  # 8-bit output, as a saved PNG (and movq-bench)
        psnrs += psnr(a, b).tolist()
        ssims += ssim(a, b).tolist()
        l1s += l1(a, b).tolist()
    return EvalResult(len(files), size, float(np.mean(psnrs)), float(np.mean(ssims)), float(np.mean(l1s)),
                      float((counts > 0).float().mean()))
