"""Training data: recursive folder, deterministic crops, corrupt files, resumable sharded sampler; LPIPS loading."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from movq.train.data import ImageFolder, ResumableSampler, collate


def _images(root, n=5):
    (root / "a" / "b").mkdir(parents=True)
    rng = np.random.default_rng(0)
    for i in range(n):
        sub = root / "a" / "b" if i % 2 else root
        Image.fromarray(rng.integers(0, 255, (40 + i, 50, 3), dtype=np.uint8)).save(sub / f"im{i}.png")
    return root


def test_folder_is_recursive_and_crops_are_deterministic(tmp_path):
    ds = ImageFolder(_images(tmp_path), 16)
    assert len(ds) == 5
    a, b, c = ds[(1, 123)], ds[(1, 123)], ds[(1, 124)]
    assert a["image"].shape == (3, 16, 16) and a["image"].min() >= -1 and a["image"].max() <= 1
    assert torch.equal(a["image"], b["image"]) and not torch.equal(a["image"], c["image"])


def test_corrupt_file_is_skipped_and_reported(tmp_path):
    _images(tmp_path)
    (tmp_path / "aaa_broken.jpg").write_bytes(b"\xff\xd8 not a jpeg")
    ds = ImageFolder(tmp_path, 16)
    broken = [i for i, p in enumerate(ds.files) if p.name == "aaa_broken.jpg"][0]
    item = ds[(broken, 1)]
    assert item["image"].shape == (3, 16, 16) and item["skipped"] == [str(ds.files[broken])]
    batch = collate([item, ds[((broken + 1) % len(ds), 2)]])
    assert batch["image"].shape == (2, 3, 16, 16) and len(batch["skipped"]) == 1


def test_sampler_shards_and_resumes():
    full = list(ResumableSampler(10, seed=3))
    assert sorted(i for i, _ in full) == list(range(10))
    shards = [list(ResumableSampler(10, seed=3, rank=r, world_size=2)) for r in range(2)]
    assert sorted(i for s in shards for i, _ in s) == list(range(10))
    s = ResumableSampler(10, seed=3)
    s.set_position(0, 4)
    assert list(s) == full[4:] and len(s) == 6
    s.set_position(1, 0)
    assert [i for i, _ in s] != [i for i, _ in full]  # a new epoch is a new permutation


def test_lpips_offline():
    from movq.metrics.lpips import load_lpips, stlpips_weights_path

    if stlpips_weights_path("alex") is None:
        pytest.skip("stlpips-pytorch not installed (pip install --no-deps stlpips-pytorch)")
    model = load_lpips("alex")
    x = torch.rand(2, 3, 32, 32) * 2 - 1
    y = (x + 0.3 * torch.randn_like(x)).clamp(-1, 1).requires_grad_(True)
    assert torch.allclose(model(x, x), torch.zeros(2), atol=1e-6)
    d = model(x, y)
    assert d.shape == (2,) and (d > 0).all()
    d.sum().backward()
    assert y.grad is not None and not any(p.requires_grad for p in model.parameters())
    assert model.variant == "shift_tolerant" and "stlpips" in model.source


def test_lpips_missing_weights_error_says_where_it_looked(monkeypatch):
    import movq.metrics.lpips as P
    from movq.metrics.lpips import LPIPSMetric

    monkeypatch.setattr(P, "stlpips_weights_path", lambda net: None)
    monkeypatch.setattr(P, "_standard_lin_path", lambda net: None)
    monkeypatch.delenv(P.WEIGHTS_ENV, raising=False)
    with pytest.raises(RuntimeError) as error:
        LPIPSMetric("alex")
    message = str(error.value)
    assert "never downloaded" in message and "downloaded from" not in message
    assert P.WEIGHTS_ENV in message and "alexnet-owt-7be5be79.pth" in message and "--lpips-weights" in message


def test_lpips_missing_weights_error(tmp_path, monkeypatch):
    import movq.metrics.lpips as P

    monkeypatch.setattr(P, "stlpips_weights_path", lambda net: None)
    monkeypatch.setattr(P, "_standard_lin_path", lambda net: None)
    monkeypatch.delenv(P.WEIGHTS_ENV, raising=False)
    with pytest.raises(FileNotFoundError, match="stlpips-pytorch"):
        P.load_lpips("vgg")
    with pytest.raises(FileNotFoundError, match="not found"):
        P.load_lpips("vgg", weights=tmp_path / "nope.pth")
    lin_only = {f"lin{i}.model.1.weight": torch.zeros(1, c, 1, 1) for i, c in enumerate((64, 192, 384, 256, 256))}
    torch.save(lin_only, tmp_path / "lin.pth")
    monkeypatch.setattr(P, "_torchvision_backbone", lambda net: None)
    with pytest.raises(FileNotFoundError, match="linear heads"):
        P.load_lpips("alex", weights=tmp_path / "lin.pth")
