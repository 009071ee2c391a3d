"""movq-bench numbers that stand next to papers' (#22): ADM's ``center_crop_arr`` protocol, the ADM
evaluator's .npz files (reference batch, reconstructions), clean-fid's resize, FID against
torchmetrics, scikit-image's SSIM and both LPIPS networks in one run."""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import movq
from helpers import BENCH_FAST
from movq.bench.cli import EXIT_ERROR, EXIT_INTERRUPTED, main
from movq.bench.data import discover
from movq.image_files import Preprocessing, center_crop_arr, var_center_crop

pytestmark = pytest.mark.usefixtures("one_thread")


def adm_reference(pil_image: Image.Image, image_size: int) -> np.ndarray:
    """Reference: ADM's ``center_crop_arr`` (openai/guided-diffusion, guided_diffusion/image_datasets.py),
    re-derived: BOX-halve while the short side >= 2x the target, BICUBIC to the target (rounded
    sides), centre crop of the array."""
    while min(*pil_image.size) >= 2 * image_size:
        pil_image = pil_image.resize(tuple(x // 2 for x in pil_image.size), resample=Image.BOX)
    scale = image_size / min(*pil_image.size)
    pil_image = pil_image.resize(tuple(round(x * scale) for x in pil_image.size), resample=Image.BICUBIC)
    arr = np.array(pil_image)
    crop_y = (arr.shape[0] - image_size) // 2
    crop_x = (arr.shape[1] - image_size) // 2
    return arr[crop_y : crop_y + image_size, crop_x : crop_x + image_size]


def noisy_image(width: int, height: int, seed: int) -> Image.Image:
    """Smooth colour ramps plus noise: every resampling difference shows in the pixels."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width]
    ramp = np.stack([x * 255 / max(width - 1, 1), y * 255 / max(height - 1, 1), (x + y) % 256], -1)
    pixels = np.clip(ramp + rng.normal(0, 40, ramp.shape), 0, 255).astype(np.uint8)
    return Image.fromarray(pixels, "RGB")


@pytest.mark.parametrize("size", [(7, 300), (300, 7), (3000, 2000), (2000, 3000), (129, 65), (511, 1023), (128, 300),
                                  (40, 30), (1, 1), (64, 64), (257, 256)])
@pytest.mark.parametrize("resolution", [64, 256])
def test_adm_protocol_is_center_crop_arr_pixel_for_pixel(size, resolution):
    image = noisy_image(*size, seed=size[0] * 7 + size[1])
    reference = adm_reference(image, resolution)
    assert reference.shape == (resolution, resolution, 3)
    np.testing.assert_array_equal(np.asarray(center_crop_arr(image, resolution)), reference)
    cropped, upscaled = Preprocessing("adm").crop(image, resolution)
    np.testing.assert_array_equal(np.asarray(cropped), reference)
    assert upscaled == (min(size) < resolution)


@pytest.mark.parametrize("size", [(7, 300), (3000, 2000), (129, 65), (72, 72), (73, 100), (40, 30), (257, 256)])
def test_var_protocol_is_vars_torchvision_transform(size):
    """VAR's val transform (FoundationVision/VAR utils/data.py), run by torchvision itself."""
    from torchvision.transforms import CenterCrop, Compose, InterpolationMode, Resize

    image = noisy_image(*size, seed=size[0] + 3 * size[1])
    for resolution in (64, 256):
        reference = Compose([Resize(round(1.125 * resolution), interpolation=InterpolationMode.LANCZOS),
                             CenterCrop((resolution, resolution))])(image)
        np.testing.assert_array_equal(np.asarray(var_center_crop(image, resolution)[0]), np.asarray(reference))


def test_adm_protocol_reads_files_as_adm(tmp_path):
    """ADM's loader: PIL convert("RGB"), no EXIF orientation; the movq protocol applies it."""
    image = noisy_image(90, 50, seed=1)
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 CW to display"
    image.save(tmp_path / "rotated.png", exif=exif)
    adm, _ = Preprocessing("adm").load(tmp_path / "rotated.png", 32)
    np.testing.assert_array_equal(adm.permute(1, 2, 0).numpy(), adm_reference(Image.open(tmp_path / "rotated.png").convert("RGB"), 32))
    default, _ = Preprocessing().load(tmp_path / "rotated.png", 32)
    assert not torch.equal(adm, default)  # the movq protocol shows the image upright


def test_lanczos_resize_is_pil_lanczos():
    image = noisy_image(97, 61, seed=2)
    ours, _ = Preprocessing(resize="lanczos").crop(image, 32)
    scale = 32 / 61
    resized = image.resize((round(97 * scale), 32), Image.Resampling.LANCZOS)
    left = (resized.width - 32) // 2
    np.testing.assert_array_equal(np.asarray(ours), np.asarray(resized)[:, left : left + 32])
    assert "Lanczos" in Preprocessing(resize="lanczos").describe(32) and "bicubic" in Preprocessing().describe(32)


# ------------------------------------------------------------------ the ADM evaluator's .npz files


def evaluator_read_arr_0(path: Path, batch_size: int = 4) -> np.ndarray:
    """``arr_0`` read as openai/guided-diffusion's evaluations/evaluator.py does: ``open_npz_array``
    streams the .npy entry of the zip (version 1.0 / 2.0 header, then raw batches), and its
    ``MemoryNpzArrayReader`` falls back to ``np.load(f)["arr_0"]``."""
    with open(path, "rb") as f, zipfile.ZipFile(f, "r") as zip_f:
        assert "arr_0.npy" in zip_f.namelist()
        with zip_f.open("arr_0.npy", "r") as arr_f:
            version = np.lib.format.read_magic(arr_f)
            assert version in ((1, 0), (2, 0))
            read = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
            shape, fortran, dtype = read(arr_f)
            assert not fortran and not dtype.hasobject
            batches, left = [], shape[0]
            while left:
                n = min(batch_size, left)
                data = arr_f.read(int(n * np.prod(shape[1:]) * dtype.itemsize))
                batches.append(np.frombuffer(data, dtype=dtype).reshape([n, *shape[1:]]))
                left -= n
    streamed = np.concatenate(batches)
    with open(path, "rb") as f:
        np.testing.assert_array_equal(np.load(f)["arr_0"], streamed)
    return streamed


def run_json(args: list[str], out: Path) -> dict:
    assert main(args + ["--out", str(out)]) == 0
    return json.loads(out.read_text())


def test_reference_and_export_npz(bench_codec_dir, bench_data_dir, tmp_path):
    from skimage.metrics import structural_similarity

    from movq.metrics import MomentAccumulator, RandomFeatureExtractor
    from movq.metrics.lpips import LPIPSMetric

    base = ["--model", str(bench_codec_dir), "--data", str(bench_data_dir), *BENCH_FAST, "--protocol", "adm",
            "--chunk-size", "2"]
    ref, recon = tmp_path / "ref.npz", tmp_path / "recon.npz"
    first = run_json(base + ["--metrics", "fid,psnr,ssim_skimage,lpips_alex,lpips_vgg", "--save-reference", str(ref),
                             "--export-npz", str(recon)], tmp_path / "a.json")
    row = first["results"][0]
    inputs, outputs = evaluator_read_arr_0(ref), evaluator_read_arr_0(recon)
    # the bench's image order (sorted relative paths), unreadable files left out, ADM's pixels
    readable = [r for r in discover(bench_data_dir).records if r.rel not in {"corrupt.jpg", "notes.txt"}]
    expected = np.stack([adm_reference(Image.open(r.path).convert("RGB"), 64) for r in readable])
    assert inputs.dtype == np.uint8 and inputs.shape == (7, 64, 64, 3) == outputs.shape == (row["n_images"], 64, 64, 3)
    np.testing.assert_array_equal(inputs, expected)
    # the reconstructions are the codec's, and the metrics are those of these two arrays
    codec_out = movq.load(bench_codec_dir).reconstruct(inputs)
    assert np.abs(codec_out.astype(int) - outputs.astype(int)).max() <= 1
    x, y = inputs.astype(np.float64) / 255, outputs.astype(np.float64) / 255
    assert row["psnr"] == pytest.approx(np.mean(10 * np.log10(1 / ((x - y) ** 2).mean((1, 2, 3)))), abs=1e-6)
    sk = [structural_similarity(a, b, data_range=1.0, channel_axis=-1) for a, b in zip(x, y)]
    assert row["ssim_skimage"] == pytest.approx(np.mean(sk), abs=1e-6)
    tx, ty = (torch.from_numpy(a).permute(0, 3, 1, 2).float() for a in (x, y))
    for net in ("alex", "vgg"):
        assert row[f"lpips_{net}"] == pytest.approx(LPIPSMetric(net)(tx, ty).mean().item(), abs=1e-6)
    # the statistics: of the same cropped inputs, never pickled, with what they were measured with
    with np.load(ref, allow_pickle=False) as data:
        assert set(data.files) == {"arr_0", "movq_mu", "movq_sigma", "movq_meta"}  # no "mu": the evaluator computes its own
        meta = json.loads(str(data["movq_meta"]))
        moments = MomentAccumulator(32)
        moments.update(RandomFeatureExtractor(seed=0)(tx).features)
        mu, sigma = moments.mean_cov()
        # float32 features in batches of 2 (the bench) vs 7 (here): equal to float32 rounding
        np.testing.assert_allclose(data["movq_mu"], mu, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(data["movq_sigma"], sigma, rtol=1e-5, atol=1e-6)
    assert (meta["protocol"], meta["resize"], meta["resolution"], meta["fid_mode"], meta["n_images"]) == (
        "adm", "bicubic", 64, "pytorch-fid", 7)
    # reused: the same FID without measuring the originals again
    reused = run_json(base + ["--metrics", "fid,psnr", "--reference", str(ref)], tmp_path / "b.json")
    assert reused["results"][0]["fid"] == pytest.approx(row["fid"], rel=1e-9)
    assert "--reference" in reused["protocol"]["fid_reference"]


def test_reference_is_refused_for_other_inputs(bench_codec_dir, bench_data_dir, tmp_path, capsys):
    base = ["--model", str(bench_codec_dir), "--data", str(bench_data_dir), *BENCH_FAST, "--metrics", "fid,psnr"]
    ref = tmp_path / "ref.npz"
    assert main(base + ["--limit", "3", "--save-reference", str(ref)]) == 0
    capsys.readouterr()
    for extra, message in (
        (["--limit", "3", "--protocol", "adm"], "saved for --protocol movq (this run: adm)"),
        (["--limit", "3", "--resolution", "32"], "saved for --resolution 64 (this run: 32)"),
        (["--limit", "3", "--fid-mode", "clean"], "saved for --fid-mode pytorch-fid"),
        (["--limit", "3", "--resize", "lanczos"], "saved for --resize bicubic"),
        (["--limit", "4"], "saved for another image list"),
        (["--limit", "3", "--feature-extractor", "random:1"], "saved for --feature-extractor"),
    ):
        assert main(base + extra + ["--reference", str(ref)]) == EXIT_ERROR, extra
        err = capsys.readouterr().err
        assert message in err and len(err.strip().splitlines()) == 1, err
    np.savez(tmp_path / "adm.npz", arr_0=np.zeros((2, 64, 64, 3), np.uint8), mu=np.zeros(3), sigma=np.eye(3))
    assert main(base + ["--reference", str(tmp_path / "adm.npz")]) == EXIT_ERROR
    assert "only files written by movq-bench --save-reference" in capsys.readouterr().err


@pytest.mark.parametrize("extra, message", [
    (["--save-reference", "r.npz", "--reference", "s.npz"], "not both"),
    (["--metrics", "psnr", "--save-reference", "r.npz"], "--save-reference holds FID statistics: add fid to --metrics"),
    (["--by-domain", "--export-npz", "e.npz"], "--export-npz is one set of images"),
    (["--export-npz", "e.txt"], "--export-npz must name a .npz file"),
    (["--protocol", "adm", "--resize", "lanczos"], "--resize lanczos applies to --protocol movq"),
    (["--protocol", "var", "--resize", "lanczos"], "--protocol var is VAR's transform"),
    (["--model", "second", "--export-npz", "e.npz"], "--export-npz writes one model's reconstructions"),
    (["--save-reference", "x.npz", "--export-npz", "x.npz"], "name the same file"),
    (["--reference", "missing.npz"], "--reference missing.npz: no such file"),
    (["--export-npz", "folder.npz"], "--export-npz folder.npz is a folder"),
])
def test_new_flags_are_checked_before_work(extra, message, bench_codec_dir, bench_data_dir, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "folder.npz").mkdir()
    args = ["--model", str(bench_codec_dir), "--data", str(bench_data_dir), *BENCH_FAST, "--metrics", "fid,psnr"]
    assert main(args + extra) == EXIT_ERROR
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1, err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["folder.npz"]  # nothing written


def test_export_survives_an_interrupted_resumed_run(bench_codec_dir, bench_data_dir, tmp_path):
    args = ["--model", str(bench_codec_dir), "--data", str(bench_data_dir), *BENCH_FAST, "--metrics", "fid,l1",
            "--chunk-size", "2"]
    whole = tmp_path / "whole.npz"
    assert main(args + ["--export-npz", str(whole), "--save-reference", str(tmp_path / "whole-ref.npz")]) == 0
    assert not list(tmp_path.glob(".movq-bench-*"))  # the staged chunks are gone
    cache = ["--cache", str(tmp_path / "cache"), "--cache-interval", "0"]
    resumed = tmp_path / "resumed.npz"
    outputs = ["--export-npz", str(resumed), "--save-reference", str(tmp_path / "resumed-ref.npz")]
    assert main(args + cache + outputs + ["--max-chunks", "2"]) == EXIT_INTERRUPTED
    assert not resumed.exists()
    assert main(args + cache + outputs) == 0
    np.testing.assert_array_equal(np.load(resumed)["arr_0"], np.load(whole)["arr_0"])
    with np.load(tmp_path / "resumed-ref.npz") as a, np.load(tmp_path / "whole-ref.npz") as b:
        np.testing.assert_array_equal(a["arr_0"], b["arr_0"])
        np.testing.assert_allclose(a["movq_sigma"], b["movq_sigma"], rtol=1e-12, atol=1e-15)


# ------------------------------------------------------------------ FID modes and arithmetic


def test_clean_mode_is_clean_fids_resize():
    from cleanfid.resize import make_resizer

    from movq.metrics.inception import FIDInceptionV3, clean_resize

    rng = np.random.default_rng(0)
    images = [rng.integers(0, 256, (h, w, 3), dtype=np.uint8) for h, w in ((64, 64), (37, 90), (300, 301))]
    resize = make_resizer("PIL", False, "bicubic", (299, 299))
    for image in images:
        expected = resize(image)  # float32 [299, 299, 3] in [0, 255]
        ours = clean_resize(torch.from_numpy(image).permute(2, 0, 1)[None].float() / 255)[0].permute(1, 2, 0).numpy()
        np.testing.assert_array_equal(ours, expected)
        # the Inception input: clean-fid's InceptionV3W normalisation (x - 128) / 128
        holder = type("Holder", (), {"fid_mode": "clean"})()
        x = torch.from_numpy(image).permute(2, 0, 1)[None].float() / 255
        np.testing.assert_array_equal(FIDInceptionV3.preprocess(holder, x)[0].permute(1, 2, 0).numpy(), (expected - 128) / 128)


def test_clean_mode_in_the_bench(bench_codec_dir, bench_data_dir, tmp_path):
    from movq.metrics.features import CleanResized, build_feature_extractor

    extractor = build_feature_extractor("random", fid_mode="clean")
    assert isinstance(extractor, CleanResized) and extractor.feature_dim == 32
    base = ["--model", str(bench_codec_dir), "--data", str(bench_data_dir), *BENCH_FAST, "--metrics", "fid,psnr", "--limit", "3"]
    clean = run_json(base + ["--fid-mode", "clean"], tmp_path / "c.json")
    legacy = run_json(base, tmp_path / "l.json")
    assert clean["protocol"]["fid_mode"] == "clean" and "clean-fid" in clean["protocol"]["fid_preprocessing"]
    assert clean["results"][0]["psnr"] == legacy["results"][0]["psnr"]
    assert clean["results"][0]["fid"] != legacy["results"][0]["fid"] and clean["results"][0]["fid"] >= 0


class _Features(torch.nn.Module):
    """The bench's test extractor as torchmetrics wants a custom feature module: images -> [N, D]."""

    def __init__(self) -> None:
        super().__init__()
        from movq.metrics import RandomFeatureExtractor

        self.inner = RandomFeatureExtractor(feature_dim=16, seed=3)
        self.num_features = 16

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.inner(images).features


def test_fid_equals_torchmetrics_with_the_same_feature_module():
    from torchmetrics.image.fid import FrechetInceptionDistance

    from movq.metrics import MomentAccumulator, fid_from_moments

    module = _Features()
    g = torch.Generator().manual_seed(0)
    real = torch.rand(40, 3, 32, 32, generator=g)
    fake = (real.pow(2) + 0.3 * torch.randn(real.shape, generator=g)).clamp(0, 1)
    metric = FrechetInceptionDistance(feature=module, normalize=True)
    ours_real, ours_fake = MomentAccumulator(16), MomentAccumulator(16)
    for lo in range(0, 40, 16):  # streamed in batches, as the bench does
        metric.update(real[lo : lo + 16], real=True)
        metric.update(fake[lo : lo + 16], real=False)
        ours_real.update(module(real[lo : lo + 16]))
        ours_fake.update(module(fake[lo : lo + 16]))
    expected = metric.compute().item()
    assert expected > 1e-3
    assert fid_from_moments(ours_real, ours_fake) == pytest.approx(expected, rel=1e-5)
