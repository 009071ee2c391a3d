"""movq.train end to end on tiny generated data: loss goes down, corrupt files, atomic checkpoints,
exact resume after kill -9, SIGTERM, and 2-process gloo DDP replicas."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

import movq
from helpers import TRAIN_CODEC, make_images, tiny_train_config
from movq.train import checkpoint as ckpt
from movq.train.losses import LossWeights
from movq.train.trainer import Trainer

EMA_CODEC = {**TRAIN_CODEC, "quantizer": {"kind": "ema", "codebook_size": 32, "decay": 0.9, "dead_code_threshold": 0.5}}
# Every code's EMA count is far below this threshold, so every step restarts every code from random
# latents drawn from the global RNG: a resume that shifts that RNG stream by one draw changes the weights.
RESTART_CODEC = {**EMA_CODEC, "quantizer": {**EMA_CODEC["quantizer"], "dead_code_threshold": 1e6}}


pytestmark = pytest.mark.usefixtures("one_thread")


def test_few_steps_lower_the_loss_and_corrupt_file_is_skipped(tmp_path):
    data = make_images(tmp_path / "data")
    (data / "broken.jpg").write_bytes(b"garbage")
    cfg = tiny_train_config(data, tmp_path / "out", codec=EMA_CODEC, max_steps=12, disc_start=1000, loss=LossWeights(l1=1.0),
                      ema_decay=0.5, min_lr_ratio=1.0, lr=3e-3)
    trainer = Trainer(cfg)
    x = torch.stack([trainer.dataset[(i, 0)]["image"] for i in range(4)])

    def l2() -> float:
        with torch.no_grad():
            return float((trainer.codec.train(False)(x).sample - x).pow(2).mean())

    before = l2()
    trainer.codec.train()
    assert trainer.run() == 12
    after = l2()
    assert after < 0.8 * before, (before, after)
    rows = (tmp_path / "out" / "log.csv").read_text().splitlines()
    header = rows[0].split(",")
    assert {"loss", "vq", "l2", "perc", "nll", "adv", "d_loss", "usage", "dead_codes", "perplexity"} <= set(header)
    assert len(rows) == 13 and rows[-1].split(",")[header.index("skipped_files")] == "1"
    assert str(data / "broken.jpg") in trainer.skipped
    assert list((tmp_path / "out" / "images").glob("*.png"))
    released = movq.load(tmp_path / "out")  # the EMA weights
    for key, value in trainer.ema.module.state_dict().items():
        assert torch.equal(released.state_dict()[key], value), key


def test_gan_and_adaptive_weight_run(tmp_path):
    cfg = tiny_train_config(make_images(tmp_path / "data"), tmp_path / "out", max_steps=3, disc_start=1,
                      adaptive_weight=True, grad_accum=2, disc_norm="group")
    trainer = Trainer(cfg)
    disc_before = [p.detach().clone() for p in trainer.disc.parameters()]
    trainer.run()
    assert any(not torch.equal(a, b) for a, b in zip(disc_before, trainer.disc.parameters()))
    last = (tmp_path / "out" / "log.csv").read_text().splitlines()[-1].split(",")
    header = (tmp_path / "out" / "log.csv").read_text().splitlines()[0].split(",")
    assert float(last[header.index("adv_weight")]) > 0 and last[header.index("d_loss")] != ""


def test_checkpoint_write_is_atomic(tmp_path, monkeypatch):
    out = tmp_path / "out"
    ckpt.save_checkpoint(out, 1, {"w": torch.ones(3)}, {"a": 1}, keep_last=3)

    def killed_save(obj, f):
        f.write(b"partial bytes")
        raise KeyboardInterrupt("killed mid-write")

    monkeypatch.setattr(torch, "save", killed_save)
    with pytest.raises(KeyboardInterrupt):
        ckpt.save_checkpoint(out, 2, {"w": torch.zeros(3)}, {"a": 2}, keep_last=3)
    monkeypatch.undo()
    latest = ckpt.latest_checkpoint(out)
    assert latest is not None and latest.name == "step-00000001"
    assert torch.equal(ckpt.load_checkpoint(latest)["w"], torch.ones(3))
    assert not (out / "checkpoints" / "step-00000002").exists()
    for step in (2, 3, 4):
        ckpt.save_checkpoint(out, step, {"w": torch.full((3,), float(step))}, {}, keep_last=2)
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["step-00000003", "step-00000004"]
    assert (out / "last").resolve().name == "step-00000004"


def _cli(data: Path, out: Path, max_steps: int, *extra: str, codec: dict = EMA_CODEC) -> list[str]:
    return [
        sys.executable, "-m", "movq.train.cli", "--data", str(data), "--out", str(out),
        "--codec", json.dumps(codec), "--resolution", "16", "--batch-size", "2",
        "--max-steps", str(max_steps), "--save-every", "2", "--keep-last", "50", "--log-every", "1",
        "--perceptual-net", "none", "--num-workers", "1", "--warmup-steps", "0", "--min-lr-ratio", "1",
        "--lr", "1e-3", "--disc-start", "3", "--disc-ndf", "8", "--disc-layers", "2", "--no-progress", "--seed", "5", *extra,
    ]


def _env() -> dict[str, str]:
    return {**os.environ, "OMP_NUM_THREADS": "1"}


def _wait_for(path: Path, proc: subprocess.Popen, timeout: float = 120.0) -> None:
    start = time.time()
    while not path.exists():
        assert proc.poll() is None, proc.communicate()
        assert time.time() - start < timeout, f"{path} never appeared"
        time.sleep(0.01)


def _final_state(out: Path) -> dict:
    state = ckpt.load_checkpoint(out / "last")
    return {"model": state["model"], "ema": state["ema"], "disc": state["disc"], "opt": state["opt"]["state"]}


def _assert_equal(a, b, where=""):
    if isinstance(a, dict):
        assert a.keys() == b.keys(), where
        for k in a:
            _assert_equal(a[k], b[k], f"{where}.{k}")
    elif isinstance(a, torch.Tensor):
        assert torch.equal(a, b), where
    else:
        assert a == b, where


def test_kill9_then_resume_equals_uninterrupted(tmp_path):
    data = make_images(tmp_path / "data")
    subprocess.run(_cli(data, tmp_path / "ref", 10, codec=RESTART_CODEC), check=True, env=_env(), capture_output=True)
    # constant lr, so max_steps does not change the schedule: run "forever", kill -9 after step 4
    proc = subprocess.Popen(_cli(data, tmp_path / "run", 10_000, codec=RESTART_CODEC), env=_env(),
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    _wait_for(tmp_path / "run" / "checkpoints" / "step-00000004", proc)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    resumed_from = ckpt.load_checkpoint(ckpt.latest_checkpoint(tmp_path / "run"))["step"]
    assert 4 <= resumed_from < 10, resumed_from
    res = subprocess.run(_cli(data, tmp_path / "run", 10, "--resume", codec=RESTART_CODEC), env=_env(),
                         capture_output=True, text=True)
    assert res.returncode == 0, res.stdout + res.stderr
    assert "resumed from" in res.stdout
    _assert_equal(_final_state(tmp_path / "ref"), _final_state(tmp_path / "run"))
    steps = [int(r.split(",")[0]) for r in (tmp_path / "run" / "log.csv").read_text().splitlines()[1:]]
    assert steps == list(range(1, 11))  # rows past the checkpoint were dropped on resume


def test_sigterm_saves_and_exits(tmp_path):
    data = make_images(tmp_path / "data")
    proc = subprocess.Popen(_cli(data, tmp_path / "run", 10_000, "--save-every", "1000"), env=_env(),
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    _wait_for(tmp_path / "run" / "log.csv", proc)
    time.sleep(1.0)
    proc.send_signal(signal.SIGTERM)
    output, _ = proc.communicate(timeout=60)
    assert proc.returncode == 0, output
    assert "stopped by signal" in output
    assert ckpt.load_checkpoint(tmp_path / "run" / "last")["step"] >= 1
    assert (tmp_path / "run" / "model.safetensors").is_file()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _ddp_worker(rank: int, port: int, data: str, out: str, dump: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE="2", LOCAL_RANK=str(rank))
    torch.set_num_threads(1)
    cfg = tiny_train_config(Path(data), Path(out), codec=EMA_CODEC, max_steps=4, disc_start=2, device="cpu")
    trainer = Trainer(cfg)
    trainer.run()
    torch.save({"model": trainer.codec.state_dict(), "ema": trainer.ema.module.state_dict(), "disc": trainer.disc.state_dict()},
               os.path.join(dump, f"rank{rank}.pt"))
    dist.destroy_process_group()


@pytest.mark.skipif(not dist.is_available(), reason="torch.distributed is not available")
def test_two_process_ddp_keeps_replicas_identical(tmp_path):
    data = make_images(tmp_path / "data", n=8)
    mp.spawn(_ddp_worker, args=(_free_port(), str(data), str(tmp_path / "out"), str(tmp_path)), nprocs=2, join=True)
    states = [torch.load(tmp_path / f"rank{r}.pt") for r in range(2)]
    for part in ("model", "ema"):
        for key, value in states[0][part].items():
            assert torch.equal(value, states[1][part][key]), f"{part}.{key}"
    for key, value in states[0]["disc"].items():
        if "running" not in key and "num_batches" not in key:  # BatchNorm statistics stay per replica
            assert torch.equal(value, states[1]["disc"][key]), f"disc.{key}"
    assert "quantize.embedding.weight" in states[0]["ema"]  # the EMA codebook itself
    assert ckpt.latest_checkpoint(tmp_path / "out") is not None  # rank 0 wrote


def test_init_fine_tunes_from_released_weights(tmp_path):
    data = make_images(tmp_path / "data")
    first = Trainer(tiny_train_config(data, tmp_path / "a", max_steps=2, disc_start=100))
    first.run()
    second = Trainer(tiny_train_config(data, tmp_path / "b", codec={}, init=str(tmp_path / "a"), max_steps=1, disc_start=100))
    released = movq.load(tmp_path / "a").state_dict()
    for key, value in second.codec.state_dict().items():
        assert torch.equal(value, released[key]), key
    with pytest.raises(ValueError, match="cannot be combined"):
        Trainer(tiny_train_config(data, tmp_path / "c", init=str(tmp_path / "a")))
