"""Noise schedules and respacing: closed forms, diffusers' betas, alpha_bar kept at kept steps."""

from __future__ import annotations

import math

import pytest
import torch

from movq.diffusion import GaussianDiffusion
from movq.diffusion.schedules import space_timesteps


def cosine_alpha_bar(t: float, steps: int, s: float = 0.008) -> float:
    return math.cos(((t / steps + s) / (1 + s)) * math.pi / 2) ** 2


@pytest.mark.parametrize("steps", [50, 1000, 4000])
def test_cosine_schedule_follows_closed_form_alpha_bar(steps):
    d = GaussianDiffusion(steps=steps, schedule="cosine")
    assert d.betas.dtype == d.alphas_cumprod.dtype == torch.float64
    assert d.betas.shape == d.alphas_cumprod.shape == (steps,)
    # alphas_cumprod[i] = alpha_bar(i + 1) / alpha_bar(0) wherever no beta was clipped
    expected = torch.tensor(
        [cosine_alpha_bar(i + 1, steps) / cosine_alpha_bar(0, steps) for i in range(steps)],
        dtype=torch.float64,
    )
    torch.testing.assert_close(d.alphas_cumprod[:-1], expected[:-1], rtol=1e-10, atol=1e-14)
    # the last beta would be 1 (alpha_bar(T) = 0): clipped at 0.999
    assert d.betas[-1].item() == pytest.approx(0.999)
    assert d.betas.max().item() <= 0.999 and d.betas.min().item() > 0


@pytest.mark.parametrize("steps", [1000, 500, 4000])
def test_linear_schedule_is_scaled_by_1000_over_T(steps):
    betas = GaussianDiffusion(steps=steps, schedule="linear", var_type="fixed_small").betas
    scale = 1000 / steps
    assert betas[0].item() == pytest.approx(scale * 1e-4)
    assert betas[-1].item() == pytest.approx(scale * 0.02)
    torch.testing.assert_close(
        betas.diff(), torch.full((steps - 1,), scale * (0.02 - 1e-4) / (steps - 1), dtype=torch.float64)
    )


@pytest.mark.parametrize(("ours", "theirs"), [("cosine", "squaredcos_cap_v2"), ("linear", "linear")])
def test_betas_match_diffusers_ddpm_scheduler(ours, theirs):
    diffusers = pytest.importorskip("diffusers")
    scheduler = diffusers.DDPMScheduler(num_train_timesteps=1000, beta_schedule=theirs)
    d = GaussianDiffusion(steps=1000, schedule=ours)
    torch.testing.assert_close(d.betas.float(), scheduler.betas, rtol=1e-5, atol=1e-7)
    torch.testing.assert_close(d.alphas_cumprod.float(), scheduler.alphas_cumprod, rtol=1e-4, atol=1e-7)


@pytest.mark.parametrize("count", [2, 10, 50, 100, 1000])
def test_respaced_alpha_bar_equals_original_at_kept_steps(count):
    base = GaussianDiffusion(steps=1000)
    spaced = base.respace(count)
    assert spaced.num_timesteps == count == len(spaced.timestep_map)
    kept = spaced.timestep_map
    assert kept[0] == 0 and kept[-1] == 999 and bool((kept.diff() > 0).all())
    torch.testing.assert_close(spaced.alphas_cumprod, base.alphas_cumprod[kept], rtol=1e-10, atol=1e-15)
    assert spaced.config.timesteps == kept.tolist()


def test_respace_explicit_steps_and_respace_of_respaced():
    base = GaussianDiffusion(steps=1000)
    ddim = base.respace(list(range(0, 1000, 20)))
    assert ddim.timestep_map.tolist() == list(range(0, 1000, 20))
    twice = ddim.respace(10)  # indices into the 50 kept steps map back to base steps
    assert twice.timestep_map.tolist() == [ddim.timestep_map[i].item() for i in space_timesteps(50, 10)]
    torch.testing.assert_close(twice.alphas_cumprod, base.alphas_cumprod[twice.timestep_map])
    assert space_timesteps(1000, 50)[:3] == [0, 20, 41]


def test_unknown_schedule_and_bad_settings_raise_clear_errors():
    with pytest.raises(ValueError, match=r"field 'schedule': expected one of \['cosine', 'linear'\], got 'sigmoid'"):
        GaussianDiffusion(schedule="sigmoid")
    with pytest.raises(ValueError, match=r"field 'mean_type': expected one of \['eps', 'x0', 'v'\], got 'epsilon'"):
        GaussianDiffusion(mean_type="epsilon")
    with pytest.raises(ValueError, match=r"field 'var_type': expected one of \['learned_range', 'fixed_small', 'fixed_large'\], got 'learned'"):
        GaussianDiffusion(var_type="learned")
    with pytest.raises(ValueError, match=r"field 'steps': expected an int in \[2, 100000\], got 1"):
        GaussianDiffusion(steps=1)
    with pytest.raises(ValueError, match="linear schedule needs steps >= 21"):
        GaussianDiffusion(steps=10, schedule="linear", var_type="fixed_large")
    with pytest.raises(ValueError, match="learned_range.*hybrid"):
        GaussianDiffusion(var_type="learned_range", loss="mse")
    with pytest.raises(ValueError, match="fixed"):
        GaussianDiffusion(var_type="fixed_small", loss="hybrid")
    with pytest.raises(ValueError, match="cannot keep 1001 of 1000 steps"):
        GaussianDiffusion().respace(1001)
    with pytest.raises(ValueError, match="strictly increasing"):
        GaussianDiffusion().respace([0, 5, 5, 9])
    with pytest.raises(ValueError, match="strictly increasing"):
        GaussianDiffusion(steps=100).respace([0, 100])


def test_loss_default_follows_variance_type():
    assert GaussianDiffusion().config.loss == "hybrid"
    assert GaussianDiffusion(var_type="fixed_large").config.loss == "mse"
