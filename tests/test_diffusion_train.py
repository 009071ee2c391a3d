"""movq-diffusion-train: the trainer on the shared loop (loss goes down, exact resume, release folder
that loads and samples through the codec, class labels from folders) and its one-line CLI errors."""

from __future__ import annotations

import json
import os
import socket

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from PIL import Image

import movq
from helpers import DIFFUSION_TINY_UNET as TINY_UNET
from helpers import diffusion_train_config as config
from helpers import toy_latents
from movq.diffusion import LatentDiffusionPipeline
from movq.diffusion.data import LatentItems, collate_latents, folder_labels
from movq.diffusion.train import DiffusionTrainConfig, DiffusionTrainer, main

pytestmark = pytest.mark.usefixtures("one_thread")


# --------------------------------------------------------------------------------- data


def test_folder_labels_map_top_level_folders_to_sorted_indices():
    assert folder_labels(["dog/a.png", "cat/x/b.png", "dog/c.jpg"]) == ([1, 0, 1], ["cat", "dog"])
    assert folder_labels(["dog/a.png", "flat.png"]) is None


def test_latent_items_check_their_inputs_and_batch():
    items = toy_latents(8, classes=2)
    batch = collate_latents([items[i] for i in range(3)])
    assert batch["latents"].dtype == torch.float32 and batch["latents"].shape == (3, 4, 4, 4)
    assert batch["y"].tolist() == [0, 1, 0]
    with pytest.raises(ValueError, match="labels must be in"):
        LatentItems(torch.zeros(2, 4, 4, 4), [0, 3], ["a", "b"])
    with pytest.raises(ValueError, match="cond must be"):
        LatentItems(torch.zeros(2, 4, 4, 4), cond=torch.zeros(3, 8))


# --------------------------------------------------------------------------------- training


def test_loss_goes_down_on_tiny_latents(tmp_path):
    data = toy_latents(16)
    cfg = config(tmp_path, max_steps=60, batch_size=16, loss="mse", lr=3e-3, warmup_steps=5, p_uncond=0.0,
                 save_every=60, log_every=60)
    trainer = DiffusionTrainer(cfg, data)
    g = torch.Generator().manual_seed(1)  # one fixed batch of (x0, t, noise) before and after training
    x0 = torch.stack([data[i]["latents"] for i in range(16)]).float() * trainer.latent_scale
    t = torch.randint(0, 1000, (16,), generator=g)
    noise = torch.randn(x0.shape, generator=g)
    kwargs = {"y": data.labels}

    def fixed_loss() -> float:
        with torch.no_grad():
            return float(trainer.diffusion.training_losses(trainer.model, x0, t, kwargs, noise=noise)["loss"].mean())

    before = fixed_loss()
    trainer.run()
    after = fixed_loss()
    assert after < 0.7 * before, (before, after)
    rows = (tmp_path / "run" / "log.csv").read_text().splitlines()
    assert rows[0].split(",")[:6] == ["step", "epoch", "lr", "loss", "mse", "vb"] and len(rows) == 2


@pytest.mark.parametrize("pixels", [False, True])
def test_resume_is_bit_exact(tmp_path, pixels, image_folder):
    """N steps straight vs k steps, then a new trainer resuming to N: identical weights, EMA, optimizer.
    ``pixels``: ``--pixels`` on the images of a class folder (decoded again by the resumed trainer)."""
    data = None if pixels else toy_latents(16)
    common = {"loss": "hybrid", "p_uncond": 0.3, "save_every": 3}  # learned variance, label dropout: every RNG use
    if pixels:
        common.update(pixels=True, data=str(image_folder), resolution=8, batch_size=4)
    straight = DiffusionTrainer(config(tmp_path, "straight", max_steps=6, **common), data)
    straight.run()
    DiffusionTrainer(config(tmp_path, "split", max_steps=3, **common), data).run()
    resumed = DiffusionTrainer(config(tmp_path, "split", max_steps=6, resume=True, **common), data)
    assert resumed.step == 3
    resumed.run()
    a, b = straight.state_dict(), resumed.state_dict()
    for key in ("model", "ema"):
        assert a[key].keys() == b[key].keys()
        for name in a[key]:
            assert torch.equal(a[key][name], b[key][name]), (key, name)
    for sa, sb in zip(a["opt"]["state"].values(), b["opt"]["state"].values()):
        assert torch.equal(sa["exp_avg"], sb["exp_avg"]) and torch.equal(sa["exp_avg_sq"], sb["exp_avg_sq"])


def test_resume_refuses_other_diffusion_settings(tmp_path):
    data = toy_latents(16)
    DiffusionTrainer(config(tmp_path, max_steps=2), data).run()
    with pytest.raises(ValueError, match="diffusion_config"):
        DiffusionTrainer(config(tmp_path, max_steps=4, resume=True, loss="mse"), data)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _ddp_worker(rank: int, port: int, out: str, dump: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE="2", LOCAL_RANK=str(rank))
    torch.set_num_threads(1)
    cfg = DiffusionTrainConfig(out=out, preset="unet-tiny", model=TINY_UNET, batch_size=4, max_steps=3, save_every=3,
                               num_workers=0, progress=False, device="cpu", p_uncond=0.5)
    trainer = DiffusionTrainer(cfg, toy_latents(16))
    first_t = torch.randint(0, 1000, (4,))  # the runtime stream each rank draws t from
    trainer.run()
    torch.save({"model": trainer.model.state_dict(), "ema": trainer.ema.module.state_dict(), "t": first_t},
               os.path.join(dump, f"rank{rank}.pt"))
    dist.destroy_process_group()


@pytest.mark.skipif(not dist.is_available(), reason="torch.distributed is not available")
def test_two_process_ddp_keeps_replicas_identical(tmp_path):
    mp.spawn(_ddp_worker, args=(_free_port(), str(tmp_path / "out"), str(tmp_path)), nprocs=2, join=True)
    states = [torch.load(tmp_path / f"rank{r}.pt") for r in range(2)]
    for part in ("model", "ema"):
        for key, value in states[0][part].items():
            assert torch.equal(value, states[1][part][key]), f"{part}.{key}"
    assert not torch.equal(states[0]["t"], states[1]["t"])  # each rank draws its own timesteps
    assert (tmp_path / "out" / "ema.safetensors").is_file()  # rank 0 released


# --------------------------------------------------------------------------------- end to end


@pytest.fixture(scope="module")
def image_folder(tmp_path_factory):
    """Two classes of 32x32 images in class subfolders (ImageNet layout)."""
    root = tmp_path_factory.mktemp("images")
    rng = np.random.default_rng(0)
    for name, colour in (("blue", (40, 70, 210)), ("red", (210, 40, 40))):
        (root / name).mkdir()
        for i in range(4):
            array = np.full((32, 32, 3), 128, np.uint8)
            x, y = rng.integers(4, 20, 2)
            array[y:y + 10, x:x + 10] = colour
            Image.fromarray(array).save(root / name / f"{i}.png")
    return root


def test_cli_trains_on_an_image_folder_and_the_release_samples(tmp_path, image_folder, capsys):
    out = tmp_path / "run"
    argv = ["--data", str(image_folder), "--codec", "movqgan-tiny-photos", "--resolution", "32", "--out", str(out),
            "--preset", "unet-tiny", "--model", json.dumps(TINY_UNET), "--batch-size", "4", "--max-steps", "2",
            "--log-every", "1", "--num-workers", "0", "--tokenize-batch-size", "8", "--no-progress"]
    assert main(argv) == 0, capsys.readouterr().err
    info = json.loads((out / "latent_diffusion.json").read_text())
    assert info["codec"] == "movqgan-tiny-photos" and info["labels"] == ["blue", "red"]
    assert info["latent_shape"] == [4, 4, 4] and info["resolution"] == 32 and info["latent_scale"] > 0
    assert {"config.json", "model.safetensors", "ema.safetensors", "diffusion.json"} <= {p.name for p in out.iterdir()}
    assert (out / "latents" / "meta.json").is_file()  # encoded once, reused on --resume

    pipe = LatentDiffusionPipeline.from_pretrained(out)
    assert pipe.labels == ["blue", "red"] and pipe.model.config.num_classes == 2
    other = movq.load("movqgan-tiny-photos")
    with torch.no_grad():
        other.decoder.conv_out.bias.add_(0.1)  # not the weights the latents came from
    with pytest.warns(UserWarning, match=r"codec's weights differ from those whose latents .* samples will not decode"):
        LatentDiffusionPipeline.from_pretrained(out, codec=other)
    images = pipe.generate(["red", 0], num_steps=3, generator=torch.Generator().manual_seed(0), output_type="pt")
    assert images.shape == (2, 3, 32, 32) and torch.isfinite(images).all()
    assert images.min() >= -1 and images.max() <= 1
    again = pipe(["red", 0], num_steps=3, sampler="ddpm", guidance_scale=2.0, generator=torch.Generator().manual_seed(0))
    assert [im.size for im in again] == [(32, 32)] * 2 and all(im.mode == "RGB" for im in again)  # PIL by default
    with pytest.raises(ValueError, match="unknown class 'green'"):
        pipe.generate(["green"], num_steps=2)

    # a movq-tokenize --latents folder as --data; --labels none gives an unconditional model
    plain = tmp_path / "plain"
    assert main(["--data", str(out / "latents"), "--labels", "none", "--out", str(plain), "--preset", "unet-tiny",
                 "--model", json.dumps(TINY_UNET), "--batch-size", "4", "--max-steps", "1", "--num-workers", "0",
                 "--no-progress"]) == 0
    unconditional = LatentDiffusionPipeline.from_pretrained(plain)
    assert unconditional.labels is None and unconditional.model.config.num_classes is None
    assert unconditional.generate(num_samples=1, num_steps=2, output_type="pt").shape == (1, 3, 32, 32)

    # the latent folder is reused: resuming with more steps encodes nothing again
    capsys.readouterr()
    assert main(["--out", str(out), "--resume", "--max-steps", "3", "--no-progress"]) == 0
    assert "1 of 1 shards already finished" in capsys.readouterr().out


def test_conditioning_vectors_train_and_sample(tmp_path):
    from safetensors.torch import save_file

    import movq
    from movq.diffusion.data import load_cond_file

    vectors = torch.randn(16, 6)
    save_file({"cond": vectors}, str(tmp_path / "cond.safetensors"))
    cond = load_cond_file(tmp_path / "cond.safetensors", 16)
    with pytest.raises(ValueError, match=r"'cond' must be float \[8, D\]"):
        load_cond_file(tmp_path / "cond.safetensors", 8)
    base = toy_latents(16)
    data = LatentItems(base.latents, cond=cond)
    trainer = DiffusionTrainer(config(tmp_path, max_steps=2, p_uncond=0.5), data)
    trainer.run()
    assert trainer.model.config.cond_dim == 6 and trainer.model.config.num_classes is None
    codec = movq.load("movqgan-tiny-photos")
    pipe = LatentDiffusionPipeline.from_pretrained(tmp_path / "run", codec=codec)
    images = pipe.generate(cond=vectors[:2], num_steps=2, guidance_scale=2.0, output_type="pt")
    assert images.shape == (2, 3, 32, 32) and torch.isfinite(images).all()
    with pytest.raises(ValueError, match="records no codec"):
        LatentDiffusionPipeline.from_pretrained(tmp_path / "run")


def test_run_killed_before_its_first_checkpoint_resumes_with_its_saved_config(tmp_path, image_folder, capsys, monkeypatch):
    out = tmp_path / "run"
    argv = ["--data", str(image_folder), "--codec", "movqgan-tiny-photos", "--resolution", "32", "--out", str(out),
            "--preset", "unet-tiny", "--model", json.dumps(TINY_UNET), "--batch-size", "4", "--max-steps", "1",
            "--num-workers", "0", "--tokenize-batch-size", "8", "--no-progress"]

    def killed(self):  # as a kill -9 while encoding the images: no checkpoint yet
        raise KeyboardInterrupt

    with monkeypatch.context() as patch:
        patch.setattr(DiffusionTrainer, "_open_data", killed)
        with pytest.raises(KeyboardInterrupt):
            main(argv)
    assert not (out / "checkpoints").exists()
    capsys.readouterr()
    assert main(["--out", str(out), "--resume", "--no-progress"]) == 0, capsys.readouterr().err
    assert "starting from scratch" in capsys.readouterr().out
    assert json.loads((out / "latent_diffusion.json").read_text())["labels"] == ["blue", "red"]


def cli_error(capsys, argv: list[str]) -> str:
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    assert err.startswith("movq-diffusion-train: error: ")
    return err


def test_cli_errors_are_one_line(tmp_path, image_folder, capsys):
    out = ["--out", str(tmp_path / "out")]
    assert "--data is required" in cli_error(capsys, out)
    assert "does not exist" in cli_error(capsys, [*out, "--data", str(tmp_path / "missing")])
    assert "pass --codec" in cli_error(capsys, [*out, "--data", str(image_folder)])
    assert "learned_range" in cli_error(capsys, [*out, "--data", "x", "--loss", "mse", "--var-type", "learned_range"])
    assert "unknown preset" in cli_error(capsys, [*out, "--data", "x", "--preset", "unet-huge"])
    assert "--p-uncond must be a number in [0, 1], got 2.0" in cli_error(capsys, [*out, "--data", "x", "--p-uncond", "2"])
    assert "--labels must be one of ['auto', 'folder', 'none'], got 'classes'" in cli_error(capsys, [*out, "--data", "x", "--labels", "classes"])
    flat = tmp_path / "flat"
    flat.mkdir()
    Image.fromarray(np.zeros((32, 32, 3), np.uint8)).save(flat / "a.png")
    err = cli_error(capsys, [*out, "--data", str(flat), "--codec", "movqgan-tiny-photos", "--resolution", "32",
                             "--labels", "folder", "--num-workers", "0", "--no-progress"])
    assert "class folder" in err
    assert "come from the data" in cli_error(capsys, [*out, "--data", "x", "--model", '{"num_classes": 3}'])
    assert "--pixels needs --resolution" in cli_error(capsys, [*out, "--data", str(image_folder), "--pixels"])
    assert "drop --codec" in cli_error(capsys, [*out, "--data", "x", "--pixels", "--resolution", "8", "--codec", "c"])
    assert "no image files" in cli_error(capsys, [*out, "--data", str(tmp_path / "out"), "--pixels", "--resolution", "8"])
