"""Pixel-space diffusion (``movq-diffusion-train --pixels``, improved DDPM as published) and bits/dim
(``movq-diffusion-nll``): the pixel process equals the latent one but for the decoder's open edge
bins (checked against scipy), images are read as the bench reads them, a tiny UNet overfits one
image per class and samples it back without a codec, and the VLB sum equals a direct per-term
computation. (One DDPM / DDIM step against diffusers' schedulers with x0 clipping: test_diffusion_maths;
pixel-mode exact resume: test_diffusion_train.)"""

from __future__ import annotations

import inspect
import json
import math

import numpy as np
import pytest
import torch
from PIL import Image

from helpers import DIFFUSION_TINY_UNET, tiny_unet
from helpers import diffusion_train_config as config
from movq.diffusion import GaussianDiffusion, LatentDiffusionPipeline
from movq.diffusion.data import PixelImages, labelled_pixels
from movq.diffusion.losses import discretized_gaussian_log_likelihood
from movq.diffusion.nll import calc_bpd_loop, main
from movq.diffusion.train import DiffusionTrainer
from movq.image_files import load_preprocessed

stats = pytest.importorskip("scipy.stats")
pytestmark = pytest.mark.usefixtures("one_thread")

PIXELS = {"bounds": (-1.0, 1.0)}


def pixel_batch(batch=4, size=4, seed=0) -> torch.Tensor:
    """8-bit images in [-1, 1] (float64), with the extreme values 0 and 255 present."""
    g = torch.Generator().manual_seed(seed)
    values = torch.randint(0, 256, (batch, 3, size, size), generator=g)
    values[:, :, 0, 0], values[:, :, 0, 1] = 0, 255
    return values.double() / 127.5 - 1.0


# --------------------------------------------------------------------------------- the process


def test_pixel_process_equals_the_latent_one_but_for_the_open_edge_bins():
    latent, pixel = GaussianDiffusion(steps=100), GaussianDiffusion(steps=100, **PIXELS)
    x0 = pixel_batch()
    noise = torch.randn(x0.shape, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    t = torch.tensor([0, 0, 5, 99])
    x_t = latent.q_sample(x0, t, noise)
    assert torch.equal(x_t, pixel.q_sample(x0, t, noise))
    for a, b in zip(latent.q_posterior_mean_variance(x0, x_t, t), pixel.q_posterior_mean_variance(x0, x_t, t)):
        assert torch.equal(a, b)
    output = torch.cat([noise * 0.8, torch.rand(x0.shape, dtype=torch.float64) * 2 - 1], dim=1)
    vb_latent, vb_pixel = latent.vb_terms_bits(output, x0, x_t, t), pixel.vb_terms_bits(output, x0, x_t, t)
    assert torch.equal(vb_latent[2:], vb_pixel[2:])  # the KL terms do not see the bounds

    # the decoder at t = 0: the same bins inside, the first and last bin open (scipy's normal CDF)
    p = pixel.p_mean_variance(output, x_t, t)
    mean, std = p["mean"][:2].numpy(), np.exp(0.5 * p["log_variance"][:2].numpy())
    x, half = x0[:2].numpy(), 1 / 255
    inside = np.log(stats.norm.cdf((x + half - mean) / std) - stats.norm.cdf((x - half - mean) / std))
    low, high = stats.norm.logcdf((x + half - mean) / std), stats.norm.logsf((x - half - mean) / std)
    expected = np.where(x <= -1, low, np.where(x >= 1, high, inside))
    ours = discretized_gaussian_log_likelihood(x0[:2], p["mean"][:2], 0.5 * p["log_variance"][:2], bounds=(-1, 1))
    np.testing.assert_allclose(ours.numpy(), expected, rtol=1e-7)
    unbounded = discretized_gaussian_log_likelihood(x0[:2], p["mean"][:2], 0.5 * p["log_variance"][:2])
    edge = (x0[:2].abs() == 1).numpy()
    np.testing.assert_array_equal(ours.numpy()[~edge], unbounded.numpy()[~edge])
    assert bool((ours.numpy()[edge] > unbounded.numpy()[edge]).all())  # an open bin holds more mass
    expected_vb = -expected.reshape(2, -1).mean(axis=1) / math.log(2)
    np.testing.assert_allclose(vb_pixel[:2].numpy(), expected_vb, rtol=1e-7)
    assert bool((vb_pixel[:2] < vb_latent[:2]).all())


# --------------------------------------------------------------------------------- the data


@pytest.fixture(scope="module")
def two_classes(tmp_path_factory):
    """One 12x16 image per class (red disc-ish square, blue bar) in class folders, and a broken file."""
    root = tmp_path_factory.mktemp("pixels")
    for name, colour, box in (("blue", (30, 60, 220), (0, 4, 16, 8)), ("red", (220, 40, 30), (4, 0, 12, 12))):
        (root / name).mkdir()
        array = np.full((12, 16, 3), 200, np.uint8)
        array[box[1]:box[3], box[0]:box[2]] = colour
        Image.fromarray(array).save(root / name / "a.png")
    return root


def test_pixel_images_are_read_as_the_bench_reads_them(two_classes, tmp_path):
    images = PixelImages.read(two_classes, 8)
    assert images.sources == ["blue/a.png", "red/a.png"] and images.labels == [0, 1]
    assert images.label_names == ["blue", "red"] and images.meta["space"] == "pixel"
    for i, source in enumerate(images.sources):
        pixels, _ = load_preprocessed(two_classes / source, 8)
        assert torch.equal(images.pixels[i], pixels)
        torch.testing.assert_close(images[i]["latents"], pixels.double().div(127.5).sub(1).float())
    items = labelled_pixels(images)
    assert items.latent_shape == (3, 8, 8) and items.label_names == ["blue", "red"] and items.labels.tolist() == [0, 1]
    assert labelled_pixels(images, "none").labels is None

    broken = tmp_path / "broken"
    (broken / "x").mkdir(parents=True)
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(broken / "x" / "ok.png")
    (broken / "x" / "bad.png").write_bytes(b"not a png")
    read = PixelImages.read(broken, 8)
    assert len(read) == 1 and [s["source"] for s in read.skipped] == ["x/bad.png"]
    with pytest.raises(ValueError, match="--labels folder"):
        PixelImages.read(broken, 8, labels="folder")  # one class folder: refused before decoding
    with pytest.raises(ValueError, match="--labels folder"):
        labelled_pixels(read, "folder")


# --------------------------------------------------------------------------------- overfit and sample back


@pytest.fixture(scope="module")
def pixel_run(two_classes, tmp_path_factory):
    """Two steps of ``movq-diffusion-train --pixels`` on the two images: a pixel release folder."""
    out = tmp_path_factory.mktemp("run")
    cfg = config(out, pixels=True, data=str(two_classes), resolution=8, diffusion_steps=100, max_steps=2,
                 batch_size=2, save_every=2, log_every=2)
    trainer = DiffusionTrainer(cfg)
    trainer.run()
    return out / "run", trainer.dataset


def test_a_pixel_release_records_its_space_and_loads_without_a_codec(pixel_run):
    run, _ = pixel_run
    info = json.loads((run / "latent_diffusion.json").read_text())
    assert info["space"] == "pixel" and info["codec"] is None and info["latent_shape"] == [3, 8, 8]
    assert info["latent_scale"] == 1.0 and info["labels"] == ["blue", "red"] and info["resolution"] == 8
    assert json.loads((run / "diffusion.json").read_text())["bounds"] == [-1.0, 1.0]
    pipe = LatentDiffusionPipeline.from_pretrained(run)
    assert pipe.codec is None and pipe.model.config.in_channels == 3 and pipe.model.config.sample_size == 8
    with pytest.raises(ValueError, match="pixel-space model"):
        LatentDiffusionPipeline.from_pretrained(run, codec="movqgan-tiny")


@pytest.fixture(scope="module")
def overfit(pixel_run):
    """A tiny class-conditional pixel UNet (v prediction, learned variance, hybrid loss, bounds (-1, 1))
    trained on one 8x8 image per class (the images as the trainer reads them)."""
    _, items = pixel_run
    images = torch.stack([items[i]["latents"] for i in range(2)])  # [2, 3, 8, 8] in [-1, 1]
    torch.manual_seed(0)
    diffusion = GaussianDiffusion(steps=100, mean_type="v", **PIXELS)
    model = tiny_unet(in_channels=3, sample_size=8, attention_resolutions=(), num_classes=2)
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    g = torch.Generator().manual_seed(0)
    model.train()
    for _ in range(250):
        y = torch.randint(0, 2, (8,), generator=g)
        t = torch.randint(0, diffusion.num_timesteps, (8,), generator=g)
        loss = diffusion.training_losses(model, images[y], t, {"y": y})["loss"].mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return LatentDiffusionPipeline(model.eval(), diffusion, None, labels=["blue", "red"]), images


def test_tiny_unet_overfits_one_image_per_class_and_samples_it_back(overfit):
    pipe, images = overfit
    # samples as a tensor [B, 3, H, W] in [-1, 1] (output_type="pt" where generate returns PIL by default)
    tensors = {"output_type": "pt"} if "output_type" in inspect.signature(pipe.generate).parameters else {}
    labels, y = ["blue", "red", "red", "blue"], torch.tensor([0, 1, 1, 0])
    for sampler, steps in (("ddim", 20), ("ddpm", 50)):
        samples = pipe.generate(labels, num_steps=steps, sampler=sampler, generator=torch.Generator().manual_seed(0),
                                **tensors)
        assert samples.shape == (4, 3, 8, 8) and float(samples.abs().max()) <= 1.0
        distances = ((samples[:, None] - images[None]) ** 2).mean(dim=(2, 3, 4))  # [sample, image]
        own, other = distances[torch.arange(4), y], distances[torch.arange(4), 1 - y]
        assert bool((own < 0.08).all()), (sampler, distances)  # RMS error < 0.28 of the [-1, 1] range
        assert bool((own < 0.2 * other).all()), (sampler, distances)


# --------------------------------------------------------------------------------- bits/dim


def test_vlb_sum_equals_a_direct_per_term_computation():
    """calc_bpd_loop against the bound written out term by term in float64 numpy / scipy: the prior
    KL, each step's Gaussian KL from the posterior and the (learned) variance, the decoder's bins."""
    steps = 6
    d = GaussianDiffusion(steps=steps, mean_type="eps", **PIXELS)
    model = tiny_unet(seed=3, in_channels=3, num_classes=2).double()
    x0 = pixel_batch(batch=2, size=4, seed=5)
    y = torch.tensor([1, 0])
    terms = calc_bpd_loop(d, model, x0, {"y": y}, clip_denoised=1.0, generator=torch.Generator().manual_seed(9))

    betas = d.betas.numpy()
    abar = np.cumprod(1 - betas)
    abar_prev = np.concatenate([[1.0], abar[:-1]])
    tilde = betas * (1 - abar_prev) / (1 - abar)
    g = torch.Generator().manual_seed(9)
    noises = {t: torch.randn(x0.shape, generator=g, dtype=torch.float64) for t in range(steps - 1, -1, -1)}
    x = x0.numpy()

    def kl(m1, v1, m2, v2):
        return 0.5 * (np.log(v2 / v1) + (v1 + (m1 - m2) ** 2) / v2 - 1)

    expected = np.zeros((2, steps))
    for t in range(steps):
        x_t = np.sqrt(abar[t]) * x + np.sqrt(1 - abar[t]) * noises[t].numpy()
        with torch.no_grad():
            out = model(torch.from_numpy(x_t), torch.full((2,), t), y=y).numpy()
        eps, frac = out[:, :3], (out[:, 3:] + 1) / 2
        x0_hat = np.clip((x_t - np.sqrt(1 - abar[t]) * eps) / np.sqrt(abar[t]), -1, 1)
        coef1, coef2 = betas[t] * np.sqrt(abar_prev[t]) / (1 - abar[t]), (1 - abar_prev[t]) * np.sqrt(1 - betas[t]) / (1 - abar[t])
        mean = coef1 * x0_hat + coef2 * x_t
        min_log = np.log(tilde[max(t, 1)])  # beta_tilde_0 = 0 is clipped to beta_tilde_1
        var = np.exp(frac * np.log(betas[t]) + (1 - frac) * min_log)
        if t > 0:
            expected[:, t] = kl(coef1 * x + coef2 * x_t, tilde[t], mean, var).reshape(2, -1).mean(axis=1)
        else:
            std, half = np.sqrt(var), 1 / 255
            inside = np.log(stats.norm.cdf((x + half - mean) / std) - stats.norm.cdf((x - half - mean) / std))
            logp = np.where(x <= -1, stats.norm.logcdf((x + half - mean) / std),
                            np.where(x >= 1, stats.norm.logsf((x - half - mean) / std), inside))
            expected[:, 0] = -logp.reshape(2, -1).mean(axis=1)
    expected /= math.log(2)
    prior = kl(np.sqrt(abar[-1]) * x, 1 - abar[-1], 0.0, 1.0).reshape(2, -1).mean(axis=1) / math.log(2)
    np.testing.assert_allclose(terms["vb"].numpy(), expected, rtol=1e-6)
    np.testing.assert_allclose(terms["prior_bpd"].numpy(), prior, rtol=1e-6)
    np.testing.assert_allclose(terms["total_bpd"].numpy(), prior + expected.sum(axis=1), rtol=1e-6)


def test_nll_cli_reports_bits_per_dim_of_held_out_images(pixel_run, two_classes, tmp_path, capsys):
    run, _ = pixel_run
    out = tmp_path / "nll.json"
    assert main([str(run), "--data", str(two_classes), "--out", str(out), "--steps", "10", "--no-progress"]) == 0
    line = capsys.readouterr().out.strip()
    assert line.startswith("movq-diffusion-nll: ") and "bits/dim on 2 images" in line and len(line.splitlines()) == 1
    result = json.loads(out.read_text())
    assert result["images"] == 2 and result["steps"] == 10 and result["space"] == "pixel"
    assert len(result["vb_terms"]) == 10 and result["decoder_bpd"] == result["vb_terms"][0]
    assert result["bits_per_dim"] == pytest.approx(result["prior_bpd"] + sum(result["vb_terms"]), rel=1e-6)  # float32 terms
    assert result["bits_per_dim"] > 0 and result["clip_denoised"] == 1.0

    # one class folder of held-out data is matched to the run's classes by name
    held_out = tmp_path / "val"
    (held_out / "red").mkdir(parents=True)
    Image.open(two_classes / "red" / "a.png").save(held_out / "red" / "b.png")
    assert main([str(run), "--data", str(held_out), "--steps", "4", "--no-progress"]) == 0
    assert "on 1 images" in capsys.readouterr().out

    def error(argv):
        assert main(argv) == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and err.startswith("movq-diffusion-nll: error: ")
        return err

    assert "does not exist" in error([str(tmp_path / "missing"), "--data", str(two_classes)])
    assert "does not exist" in error([str(run), "--data", str(tmp_path / "missing")])
    (held_out / "green").mkdir()
    Image.open(two_classes / "red" / "a.png").save(held_out / "green" / "c.png")
    assert "'green'" in error([str(run), "--data", str(held_out), "--no-progress"])
    assert "--batch-size" in error([str(run), "--data", str(two_classes), "--batch-size", "0"])


def test_pixel_flags_are_checked_before_any_work(tmp_path, two_classes):
    with pytest.raises(ValueError, match="drop --codec"):
        config(tmp_path, pixels=True, data=str(two_classes), resolution=8, codec="movqgan-tiny")
    with pytest.raises(ValueError, match="needs --resolution"):
        config(tmp_path, pixels=True, data=str(two_classes))
    with pytest.raises(ValueError, match="--latent-scale"):
        config(tmp_path, pixels=True, data=str(two_classes), resolution=8, latent_scale=2.0)
    with pytest.raises(ValueError, match="come from the data"):
        config(tmp_path, pixels=True, data=str(two_classes), resolution=8, model={**DIFFUSION_TINY_UNET, "in_channels": 3})


def test_nll_of_a_latent_model_measures_its_codec_latents(two_classes, tmp_path, capsys):
    """A latent release: the bound of the codec's latents (times the run's latent scale), as calc_bpd_loop
    gives it on the same draws; a release written before the ``space`` field reads as a latent one."""
    from movq.diffusion.nll import NllConfig, evaluate_nll

    cfg = config(tmp_path, data=str(two_classes), codec="movqgan-tiny-photos", resolution=32, max_steps=1,
                 batch_size=2, tokenize_batch_size=2, diffusion_steps=50)
    DiffusionTrainer(cfg).run()
    run = tmp_path / "run"
    info_path = run / "latent_diffusion.json"
    info = json.loads(info_path.read_text())
    assert info.pop("space") == "latent"
    info_path.write_text(json.dumps(info))  # as released before pixel models
    result = evaluate_nll(NllConfig(run=str(run), data=str(two_classes), steps=5, progress=False))
    assert result["space"] == "latent" and result["clip_denoised"] is None and result["images"] == 2

    pipe = LatentDiffusionPipeline.from_pretrained(run)
    images = PixelImages.read(two_classes, 32)
    x0 = pipe.codec.encode_latents(torch.stack([images[i]["latents"] for i in range(2)])).float() * pipe.latent_scale
    terms = calc_bpd_loop(pipe.diffusion.respace(5), pipe.model.eval(), x0, {"y": torch.tensor([0, 1])},
                          generator=torch.Generator().manual_seed(0))
    assert result["bits_per_dim"] == pytest.approx(terms["total_bpd"].mean().item(), rel=1e-6)
    assert main([str(run), "--data", str(two_classes), "--steps", "5", "--no-progress"]) == 0
    assert "bits/latent dim on 2 images" in capsys.readouterr().out


# --------------------------------------------------------------------------------- composition with the other #24 options


@pytest.fixture(scope="module")
def eight_images(tmp_path_factory):
    """Four 8x8 images per class (blue, red: a coloured square on grey at four places) in class folders."""
    root = tmp_path_factory.mktemp("eight")
    for name, colour in (("blue", (30, 60, 220)), ("red", (220, 40, 30))):
        (root / name).mkdir()
        for k in range(4):
            array = np.full((8, 8, 3), 128, np.uint8)
            y, x = divmod(k, 2)
            array[4 * y:4 * y + 4, 4 * x:4 * x + 4] = colour
            Image.fromarray(array).save(root / name / f"{k}.png")
    return root


def eval_losses(run) -> dict[int, float]:
    """``step -> eval_loss`` of a run's log.csv (the rows that have one)."""
    import csv

    with open(run / "log.csv", newline="") as f:
        return {int(row["step"]): float(row["eval_loss"]) for row in csv.DictReader(f) if row.get("eval_loss")}


def test_a_pixel_run_validates_draws_pixel_grids_and_resumes_exactly(eight_images, tmp_path):
    """--pixels with --val-fraction, --sample-every 1, --use-kl and --schedule-sampler loss-second-moment: the
    held-out images are evaluated, each step's grid is the pipeline's samples of the EMA weights (no codec:
    the images themselves), and a run stopped and resumed equals an uninterrupted one."""
    from movq.train.logs import image_grid

    common = {"pixels": True, "data": str(eight_images), "resolution": 8, "diffusion_steps": 20, "batch_size": 4,
              "val_fraction": 0.25, "eval_every": 1, "sample_every": 1, "save_every": 2, "use_kl": True,
              "schedule_sampler": "loss-second-moment", "amp": "none"}
    straight = DiffusionTrainer(config(tmp_path, "straight", max_steps=4, **common))
    assert straight.grid_codec is None and len(straight.val_set) == 2 and len(straight.train_set) == 6
    straight.run()
    DiffusionTrainer(config(tmp_path, "split", max_steps=2, **common)).run()
    resumed = DiffusionTrainer(config(tmp_path, "split", max_steps=4, resume=True, **common))
    assert resumed.step == 2
    resumed.run()
    for key in ("model", "ema"):
        a, b = straight.state_dict()[key], resumed.state_dict()[key]
        assert all(torch.equal(a[name], b[name]) for name in a), key
    assert sorted(eval_losses(tmp_path / "straight")) == [1, 2, 3, 4]
    assert eval_losses(tmp_path / "straight") == eval_losses(tmp_path / "split")

    run = tmp_path / "straight"
    assert json.loads((run / "diffusion.json").read_text())["loss"] == "kl"
    assert json.loads((run / "latent_diffusion.json").read_text())["space"] == "pixel"
    for step in range(1, 5):
        grids = [Image.open(tmp_path / name / "samples" / f"step_{step:06d}.png") for name in ("straight", "split")]
        assert grids[0].size == (4 * 8, 2 * 8)  # 2 classes (rows) x 4 samples of 8x8 px
        assert grids[0].tobytes() == grids[1].tobytes()
    pipe = LatentDiffusionPipeline.from_pretrained(run)  # the EMA weights of step 4
    assert pipe.codec is None
    expected = pipe.generate([0, 0, 0, 0, 1, 1, 1, 1], num_steps=20, sampler="ddim", progress=False,
                             generator=straight.loop.sample_generator(), output_type="pt")
    assert Image.open(run / "samples" / "step_000004.png").tobytes() == image_grid(expected, 4).tobytes()
    assert (LatentDiffusionPipeline.from_pretrained(run / "best").model.config == pipe.model.config)


def test_pixel_val_data_is_read_as_the_training_images(eight_images, two_classes, tmp_path):
    """--val-data with --pixels: the images of another folder at --resolution, classes matched by name."""
    cfg = config(tmp_path, pixels=True, data=str(eight_images), resolution=8, diffusion_steps=20, max_steps=2,
                 batch_size=4, val_data=str(two_classes), eval_every=2, amp="none")
    trainer = DiffusionTrainer(cfg)
    val = trainer.val_set
    assert len(val) == 2 and val.latent_shape == (3, 8, 8) and val.labels.tolist() == [0, 1]
    assert val.label_names == ["blue", "red"] and val.meta["space"] == "pixel"
    images = PixelImages.read(two_classes, 8)
    for i in range(2):
        assert torch.equal(val[i]["latents"], images[i]["latents"])
    trainer.run()
    assert sorted(eval_losses(tmp_path / "run")) == [2]

    other = tmp_path / "other"
    for name in ("blue", "green"):
        (other / name).mkdir(parents=True)
        Image.open(two_classes / "red" / "a.png").save(other / name / "a.png")
    with pytest.raises(ValueError, match="'green'"):
        DiffusionTrainer(config(tmp_path, "b", pixels=True, data=str(eight_images), resolution=8, diffusion_steps=20,
                                max_steps=1, val_data=str(other)))


def test_sample_cli_draws_a_pixel_release_into_pngs_and_npz(pixel_run, tmp_path, capsys):
    """movq-diffusion-sample of a pixel release (no codec): sample i of class i % 2 is the pipeline's image of
    the generator seeded seed + i, as PNG and in samples.npz."""
    from movq.diffusion.sample import main as sample_main
    from movq.seeding import sample_generators

    run, _ = pixel_run
    out = tmp_path / "samples"
    assert sample_main([str(run), "--num-samples", "4", "--batch-size", "2", "--timestep-respacing", "ddim5",
                        "--seed", "7", "--out", str(out), "--no-progress"]) == 0
    pngs = [np.asarray(Image.open(out / f"{i:06d}.png")) for i in range(4)]
    assert all(p.shape == (8, 8, 3) and p.dtype == np.uint8 for p in pngs)
    with np.load(out / "samples.npz") as npz:
        np.testing.assert_array_equal(npz["arr_0"], np.stack(pngs))
        assert npz["arr_1"].tolist() == [0, 1, 0, 1]
    pipe = LatentDiffusionPipeline.from_pretrained(run)
    for start in (0, 2):
        expected = pipe.generate([0, 1], num_steps="ddim5", sampler="ddim", progress=False,
                                 generator=sample_generators(7, range(start, start + 2)))
        for i, image in enumerate(expected):
            np.testing.assert_array_equal(np.asarray(image), pngs[start + i])
    assert sample_main([str(run), "--num-samples", "2", "--timestep-respacing", "ddim30", "--out",
                        str(tmp_path / "bad"), "--no-progress"]) == 2
    assert "--timestep-respacing" in capsys.readouterr().err


def test_nll_reads_respacing_strings_as_the_other_commands(pixel_run, two_classes, tmp_path, capsys):
    """--timestep-respacing (and --steps) take improved-diffusion's strings through space_timesteps."""
    from movq.diffusion.nll import NllConfig, evaluate_nll
    from movq.diffusion.schedules import space_timesteps

    run, _ = pixel_run
    out = tmp_path / "nll.json"
    assert main([str(run), "--data", str(two_classes), "--timestep-respacing", "ddim5", "--out", str(out),
                 "--no-progress"]) == 0
    result = json.loads(out.read_text())
    assert result["steps"] == 5 == len(space_timesteps(100, "ddim5"))
    pipe = LatentDiffusionPipeline.from_pretrained(run)
    images = PixelImages.read(two_classes, 8)
    x0 = torch.stack([images[i]["latents"] for i in range(2)])
    terms = calc_bpd_loop(pipe.diffusion.respace(space_timesteps(100, "ddim5")), pipe.model.eval(), x0,
                          {"y": torch.tensor([0, 1])}, clip_denoised=1.0, generator=torch.Generator().manual_seed(0))
    assert result["bits_per_dim"] == pytest.approx(terms["total_bpd"].mean().item(), rel=1e-6)
    sections = evaluate_nll(NllConfig(run=str(run), data=str(two_classes), steps="3,2", progress=False))
    assert sections["steps"] == 5
    capsys.readouterr()
    assert main([str(run), "--data", str(two_classes), "--steps", "ddim30", "--no-progress"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "--timestep-respacing 'ddim30'" in err
