"""movq-train on hostile or damaged inputs: safe resume, exact RNG streams, the same pixels as the
bench, one-line CLI errors checked before any work, damaged run folders, disk full."""

from __future__ import annotations

import errno
import io
import json
import pickle
import warnings

import numpy as np
import pytest
import torch
from PIL import Image

from helpers import TRAIN_CODEC, RunsCode, make_images, tiny_train_config
from helpers import train_args as _args
from helpers import train_error_line as _error_line
from movq.train import checkpoint as ckpt
from movq.train.cli import main as train_main
from movq.train.data import ImageFolder
from movq.train.loop import TrainLoop
from movq.train.trainer import Trainer

pytestmark = pytest.mark.usefixtures("one_thread")


# ------------------------------------------------------------------ safe resume


def test_malicious_state_runs_nothing_and_names_the_file(tmp_path, capsys):
    data = make_images(tmp_path / "data")
    assert train_main(_args(data, tmp_path / "run", "--max-steps", "2")) == 0
    state = tmp_path / "run" / "checkpoints" / "step-00000002" / "state.pt"
    marker = tmp_path / "pwned"
    state.write_bytes(pickle.dumps({"step": RunsCode(str(marker))}))
    code = train_main(_args(data, tmp_path / "run", "--max-steps", "4", "--resume"))
    assert code == 2 and not marker.exists()
    err = _error_line(capsys)
    assert "no readable checkpoint" in err and str(state) in err


def test_checkpoint_state_loads_with_weights_only(tmp_path):
    data = make_images(tmp_path / "data")
    trainer = Trainer(tiny_train_config(data, tmp_path / "out", codec=TRAIN_CODEC, max_steps=1))
    buffer = io.BytesIO()
    torch.save(trainer.state(), buffer)
    buffer.seek(0)
    state = torch.load(buffer, weights_only=True)  # only tensors and plain containers
    assert state["step"] == 0 and "loader" in state["rng"][0]


def test_rng_state_round_trip_restores_every_stream():
    import random

    saved = ckpt.rng_state()
    first = (random.random(), float(np.random.rand()), float(torch.rand(())))
    buffer = io.BytesIO()
    torch.save(saved, buffer)
    buffer.seek(0)
    ckpt.set_rng_state(torch.load(buffer, weights_only=True))
    assert (random.random(), float(np.random.rand()), float(torch.rand(()))) == first


def test_new_dataloader_iterator_leaves_the_global_rng_alone(tmp_path):
    data = make_images(tmp_path / "data")
    trainer = Trainer(tiny_train_config(data, tmp_path / "out", codec=TRAIN_CODEC))
    before = torch.get_rng_state()
    next(iter(trainer.loader))
    assert torch.equal(before, torch.get_rng_state())


def test_damaged_state_falls_back_to_previous_checkpoint(tmp_path, capsys):
    data = make_images(tmp_path / "data")
    assert train_main(_args(data, tmp_path / "run", "--keep-last", "3")) == 0
    capsys.readouterr()
    (tmp_path / "run" / "checkpoints" / "step-00000004" / "state.pt").write_bytes(b"\x00garbage" * 10)
    with pytest.warns(UserWarning, match="skipping damaged checkpoint"):
        assert train_main(_args(data, tmp_path / "run", "--max-steps", "5", "--resume")) == 0
    assert "resumed from" in capsys.readouterr().out
    assert ckpt.load_checkpoint(tmp_path / "run" / "last")["step"] == 5


def test_resume_without_a_checkpoint_uses_the_saved_config_or_names_the_flags(tmp_path, capsys, monkeypatch):
    data = make_images(tmp_path / "data")
    with monkeypatch.context() as patch:  # killed before its first checkpoint
        patch.setattr(TrainLoop, "run", lambda self, task, after_step=None: (_ for _ in ()).throw(KeyboardInterrupt))
        with pytest.raises(KeyboardInterrupt):
            train_main(_args(data, tmp_path / "run"))
    capsys.readouterr()
    assert train_main(["--out", str(tmp_path / "run"), "--resume"]) == 0
    assert "starting from scratch" in capsys.readouterr().out
    assert ckpt.load_checkpoint(tmp_path / "run" / "last")["step"] == 4
    (tmp_path / "empty").mkdir()
    assert train_main(["--out", str(tmp_path / "empty"), "--resume"]) == 2
    err = _error_line(capsys)
    assert "has no saved run config" in err and str(tmp_path / "empty") in err and "--data" in err


def test_damaged_log_is_moved_aside(tmp_path):
    data = make_images(tmp_path / "data")
    assert train_main(_args(data, tmp_path / "run", "--max-steps", "2")) == 0
    log = tmp_path / "run" / "log.csv"
    log.write_bytes(b"\xff\xfe not a csv \x00\n1,2,3\n")
    with pytest.warns(UserWarning, match="damaged"):
        assert train_main(_args(data, tmp_path / "run", "--max-steps", "3", "--resume")) == 0
    assert (tmp_path / "run" / "log.csv.damaged").is_file()
    rows = log.read_text().splitlines()
    assert rows[0].startswith("step,") and rows[-1].startswith("3,")


def test_resume_with_other_architecture_says_so(tmp_path, capsys):
    data = make_images(tmp_path / "data")
    assert train_main(_args(data, tmp_path / "run", "--max-steps", "2")) == 0
    other = json.dumps({**TRAIN_CODEC, "ch": 64})
    assert train_main(_args(data, tmp_path / "run", "--resume", "--codec", other)) == 2
    err = _error_line(capsys)
    assert "was trained with architecture" in err and "ch=32" in err and "ch=64" in err


def test_resume_reads_the_flat_loss_weights_of_older_runs(tmp_path, capsys):
    data = make_images(tmp_path / "data")
    assert train_main(_args(data, tmp_path / "run", "--max-steps", "2")) == 0
    saved = tmp_path / "run" / "checkpoints" / "step-00000002" / ckpt.RUN_CONFIG_FILE
    config = json.loads(saved.read_text())
    assert config.pop("loss") == {"vq": 1.0, "adv": 0.1, "perc": 0.1, "l2": 1.0, "nll": 1.0, "l1": 0.0,
                                  "nll_perc": 0.1, "nll_l2": 1.0}
    flat = {"w_vq": 0.5, "w_adv": 0.0, "w_perc": 0.2, "w_l2": 2.0, "w_nll": 0.0, "w_l1": 1.0, "nll_perc": 0.3, "nll_l2": 0.7}
    saved.write_text(json.dumps({**config, **flat}))  # the train_config.json of an older movq
    assert train_main(_args(data, tmp_path / "run", "--max-steps", "3", "--resume", "--w-l2", "1.5")) == 0
    assert "resumed from" in capsys.readouterr().out
    resumed = json.loads((tmp_path / "run" / "checkpoints" / "step-00000003" / ckpt.RUN_CONFIG_FILE).read_text())
    assert resumed["loss"] == {"vq": 0.5, "adv": 0.0, "perc": 0.2, "l2": 1.5, "nll": 0.0, "l1": 1.0,
                               "nll_perc": 0.3, "nll_l2": 0.7}
    assert not set(flat) & set(resumed)


def test_discriminator_schedule_is_saved_and_restored(tmp_path):
    data = make_images(tmp_path / "data")
    cfg = tiny_train_config(data, tmp_path / "run", max_steps=2, warmup_steps=4, disc_start=0, disc_lr=5e-4)
    Trainer(cfg).run()
    saved = ckpt.load_checkpoint(tmp_path / "run" / "last")
    assert saved["d_sched"]["last_epoch"] == 2
    resumed = Trainer(tiny_train_config(data, tmp_path / "run", max_steps=4, warmup_steps=4, disc_start=0, disc_lr=5e-4,
                                  resume=True))
    assert resumed.step == 2 and resumed.d_sched.state_dict() == saved["d_sched"]
    assert resumed.d_opt.param_groups[0]["lr"] == pytest.approx(5e-4 * 3 / 4)  # warm-up factor of step 2


def test_resume_below_saved_step_says_so(tmp_path, capsys):
    data = make_images(tmp_path / "data")
    assert train_main(_args(data, tmp_path / "run")) == 0
    assert train_main(_args(data, tmp_path / "run", "--resume", "--max-steps", "2")) == 2
    assert "already at step 4" in _error_line(capsys)


def test_disk_full_names_last_good_checkpoint(tmp_path, monkeypatch):
    out = tmp_path / "out"
    ckpt.save_checkpoint(out, 1, {"w": torch.ones(3)}, {}, keep_last=2)

    def full_disk(obj, f):
        f.write(b"partial")
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(torch, "save", full_disk)
    with pytest.raises(ckpt.CheckpointError, match="no space left on device") as info:
        ckpt.save_checkpoint(out, 2, {"w": torch.zeros(3)}, {}, keep_last=2)
    monkeypatch.undo()
    assert "step-00000001" in str(info.value)
    assert torch.equal(ckpt.load_checkpoint(ckpt.latest_checkpoint(out))["w"], torch.ones(3))
    assert not list((out / "checkpoints").glob(".tmp-*"))


# ------------------------------------------------------------------ one-line CLI errors, before work


@pytest.mark.parametrize(
    "extra, expected",
    [
        (("--device", "foo"), "unknown device 'foo'"),
        (("--resolution", "100000"), "needs at least"),
        (("--batch-size", "0"), "--batch-size must be an int >= 1, got 0"),
        (("--disc-start", "2"), "--resolution 16 is too small for the discriminator: --disc-layers 3 needs at least 24 px"),
    ],
)
def test_cli_user_errors_are_one_line(tmp_path, capsys, extra, expected):
    data = make_images(tmp_path / "data")
    assert train_main(_args(data, tmp_path / "run", *extra)) == 2
    assert expected in _error_line(capsys)
    assert not (tmp_path / "run" / "checkpoints").exists()


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message on a machine without CUDA")
def test_cli_cuda_without_gpu(tmp_path, capsys):
    assert train_main(_args(make_images(tmp_path / "data"), tmp_path / "run", "--device", "cuda")) == 2
    assert "no CUDA GPU" in _error_line(capsys)


def test_cli_data_and_out_errors(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    assert train_main(_args(tmp_path / "missing", tmp_path / "run")) == 2
    assert "does not exist" in _error_line(capsys)
    assert train_main(_args(tmp_path / "empty", tmp_path / "run")) == 2
    assert "no image files" in _error_line(capsys)
    blocker = tmp_path / "file.txt"
    blocker.write_text("x")
    assert train_main(_args(make_images(tmp_path / "data"), blocker / "run")) == 2
    assert "not writable" in _error_line(capsys)


# ------------------------------------------------------------------ training reads what the bench reads


def _folder_image(tmp_path, image: Image.Image, name: str = "img.png", **save) -> ImageFolder:
    (tmp_path / "d").mkdir(exist_ok=True)
    image.save(tmp_path / "d" / name, **save)
    return ImageFolder(tmp_path / "d", 8, scale=(1.0, 1.0), ratio=(1.0, 1.0), flip=False)


def _pixels(folder: ImageFolder) -> torch.Tensor:
    import random

    return folder.load(folder.files[0], random.Random(0))


def test_sixteen_bit_png_trains_as_its_gray_level(tmp_path):
    gray16 = Image.fromarray(np.full((8, 8), 32768, dtype=np.uint16))
    x = _pixels(_folder_image(tmp_path, gray16))
    assert abs(float(x.mean())) < 0.02  # mid-gray, not almost white


def test_transparent_pixels_are_composited_on_white(tmp_path):
    rgba = np.zeros((8, 8, 4), dtype=np.uint8)
    rgba[..., 0] = 255  # hidden red under full transparency
    x = _pixels(_folder_image(tmp_path, Image.fromarray(rgba, "RGBA")))
    assert torch.allclose(x, torch.ones_like(x))


def test_exif_orientation_is_applied_in_training(tmp_path):
    array = np.zeros((8, 16, 3), dtype=np.uint8)  # H=8, W=16: dark left half, bright right half
    array[:, 8:] = 255
    image = Image.fromarray(array)
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise to display: 8 wide, 16 tall
    folder = _folder_image(tmp_path, image, "rot.jpg", exif=exif.tobytes(), quality=100)
    folder.ratio = (0.5, 0.5)  # the whole 8x16 displayed image
    x = _pixels(folder)
    top, bottom = float(x[:, :3].mean()), float(x[:, 5:].mean())
    assert abs(top - bottom) > 1.0, (top, bottom)  # halves are now top / bottom, not left / right
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        from movq.image_files import open_rgb

        assert open_rgb(folder.files[0]).size == (8, 16)


def test_training_accepts_the_bench_extensions(tmp_path):
    from movq.image_files import IMAGE_EXTENSIONS, list_image_files

    (tmp_path / "d").mkdir()
    for i, ext in enumerate((".ppm", ".jfif", ".PNG")):
        Image.new("RGB", (8, 8), (i * 60, 0, 0)).save(tmp_path / "d" / f"a{i}{ext}", format="PPM" if ext == ".ppm" else "PNG")
    assert ".ppm" in IMAGE_EXTENSIONS and ".jfif" in IMAGE_EXTENSIONS
    assert len(ImageFolder(tmp_path / "d", 8).files) == 3 == len(list_image_files(tmp_path / "d"))


def test_newest_complete_checkpoint_wins_over_a_stale_last_link(tmp_path):
    out = tmp_path / "out"
    for step in (1, 2):
        ckpt.save_checkpoint(out, step, {"w": torch.full((1,), float(step))}, {}, keep_last=3)
    (out / "last").unlink()  # a kill between the folder's rename and the link's swap
    (out / "last").symlink_to("checkpoints/step-00000001", target_is_directory=True)
    assert ckpt.latest_checkpoint(out).name == "step-00000002"


@pytest.mark.parametrize(
    "extra, expected",
    [
        (("--crop-ratio", "0", "1"), "crop_ratio must be"),
        (("--crop-scale", "-1", "1"), "crop_scale must be"),
        (("--disc-lr", "-1"), "--disc-lr must be a number > 0, got -1.0"),
        (("--weight-decay", "-0.1"), "--weight-decay must be a number >= 0, got -0.1"),
    ],
)
def test_bad_training_ranges_are_one_line(tmp_path, capsys, extra, expected):
    assert train_main(_args(make_images(tmp_path / "data"), tmp_path / "run", *extra)) == 2
    assert expected in _error_line(capsys)


def test_only_unreadable_images_is_one_line(tmp_path, capsys):
    data = tmp_path / "data"
    data.mkdir()
    (data / "a.jpg").write_bytes(b"junk")
    (data / "b.png").write_bytes(b"")
    assert train_main(_args(data, tmp_path / "run")) == 2
    assert "none of the 2 image files under the data folder could be decoded" in _error_line(capsys)


@pytest.mark.parametrize("name, text", [("c.json", "{nope"), ("c.json", "[1, 2]"), ("c.toml", "lr = = 3")])
def test_bad_config_files_name_themselves(tmp_path, capsys, name, text):
    path = tmp_path / name
    path.write_text(text)
    assert train_main(["--config", str(path), *_args(make_images(tmp_path / "data"), tmp_path / "run")]) == 2
    assert str(path) in _error_line(capsys)
