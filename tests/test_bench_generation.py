"""``movq-bench generation`` (#24): FID, sFID, IS and precision / recall of generated images, each against an
independent computation on the same features (scipy's sqrtm in float64, numpy, torchmetrics), a set
against itself, an .npz against the same images as PNGs, and a ``--save-reference`` file against its images.

The network is the bench tests' random CNN (``--feature-extractor random``); the Inception's sFID
features are checked against a forward hook on the layer ADM names."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from scipy import linalg

from movq.bench.cli import EXIT_ERROR, main
from movq.image_files import Preprocessing
from movq.metrics import RandomFeatureExtractor

pytestmark = pytest.mark.usefixtures("one_thread")

FAST = ["--feature-extractor", "random", "--no-progress", "--threads", "1", "--batch-size", "16"]
RES = 32


def images(n: int, size: tuple[int, int], seed: int, shift: float = 0.0) -> np.ndarray:
    """uint8 ``[n, H, W, 3]``: colour ramps with a per-image tilt plus noise (``shift`` moves the set's colours)."""
    rng = np.random.default_rng(seed)
    h, w = size
    y, x = np.mgrid[0:h, 0:w] / max(h, w)
    out = []
    for _ in range(n):
        a, b, c = rng.uniform(0, 255, 3)
        ramp = np.stack([a * x + shift, b * y, c * (x + y) / 2 + shift], -1)
        out.append(np.clip(ramp + rng.normal(0, 30, ramp.shape), 0, 255))
    return np.stack(out).astype(np.uint8)


def save_pngs(arrays: np.ndarray, folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for i, a in enumerate(arrays):
        Image.fromarray(a).save(folder / f"{i:04d}.png")
    return folder


def score(args: list[str], out: Path) -> dict:
    assert main(["generation", *args, *FAST, "--out", str(out)]) == 0
    return json.loads(out.read_text())


def extract(arrays: np.ndarray, protocol: str = "movq", batch: int = 16):
    """The bench's crop (:class:`Preprocessing`) and the random CNN, batch by batch as the command runs it:
    float64 features, logits and spatial features."""
    prep = Preprocessing(protocol)
    crops = np.stack([np.asarray(prep.crop(Image.fromarray(a), RES)[0]) for a in arrays])
    x = torch.from_numpy(crops).permute(0, 3, 1, 2).float() / 255
    net = RandomFeatureExtractor(seed=0)
    outs = [net(x[lo : lo + batch]) for lo in range(0, len(x), batch)]
    return tuple(torch.cat([getattr(o, k) for o in outs]).double().numpy() for k in ("features", "logits", "spatial"))


def hand_fid(a: np.ndarray, b: np.ndarray) -> float:
    """The FID formula on feature arrays ``[N, D]``: numpy moments, scipy's sqrtm in float64."""
    mu1, mu2 = a.mean(0), b.mean(0)
    s1, s2 = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    covmean = linalg.sqrtm(s1 @ s2).real
    return float(((mu1 - mu2) ** 2).sum() + np.trace(s1) + np.trace(s2) - 2 * np.trace(covmean))


def hand_is(logits: np.ndarray, splits: int = 10) -> tuple[float, float]:
    """improved-gan's Inception Score (contiguous splits) on logits, in numpy."""
    p = np.exp(logits - logits.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    n, scores = len(p), []
    for k in range(splits):
        part = p[k * n // splits : (k + 1) * n // splits]
        scores.append(np.exp(np.mean(np.sum(part * (np.log(part) - np.log(part.mean(0, keepdims=True))), 1))))
    return float(np.mean(scores)), float(np.std(scores))


def hand_precision_recall(real: np.ndarray, fake: np.ndarray, k: int = 3) -> tuple[float, float]:
    """Kynkäänniemi et al.'s precision / recall from full numpy distance matrices."""
    def dist(a, b):
        return ((a[:, None, :] - b[None, :, :]) ** 2).sum(-1)

    r_real = np.sort(dist(real, real), axis=1)[:, k]
    r_fake = np.sort(dist(fake, fake), axis=1)[:, k]
    precision = np.mean((dist(fake, real) <= r_real[None]).any(1))
    recall = np.mean((dist(real, fake) <= r_fake[None]).any(1))
    return float(precision), float(recall)


def test_every_metric_against_a_hand_computation_on_the_same_features(tmp_path):
    """150 samples (32 px, the resolution) against 150 reference images (40x48: ADM's crop): more images
    than feature dimensions (32 pool, 128 spatial), so both covariances are full rank."""
    fake, real = images(150, (RES, RES), 1), images(150, (40, 48), 2, shift=20)
    np.savez(tmp_path / "samples.npz", arr_0=fake)
    np.savez(tmp_path / "real.npz", arr_0=real)
    result = score(["--samples", str(tmp_path / "samples.npz"), "--reference", str(tmp_path / "real.npz"),
                    "--resolution", str(RES), "--protocol", "adm"], tmp_path / "r.json")
    row = result["results"]
    f_feat, f_logits, f_spatial = extract(fake, "adm")
    r_feat, _, r_spatial = extract(real, "adm")
    assert (row["n_samples"], row["n_reference"]) == (150, 150)
    assert row["fid"] > 1e-3 and row["fid"] == pytest.approx(hand_fid(r_feat, f_feat), rel=1e-6)
    assert row["sfid"] > 1e-3 and row["sfid"] == pytest.approx(hand_fid(r_spatial, f_spatial), rel=1e-6)
    mean, std = hand_is(f_logits)
    assert (row["is"], row["is_std"]) == (pytest.approx(mean, rel=1e-9), pytest.approx(std, abs=1e-9))
    precision, recall = hand_precision_recall(r_feat, f_feat)
    assert (row["precision"], row["recall"]) == (precision, recall) and 0 < precision < 1
    proto = result["protocol"]
    assert proto["metrics"] == ["fid", "sfid", "is", "precision", "recall"] and proto["is_splits"] == 10
    assert proto["nearest_k"] == 3 and not proto["feature_extractor_standard"]
    assert "random CNN" in proto["metric_networks"]["sfid"] and "spatial" in proto["metric_networks"]["sfid"]
    assert proto["preprocessing"].startswith("adm: ADM center_crop_arr")


def test_a_folder_against_itself_scores_zero(tmp_path, capsys):
    """FID and sFID of a set against itself: 0 within 1e-6 of the scale of the terms that cancel
    (tr(sigma) of each side); precision = recall = 1."""
    arrays = images(40, (RES, RES), 3)
    folder = save_pngs(arrays, tmp_path / "s")
    result = score(["--samples", str(folder), "--reference", str(folder), "--resolution", str(RES),
                    "--metrics", "fid,precision,recall"], tmp_path / "r.json")
    feat, _, _ = extract(arrays)
    scale = 2 * np.trace(np.cov(feat, rowvar=False))
    row = result["results"]
    assert abs(row["fid"]) <= 1e-6 * scale
    assert row["precision"] == row["recall"] == 1.0
    assert "| 40 | 40 |" in capsys.readouterr().out


def test_npz_equals_the_same_images_as_pngs(tmp_path):
    """A sampling CLI's folder (PNGs plus their .npz) is read as its PNGs, and the .npz alone gives the same numbers."""
    fake, real = images(24, (RES, RES), 4), images(24, (RES, RES), 5, shift=30)
    folder = save_pngs(fake, tmp_path / "samples")
    np.savez(folder / "samples_24x32x32x3.npz", arr_0=fake, arr_1=np.arange(24))
    reference = save_pngs(real, tmp_path / "real")
    common = ["--reference", str(reference), "--resolution", str(RES), "--is-splits", "4"]
    as_pngs = score(["--samples", str(folder), *common], tmp_path / "a.json")
    as_npz = score(["--samples", str(folder / "samples_24x32x32x3.npz"), *common], tmp_path / "b.json")
    assert as_pngs["results"] == as_npz["results"]
    np.savez(tmp_path / "first20.npz", arr_0=fake[:20])
    limited = score(["--samples", str(folder / "samples_24x32x32x3.npz"), *common, "--limit", "20"], tmp_path / "c.json")
    first20 = score(["--samples", str(tmp_path / "first20.npz"), *common, "--limit", "20"], tmp_path / "d.json")
    assert limited["results"] == first20["results"] and limited["results"]["n_samples"] == 20
    assert "the first 20 of 24, --limit" in limited["protocol"]["samples"]
    assert "not read: samples_24x32x32x3.npz" in as_pngs["protocol"]["samples"]
    assert as_npz["protocol"]["samples"].startswith("npz ")


def test_a_save_reference_file_gives_the_fid_of_its_images(bench_codec_dir, tmp_path, capsys):
    """``movq-bench --save-reference``'s statistics give the FID without reading the reference images; the same
    FID as its arr_0 scored as plain images; refused for another protocol before any work."""
    real = save_pngs(images(40, (40, 48), 6), tmp_path / "real")
    ref = tmp_path / "ref.npz"
    assert main(["--model", str(bench_codec_dir), "--data", str(real), "--resolution", str(RES), *FAST,
                 "--metrics", "fid", "--save-reference", str(ref)]) == 0
    fake = tmp_path / "fake.npz"
    np.savez(fake, arr_0=images(40, (RES, RES), 7))
    with np.load(ref) as data:
        np.savez(tmp_path / "plain.npz", arr_0=data["arr_0"])
    common = ["--samples", str(fake), "--resolution", str(RES), "--metrics", "fid"]
    from_stats = score([*common, "--reference", str(ref)], tmp_path / "a.json")
    from_images = score([*common, "--reference", str(tmp_path / "plain.npz")], tmp_path / "b.json")
    assert from_stats["results"]["fid"] == pytest.approx(from_images["results"]["fid"], rel=1e-6)
    assert "statistics stored in --reference" in from_stats["protocol"]["fid_reference"]
    # sFID needs the reference's images: read as stored (already cropped), the same as the plain file
    both = [score([*common[:-1], "fid,sfid", "--reference", str(r)], tmp_path / "c.json")["results"]["sfid"]
            for r in (ref, tmp_path / "plain.npz")]
    assert both[0] == pytest.approx(both[1], rel=1e-9)
    capsys.readouterr()
    assert main(["generation", *common, "--reference", str(ref), "--protocol", "adm", *FAST]) == EXIT_ERROR
    err = capsys.readouterr().err.strip()
    assert "--reference" in err and "--protocol movq" in err and len(err.splitlines()) == 1


def _bad_inputs(root: Path) -> None:
    save_pngs(images(3, (RES, RES), 0), root / "three")
    save_pngs(images(1, (RES, RES), 0), root / "one")
    (root / "empty").mkdir()
    (root / "only_npz").mkdir()
    np.savez(root / "only_npz" / "samples.npz", arr_0=images(3, (RES, RES), 0))
    np.savez(root / "float.npz", arr_0=np.zeros((3, RES, RES, 3), np.float32))
    np.savez(root / "no_arr0.npz", images=np.zeros((3, RES, RES, 3), np.uint8))
    (root / "notes.txt").write_text("not images")
    (root / "broken.npz").write_bytes(b"PK not a zip")
    os.mkfifo(root / "fifo.npz")


@pytest.mark.parametrize("samples, extra, message", [
    ("empty", [], "--samples: no image files"),
    ("only_npz", [], "it holds samples.npz: pass that file as --samples"),
    ("notes.txt", [], "--samples notes.txt: expected a folder of images or an .npz"),
    ("missing", [], "--samples missing does not exist"),
    ("float.npz", [], "arr_0 is float32 [3, 32, 32, 3], expected uint8 [N, H, W, 3]"),
    ("no_arr0.npz", [], "holds no arr_0"),
    ("broken.npz", [], "--samples broken.npz is not a readable .npz"),
    ("fifo.npz", [], "fifo.npz is not a regular file (a FIFO, device, socket or folder); pass a folder of images or an "
                     ".npz as --samples"),
    ("one", [], "1 image(s); FID and sFID need at least 2"),
    ("three", ["--metrics", "is"], "--is-splits: IS in 10 splits needs at least 10 samples"),
    ("three", ["--metrics", "fid,precision"], "the k = 3 nearest-neighbour manifold needs more than 3 images"),
    ("three", ["--metrics", "fid,kid"], "--metrics: unknown metrics ['kid']"),
    ("three", ["--is-splits", "0"], "--is-splits must be an int >= 1, got 0"),
    ("three", ["--protocol", "adm", "--resize", "lanczos"], "--resize lanczos applies to --protocol movq"),
    ("three", ["--resolution", "4"], "--resolution must be an int >= 8, got 4"),
    ("three", ["--out", "three"], "--out three is a folder"),
])
def test_bad_input_exits_2_with_one_line_before_any_work(samples, extra, message, tmp_path, capsys, monkeypatch):
    _bad_inputs(tmp_path)
    monkeypatch.chdir(tmp_path)

    def no_network(*args, **kwargs):
        raise AssertionError("the network was loaded before the inputs were checked")

    monkeypatch.setattr("movq.metrics.features.build_feature_extractor", no_network)
    before = sorted(p.name for p in tmp_path.rglob("*"))
    assert main(["generation", "--samples", samples, "--reference", "three", "--resolution", str(RES), *FAST,
                 *extra]) == EXIT_ERROR
    err = capsys.readouterr().err.strip()
    assert err.startswith("movq-bench: error: ") and message in err and len(err.splitlines()) == 1, err
    assert sorted(p.name for p in tmp_path.rglob("*")) == before  # nothing written


def test_default_metrics_leave_out_what_cannot_be_measured(tmp_path, capsys):
    """Without --metrics, IS with fewer samples than splits and precision / recall with too few images are
    reported as not measured instead of refused."""
    folder = save_pngs(images(3, (RES, RES), 8), tmp_path / "s")
    result = score(["--samples", str(folder), "--reference", str(folder), "--resolution", str(RES)], tmp_path / "r.json")
    assert result["protocol"]["metrics"] == ["fid", "sfid"]
    assert set(result["not_measured"]) == {"is", "precision", "recall"}
    assert "- not measured: is (IS in 10 splits needs at least 10 samples" in capsys.readouterr().out


def test_csv_output(tmp_path):
    fake = tmp_path / "s.npz"
    np.savez(fake, arr_0=images(12, (RES, RES), 9))
    out = tmp_path / "r.csv"
    assert main(["generation", "--samples", str(fake), "--reference", str(fake), "--resolution", str(RES), *FAST,
                 "--metrics", "fid,is", "--is-splits", "3", "--out", str(out)]) == 0
    import csv

    (row,) = list(csv.DictReader(out.open()))
    assert row["n_samples"] == "12" and float(row["fid"]) == pytest.approx(0, abs=1e-6) and row["sfid"] == ""
    assert float(row["is"]) > 1 and row["feature_extractor_standard"] == "False"


def test_inception_score_equals_torchmetrics_on_the_same_logits():
    """movq's IS (contiguous splits) against torchmetrics' InceptionScore fed the same logits in the same
    order (torchmetrics shuffles with torch.randperm: the permutation is replayed; its std is unbiased)."""
    from torchmetrics.image.inception import InceptionScore

    from movq.metrics.inception_score import inception_score

    logits = torch.randn(60, 20, generator=torch.Generator().manual_seed(0), dtype=torch.float64) * 3
    metric = InceptionScore(feature=torch.nn.Identity(), splits=10)
    metric.update(logits)
    torch.manual_seed(123)
    order = torch.randperm(60)
    torch.manual_seed(123)
    expected_mean, expected_std = metric.compute()
    mean, std = inception_score(logits[order], splits=10)
    assert mean == pytest.approx(expected_mean.item(), rel=1e-12)
    assert std * np.sqrt(10 / 9) == pytest.approx(expected_std.item(), rel=1e-9)


def test_precision_recall_against_numpy_in_blocks(monkeypatch):
    """The blocked float64 computation equals full numpy distance matrices, for k = 1 and 3, also when the
    blocks are a few rows (the memory bound)."""
    import movq.metrics.precision_recall as pr

    rng = np.random.default_rng(0)
    real, fake = rng.normal(size=(37, 5)), rng.normal(0.5, 1.3, size=(29, 5))
    for k in (1, 3):
        expected = hand_precision_recall(real, fake, k)
        assert pr.precision_recall(torch.from_numpy(real), torch.from_numpy(fake), k) == expected
        monkeypatch.setattr(pr, "_BLOCK_ELEMENTS", 100)  # blocks of 2-3 rows
        assert pr.precision_recall(torch.from_numpy(real).float(), torch.from_numpy(fake).float(), k) == pytest.approx(
            expected, abs=1 / 29)  # float32 features: a borderline point may flip
        monkeypatch.undo()
    with pytest.raises(ValueError, match="more than k feature vectors"):
        pr.manifold_radii(torch.zeros(3, 2), k=3)


def test_inception_spatial_features_are_mixed_6d_1x1_branch_and_logits_have_no_bias():
    """sFID's features are ADM's mixed_6/conv:0 (Mixed_6d.branch1x1: conv, BN, ReLU) first 7 channels in NHWC
    order, read here with a forward hook; the IS logits are pool x fc.weight (no bias), as torch-fidelity's
    ``logits_unbiased``; the pool features are unchanged."""
    from movq.metrics.inception import FIDInceptionV3

    torch.manual_seed(0)
    net = FIDInceptionV3()
    with torch.no_grad():
        for module in net.modules():  # give the BN layers non-trivial statistics
            if isinstance(module, torch.nn.BatchNorm2d):
                module.running_mean.uniform_(-0.1, 0.1)
                module.running_var.uniform_(0.5, 1.5)
        net.fc.bias.uniform_(-1, 1)
    seen = {}
    hook = net.Mixed_6d.branch1x1.register_forward_hook(lambda m, i, o: seen.setdefault("map", o))
    images = torch.rand(2, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        out = net(images)
    hook.remove()
    assert seen["map"].shape == (2, 192, 17, 17) and (seen["map"] >= 0).all()  # after the ReLU
    expected = seen["map"][:, :7].permute(0, 2, 3, 1).reshape(2, -1)
    assert out.spatial.shape == (2, 2023) == (2, net.spatial_dim)
    torch.testing.assert_close(out.spatial, expected, rtol=0, atol=0)
    torch.testing.assert_close(out.logits, out.features @ net.fc.weight.T)
    torch.testing.assert_close(out.features, net.features(net.preprocess(images)), rtol=0, atol=0)


def plain_features() -> RandomFeatureExtractor:
    """A feature extractor without classifier and spatial features (``--feature-extractor test_bench_generation:plain_features``)."""
    net = RandomFeatureExtractor(seed=0)
    net.num_classes, net.spatial_dim, net.description = None, 0, "pool features only"
    return net


def test_what_the_network_lacks_is_refused_by_name_or_left_out(tmp_path, capsys):
    fake = tmp_path / "s.npz"
    np.savez(fake, arr_0=images(12, (RES, RES), 10))
    args = ["generation", "--samples", str(fake), "--reference", str(fake), "--resolution", str(RES), *FAST,
            "--feature-extractor", "test_bench_generation:plain_features"]
    assert main(args + ["--metrics", "fid,sfid"]) == EXIT_ERROR
    assert "--feature-extractor: sFID needs spatial features" in capsys.readouterr().err
    assert main(args + ["--out", str(tmp_path / "r.json")]) == 0
    result = json.loads((tmp_path / "r.json").read_text())
    assert result["protocol"]["metrics"] == ["fid", "precision", "recall"]
    assert set(result["not_measured"]) == {"is", "sfid"}


def test_unreadable_files_are_listed_not_scored(tmp_path, capsys):
    folder = save_pngs(images(6, (RES, RES), 11), tmp_path / "s")
    (folder / "broken.png").write_bytes(b"\x89PNG not really")
    result = score(["--samples", str(folder), "--reference", str(folder), "--resolution", str(RES),
                    "--metrics", "fid"], tmp_path / "r.json")
    assert (result["results"]["n_samples"], result["results"]["n_reference"]) == (6, 6)
    assert [s["path"] for s in result["skipped"]] == ["--samples broken.png", "--reference broken.png"]
    assert "Images skipped: 2" in capsys.readouterr().out
