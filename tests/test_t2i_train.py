"""movq-t2i-train on tiny synthetic token sets: the loss goes down, an interrupted run resumed equals
an uninterrupted one bit for bit, the release weights load, and user errors are one CLI line."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from PIL import Image

from helpers import T2I_COLOURS as COLOURS
from helpers import T2I_TINY_MODEL as TINY_MODEL
from helpers import TokenList
from helpers import t2i_train_config as config
from movq import Codec, get_preset
from movq.t2i import T2ITransformer, encode_prompts, load_tokenizer, tokens_to_sequence
from movq.t2i.train import CaptionCollate, T2ITrainer, main
from movq.tokenize.dataset import TokenDataset

pytestmark = pytest.mark.usefixtures("one_thread")


def eval_loss(model: T2ITransformer, data: TokenList) -> float:
    batch = CaptionCollate(load_tokenizer(model.config.tokenizer), model.config.text_len)(data.items[:16])
    with torch.no_grad():
        return float(model.eval().loss(batch["text"], batch["image"]).total)


def test_collate_builds_text_ids_with_the_models_tokenizer():
    data = TokenList(8, depth=2)
    batch = CaptionCollate(load_tokenizer("byte"), 12)(data.items)
    expected = encode_prompts(load_tokenizer("byte"), [it["caption"] or "" for it in data.items], 12)
    assert torch.equal(batch["text"], expected)
    assert torch.equal(
        batch["text"][7], encode_prompts(load_tokenizer("byte"), "", 12)[0]
    )  # no caption: empty
    assert torch.equal(batch["image"], tokens_to_sequence(torch.stack([it["tokens"] for it in data.items])))
    assert batch["image"].shape == (8, 32)


def test_few_steps_lower_the_loss_and_release_weights_load(tmp_path):
    data = TokenList()
    trainer = T2ITrainer(config(tmp_path / "out", max_steps=25, save_every=25, min_lr_ratio=1.0), data)
    assert trainer.config.image_grid == (4, 4) and trainer.config.image_vocab_size == 16
    assert trainer.config.text_vocab_size == 256 and trainer.config.tokenizer == "byte"
    before = eval_loss(trainer.model, data)
    assert trainer.run() == 25
    after = eval_loss(trainer.model, data)
    assert after < 0.6 * before, (before, after)

    release = T2ITransformer.from_pretrained(tmp_path / "out")
    assert release.config == trainer.config
    for key, value in trainer.ema.module.state_dict().items():
        assert torch.equal(release.state_dict()[key], value), key
    assert eval_loss(release, data) < 0.8 * before
    text = encode_prompts(load_tokenizer("byte"), ["a red image"], 12)
    assert release.generate(text, temperature=0).shape == (1, 16)
    log = (tmp_path / "out" / "log.csv").read_text().splitlines()
    assert log[0].split(",")[:6] == ["step", "epoch", "lr", "loss", "text", "image"] and len(log) == 26


def test_decay_groups_leave_norms_biases_and_embeddings_alone(tmp_path):
    trainer = T2ITrainer(config(tmp_path / "out", weight_decay=0.3), TokenList())
    decayed, plain = trainer.opt.param_groups
    assert decayed["weight_decay"] == 0.3 and plain["weight_decay"] == 0.0
    names = {id(p): n for n, p in trainer.model.named_parameters()}
    assert all(names[id(p)].endswith(".weight") and p.ndim == 2 for p in decayed["params"])
    plain_names = {names[id(p)] for p in plain["params"]}
    assert {"bos", "text_embed.weight", "image_embed.weight", "ln_f.weight"} <= plain_names
    assert len(decayed["params"]) + len(plain["params"]) == len(names)


def test_interrupted_then_resumed_equals_uninterrupted(tmp_path):
    """Caption dropout (global RNG), data order, AdamW, schedule and EMA all continue exactly."""
    data = TokenList()
    model = {**TINY_MODEL, "caption_dropout": 0.5, "dropout": 0.1}
    straight = T2ITrainer(config(tmp_path / "a", model=model), data)
    straight.run()

    first = T2ITrainer(config(tmp_path / "b", model=model), data)
    step = first.train_step

    def step_then_stop(batches, n):  # as a SIGTERM after step 4: finish the step, checkpoint, return
        out = step(batches, n)
        if n + 1 == 4:
            first.loop.stop_requested = True
        return out

    first.train_step = step_then_stop
    assert first.run() == 4
    resumed = T2ITrainer(config(tmp_path / "b", model=model, resume=True), data)
    assert resumed.step == 4
    assert resumed.run() == 6
    for name, a, b in (
        ("model", straight.model, resumed.model),
        ("ema", straight.ema.module, resumed.ema.module),
    ):
        for key, value in a.state_dict().items():
            assert torch.equal(value, b.state_dict()[key]), (name, key)
    assert straight.opt.state_dict()["state"][0]["exp_avg"].equal(
        resumed.opt.state_dict()["state"][0]["exp_avg"]
    )


def test_max_minutes_stops_with_a_checkpoint(tmp_path, capsys):
    trainer = T2ITrainer(config(tmp_path / "out", max_steps=50, max_minutes=1e-9), TokenList())
    assert trainer.run() == 1
    assert (tmp_path / "out" / "checkpoints" / "step-00000001").is_dir()
    assert "stopped by --max-minutes" in capsys.readouterr().out


def test_resume_with_another_model_is_refused(tmp_path):
    T2ITrainer(config(tmp_path / "out", max_steps=3), TokenList()).run()
    with pytest.raises(ValueError, match="n_embd=32.*n_embd=48"):
        T2ITrainer(
            config(tmp_path / "out", max_steps=6, resume=True, model={**TINY_MODEL, "n_embd": 48}),
            TokenList(),
        )


def test_resume_from_a_state_that_does_not_fit_is_refused(tmp_path):
    out = tmp_path / "out"
    T2ITrainer(config(out, max_steps=3), TokenList()).run()
    state_file = out / "checkpoints" / "step-00000003" / "state.pt"
    state = torch.load(state_file, weights_only=True)
    state["model"]["bos"] = torch.zeros(7)
    torch.save(state, state_file)
    with pytest.raises(ValueError, match="does not fit this run"):
        T2ITrainer(config(out, max_steps=6, resume=True), TokenList())
    del state["opt"]
    torch.save(state, state_file)
    with pytest.raises(ValueError, match=r"lacks \['opt'\]: it is not a movq-t2i-train checkpoint"):
        T2ITrainer(config(out, max_steps=6, resume=True), TokenList())


@pytest.mark.parametrize(
    ("kw", "message"),
    [
        ({"model": {"image_vocab_size": 8}}, "cannot set"),
        ({"model": {"n_layers": 2}}, "unknown T2IConfig fields"),
        ({"preset": "t2i-huge"}, "unknown --preset"),
        ({"amp": "fp8"}, r"field 'amp': expected one of \['auto', 'bf16', 'fp16', 'none'\], got 'fp8'"),
    ],
)
def test_bad_settings_are_refused(tmp_path, kw, message):
    with pytest.raises(ValueError, match=message):
        T2ITrainer(config(tmp_path / "out", **kw), TokenList())


def run_cli(*args: str) -> subprocess.CompletedProcess:
    """``python -m movq.t2i.train ARGS`` in a subprocess (the real entry point)."""
    return subprocess.run(
        [sys.executable, "-m", "movq.t2i.train", *args],
        check=False,
        capture_output=True,
        text=True,
        timeout=120,
    )


def cli_error(capsys, *args: str) -> str:
    """Run the CLI's ``main`` in this process (no interpreter start-up) and return its one error line."""
    assert main([*args, "--no-progress"]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("movq-t2i-train: error: "), lines
    return lines[0]


def test_cli_errors_are_one_line(tmp_path, capsys):
    out = str(tmp_path / "o")
    assert "--data is required" in cli_error(capsys, "--out", out)
    assert "does not exist" in cli_error(capsys, "--data", str(tmp_path / "missing"), "--out", out)
    (tmp_path / "imgs").mkdir()
    assert "--codec" in cli_error(capsys, "--data", str(tmp_path / "imgs"), "--out", out)
    line = cli_error(
        capsys, "--data", str(tmp_path / "imgs"), "--out", out, "--model", '{"image_grid": [2, 2]}'
    )
    assert "cannot set" in line
    (tmp_path / "bad.json").write_text("not a tokenizer")
    assert "cannot load --tokenizer" in cli_error(
        capsys, "--data", str(tmp_path / "imgs"), "--out", out, "--tokenizer", str(tmp_path / "bad.json")
    )


# ---------------------------------------------------------------------------------------------
# Real token folders written by movq-tokenize


def make_captioned_images(root: Path, n: int = 8) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        colour = [(220, 30, 30), (30, 200, 30), (30, 30, 220), (240, 240, 240)][i % 4]
        Image.fromarray(np.full((16, 16, 3), colour, dtype=np.uint8)).save(root / f"{i}.png")
        (root / f"{i}.txt").write_text(f"a {COLOURS[i % 4]} image")
    return root


def test_cli_tokenizes_an_image_folder_once_then_trains_and_resumes(tmp_path, capsys):
    data = make_captioned_images(tmp_path / "imgs")
    out = tmp_path / "run"
    result = run_cli(
        "--data", str(data), "--codec", "movqgan-tiny-photos", "--resolution", "16", "--max-steps", "2",
        "--out", str(out), "--preset", "t2i-tiny", "--model", '{"text_len": 12}', "--batch-size", "4",
        "--num-workers", "0", "--no-progress", "--amp", "none", "--save-every", "2",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "8 images in" in result.stdout and "done at step 2" in result.stdout
    tokens = TokenDataset(out / "tokens")
    assert len(tokens) == 8 and tokens[1]["caption"] == "a green image"
    model = T2ITransformer.from_pretrained(out)
    assert model.config.image_grid == (2, 2) and model.config.image_vocab_size == 1024
    assert main(["--out", str(out), "--resume", "--max-steps", "4", "--no-progress"]) == 0  # the saved config
    stdout = capsys.readouterr().out
    assert "resumed from" in stdout and "done at step 4" in stdout

    # the token folder itself as --data; the wrong --codec is refused before any step
    other = tmp_path / "other-codec"
    Codec(get_preset("movqgan-tiny")).save_pretrained(other)
    x = str(tmp_path / "x")
    assert "is not the codec that wrote" in cli_error(
        capsys, "--data", str(out / "tokens"), "--codec", str(other), "--out", x
    )
    assert "tokenized at 16 px" in cli_error(
        capsys, "--data", str(out / "tokens"), "--resolution", "32", "--out", x
    )


def test_jsonl_manifest_is_tokenized_with_its_captions(tmp_path):
    make_captioned_images(tmp_path / "imgs", 4)
    manifest = tmp_path / "data.jsonl"
    manifest.write_text("".join(f'{{"image": "imgs/{i}.png", "caption": "caption {i}"}}\n' for i in range(4)))
    cfg = config(
        tmp_path / "run",
        data=str(manifest),
        codec="movqgan-tiny-photos",
        resolution=16,
        batch_size=2,
        max_steps=1,
    )
    trainer = T2ITrainer(cfg)
    assert [trainer.dataset[i]["caption"] for i in range(4)] == [f"caption {i}" for i in range(4)]
    assert trainer.config.image_grid == (2, 2)
    assert trainer.run() == 1


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _ddp_worker(rank: int, port: int, data: str, out: str, dump: str) -> None:
    os.environ.update(
        MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE="2", LOCAL_RANK=str(rank)
    )
    torch.set_num_threads(1)
    cfg = config(
        Path(out),
        data=data,
        codec="movqgan-tiny-photos",
        resolution=16,
        batch_size=2,
        grad_accum=2,
        max_steps=2,
        device="cpu",
        model={**TINY_MODEL, "caption_dropout": 0.5},
    )
    trainer = T2ITrainer(cfg)
    trainer.run()
    torch.save(
        {"model": trainer.model.state_dict(), "ema": trainer.ema.module.state_dict()},
        os.path.join(dump, f"rank{rank}.pt"),
    )
    dist.destroy_process_group()


@pytest.mark.skipif(not dist.is_available(), reason="torch.distributed is not available")
def test_two_processes_tokenize_together_and_keep_replicas_identical(tmp_path):
    """Under torchrun both ranks share the tokenization of the image folder, then train as DDP replicas
    (gradient accumulation with no_sync, caption dropout drawn per rank)."""
    data = make_captioned_images(tmp_path / "imgs")
    mp.spawn(
        _ddp_worker, args=(_free_port(), str(data), str(tmp_path / "out"), str(tmp_path)), nprocs=2, join=True
    )
    states = [torch.load(tmp_path / f"rank{r}.pt") for r in range(2)]
    for part in ("model", "ema"):
        for key, value in states[0][part].items():
            assert torch.equal(value, states[1][part][key]), f"{part}.{key}"
    assert len(TokenDataset(tmp_path / "out" / "tokens")) == 8
    assert T2ITransformer.from_pretrained(tmp_path / "out").config.image_grid == (2, 2)
