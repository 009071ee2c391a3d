"""Loss terms, discriminator layout, EMA, schedule and config of movq.train against hand computations."""

from __future__ import annotations

import json
import math

import pytest
import torch

from movq.train.cli import config_from_args
from movq.train.config import CodecTrainConfig
from movq.train.ema import ModelEMA
from movq.train.losses import (
    LossWeights,
    NLayerDiscriminator,
    adaptive_weight,
    generator_adv_loss,
    hinge_d_loss,
    reconstruction_terms,
)
from movq.train.optim import lr_lambda


def test_reconstruction_terms_by_hand():
    x = torch.tensor([0.0, 0.5, -1.0, 1.0]).view(1, 1, 2, 2).repeat(2, 3, 1, 1)
    x_hat = x.clone()
    x_hat[0] += 0.1  # image 0: error 0.1 everywhere
    x_hat[1, 0, 0, 0] -= 0.4  # image 1: one pixel off by 0.4
    perc = torch.tensor([0.2, 0.6])
    t = reconstruction_terms(x, x_hat, perc, LossWeights())
    n = 2 * 3 * 4
    l2 = (12 * 0.01 + 0.16) / n
    l1 = (12 * 0.1 + 0.4) / n
    assert t["l2"].item() == pytest.approx(l2, rel=1e-5)
    assert t["l1"].item() == pytest.approx(l1, rel=1e-5)
    assert t["perc"].item() == pytest.approx(0.4, rel=1e-6)
    # L_NLL = mean(0.1 * L_perc + 1.0 * L_2) per pixel = 0.1 * mean(perc) + mean(sq)
    assert t["nll"].item() == pytest.approx(0.1 * 0.4 + l2, rel=1e-5)
    custom = reconstruction_terms(x, x_hat, perc, LossWeights(nll_perc=0.5, nll_l2=2.0))
    assert custom["nll"].item() == pytest.approx(0.5 * 0.4 + 2.0 * l2, rel=1e-5)
    none = reconstruction_terms(x, x_hat, None, LossWeights())
    assert none["perc"].item() == 0.0 and none["nll"].item() == pytest.approx(l2, rel=1e-5)


def test_hinge_losses_by_hand():
    real = torch.tensor([2.0, 0.5, -1.0])  # relu(1 - r) = 0, 0.5, 2 -> mean 5/6
    fake = torch.tensor([-2.0, 0.0, 1.0])  # relu(1 + f) = 0, 1, 2 -> mean 1
    assert hinge_d_loss(real, fake).item() == pytest.approx(0.5 * (5 / 6 + 1.0))
    assert generator_adv_loss(fake).item() == pytest.approx(1 / 3)


def test_adaptive_weight_by_hand():
    w = torch.tensor([1.0, 2.0], requires_grad=True)
    nll = (3.0 * w).sum()  # grad (3, 3), norm 3 sqrt 2
    g = (w**2).sum()  # grad 2w = (2, 4), norm sqrt 20
    got = adaptive_weight(nll, g, w)
    assert got.item() == pytest.approx(3 * math.sqrt(2) / (math.sqrt(20) + 1e-4), rel=1e-5)
    assert not got.requires_grad


def test_patchgan_layout():
    d = NLayerDiscriminator(3, ndf=64, n_layers=3)
    convs = [m for m in d.modules() if isinstance(m, torch.nn.Conv2d)]
    assert [c.out_channels for c in convs] == [64, 128, 256, 512, 1]
    assert [c.stride[0] for c in convs] == [2, 2, 2, 1, 1]
    assert sum(isinstance(m, torch.nn.BatchNorm2d) for m in d.modules()) == 3
    assert d(torch.zeros(2, 3, 64, 64)).shape == (2, 1, 6, 6)  # 64/8 - 2
    assert NLayerDiscriminator(norm="group")(torch.zeros(1, 3, 32, 32)).shape == (1, 1, 2, 2)


def test_ema_update_by_hand():
    model = torch.nn.Linear(1, 1, bias=False)
    model.weight.data.fill_(0.0)
    ema = ModelEMA(model, decay=0.5, warmup=False)
    model.weight.data.fill_(1.0)
    ema.update(model)
    assert ema.module.weight.item() == pytest.approx(0.5)
    ema.update(model)
    assert ema.module.weight.item() == pytest.approx(0.75)
    warm = ModelEMA(model, decay=0.9999)
    assert warm.current_decay() == pytest.approx(1 / 10)  # (1 + 0) / (10 + 0)


def test_warmup_cosine_schedule():
    f = lr_lambda(CodecTrainConfig(max_steps=110, warmup_steps=10, min_lr_ratio=0.1))
    assert f(0) == pytest.approx(0.1) and f(9) == pytest.approx(1.0)
    assert f(10) == pytest.approx(1.0) and f(60) == pytest.approx(0.55) and f(110) == pytest.approx(0.1)


def test_config_file_and_flags(tmp_path):
    (tmp_path / "run.json").write_text(json.dumps({"data": "d", "lr": 0.5, "batch_size": 3}))
    cfg = config_from_args(["--config", str(tmp_path / "run.json"), "--lr", "0.25", "--no-flip"])
    assert (cfg.lr, cfg.batch_size, cfg.flip, cfg.data) == (0.25, 3, False, "d")
    (tmp_path / "run.toml").write_text('[train]\ndata = "e"\ncodec = { norm = "group" }\ncrop_scale = [0.5, 1.0]\n')
    cfg = config_from_args(["--config", str(tmp_path / "run.toml"), "--max-steps", "7"])
    assert (cfg.data, cfg.codec, cfg.crop_scale, cfg.max_steps) == ("e", {"norm": "group"}, (0.5, 1.0), 7)
    with pytest.raises(ValueError, match="unknown CodecTrainConfig fields"):
        CodecTrainConfig.from_dict({"data": "d", "bogus": 1})


def test_loss_weights_are_one_nested_field(tmp_path):
    cfg = config_from_args(["--data", "d", "--w-adv", "0.3", "--nll-l2", "2"])
    assert cfg.loss == LossWeights(adv=0.3, nll_l2=2.0) and cfg.to_dict()["loss"]["adv"] == 0.3
    assert not any(k.startswith("w_") for k in cfg.to_dict())
    (tmp_path / "run.toml").write_text('data = "d"\n[loss]\nperc = 0.5\n')
    cfg = config_from_args(["--config", str(tmp_path / "run.toml"), "--w-l1", "1"])
    assert cfg.loss == LossWeights(perc=0.5, l1=1.0)
    assert CodecTrainConfig.from_dict({"w_vq": 2, "loss": {"adv": 0}}).loss == LossWeights(vq=2.0, adv=0.0)  # older keys
    with pytest.raises(ValueError, match="'loss.vq'.*finite number"):
        CodecTrainConfig.from_dict({"loss": {"vq": "high"}})
    with pytest.raises(ValueError, match="unknown LossWeights fields \\['adversarial'\\] at 'loss'"):
        CodecTrainConfig.from_dict({"loss": {"adversarial": 1}})
    with pytest.raises(ValueError, match="w_vq and loss.vq"):
        CodecTrainConfig.from_dict({"w_vq": 1, "loss": {"vq": 2}})


def test_optimizer_step_is_clip_step_zero_schedule_ema():
    from movq.train.config import OptimConfig
    from movq.train.optim import OptimizerStep

    cfg = OptimConfig(lr=0.1, warmup_steps=2, max_steps=10, grad_clip=0.5, ema_decay=0.5, ema_warmup=False)
    torch.manual_seed(0)
    model, x = torch.nn.Linear(4, 3), torch.randn(8, 4)
    by_hand = torch.nn.Linear(4, 3)
    by_hand.load_state_dict(model.state_dict())
    step = OptimizerStep.adamw(model, cfg, params=model.parameters())
    opt = torch.optim.AdamW(by_hand.parameters(), 0.1, betas=cfg.betas, weight_decay=cfg.weight_decay)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_lambda(cfg))
    ema = ModelEMA(by_hand, 0.5, warmup=False)
    for _ in range(3):
        model(x).pow(2).sum().backward()
        grad_norm = step()
        by_hand(x).pow(2).sum().backward()
        expected = torch.nn.utils.clip_grad_norm_(by_hand.parameters(), 0.5)
        opt.step()
        opt.zero_grad(set_to_none=True)
        sched.step()
        ema.update(by_hand)
        assert grad_norm.dtype == torch.float32 and torch.equal(grad_norm, expected)
    assert all(p.grad is None for p in model.parameters())
    for name, value in by_hand.state_dict().items():
        assert torch.equal(model.state_dict()[name], value) and torch.equal(step.ema.module.state_dict()[name], ema.module.state_dict()[name])
    assert step.sched.state_dict() == sched.state_dict() and set(step.state_dict()) == {"model", "ema", "opt", "sched"}
    frozen = OptimizerStep.adamw(by_hand, cfg, ema=False, clip=False)
    weight = by_hand.weight.detach().clone()
    by_hand(x).sum().backward()
    assert frozen(apply=False) is None  # no step, no norm: gradients dropped, the schedule still counts
    assert torch.equal(by_hand.weight, weight) and by_hand.weight.grad is None and frozen.sched.last_epoch == 1


def test_check_same_run_names_each_field_saved_and_given(tmp_path):
    from movq.train.checkpoint import check_same_run

    saved = {"name": "a", "ch": 32, "quantizer": {"kind": "vq", "codebook_size": 16}}
    check_same_run(saved, {**saved, "name": "b"}, tmp_path, ignore=("name",))
    check_same_run({}, saved, tmp_path)  # an older checkpoint that recorded nothing
    with pytest.raises(ValueError, match="drop the flags") as info:
        check_same_run(saved, {**saved, "ch": 64, "quantizer": {"kind": "vq", "codebook_size": 8}}, tmp_path, "architecture")
    message = str(info.value)
    assert f"this run ({tmp_path}) was trained with architecture (ch=32, quantizer.codebook_size=16)" in message
    assert "now give (ch=64, quantizer.codebook_size=8)" in message and "name=" not in message


def test_merge_dicts_recursive_with_kind_and_only():
    from movq.strict import merge_dicts

    base = {"a": 1, "q": {"kind": "vq", "size": 16, "beta": 0.25}, "loss": {"l1": 1.0, "l2": 0.0}, "codec": {"ch": 32, "z": 4}}
    assert merge_dicts(base, {"q": {"size": 8}})["q"] == {"kind": "vq", "size": 8, "beta": 0.25}
    assert merge_dicts(base, {"q": {"kind": "fsq", "levels": [8, 5]}})["q"] == {"kind": "fsq", "levels": [8, 5]}
    layered = merge_dicts(base, {"loss": {"l2": 1.0}, "codec": {"ch": 64}, "a": 2}, only={"loss"})
    assert layered == {**base, "a": 2, "loss": {"l1": 1.0, "l2": 1.0}, "codec": {"ch": 64}}
    assert base["q"]["size"] == 16  # neither input changes
