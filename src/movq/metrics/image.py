"""Per-image reconstruction metrics on float images in ``[0, 1]``.

Every function takes two float tensors ``[B, 3, H, W]`` (or ``[B, C, H, W]``) in ``[0, 1]`` -
the reference and the reconstruction - and returns a float64 tensor ``[B]`` with one value per
image, so callers can average over a data set (the tables report the mean of per-image values).
"""

from __future__ import annotations

import torch
from torch import Tensor

MS_SSIM_MIN_SIDE = 161  # pytorch-msssim: 4 downsamplings of an 11-px window need a side > (11 - 1) * 2**4


def to_unit_range(x: Tensor, quantize: bool = True) -> Tensor:
    """Map model images ``[-1, 1]`` to ``[0, 1]`` float32; ``quantize`` rounds to 8-bit levels (as a saved PNG)."""
    y = (x.detach().float().clamp(-1.0, 1.0) + 1.0) / 2.0
    return (y * 255.0).round() / 255.0 if quantize else y


def _check_pair(x: Tensor, y: Tensor) -> None:
    if x.shape != y.shape or x.ndim != 4:
        raise ValueError(f"expected two [B, C, H, W] tensors of the same shape, got {tuple(x.shape)} and {tuple(y.shape)}")


def l1(x: Tensor, y: Tensor) -> Tensor:
    """Mean absolute error per image; ``[B]`` float64, 0 for identical images, at most 1."""
    _check_pair(x, y)
    return (x.double() - y.double()).abs().flatten(1).mean(1)


def mse(x: Tensor, y: Tensor) -> Tensor:
    """Mean squared error per image; ``[B]`` float64."""
    _check_pair(x, y)
    return (x.double() - y.double()).pow(2).flatten(1).mean(1)


def psnr(x: Tensor, y: Tensor, max_psnr: float = 100.0) -> Tensor:
    """Peak signal-to-noise ratio in dB per image (data range 1): ``10 log10(1 / MSE)``.

    Identical images have infinite PSNR; the value is capped at ``max_psnr`` so means stay finite.
    """
    err = mse(x, y)
    value = 10.0 * torch.log10(1.0 / err.clamp_min(10.0 ** (-max_psnr / 10.0)))
    return value.clamp(max=max_psnr)


def ssim(x: Tensor, y: Tensor) -> Tensor:
    """Structural similarity per image (pytorch-msssim: Gaussian window 11, sigma 1.5, K=(0.01, 0.03),
    data range 1, valid-region mean over channels); ``[B]`` float64 in ``[-1, 1]``."""
    from pytorch_msssim import ssim as _ssim

    _check_pair(x, y)
    return _ssim(x.float(), y.float(), data_range=1.0, size_average=False).double()


SKIMAGE_SSIM_WINDOW = 7
SSIM_K1, SSIM_K2 = 0.01, 0.03


def ssim_skimage(x: Tensor, y: Tensor, data_range: float = 1.0) -> Tensor:
    """SSIM per image as scikit-image's ``structural_similarity(x, y, data_range=data_range,
    channel_axis=-1)`` with its defaults: a 7x7 uniform window, sample covariances (``N / (N - 1)``,
    N = 49), K = (0.01, 0.03), the mean over the pixels at least 3 px from the border, then over the
    channels. Computed in float64 on ``[B, C, H, W]`` (H, W >= 7) -> ``[B]`` float64.

    It differs from :func:`ssim` (pytorch-msssim: Gaussian window 11, sigma 1.5, population
    covariances), the one most codec papers cite; both are reported so either can be compared.
    """
    import torch.nn.functional as F

    _check_pair(x, y)
    win = SKIMAGE_SSIM_WINDOW
    if min(x.shape[-2:]) < win:
        raise ValueError(f"SSIM (scikit-image) needs images of at least {win}x{win}, got {tuple(x.shape[-2:])}")
    a, b = x.double(), y.double()
    channels = a.shape[1]

    def mean(t: Tensor) -> Tensor:  # valid-region 7x7 box mean, per channel
        return F.avg_pool2d(t, win, stride=1)

    ux, uy = mean(a), mean(b)
    uxx, uyy, uxy = mean(a * a), mean(b * b), mean(a * b)
    cov_norm = win * win / (win * win - 1.0)
    vx, vy, vxy = cov_norm * (uxx - ux * ux), cov_norm * (uyy - uy * uy), cov_norm * (uxy - ux * uy)
    c1, c2 = (SSIM_K1 * data_range) ** 2, (SSIM_K2 * data_range) ** 2
    s = (2 * ux * uy + c1) * (2 * vxy + c2) / ((ux * ux + uy * uy + c1) * (vx + vy + c2))
    return s.reshape(s.shape[0], channels, -1).mean(2).mean(1)


def ms_ssim(x: Tensor, y: Tensor) -> Tensor:
    """Multi-scale SSIM per image (pytorch-msssim, 5 scales); ``[B]`` float64.

    Needs both sides >= 161 px; smaller images raise ``ValueError``.
    """
    from pytorch_msssim import ms_ssim as _ms_ssim

    _check_pair(x, y)
    if min(x.shape[-2:]) < MS_SSIM_MIN_SIDE:
        raise ValueError(f"MS-SSIM needs images of at least {MS_SSIM_MIN_SIDE}x{MS_SSIM_MIN_SIDE}, got {tuple(x.shape[-2:])}")
    return _ms_ssim(x.float(), y.float(), data_range=1.0, size_average=False).double()

