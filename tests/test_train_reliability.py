"""movq-train on hostile or damaged inputs: safe resume, exact RNG streams, the same pixels as the
bench, one-line CLI errors checked before any work, damaged run folders, disk full."""

from __future__ import annotations

import errno
import io
import json
import os
import pickle
import shutil
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from helpers import (
    SMALL_2X,
    TRAIN_CODEC,
    RunsCode,
    make_images,
    run_cli_process,
    tiny_codec,
    tiny_train_config,
)
from movq.strict import nonfinite_entries
from movq.train import checkpoint as ckpt
from movq.train.cli import main as train_main
from movq.train.data import ImageFolder
from movq.train.loop import TrainLoop
from movq.train.trainer import Trainer

pytestmark = pytest.mark.usefixtures("one_thread")


def _args(data, out, *extra) -> list[str]:
    return [
        "--data", str(data), "--out", str(out), "--codec", json.dumps(TRAIN_CODEC), "--resolution", "16",
        "--batch-size", "2", "--max-steps", "4", "--save-every", "2", "--perceptual-net", "none",
        "--num-workers", "0", "--warmup-steps", "0", "--disc-start", "100", "--no-progress", *extra,
    ]


def _error_line(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert err.startswith("movq-train: error: ") and "Traceback" not in err and len(err.splitlines()) == 1, err
    return err


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


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    """A finished 4-step run with checkpoints step-2 and step-4 (copy it before damaging it)."""
    root = tmp_path_factory.mktemp("finished")
    data = make_images(root / "data")
    torch.set_num_threads(1)
    assert train_main(_args(data, root / "run", "--keep-last", "3")) == 0
    return data, root / "run"


def _copy_run(finished_run, tmp_path):
    data, run = finished_run
    shutil.copytree(run, tmp_path / "run", symlinks=True)
    return data, tmp_path / "run"


def _first_float(tree: dict) -> str:
    return next(k for k, v in tree.items() if torch.is_tensor(v) and v.is_floating_point())


def _nan_weight(state: dict) -> None:
    state["model"][_first_float(state["model"])].view(-1)[0] = float("nan")


def _inf_ema(state: dict) -> None:
    state["ema"][_first_float(state["ema"])].view(-1)[-1] = float("inf")


def _nan_adam(state: dict) -> None:
    next(iter(state["opt"]["state"].values()))["exp_avg"].view(-1)[0] = float("nan")


def _rng(state: dict, **entry) -> None:
    state["rng"][0].update(entry)


VALUE_DAMAGE = {
    "NaN model weight": (_nan_weight, "NaN or inf values"),
    "inf EMA weight": (_inf_ema, "ema."),
    "NaN Adam moment": (_nan_adam, "opt.state."),
    "step -3": (lambda s: s.update(step=-3), "step is -3"),
    "step 'abc'": (lambda s: s.update(step="abc"), "step is 'abc'"),
    "step True": (lambda s: s.update(step=True), "step is True"),
    "step past the saved max_steps": (lambda s: s.update(step=10**9), "past the max_steps 4"),
    "epoch -1": (lambda s: s.update(epoch=-1), "epoch is -1"),
    "rng []": (lambda s: s.update(rng=[]), "non-empty list"),
    "rng a dict": (lambda s: s.update(rng={"torch": 1}), "non-empty list"),
    "torch RNG of 3 bytes": (lambda s: _rng(s, torch=torch.zeros(3, dtype=torch.uint8)), "rng[0].torch"),
    "python RNG missing": (lambda s: s["rng"][0].pop("python"), "lacks 'python'"),
    "numpy RNG keys float": (lambda s: s["rng"][0]["numpy"].update(keys=torch.zeros(624)), "rng[0].numpy.keys"),
    "python RNG position out of range": (lambda s: s["rng"][0]["python"]["keys"].__setitem__(-1, 10**6),
                                         "refused by the random"),
    "loader RNG a list": (lambda s: _rng(s, loader=[1, 2]), "rng[0].loader"),
}


@pytest.mark.parametrize("damage", VALUE_DAMAGE, ids=list(VALUE_DAMAGE))
def test_damaged_values_fall_back_to_previous_checkpoint(finished_run, tmp_path, capsys, damage):
    data, run = _copy_run(finished_run, tmp_path)
    newest = run / "checkpoints" / "step-00000004" / "state.pt"
    state = torch.load(newest, weights_only=True)
    change, problem = VALUE_DAMAGE[damage]
    change(state)
    torch.save(state, newest)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert train_main(_args(data, run, "--max-steps", "5", "--resume")) == 0
    shown = [str(w.message) for w in caught if "skipping damaged checkpoint" in str(w.message)]
    assert len(shown) == 1 and str(newest) in shown[0] and problem in shown[0], shown
    assert "resumed from" in capsys.readouterr().out
    assert (run / "checkpoints" / "step-00000005").is_dir()
    assert not nonfinite_entries(ckpt.load_checkpoint(run / "last")["model"])


def test_every_checkpoint_damaged_in_its_values_is_one_line(finished_run, tmp_path, capsys):
    data, run = _copy_run(finished_run, tmp_path)
    for newest in (run / "checkpoints").glob("*/state.pt"):
        state = torch.load(newest, weights_only=True)
        _nan_weight(state)
        torch.save(state, newest)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert train_main(_args(data, run, "--max-steps", "5", "--resume")) == 2
    err = _error_line(capsys)
    assert "no readable checkpoint" in err and "step-00000002" in err and "NaN or inf" in err


def test_nan_loss_stops_with_the_step_and_keeps_the_last_good_state(tmp_path, capsys, monkeypatch):
    data = make_images(tmp_path / "data")
    real_step = Trainer.train_step

    def diverging(self, batches, step):
        terms = real_step(self, batches, step)
        return {**terms, "loss": terms["loss"] * float("nan")} if step == 2 else terms  # the third step

    monkeypatch.setattr(Trainer, "train_step", diverging)
    assert train_main(_args(data, tmp_path / "run", "--log-every", "100")) == 2
    err = _error_line(capsys)
    assert "NaN or inf at step 3" in err
    assert sorted(p.name for p in (tmp_path / "run" / "checkpoints").iterdir()) == ["step-00000002"]
    assert ckpt.load_checkpoint(tmp_path / "run" / "last")["step"] == 2


def test_nan_weights_never_replace_the_checkpoint_or_the_release(tmp_path, capsys, monkeypatch):
    data = make_images(tmp_path / "data")
    run = tmp_path / "run"
    real_step = Trainer.train_step

    def poisoned(self, batches, step):  # the weights (not yet the loss) become NaN in the fourth step
        terms = real_step(self, batches, step)
        if step == 3:
            with torch.no_grad():
                next(self.codec.parameters()).fill_(float("nan"))
                next(self.ema.module.parameters()).fill_(float("nan"))
        return terms

    monkeypatch.setattr(Trainer, "train_step", poisoned)
    assert train_main(_args(data, run, "--save-every", "2", "--max-steps", "2")) == 0
    release = (run / "model.safetensors").read_bytes()
    assert train_main(_args(data, run, "--resume")) == 2
    err = _error_line(capsys)
    assert "refusing to write checkpoint step 4" in err and "NaN or inf" in err and "step-00000002" in err
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["step-00000002"]
    assert (run / "model.safetensors").read_bytes() == release


def test_release_with_nan_weights_is_not_written(tmp_path):
    codec = tiny_codec(config=SMALL_2X)
    codec.save_pretrained(tmp_path / "release")
    before = (tmp_path / "release" / "model.safetensors").read_bytes()
    with torch.no_grad():
        codec.decoder.conv_out.weight[0, 0, 0, 0] = float("inf")
    with pytest.raises(ValueError, match=r"refusing to write .*model.safetensors.*decoder.conv_out.weight"):
        codec.save_pretrained(tmp_path / "release")
    assert (tmp_path / "release" / "model.safetensors").read_bytes() == before


def test_checkpoint_with_nan_state_is_not_written(tmp_path):
    ckpt.save_checkpoint(tmp_path, 1, {"model": {"w": torch.ones(3)}}, {}, keep_last=2)
    with pytest.raises(ckpt.CheckpointError, match="refusing to write checkpoint step 2.*model.w"):
        ckpt.save_checkpoint(tmp_path, 2, {"model": {"w": torch.tensor([1.0, float("nan"), 0.0])}}, {}, keep_last=2)
    assert [p.name for p in (tmp_path / "checkpoints").iterdir()] == ["step-00000001"]


@pytest.mark.parametrize("name", ["log.csv", "checkpoints/step-00000004/train_config.json"])
def test_fifo_in_the_run_folder_is_refused_not_waited_on(finished_run, tmp_path, name):
    data, run = _copy_run(finished_run, tmp_path)
    (run / name).unlink()
    os.mkfifo(run / name)
    done = run_cli_process("movq-train", _args(data, run, "--max-steps", "5", "--resume"), timeout=60)
    assert done.error is None, done.error  # not hung
    lines = done.err.strip().splitlines()
    assert done.rc == 2 and lines[-1].startswith("movq-train: error: ") and "Traceback" not in done.err, done.err
    assert str(run / name) in lines[-1] and "not a regular file" in lines[-1]


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


def _torch_disk_full(obj, f):  # what torch.save raises when the disk fills: the OSError only as its context
    try:
        raise OSError(errno.ENOSPC, "No space left on device")
    except OSError:
        raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 704 vs 598") from None


@pytest.mark.parametrize("failure", [
    _torch_disk_full,
    lambda obj, f: (_ for _ in ()).throw(RuntimeError("[enforce fail at inline_container.cc:603] . "
                                                      "PytorchStreamWriter failed writing file: No space left on device")),
], ids=["context", "message"])
def test_disk_full_inside_torch_save_says_no_space(tmp_path, capsys, monkeypatch, failure):
    data = make_images(tmp_path / "data")
    assert train_main(_args(data, tmp_path / "run", "--max-steps", "2")) == 0
    monkeypatch.setattr(torch, "save", failure)
    assert train_main(_args(data, tmp_path / "run", "--resume")) == 2
    monkeypatch.undo()
    err = _error_line(capsys)
    assert "no space left on device" in err and str(tmp_path / "run" / "checkpoints") in err and "step-00000002" in err
    assert ckpt.load_checkpoint(ckpt.latest_checkpoint(tmp_path / "run"))["step"] == 2


def test_disk_full_while_writing_the_release_says_no_space_and_keeps_the_release(tmp_path, capsys, monkeypatch):
    """The release weights (model.safetensors beside the checkpoints) are written atomically: a full disk
    gives one line naming the file, exit 2, and the previous release bytes unchanged."""
    import movq.model_folder

    data = make_images(tmp_path / "data")
    assert train_main(_args(data, tmp_path / "run", "--max-steps", "2")) == 0
    release = tmp_path / "run" / "model.safetensors"
    before = release.read_bytes()

    def full_disk(tensors, filename, metadata=None):
        Path(filename).write_bytes(b"partial")
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(movq.model_folder, "save_file", full_disk)
    assert train_main(_args(data, tmp_path / "run", "--max-steps", "3", "--resume")) == 2
    monkeypatch.undo()
    err = _error_line(capsys)
    assert f"no space left on device while writing {release}; its previous version is unchanged" in err, err
    assert release.read_bytes() == before
    assert not [p for p in release.parent.iterdir() if p.name.endswith(".tmp")]


# ------------------------------------------------------------------ one-line CLI errors, before work


@pytest.mark.parametrize(
    "extra, expected",
    [
        (("--device", "foo"), "unknown device 'foo'"),
        (("--resolution", "100000"), "needs at least"),
        (("--batch-size", "0"), "--batch-size must be an int >= 1, got 0"),
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
