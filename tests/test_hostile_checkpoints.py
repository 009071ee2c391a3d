"""Hostile training checkpoints and runs (issue #25): a newest checkpoint damaged in its values (NaN / inf
weights, EMA or optimizer state, bad step / epoch, malformed RNG states) is skipped with a warning; a
diverged run stops naming the step and never replaces a good checkpoint or release; a FIFO in the run
folder is refused, not waited on; a full disk says "no space left on device" and keeps the good files.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import warnings
from pathlib import Path

import pytest
import torch

from helpers import (
    SMALL_2X,
    TokenList,
    diffusion_train_config,
    make_images,
    run_cli_process,
    t2i_train_config,
    tiny_codec,
    tiny_train_config,
    toy_latents,
)
from helpers import train_args as _args
from helpers import train_error_line as _error_line
from movq.strict import nonfinite_entries
from movq.train import checkpoint as ckpt
from movq.train.cli import main as train_main
from movq.train.trainer import Trainer

pytestmark = pytest.mark.usefixtures("one_thread")


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
    "position 2.5": (lambda s: s.update(position=2.5), "position is 2.5"),
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


# ------------------------------------------------------------------ disk space (README "Disk space")


def test_a_checkpoint_takes_16_bytes_per_codec_parameter_and_12_per_discriminator_parameter(tmp_path):
    """A real movqgan-tiny checkpoint: codec + EMA (4 + 4 bytes) + AdamW moments (8), the discriminator (4)
    + its AdamW moments (8); the release weights 4 bytes per parameter. movqgan-67m by the same arithmetic."""
    from movq import Codec, get_preset
    from movq.memory_budget import build_on_meta

    data = make_images(tmp_path / "data", n=2)
    cfg = tiny_train_config(data, tmp_path / "run", codec={}, resolution=32, max_steps=1, save_every=1, disc_start=0,
                            disc_ndf=64, disc_layers=3)  # movqgan-tiny and the default discriminator
    trainer = Trainer(cfg)
    trainer.run()
    codec_params = sum(p.numel() for p in trainer.codec.parameters())
    disc_params = sum(p.numel() for p in trainer.disc.parameters())
    state = (tmp_path / "run" / "checkpoints" / "step-00000001" / "state.pt").stat().st_size
    assert state == pytest.approx(16 * codec_params + 12 * disc_params, rel=0.02)
    assert state == pytest.approx(85e6, rel=0.05)  # README: about 85 MB for movqgan-tiny
    assert (tmp_path / "run" / "model.safetensors").stat().st_size == pytest.approx(4 * codec_params, rel=0.02)
    big = sum(p.numel() for p in build_on_meta(lambda: Codec(get_preset("movqgan-67m"))).parameters())
    assert 16 * big + 12 * disc_params == pytest.approx(1.1e9, rel=0.05)  # README: about 1.1 GB for movqgan-67m


def test_a_run_needs_keep_last_plus_one_checkpoints_of_space(tmp_path, monkeypatch):
    """The next checkpoint is complete before the oldest is removed: keep_last + 1 on disk at the peak."""
    on_disk_at_removal = []
    real_rmtree = shutil.rmtree

    def counting_rmtree(path, *args, **kwargs):
        if Path(path).name.startswith("step-"):
            on_disk_at_removal.append(len([p for p in (tmp_path / "checkpoints").glob("step-*") if (p / "state.pt").is_file()]))
        return real_rmtree(path, *args, **kwargs)

    monkeypatch.setattr(shutil, "rmtree", counting_rmtree)
    for step in range(1, 6):
        ckpt.save_checkpoint(tmp_path, step, {"w": torch.full((3,), float(step))}, {}, keep_last=2)
    assert on_disk_at_removal == [3, 3, 3]  # steps 1, 2, 3 removed, each once its successor's successor was complete
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == ["step-00000004", "step-00000005"]


def test_disk_full_on_a_config_or_a_shard_names_the_file_and_keeps_its_previous_version(tmp_path, monkeypatch):
    """Every output but the checkpoint goes through movq.atomic: a full disk says "no space left on device",
    names the file, and leaves the previous version and no temporary file (the trainers then exit 2:
    test_disk_full_while_writing_the_release_says_no_space_and_keeps_the_release)."""
    import movq.tokenize.shards as shards
    from movq.atomic import DiskFullError

    def no_space(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    codec = tiny_codec(config=SMALL_2X)
    codec.save_pretrained(tmp_path / "release")
    config = tmp_path / "release" / "config.json"
    before = config.read_bytes()
    real_write_text = Path.write_text
    monkeypatch.setattr(Path, "write_text", lambda self, *a, **k: no_space() if self.name.endswith(".tmp")
                        else real_write_text(self, *a, **k))
    with pytest.raises(DiskFullError, match=f"no space left on device while writing {config}; its previous version is unchanged"):
        codec.save_pretrained(tmp_path / "release")
    monkeypatch.undo()
    assert config.read_bytes() == before

    items = [{"item": i, "source": f"{i}.png", "caption": None} for i in range(2)]
    shards.write_shard(tmp_path / "tokens", 0, "tokens", torch.zeros(2, 4, 4, dtype=torch.int16), items, [], run="r")
    shard = shards.shard_paths(tmp_path / "tokens", 0)[0]
    before = shard.read_bytes()
    monkeypatch.setattr(shards, "save_file", no_space)
    with pytest.raises(DiskFullError, match=f"no space left on device while writing {shard}; its previous version is unchanged"):
        shards.write_shard(tmp_path / "tokens", 0, "tokens", torch.ones(2, 4, 4, dtype=torch.int16), items, [], run="r")
    assert shard.read_bytes() == before
    assert not [p.name for p in (*config.parent.iterdir(), *shard.parent.iterdir()) if p.name.endswith(".tmp")]


# ------------------------------------------------------------------ the run's config, before any work


def test_every_trainer_writes_its_run_config_before_any_work(tmp_path):
    """OUT/train_config.json exists once a trainer is built (before its first step or checkpoint), so
    `--out OUT --resume` finds the run's flags even when it was killed before its first checkpoint."""
    from movq.diffusion.train import DiffusionTrainer
    from movq.t2i.train import T2ITrainer

    data = make_images(tmp_path / "data")
    builds = {
        "movq-train": (tiny_train_config(data, tmp_path / "codec"), Trainer),
        "movq-t2i-train": (t2i_train_config(tmp_path / "t2i"), lambda cfg: T2ITrainer(cfg, TokenList())),
        "movq-diffusion-train": (diffusion_train_config(tmp_path, "diffusion"),
                                 lambda cfg: DiffusionTrainer(cfg, toy_latents())),
    }
    for name, (cfg, build) in builds.items():
        build(cfg)
        out = Path(cfg.out)
        assert json.loads((out / "train_config.json").read_text()) == json.loads(json.dumps(cfg.to_dict())), name
        assert not (out / "checkpoints").exists(), name
