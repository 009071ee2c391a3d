"""The generator trainers' run options (issue #24): a held-out validation split with its eval loss, the best
release kept in OUT/best/, sample grids, --threads, --compile, the MFU columns, the --tensorboard warning,
and --resume on a run folder that does not exist."""

from __future__ import annotations

import csv
import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file

import movq
from helpers import SMALL_2X, TokenList, tiny_codec, toy_latents
from helpers import diffusion_train_config as diffusion_config
from helpers import t2i_train_config as t2i_config
from movq.config import VQConfig
from movq.diffusion.train import DiffusionTrainer
from movq.t2i.train import CaptionCollate, T2ITrainConfig, T2ITrainer, model_flops_per_token
from movq.train.checkpoint import load_checkpoint
from movq.train.cli import config_from_args
from movq.train.data import split_items
from movq.train.logs import TensorBoardLog, image_grid
from movq.train.loop import EVAL_SEED_OFFSET

pytestmark = pytest.mark.usefixtures("one_thread")


def log_rows(out: Path) -> list[dict[str, str]]:
    with open(out / "log.csv", newline="") as f:
        return list(csv.DictReader(f))


def eval_column(out: Path) -> dict[int, float]:
    return {int(r["step"]): float(r["eval_loss"]) for r in log_rows(out) if r["eval_loss"]}


# --------------------------------------------------------------------------------- the split


def test_split_sizes_are_round_fraction_disjoint_and_deterministic():
    for count, fraction, expected in ((100, 0.1, 10), (16, 0.25, 4), (7, 0.01, 1), (10, 0.0, 0), (9, 0.05, 1)):
        train, val = split_items(count, fraction, seed=3)
        assert len(val) == expected and len(train) == count - expected
        assert sorted(train + val) == list(range(count)) and train == sorted(train) and val == sorted(val)
        assert (train, val) == split_items(count, fraction, seed=3)  # same inputs, same split
    assert split_items(100, 0.1, 3) != split_items(100, 0.1, 4)  # the seed chooses the items
    with pytest.raises(ValueError, match="leaves no training item"):
        split_items(2, 0.9, 0)


def test_val_fraction_and_val_data_are_exclusive(tmp_path):
    with pytest.raises(ValueError, match="--val-fraction and --val-data"):
        t2i_config(tmp_path, val_fraction=0.1, val_data="elsewhere")
    with pytest.raises(ValueError, match="val_fraction"):
        t2i_config(tmp_path, val_fraction=1.0)


# --------------------------------------------------------------------------------- diffusion: eval loss, best


def direct_diffusion_eval(trainer: DiffusionTrainer, items: list[int], data) -> float:
    """The mean loss of the EMA weights over ``items``, recomputed here: the loop's documented generator
    (``seed * 1_000_003 + EVAL_SEED_OFFSET``) draws t then the noise for each batch of ``batch_size``."""
    g = torch.Generator().manual_seed(trainer.cfg.seed * 1_000_003 + EVAL_SEED_OFFSET)
    losses = []
    for start in range(0, len(items), trainer.cfg.batch_size):
        chunk = items[start:start + trainer.cfg.batch_size]
        x0 = torch.stack([data[i]["latents"] for i in chunk]).float() * trainer.latent_scale
        y = data.labels[chunk]
        t = torch.randint(0, trainer.diffusion.num_timesteps, (len(chunk),), generator=g)
        noise = torch.randn(x0.shape, generator=g)
        with torch.no_grad():
            terms = trainer.diffusion.training_losses(trainer.ema.module, x0, t, {"y": y}, noise=noise)
        losses.append(terms["loss"].double())
    return float(torch.cat(losses).mean())


def test_diffusion_eval_loss_is_the_mean_over_the_held_out_items_and_best_is_its_minimum(tmp_path):
    data = toy_latents(24)
    cfg = diffusion_config(tmp_path, max_steps=6, val_fraction=0.25, eval_every=1, save_every=1, keep_last=10,
                           batch_size=4, amp="none", lr=3e-2, loss="mse")
    trainer = DiffusionTrainer(cfg, data)
    train_items, val_items = split_items(24, 0.25, cfg.seed)
    assert trainer.val_set.indices == val_items and trainer.train_set.indices == train_items
    assert len(val_items) == 6
    trainer.run()
    logged = eval_column(tmp_path / "run")
    assert sorted(logged) == [1, 2, 3, 4, 5, 6]
    assert logged[6] == pytest.approx(direct_diffusion_eval(trainer, val_items, data), rel=1e-5)

    best_step = min(logged, key=logged.get)
    best = tmp_path / "run" / "best"
    info = json.loads((best / "best.json").read_text())
    assert info["step"] == best_step and info["eval_loss"] == pytest.approx(logged[best_step], rel=1e-5)
    saved = load_checkpoint(tmp_path / "run" / "checkpoints" / f"step-{best_step:08d}")
    release = load_file(best / "ema.safetensors")
    ema = {k.removeprefix("module."): v for k, v in saved["ema"].items()}
    assert release.keys() <= ema.keys()
    for key, value in release.items():
        assert torch.equal(value, ema[key]), key
    assert movq.diffusion.UNet.from_pretrained(best).config == trainer.config


def test_diffusion_resume_with_validation_best_and_grids_is_exact(tmp_path):
    data = toy_latents(16)
    codec = movq.load("movqgan-tiny", pretrained=False)  # f = 8: 4x4 latents -> 32x32 samples
    common = {"loss": "hybrid", "p_uncond": 0.3, "save_every": 3, "val_fraction": 0.25, "eval_every": 2,
              "sample_every": 3, "amp": "none"}
    straight = DiffusionTrainer(diffusion_config(tmp_path, "straight", max_steps=6, **common), data, codec=codec)
    straight.run()
    DiffusionTrainer(diffusion_config(tmp_path, "split", max_steps=3, **common), data, codec=codec).run()
    resumed = DiffusionTrainer(diffusion_config(tmp_path, "split", max_steps=6, resume=True, **common), data,
                               codec=codec)
    assert resumed.step == 3 and resumed.loop.best is not None and resumed.loop.best["step"] == 2
    resumed.run()
    for key in ("model", "ema"):
        a, b = straight.state_dict()[key], resumed.state_dict()[key]
        assert all(torch.equal(a[name], b[name]) for name in a), key
    assert eval_column(tmp_path / "straight") == eval_column(tmp_path / "split")
    assert sorted(eval_column(tmp_path / "split")) == [2, 4, 6]
    assert (json.loads((tmp_path / "straight" / "best" / "best.json").read_text())
            == json.loads((tmp_path / "split" / "best" / "best.json").read_text()))
    for step in (3, 6):  # 4 classes x 4 samples of 32x32, the same in both runs
        grids = [Image.open(tmp_path / run / "samples" / f"step_{step:06d}.png") for run in ("straight", "split")]
        assert grids[0].size == (4 * 32, 4 * 32)
        assert grids[0].tobytes() == grids[1].tobytes()
    with pytest.raises(ValueError, match="validation split"):
        DiffusionTrainer(diffusion_config(tmp_path, "split", max_steps=8, resume=True, **{**common, "val_fraction": 0.5}),
                         data, codec=codec)


def test_diffusion_val_data_is_evaluated_and_must_match(tmp_path):
    data, val = toy_latents(16), toy_latents(4, seed=1)
    trainer = DiffusionTrainer(diffusion_config(tmp_path, max_steps=2, eval_every=2, amp="none"), data, val_dataset=val)
    trainer.run()
    assert eval_column(tmp_path / "run")[2] == pytest.approx(direct_diffusion_eval(trainer, list(range(4)), val),
                                                             rel=1e-5)
    other = movq.diffusion.data.LatentItems(torch.zeros(4, 4, 2, 2))
    with pytest.raises(ValueError, match="--val-data latents"):
        DiffusionTrainer(diffusion_config(tmp_path, "b", max_steps=2), data, val_dataset=other)


# --------------------------------------------------------------------------------- t2i: eval loss, grid, MFU


def t2i_codec():
    return tiny_codec(config=SMALL_2X, quantizer=VQConfig(codebook_size=16))  # 4x4 tokens -> 8x8 images


def test_t2i_eval_loss_grid_and_mfu_columns(tmp_path):
    data = TokenList()
    cfg = t2i_config(tmp_path / "out", val_fraction=0.25, eval_every=3, sample_every=3, peak_tflops=2.0)
    trainer = T2ITrainer(cfg, data, codec=t2i_codec())
    trainer.run()
    rows = log_rows(tmp_path / "out")
    logged = eval_column(tmp_path / "out")
    assert sorted(logged) == [3, 6]
    _, val_items = split_items(len(data), 0.25, cfg.seed)
    batch = CaptionCollate(trainer.tokenizer, trainer.config.text_len)([data[i] for i in val_items])
    with torch.no_grad():  # every item has as many tokens: the mean over the items is the loss of one batch
        direct = float(trainer.ema.module.loss(batch["text"], batch["image"]).total)
    assert logged[6] == pytest.approx(direct, rel=1e-5)
    info = json.loads((tmp_path / "out" / "best" / "best.json").read_text())
    assert info["step"] == min(logged, key=logged.get)
    assert (tmp_path / "out" / "best" / "codec.json").is_file()
    assert movq.t2i.T2ITransformer.from_pretrained(tmp_path / "out" / "best").config == trainer.config

    grid = Image.open(tmp_path / "out" / "samples" / "step_000006.png")
    assert grid.size == (4 * 8, 4 * 8)  # 4 captions (rows) x 4 samples of 8x8 px
    prompts = (tmp_path / "out" / "samples" / "prompts.txt").read_text().splitlines()
    assert len(prompts) == 4 and len(set(prompts)) == 4

    # nanoGPT's count: 6 N (N: the weights outside the embedding lookups) + 12 L C T per token
    model = trainer.model
    lookups = ("text_embed", "text_pos", "image_embed", "image_row", "image_col", "image_depth")
    n = sum(p.numel() for name, p in model.named_parameters() if not name.startswith(lookups))
    config = model.config
    per_token = 6 * n + 12 * config.n_layer * config.n_embd * config.block_size
    assert model_flops_per_token(model) == per_token
    for row in rows:
        tflops = per_token * cfg.batch_size * config.block_size * float(row["steps_per_s"]) / 1e12
        assert float(row["tflops"]) == pytest.approx(tflops, rel=1e-4)
        assert float(row["mfu"]) == pytest.approx(float(row["tflops"]) / 2.0, rel=1e-4)


def test_image_grid_places_images_row_by_row():
    images = torch.linspace(-1, 1, 5).view(5, 1, 1, 1).expand(5, 3, 2, 3)
    grid = image_grid(images, columns=2)
    assert grid.size == (2 * 3, 3 * 2)
    pixels = torch.from_numpy(np.array(grid)).float()
    expected = ((torch.linspace(-1, 1, 5) + 1) * 127.5).round()
    assert pixels[0, 0, 0] == expected[0] and pixels[0, 3, 0] == expected[1] and pixels[4, 0, 0] == expected[4]
    assert pixels[4, 3].tolist() == [0, 0, 0]  # the empty cell


# --------------------------------------------------------------------------------- threads, compile, tensorboard


def test_threads_flag_sets_torch_threads(tmp_path):
    cfg = config_from_args(["--data", "x", "--out", str(tmp_path), "--threads", "2"], T2ITrainConfig)
    assert cfg.threads == 2
    T2ITrainer(t2i_config(tmp_path / "out", threads=2), TokenList())
    assert torch.get_num_threads() == 2  # (the one_thread fixture restores it)


def test_compile_gives_the_same_first_losses(tmp_path, monkeypatch):
    """--compile trains through torch.compile. Inductor's C++ build takes minutes on a small shared CPU, so the
    test compiles with the ``aot_eager`` backend (the same graph capture and autograd tracing, no codegen)."""
    cfg = config_from_args(["--data", "x", "--compile"], T2ITrainConfig)
    assert cfg.compile is True and T2ITrainConfig().compile is False  # off by default
    compiled_modules = []
    original = torch.compile

    def aot_eager(module, **kw):
        compiled_modules.append(module)
        return original(module, backend="aot_eager")

    monkeypatch.setattr(torch, "compile", aot_eager)
    losses = {}
    for compiled in (False, True):
        out = tmp_path / str(compiled)
        trainer = T2ITrainer(t2i_config(out, compile=compiled, max_steps=2, save_every=100), TokenList())
        try:
            trainer.run()
        except Exception as error:  # noqa: BLE001 - torch.compile unavailable on this build
            if compiled:
                pytest.skip(f"torch.compile is unavailable here: {type(error).__name__}: {str(error)[:200]}")
            raise
        losses[compiled] = [float(r["loss"]) for r in log_rows(out)]
    assert len(compiled_modules) == 1
    assert losses[True][0] == pytest.approx(losses[False][0], rel=1e-5)  # the same weights, the same batch
    assert losses[True][1] == pytest.approx(losses[False][1], rel=1e-2)  # after one AdamW step on each


def test_tensorboard_that_cannot_be_imported_is_a_warning(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)  # import fails as when it is not installed
    with pytest.warns(UserWarning, match="--tensorboard: TensorBoard cannot be used"):
        TensorBoardLog(tmp_path / "tb")
    trainer = T2ITrainer(t2i_config(tmp_path / "out", tensorboard=True, max_steps=1), TokenList())
    with pytest.warns(UserWarning, match="training goes on without TensorBoard logs"):
        assert trainer.run() == 1


# --------------------------------------------------------------------------------- --resume on a missing run


@pytest.mark.parametrize("module", ["movq.train.cli", "movq.diffusion.train", "movq.t2i.train"])
def test_resume_on_a_missing_run_folder_says_so(tmp_path, capsys, module):
    import importlib

    main = importlib.import_module(module).main
    missing = tmp_path / "no-such-run"
    assert main(["--out", str(missing), "--resume"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert f"the run folder {missing} does not exist" in err and "--data is required" not in err


def test_sample_grids_without_a_codec_are_refused_before_training(tmp_path):
    with pytest.raises(ValueError, match="--sample-every needs the codec that decodes the data"):
        DiffusionTrainer(diffusion_config(tmp_path, sample_every=2), toy_latents(16))
    with pytest.raises(ValueError, match="cannot load --sample-every: the data's codec 'synthetic'"):
        T2ITrainer(t2i_config(tmp_path / "t2i", sample_every=2), TokenList())


def test_t2i_val_data_must_be_tokens_of_the_same_shape(tmp_path):
    trainer = T2ITrainer(t2i_config(tmp_path / "a", eval_every=2, max_steps=2), TokenList(), val_dataset=TokenList(8))
    trainer.run()
    assert sorted(eval_column(tmp_path / "a")) == [2] and trainer.loop.validation["val_items"] == 8
    with pytest.raises(ValueError, match="--val-data has item_shape"):
        T2ITrainer(t2i_config(tmp_path / "b"), TokenList(), val_dataset=TokenList(8, depth=2))


def test_a_log_of_an_older_version_keeps_its_rows_under_the_new_columns(tmp_path):
    from movq.t2i.train import LOG_FIELDS
    from movq.train.logs import CSVLog

    path = tmp_path / "log.csv"
    old = ["step", "epoch", "lr", "loss", "text", "image", "grad_norm", "steps_per_s", "skipped_files"]
    path.write_text(",".join(old) + "\n1,0,0.1,2.5,3,2,1,4,0\n2,0,0.1,2.4,3,2,1,4,0\n3,0,0.1,2.3,3,2,1,4,0\n")
    CSVLog(path, LOG_FIELDS).truncate_after(2)
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    assert tuple(rows[0]) == LOG_FIELDS and [r["loss"] for r in rows] == ["2.5", "2.4"]
    assert rows[0]["eval_loss"] == "" and rows[0]["mfu"] == ""
    assert not (tmp_path / "log.csv.damaged").exists()
