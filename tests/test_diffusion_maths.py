"""Diffusion maths: forward process, posterior, likelihood terms, losses, and single sampling steps
against direct computation, scipy integration and diffusers' schedulers."""

from __future__ import annotations

import math

import pytest
import torch

from movq.diffusion import GaussianDiffusion
from movq.diffusion.losses import discretized_gaussian_log_likelihood, normal_kl

integrate = pytest.importorskip("scipy.integrate")
stats = pytest.importorskip("scipy.stats")


def data(batch=4, seed=0, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(batch, 3, 4, 4, generator=g, dtype=dtype), torch.randn(
        batch, 3, 4, 4, generator=g, dtype=dtype
    )


# --------------------------------------------------------------------------------- forward process


def test_q_sample_matches_direct_product_of_alphas():
    d = GaussianDiffusion(steps=200, schedule="linear", var_type="fixed_small")
    x0, noise = data()
    t = torch.tensor([0, 17, 150, 199])
    x_t = d.q_sample(x0, t, noise)
    for i, step in enumerate(t.tolist()):
        abar = math.prod(1.0 - b for b in d.betas[: step + 1].tolist())
        torch.testing.assert_close(x_t[i], math.sqrt(abar) * x0[i] + math.sqrt(1 - abar) * noise[i])


def test_posterior_mean_variance_match_bayes_rule():
    # q(x_{t-1} | x_t, x0) ∝ N(x_t; sqrt(a_t) x_{t-1}, b_t) N(x_{t-1}; sqrt(abar_{t-1}) x0, 1 - abar_{t-1})
    d = GaussianDiffusion(steps=100)
    x0, x_t = data()
    t = torch.tensor([1, 2, 50, 99])
    mean, var, log_var = d.q_posterior_mean_variance(x0, x_t, t)
    for i, step in enumerate(t.tolist()):
        beta, abar_prev = d.betas[step].item(), d.alphas_cumprod[step - 1].item()
        precision = 1 / (1 - abar_prev) + (1 - beta) / beta
        expected_mean = (
            math.sqrt(abar_prev) * x0[i] / (1 - abar_prev) + math.sqrt(1 - beta) * x_t[i] / beta
        ) / precision
        torch.testing.assert_close(mean[i], expected_mean)
        torch.testing.assert_close(var[i], torch.full_like(x0[i], 1 / precision))
        torch.testing.assert_close(log_var[i], torch.full_like(x0[i], math.log(1 / precision)))
    # at t = 0 the posterior is the point x0; its log variance is clipped to the t = 1 value
    mean0, var0, log_var0 = d.q_posterior_mean_variance(x0, x_t, torch.zeros(4, dtype=torch.long))
    torch.testing.assert_close(mean0, x0)
    assert float(var0.abs().max()) == 0.0
    torch.testing.assert_close(log_var0, log_var[0:1].expand_as(log_var0))


@pytest.mark.parametrize("mean_type", ["eps", "x0", "v"])
def test_parameterisations_round_trip(mean_type):
    d = GaussianDiffusion(steps=100, mean_type=mean_type, var_type="fixed_small")
    x0, noise = data()
    t = torch.tensor([0, 10, 60, 99])
    x_t = d.q_sample(x0, t, noise)
    target = d.mse_target(x0, t, noise)
    torch.testing.assert_close(d.predict_x0(x_t, t, target), x0, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(d.predict_eps(x_t, t, x0), noise)


# --------------------------------------------------------------------------------- likelihood terms


@pytest.mark.parametrize(
    ("m1", "v1", "m2", "v2"), [(0.0, 1.0, 0.0, 1.0), (0.3, 0.5, -1.2, 2.0), (2.0, 0.01, 1.9, 0.04)]
)
def test_normal_kl_matches_numerical_integration(m1, v1, m2, v2):
    p, q = stats.norm(m1, math.sqrt(v1)), stats.norm(m2, math.sqrt(v2))
    lo, hi = m1 - 12 * math.sqrt(v1), m1 + 12 * math.sqrt(v1)
    expected, _ = integrate.quad(lambda x: p.pdf(x) * (p.logpdf(x) - q.logpdf(x)), lo, hi, limit=200)
    got = normal_kl(*(torch.tensor(v, dtype=torch.float64) for v in (m1, math.log(v1), m2, math.log(v2))))
    assert got.item() == pytest.approx(expected, rel=1e-7, abs=1e-10)


@pytest.mark.parametrize(
    ("x", "mean", "log_scale"), [(0.1, 0.0, -1.0), (0.5, 0.48, -5.0), (-0.3, 0.9, -3.0), (0.0, 0.0, 1.0)]
)
@pytest.mark.parametrize("width", [2 / 255, 0.1])
def test_discretized_log_likelihood_matches_integral_over_the_bin(x, mean, log_scale, width):
    scale = math.exp(log_scale)
    pdf = stats.norm(mean, scale).pdf
    expected, _ = integrate.quad(
        pdf, x - width / 2, x + width / 2, epsabs=0, epsrel=1e-12, points=[mean], limit=200
    )
    got = discretized_gaussian_log_likelihood(
        torch.tensor(x, dtype=torch.float64),
        torch.tensor(mean, dtype=torch.float64),
        torch.tensor(log_scale, dtype=torch.float64),
        bin_width=width,
    )
    assert got.item() == pytest.approx(math.log(expected), rel=1e-6, abs=1e-9)


def test_discretized_log_likelihood_open_edge_bins_and_far_tails():
    pdf = stats.norm(0.2, 0.3).pdf
    args = {
        "means": torch.tensor(0.2, dtype=torch.float64),
        "log_scales": torch.tensor(math.log(0.3), dtype=torch.float64),
    }
    low = discretized_gaussian_log_likelihood(torch.tensor(-1.0, dtype=torch.float64), bounds=(-1, 1), **args)
    high = discretized_gaussian_log_likelihood(torch.tensor(1.0, dtype=torch.float64), bounds=(-1, 1), **args)
    assert low.item() == pytest.approx(math.log(integrate.quad(pdf, -math.inf, -1 + 1 / 255)[0]), rel=1e-6)
    assert high.item() == pytest.approx(math.log(integrate.quad(pdf, 1 - 1 / 255, math.inf)[0]), rel=1e-6)
    # 40 standard deviations out the probability underflows a subtraction of CDFs but not log_ndtr
    far = discretized_gaussian_log_likelihood(
        torch.tensor(0.0), torch.tensor(4.0), torch.tensor(math.log(0.1))
    )
    approx = stats.norm(4.0, 0.1).logpdf(0.0) + math.log(2 / 255)
    assert torch.isfinite(far) and far.item() == pytest.approx(approx, rel=1e-3)
    with pytest.raises(ValueError, match="bin_width must be > 0"):
        discretized_gaussian_log_likelihood(torch.zeros(1), torch.zeros(1), torch.zeros(1), bin_width=0)


# --------------------------------------------------------------------------------- training losses


class Constant(torch.nn.Module):
    """A "model" whose output is one trainable tensor: lets a test read gradients per output channel."""

    def __init__(self, value):
        super().__init__()
        self.value = torch.nn.Parameter(value.clone())

    def forward(self, x, t):
        return self.value


def test_hybrid_loss_terms_and_stop_gradient_on_the_mean():
    d = GaussianDiffusion(steps=100)  # eps, learned_range, hybrid
    x0, noise = data(dtype=torch.float32)
    t = torch.tensor([0, 3, 50, 99])
    model = Constant(torch.randn(4, 6, 4, 4, generator=torch.Generator().manual_seed(5)) * 0.5)
    terms = d.training_losses(model, x0, t, noise=noise)
    assert set(terms) == {"mse", "vb", "loss"} and all(v.shape == (4,) for v in terms.values())
    torch.testing.assert_close(terms["mse"], ((model.value[:, :3] - noise) ** 2).mean(dim=(1, 2, 3)))
    torch.testing.assert_close(terms["loss"], terms["mse"] + 1e-3 * 100 * terms["vb"])
    terms["vb"].sum().backward()
    grad = model.value.grad
    assert float(grad[:, :3].abs().max()) == 0.0, "the VLB term must not train the mean"
    assert float(grad[:, 3:].abs().min(dim=1).values.max()) > 0.0


def test_vb_term_is_decoder_nll_at_t0_and_kl_elsewhere():
    d = GaussianDiffusion(steps=100, bin_width=0.05)
    x0, noise = data()
    t = torch.tensor([0, 0, 7, 99])
    x_t = d.q_sample(x0, t, noise)
    output = torch.cat([noise * 0.9, torch.zeros_like(noise)], dim=1)
    vb = d.vb_terms_bits(output, x0, x_t, t)
    p = d.p_mean_variance(output, x_t, t)
    nll = -discretized_gaussian_log_likelihood(x0, p["mean"], 0.5 * p["log_variance"], bin_width=0.05)
    true_mean, _, true_log_var = d.q_posterior_mean_variance(x0, x_t, t)
    kl = normal_kl(true_mean, true_log_var, p["mean"], p["log_variance"])
    torch.testing.assert_close(vb[:2], nll[:2].mean(dim=(1, 2, 3)) / math.log(2))
    torch.testing.assert_close(vb[2:], kl[2:].mean(dim=(1, 2, 3)) / math.log(2))


def test_learned_range_interpolates_between_beta_tilde_and_beta():
    d = GaussianDiffusion(steps=100)
    x_t = torch.zeros(3, 2, 1, 1, dtype=torch.float64)
    t = torch.tensor([1, 40, 99])
    for value, expected in ((-1.0, d.posterior_log_variance_clipped[t]), (1.0, d.betas[t].log())):
        out = torch.cat([torch.zeros_like(x_t), torch.full_like(x_t, value)], dim=1)
        torch.testing.assert_close(d.p_mean_variance(out, x_t, t)["log_variance"][:, 0, 0, 0], expected)
    out = torch.zeros(3, 4, 1, 1, dtype=torch.float64)
    mid = (d.posterior_log_variance_clipped[t] + d.betas[t].log()) / 2
    torch.testing.assert_close(d.p_mean_variance(out, x_t, t)["log_variance"][:, 0, 0, 0], mid)


# --------------------------------------------------------------------------------- steps vs diffusers

PREDICTION = {"eps": "epsilon", "x0": "sample", "v": "v_prediction"}


def diffusers_scheduler(name: str, schedule: str, mean_type: str, pixels: bool = False, **kwargs):
    """diffusers' ``DDPMScheduler`` / ``DDIMScheduler`` over 1000 steps, without x0 clipping (latents) or
    clipping x0 to [-1, 1] (``pixels``: improved DDPM's pixel-space sampling)."""
    diffusers = pytest.importorskip("diffusers")
    return getattr(diffusers, name)(
        num_train_timesteps=1000,
        beta_schedule=schedule,
        prediction_type=PREDICTION[mean_type],
        clip_sample=pixels,
        clip_sample_range=1.0,
        **kwargs,
    )


PIXELS = {"bounds": (-1.0, 1.0)}
"""The diffusion settings of ``movq-diffusion-train --pixels`` (sampled with ``clip_denoised=1``)."""


@pytest.mark.parametrize(
    ("mean_type", "var_type"),
    [("eps", "fixed_small"), ("v", "fixed_small"), ("x0", "fixed_large"), ("eps", "learned_range")],
)
@pytest.mark.parametrize(("respaced", "pixels"), [(False, False), (True, False), (False, True), (True, True)])
def test_ancestral_step_matches_diffusers_ddpm_scheduler(mean_type, var_type, respaced, pixels):
    scheduler = diffusers_scheduler("DDPMScheduler", "squaredcos_cap_v2", mean_type, pixels, variance_type=var_type)
    d = GaussianDiffusion(steps=1000, mean_type=mean_type, var_type=var_type, **(PIXELS if pixels else {}))
    clip = 1.0 if pixels else None
    if respaced:  # diffusers' 50 "leading" inference steps are 0, 20, ..., 980
        scheduler.set_timesteps(50)
        d = d.respace(list(range(0, 1000, 20)))
    x_t, eps = data(batch=1, seed=3, dtype=torch.float32)
    output = torch.cat([eps, torch.rand_like(eps) * 2 - 1], dim=1) if var_type == "learned_range" else eps
    for base_step in (980, 500, 20):
        index = int((d.timestep_map == base_step).nonzero())
        theirs = scheduler.step(
            output, base_step, x_t, generator=torch.Generator().manual_seed(7)
        ).prev_sample
        ours, _ = d.p_step(output, x_t, torch.tensor([index]), clip_denoised=clip,
                           generator=torch.Generator().manual_seed(7))
        torch.testing.assert_close(ours, theirs, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("mean_type", ["eps", "v"])
@pytest.mark.parametrize("pixels", [False, True])
def test_ddim_step_with_eta_0_matches_diffusers_ddim_scheduler(mean_type, pixels):
    scheduler = diffusers_scheduler("DDIMScheduler", "linear", mean_type, pixels)
    scheduler.set_timesteps(50)
    d = GaussianDiffusion(steps=1000, schedule="linear", mean_type=mean_type, var_type="fixed_small",
                          **(PIXELS if pixels else {})).respace(list(range(0, 1000, 20)))
    x_t, output = data(batch=2, seed=4, dtype=torch.float32)
    if pixels:  # x0 predictions outside [-1, 1], so the clip changes the step
        x_t = x_t * 3
    for index, base_step in ((49, 980), (25, 500), (0, 0)):
        # eps re-derived from the clipped x0, as improved-diffusion's ddim_sample does
        theirs = scheduler.step(output, base_step, x_t, eta=0.0, use_clipped_model_output=True).prev_sample
        ours, _ = d.ddim_step(output, x_t, torch.full((2,), index), eta=0.0, clip_denoised=1.0 if pixels else None)
        torch.testing.assert_close(ours, theirs, rtol=1e-4, atol=1e-5)
        if pixels:
            assert not torch.allclose(ours, d.ddim_step(output, x_t, torch.full((2,), index))[0], atol=1e-3)


# --------------------------------------------------------------------------------- sampling loops


def oracle(d: GaussianDiffusion, x0: torch.Tensor, learned: bool):
    """The ideal model for a data set of one point ``x0``: it returns the exact eps / x0 / v target."""
    base = GaussianDiffusion(**{**d.config.to_dict(), "timesteps": None})

    def model(x_t, t_base):
        abar = base.alphas_cumprod[t_base.cpu()].to(x_t.dtype).view(-1, 1, 1, 1)
        noise = (x_t - abar.sqrt() * x0) / (1 - abar).sqrt()
        target = {"eps": noise, "x0": x0.expand_as(x_t), "v": abar.sqrt() * noise - (1 - abar).sqrt() * x0}[
            d.config.mean_type
        ]
        return torch.cat([target, torch.zeros_like(target)], dim=1) if learned else target

    return model


@pytest.mark.parametrize("mean_type", ["eps", "x0", "v"])
@pytest.mark.parametrize(("sampler", "eta"), [("ddpm", 0.0), ("ddim", 0.0), ("ddim", 1.0)])
def test_oracle_model_samples_its_data_point_back(mean_type, sampler, eta):
    d = GaussianDiffusion(steps=200, mean_type=mean_type).respace(20)
    x0 = data(batch=1, seed=9)[0]
    samples = d.sample(
        oracle(d, x0, learned=True),
        (3, 3, 4, 4),
        sampler=sampler,
        eta=eta,
        generator=torch.Generator().manual_seed(0),
        noise=torch.randn(3, 3, 4, 4, dtype=torch.float64),
    )
    torch.testing.assert_close(samples, x0.expand(3, -1, -1, -1), rtol=1e-6, atol=1e-6)


def test_ddim_with_eta_0_is_deterministic_and_ddpm_follows_the_generator():
    d = GaussianDiffusion(steps=100, var_type="fixed_small").respace(10)

    def model(x, t):
        return torch.tanh(x) * (t.view(-1, 1, 1, 1) / 100.0)

    noise = torch.randn(2, 3, 4, 4)
    a = d.sample(model, noise.shape, sampler="ddim", noise=noise, generator=torch.Generator().manual_seed(1))
    b = d.sample(model, noise.shape, sampler="ddim", noise=noise, generator=torch.Generator().manual_seed(2))
    assert torch.equal(a, b)
    assert torch.equal(
        a, d.sample(model, noise.shape, sampler="ddim", noise=noise, progress=True)
    )  # tqdm bar
    c = d.sample(model, noise.shape, sampler="ddpm", generator=torch.Generator().manual_seed(1))
    e = d.sample(model, noise.shape, sampler="ddpm", generator=torch.Generator().manual_seed(1))
    f = d.sample(model, noise.shape, sampler="ddpm", generator=torch.Generator().manual_seed(2))
    assert torch.equal(c, e) and not torch.equal(c, f)


# --------------------------------------------------------------------------------- bad input


def test_bad_inputs_raise_clear_errors_before_any_work():
    d = GaussianDiffusion(steps=100)
    x0 = torch.zeros(2, 4, 8, 8)
    calls = []

    def model(x, t):
        calls.append(1)
        return torch.zeros(2, 8, 8, 8)

    with pytest.raises(ValueError, match=r"t must be in \[0, 100\), got values in \[0, 100\]"):
        d.training_losses(model, x0, torch.tensor([0, 100]))
    with pytest.raises(ValueError, match=r"t must be in \[0, 100\)"):
        d.q_sample(x0, torch.tensor([-1, 3]))
    with pytest.raises(TypeError, match="t must be an integer tensor"):
        d.q_sample(x0, torch.tensor([0.5, 3.0]))
    with pytest.raises(ValueError, match=r"t must have shape \[B\] = \[2\]"):
        d.q_sample(x0, torch.tensor([1, 2, 3]))
    with pytest.raises(ValueError, match="x0 must be a float tensor"):
        d.q_sample(torch.zeros(2, 4, 8, 8, dtype=torch.long), torch.tensor([1, 2]))
    with pytest.raises(ValueError, match="noise must have x0's shape"):
        d.q_sample(x0, torch.tensor([1, 2]), torch.zeros(2, 4, 4, 4))
    assert not calls
    with pytest.raises(
        ValueError, match=r"model output must have shape \(2, 8, 8, 8\) for var_type='learned_range'"
    ):
        d.training_losses(lambda x, t: torch.zeros(2, 4, 8, 8), x0, torch.tensor([1, 2]))
    with pytest.raises(ValueError, match="unknown sampler 'euler'"):
        d.sample(model, (2, 4, 8, 8), sampler="euler")
    with pytest.raises(ValueError, match="eta is a DDIM setting"):
        d.sample(model, (2, 4, 8, 8), eta=0.5)
    assert not calls
