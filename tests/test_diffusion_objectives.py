"""improved-diffusion's training options: ``--use-kl`` (the VLB alone, its RESCALED_KL) against a direct
computation (closed-form cosine schedule, torch.distributions' KL, scipy's normal CDF), and
``--schedule-sampler loss-second-moment``: its weights against a hand computation after warm-up and a
resumed run equal to an uninterrupted one."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from scipy.stats import norm
from torch.distributions import Normal, kl_divergence

from helpers import diffusion_train_config as config
from helpers import toy_latents
from movq.diffusion import GaussianDiffusion
from movq.diffusion.resample import LossSecondMomentResampler, UniformSampler, schedule_sampler
from movq.diffusion.train import DiffusionTrainConfig, DiffusionTrainer, main

pytestmark = pytest.mark.usefixtures("one_thread")


# --------------------------------------------------------------------------------- --use-kl


def cosine_alphas_cumprod(steps: int, s: float = 0.008) -> np.ndarray:
    """The cosine schedule written out: ``beta_i = min(1 - f(i + 1) / f(i), 0.999)``, ``f(u) = cos^2((u/T + s)/(1 + s) pi/2)``."""
    f = np.cos((np.arange(steps + 1) / steps + s) / (1 + s) * np.pi / 2) ** 2
    betas = np.minimum(1 - f[1:] / f[:-1], 0.999)
    return betas, np.cumprod(1 - betas)


class LinearModel(torch.nn.Module):
    """``[eps prediction, variance output]`` = ``[a * x_t + b, tanh(c * x_t)]``: differentiable, t-independent."""

    def __init__(self) -> None:
        super().__init__()
        self.a = torch.nn.Parameter(torch.tensor(0.7, dtype=torch.float64))
        self.b = torch.nn.Parameter(torch.tensor(0.1, dtype=torch.float64))
        self.c = torch.nn.Parameter(torch.tensor(0.5, dtype=torch.float64))

    def forward(self, x, t, **kwargs):
        return torch.cat([self.a * x + self.b, torch.tanh(self.c * x)], dim=1)


def reference_kl_loss(model, x0, t, noise, steps, bin_width=2 / 255):
    """``T * L_t`` in bits/dim per sample, computed term by term from the definitions."""
    betas, abar = cosine_alphas_cumprod(steps)
    abar_prev = np.concatenate([[1.0], abar[:-1]])
    beta_tilde = betas * (1 - abar_prev) / (1 - abar)
    losses = []
    for i in range(x0.shape[0]):
        k = int(t[i])
        x_t = math.sqrt(abar[k]) * x0[i:i + 1] + math.sqrt(1 - abar[k]) * noise[i:i + 1]
        eps, v = model(x_t, None).chunk(2, dim=1)
        min_log = math.log(beta_tilde[max(k, 1)])  # beta_tilde_0 = 0: clipped to beta_tilde_1
        log_var = (v + 1) / 2 * math.log(betas[k]) + (1 - (v + 1) / 2) * min_log
        pred_x0 = (x_t - math.sqrt(1 - abar[k]) * eps) / math.sqrt(abar[k])
        coef1 = betas[k] * math.sqrt(abar_prev[k]) / (1 - abar[k])
        coef2 = (1 - abar_prev[k]) * math.sqrt(1 - betas[k]) / (1 - abar[k])
        mean = coef1 * pred_x0 + coef2 * x_t
        if k == 0:  # decoder: -log P(bin of width w around x0), scipy's normal CDF
            sd = torch.exp(0.5 * log_var).detach().numpy()
            m, x = mean.detach().numpy(), x0[i:i + 1].numpy()
            prob = norm.cdf((x + bin_width / 2 - m) / sd) - norm.cdf((x - bin_width / 2 - m) / sd)
            nats = torch.tensor(-np.log(prob).mean())
        else:
            q = Normal(coef1 * x0[i:i + 1] + coef2 * x_t, math.sqrt(beta_tilde[k]))
            nats = kl_divergence(q, Normal(mean, torch.exp(0.5 * log_var))).mean()
        losses.append(steps * nats / math.log(2))
    return torch.stack(losses)


def test_kl_loss_equals_the_direct_computation_and_trains_the_mean():
    steps = 50
    diffusion = GaussianDiffusion(steps=steps, loss="kl", var_type="learned_range", mean_type="eps")
    g = torch.Generator().manual_seed(0)
    x0 = torch.randn(5, 2, 3, 3, generator=g, dtype=torch.float64).clamp(-1, 1)
    noise = torch.randn(x0.shape, generator=g, dtype=torch.float64)
    t = torch.tensor([0, 1, 7, 30, 49])
    model = LinearModel()
    terms = diffusion.training_losses(model, x0, t, noise=noise)
    expected = reference_kl_loss(model, x0, t, noise, steps)
    torch.testing.assert_close(terms["loss"], expected.detach(), rtol=1e-7, atol=1e-9)
    torch.testing.assert_close(terms["loss"], steps * terms["vb"])
    # nothing detached: the VLB trains the mean (a, b) too, with the reference's gradient (t > 0 terms)
    inner = slice(1, None)
    grad = torch.autograd.grad(terms["loss"][inner].sum(), [model.a, model.b])
    want = torch.autograd.grad(reference_kl_loss(model, x0[inner], t[inner], noise[inner], steps).sum(),
                               [model.a, model.b])
    for got, ref in zip(grad, want):
        assert float(got.abs()) > 0
        torch.testing.assert_close(got, ref)
    assert not terms["mse"].requires_grad


def test_kl_works_with_a_fixed_variance_and_refuses_a_vlb_weight():
    diffusion = GaussianDiffusion(steps=20, loss="kl", var_type="fixed_large")
    x0 = torch.zeros(2, 1, 2, 2)
    terms = diffusion.training_losses(lambda x, t: x * 0.5, x0, torch.tensor([3, 9]))
    assert torch.equal(terms["loss"], 20 * terms["vb"])
    with pytest.raises(ValueError, match="vlb_weight=0.01 weighs the VLB term of the hybrid loss, but loss='kl'"):
        GaussianDiffusion(loss="kl", vlb_weight=0.01)


def test_use_kl_flag_is_recorded_and_refused_against_another_loss(tmp_path, capsys):
    cfg = config(tmp_path, max_steps=2, use_kl=True)
    trainer = DiffusionTrainer(cfg, toy_latents(16))
    trainer.run()
    saved = json.loads((tmp_path / "run" / "diffusion.json").read_text())
    assert saved["loss"] == "kl" and saved["var_type"] == "learned_range"
    assert GaussianDiffusion.from_pretrained(tmp_path / "run").config.loss == "kl"
    assert DiffusionTrainConfig(use_kl=True, loss="kl").diffusion_config().loss == "kl"
    for argv, message in (
        (["--use-kl", "--loss", "mse"], "--use-kl trains the VLB alone (loss 'kl') but --loss is 'mse': give one of them"),
        (["--use-kl", "--vlb-weight", "0.01"], "vlb_weight=0.01 weighs the VLB term"),
    ):
        assert main(["--out", str(tmp_path / "x"), "--data", "x", *argv]) == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and message in err, err


# --------------------------------------------------------------------------------- loss-second-moment


def test_loss_second_moment_weights_after_warm_up_match_a_hand_computation():
    steps, history = 4, 10
    sampler = LossSecondMomentResampler(steps)
    losses = {k: [0.5 * (k + 1) + 0.1 * j for j in range(history + 3)] for k in range(steps)}  # 3 shifted out
    for j in range(history + 3):
        if j == history - 1:
            assert not sampler.warmed_up()
            assert torch.equal(sampler.weights(), torch.full((steps,), 0.25, dtype=torch.float64))
        sampler.update(torch.arange(steps), torch.tensor([losses[k][j] for k in range(steps)], dtype=torch.float64))
    assert sampler.warmed_up()
    # by hand: the last 10 losses of each step, their root mean square, normalised and mixed with 1/1000 uniform
    rms = np.array([math.sqrt(sum(v * v for v in losses[k][-history:]) / history) for k in range(steps)])
    expected = rms / rms.sum() * 0.999 + 0.001 / steps
    np.testing.assert_allclose(sampler.weights().numpy(), expected, rtol=1e-12)
    np.testing.assert_allclose(sampler.loss_history[2].numpy(), losses[2][-history:], rtol=1e-15)

    torch.manual_seed(0)
    t, weights = sampler.sample(20000, "cpu")
    np.testing.assert_allclose(weights.double().numpy(), 1 / (steps * expected[t.numpy()]), rtol=1e-6)
    frequencies = np.bincount(t.numpy(), minlength=steps) / t.numel()
    np.testing.assert_allclose(frequencies, expected, atol=0.015)


def test_uniform_sampler_and_names():
    t, weights = UniformSampler(7).sample(5, "cpu")
    assert t.dtype == torch.long and int(t.max()) < 7 and torch.equal(weights, torch.ones(5))
    assert isinstance(schedule_sampler("loss-second-moment", 10), LossSecondMomentResampler)
    with pytest.raises(ValueError, match=r"unknown schedule sampler 'importance'; expected one of \['uniform', "
                                         r"'loss-second-moment'\]"):
        schedule_sampler("importance", 10)


def test_loss_second_moment_run_resumes_bit_exactly(tmp_path):
    """Warm-up reached on the way (T = 4, history 10): a split run's sampler state, weights and optimizer equal
    the uninterrupted run's."""
    data = toy_latents(16)
    common = {"diffusion_steps": 4, "schedule_sampler": "loss-second-moment", "batch_size": 8, "save_every": 5,
              "p_uncond": 0.3}
    straight = DiffusionTrainer(config(tmp_path, "straight", max_steps=10, **common), data)
    straight.run()
    assert straight.schedule_sampler.warmed_up()
    DiffusionTrainer(config(tmp_path, "split", max_steps=5, **common), data).run()
    resumed = DiffusionTrainer(config(tmp_path, "split", max_steps=10, resume=True, **common), data)
    assert resumed.step == 5 and 0 < int(resumed.schedule_sampler.loss_counts.sum()) < 40
    resumed.run()
    a, b = straight.state_dict(), resumed.state_dict()
    for key in ("loss_history", "loss_counts"):
        assert torch.equal(a["schedule_sampler_state"][key], b["schedule_sampler_state"][key])
    for key in ("model", "ema"):
        for name in a[key]:
            assert torch.equal(a[key][name], b[key][name]), (key, name)
    with pytest.raises(ValueError, match="schedule_sampler"):
        DiffusionTrainer(config(tmp_path, "split", max_steps=12, resume=True,
                                **{**common, "schedule_sampler": "uniform"}), data)


def _ddp_worker(rank: int, port: int, out: str, dump: str) -> None:
    import os

    import torch.distributed as dist

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE="2", LOCAL_RANK=str(rank))
    torch.set_num_threads(1)
    cfg = config(Path(out), max_steps=6, diffusion_steps=3, schedule_sampler="loss-second-moment", batch_size=4)
    trainer = DiffusionTrainer(cfg, toy_latents(16))
    trainer.run()
    torch.save({**trainer.schedule_sampler.state_dict(), "model": trainer.model.state_dict()},
               os.path.join(dump, f"rank{rank}.pt"))
    dist.destroy_process_group()


def test_two_processes_share_one_loss_history(tmp_path):
    """Each rank records every rank's (t, loss) pairs: the histories are identical and hold 2 x 4 x 6 losses."""
    import socket

    import torch.multiprocessing as mp

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    mp.spawn(_ddp_worker, args=(port, str(tmp_path), str(tmp_path)), nprocs=2, join=True)
    a, b = (torch.load(tmp_path / f"rank{r}.pt") for r in range(2))
    assert torch.equal(a["loss_history"], b["loss_history"]) and torch.equal(a["loss_counts"], b["loss_counts"])
    assert int(a["loss_counts"].sum()) == min(2 * 4 * 6, 3 * 10)
    for name, value in a["model"].items():
        assert torch.equal(value, b["model"][name]), name
