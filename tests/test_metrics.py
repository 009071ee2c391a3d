"""movq.metrics: per-image metrics vs scikit-image / closed form, Fréchet distance, accumulators, IS."""

from __future__ import annotations

import math
import subprocess
import sys

import numpy as np
import pytest
import torch

from movq.metrics import (
    MeanAccumulator,
    MomentAccumulator,
    PosteriorAccumulator,
    frechet_distance,
    inception_score_from_posteriors,
    l1,
    ms_ssim,
    psnr,
    ssim,
    to_unit_range,
)


def _pair(seed: int = 0, size: int = 48) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(2, 3, size, size, generator=g)
    y = (x + 0.1 * torch.randn(x.shape, generator=g)).clamp(0, 1)
    return x, y


def test_psnr_l1_closed_form():
    x = torch.zeros(1, 3, 8, 8)
    y = torch.full((1, 3, 8, 8), 0.1)
    assert psnr(x, y).item() == pytest.approx(20.0)  # MSE 0.01 -> 20 dB
    assert l1(x, y).item() == pytest.approx(0.1)
    assert psnr(x, x).item() == 100.0  # capped, finite


def test_psnr_l1_match_scikit_image():
    skm = pytest.importorskip("skimage.metrics")
    x, y = _pair()
    for i in range(2):
        a, b = x[i].permute(1, 2, 0).numpy().astype(np.float64), y[i].permute(1, 2, 0).numpy().astype(np.float64)
        assert psnr(x, y)[i].item() == pytest.approx(skm.peak_signal_noise_ratio(a, b, data_range=1.0), rel=1e-6)
        assert l1(x, y)[i].item() == pytest.approx(np.abs(a - b).mean(), rel=1e-6)


def test_ssim_matches_scikit_image():
    skm = pytest.importorskip("skimage.metrics")
    x, y = _pair(1)
    ours = ssim(x, y)
    for i in range(2):
        a, b = x[i].permute(1, 2, 0).numpy().astype(np.float64), y[i].permute(1, 2, 0).numpy().astype(np.float64)
        ref = skm.structural_similarity(
            a, b, data_range=1.0, channel_axis=2, gaussian_weights=True, sigma=1.5, use_sample_covariance=False
        )
        assert ours[i].item() == pytest.approx(ref, abs=2e-3)
    assert torch.allclose(ssim(x, x), torch.ones(2, dtype=torch.float64), atol=1e-5)


@pytest.mark.parametrize("shape", [(7, 7), (48, 48), (23, 61), (64, 9)])
def test_ssim_skimage_equals_structural_similarity(shape):
    skm = pytest.importorskip("skimage.metrics")
    from movq.metrics.image import ssim_skimage

    g = torch.Generator().manual_seed(shape[0] * 100 + shape[1])
    x = torch.rand(2, 3, *shape, generator=g, dtype=torch.float64)
    y = (x + 0.15 * torch.randn(x.shape, generator=g, dtype=torch.float64)).clamp(0, 1)
    ours = ssim_skimage(x, y)
    for i in range(2):
        a, b = x[i].permute(1, 2, 0).numpy(), y[i].permute(1, 2, 0).numpy()
        assert abs(ours[i].item() - skm.structural_similarity(a, b, data_range=1.0, channel_axis=-1)) < 1e-6
    # 8-bit levels on [0, 255] with data_range=255, as skimage would be called on uint8 arrays
    x8, y8 = (x * 255).round(), (y * 255).round()
    a, b = x8[0].permute(1, 2, 0).numpy(), y8[0].permute(1, 2, 0).numpy()
    assert abs(ssim_skimage(x8, y8, data_range=255)[0].item() - skm.structural_similarity(a, b, data_range=255, channel_axis=-1)) < 1e-6
    with pytest.raises(ValueError, match="at least 7x7"):
        ssim_skimage(x[..., :6, :], y[..., :6, :])


def test_ms_ssim_identity_and_size_check():
    g = torch.Generator().manual_seed(0)
    x = torch.rand(1, 3, 168, 168, generator=g)
    assert ms_ssim(x, x).item() == pytest.approx(1.0, abs=1e-5)
    with pytest.raises(ValueError, match="MS-SSIM"):
        ms_ssim(x[..., :64, :64], x[..., :64, :64])


def test_to_unit_range_rounds_to_8_bit():
    out = to_unit_range(torch.tensor([-1.0, 0.0, 1.0, 0.3]))
    assert torch.allclose(out * 255, (out * 255).round())
    assert out[0] == 0 and out[2] == 1


def _gaussian_stats(rng: np.random.Generator, n: int, d: int, shift: float) -> tuple[np.ndarray, np.ndarray]:
    feats = rng.normal(size=(n, d)) @ rng.normal(size=(d, d)) * 0.5 + shift
    return feats.mean(0), np.cov(feats, rowvar=False)


def test_frechet_distance_matches_direct_scipy():
    from scipy import linalg

    rng = np.random.default_rng(0)
    mu1, s1 = _gaussian_stats(rng, 200, 8, 0.0)
    mu2, s2 = _gaussian_stats(rng, 200, 8, 0.3)
    ref = np.sum((mu1 - mu2) ** 2) + np.trace(s1) + np.trace(s2) - 2 * np.trace(linalg.sqrtm(s1 @ s2).real)
    assert frechet_distance(mu1, s1, mu2, s2) == pytest.approx(ref, rel=1e-10)
    assert frechet_distance(mu1, s1, mu1, s1) == pytest.approx(0.0, abs=1e-8)


def test_fid_from_streamed_moments_matches_scipy_in_float64():
    """The bench's path (features streamed into MomentAccumulator in chunks, then fid_from_moments)
    against the formula on numpy's float64 mean / covariance with scipy's sqrtm."""
    from scipy import linalg

    from movq.metrics import fid_from_moments

    rng = np.random.default_rng(3)
    real = rng.normal(size=(300, 12)) @ rng.normal(size=(12, 12))
    fake = 0.8 * real + rng.normal(0.2, 0.5, size=real.shape)
    accumulators = []
    for feats in (real, fake):
        acc = MomentAccumulator(12)
        for chunk in np.array_split(feats, 7):
            acc.update(torch.from_numpy(chunk))  # float64 in: no float32 rounding
        accumulators.append(acc)
    mu1, mu2 = real.mean(0), fake.mean(0)
    s1, s2 = np.cov(real, rowvar=False), np.cov(fake, rowvar=False)
    ref = np.sum((mu1 - mu2) ** 2) + np.trace(s1 + s2) - 2 * np.trace(linalg.sqrtm(s1 @ s2).real)
    assert fid_from_moments(*accumulators) == pytest.approx(ref, rel=1e-9)


def test_frechet_distance_singular_covariance_is_finite():
    rng = np.random.default_rng(1)
    feats = rng.normal(size=(5, 16))  # 5 samples in 16 dims: rank-deficient covariance
    mu, sigma = feats.mean(0), np.cov(feats, rowvar=False)
    value = frechet_distance(mu, sigma, mu + 0.1, sigma)
    assert math.isfinite(value) and value == pytest.approx(16 * 0.01, abs=1e-2)
    with pytest.raises(ValueError, match="shape"):
        frechet_distance(mu, sigma, mu[:3], sigma)


def test_moment_accumulator_merge_equals_numpy():
    rng = np.random.default_rng(2)
    feats = rng.normal(size=(40, 6))
    parts = [MomentAccumulator(6) for _ in range(3)]
    for part, chunk in zip(parts, np.array_split(feats, 3)):
        part.update(torch.from_numpy(chunk).float())
    merged = parts[0].merge(parts[1]).merge(parts[2])
    mu, sigma = merged.mean_cov()
    f32 = feats.astype(np.float32).astype(np.float64)
    np.testing.assert_allclose(mu, f32.mean(0), rtol=1e-12)
    np.testing.assert_allclose(sigma, np.cov(f32, rowvar=False), rtol=1e-9, atol=1e-12)
    restored = MomentAccumulator(6)
    restored.load_state_dict(merged.state_dict())
    assert restored.count == 40 and torch.equal(restored.sum_outer, merged.sum_outer)


def test_mean_accumulator():
    acc, other = MeanAccumulator(), MeanAccumulator()
    assert math.isnan(acc.mean)
    acc.update(torch.tensor([1.0, 2.0]))
    other.update(torch.tensor([6.0]))
    assert acc.merge(other).mean == pytest.approx(3.0) and acc.count == 3


def test_inception_score_known_values():
    n, c = 40, 5
    one_hot = torch.eye(c).repeat(n // c, 1)
    assert inception_score_from_posteriors(one_hot, splits=1)[0] == pytest.approx(5.0)
    assert inception_score_from_posteriors(torch.full((n, c), 1.0 / c), splits=1)[0] == pytest.approx(1.0)
    a = 0.8
    probs = torch.tensor([[a, 1 - a], [1 - a, a]]).repeat(10, 1)
    expected = math.exp(a * math.log(2 * a) + (1 - a) * math.log(2 * (1 - a)))
    mean, std = inception_score_from_posteriors(probs, splits=2)
    assert mean == pytest.approx(expected) and std == pytest.approx(0.0, abs=1e-12)
    acc = PosteriorAccumulator(2)
    acc.update(probs[:7])
    rest = PosteriorAccumulator(2)
    rest.update(probs[7:])
    assert acc.merge(rest).score() == pytest.approx(expected)


def test_metrics_import_is_lazy():
    code = (
        "import sys, movq.metrics as m; assert 'scipy' not in sys.modules and 'pytorch_msssim' not in sys.modules; "
        "assert 'movq.bench' not in sys.modules; m.psnr; assert 'scipy' not in sys.modules"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
