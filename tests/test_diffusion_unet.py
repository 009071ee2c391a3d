"""The diffusion UNet: shapes, conditioning and its null condition, strict save / load with EMA
weights, and clear errors for bad input."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from movq.diffusion import GaussianDiffusion, UNet, UNetConfig
from movq.train.ema import ModelEMA


def tiny_config(**overrides) -> UNetConfig:
    values = {
        "channels": 32,
        "channel_mult": (1, 2),
        "num_res_blocks": 1,
        "sample_size": 8,
        "attention_resolutions": (4,),
        "head_channels": 32,
    }
    return UNetConfig(**{**values, **overrides})


def tiny_unet(seed: int = 0, **overrides) -> UNet:
    """A tiny UNet whose zero-initialised output layers are randomised, so outputs depend on inputs."""
    torch.manual_seed(seed)
    model = UNet(tiny_config(**overrides))
    with torch.no_grad():
        for param in model.parameters():
            if not param.any():
                param.normal_(0.0, 0.05)
    return model.eval()


def test_zero_initialised_output_and_shapes_at_other_sizes():
    model = UNet(tiny_config())
    x = torch.randn(2, 4, 8, 8)
    with torch.no_grad():
        assert float(model(x, torch.tensor([0, 999])).abs().max()) == 0.0
    model = tiny_unet()
    assert model(x, torch.tensor([0, 999])).shape == (2, 8, 8, 8)
    assert model(torch.randn(3, 4, 6, 10), torch.tensor(5)).shape == (3, 8, 6, 10)
    assert tiny_unet(learn_sigma=False)(x, torch.tensor([1, 2])).shape == (2, 4, 8, 8)
    assert tiny_unet(channel_mult=(1, 1, 2), sample_size=8, attention_resolutions=(8, 2))(
        x, torch.tensor([3, 4])
    ).shape == (2, 8, 8, 8)


def test_outputs_depend_on_time_and_rows_are_independent():
    model = tiny_unet()
    x = torch.randn(3, 4, 8, 8)
    with torch.no_grad():
        out = model(x, torch.tensor([10, 500, 900]))
        assert not torch.allclose(out[0], model(x[:1], torch.tensor([900]))[0])
        torch.testing.assert_close(out[1:2], model(x[1:2], torch.tensor([500])), rtol=1e-4, atol=1e-5)


def test_labels_and_null_label():
    model = tiny_unet(num_classes=3)
    x, t = torch.randn(2, 4, 8, 8), torch.tensor([100, 100])
    with torch.no_grad():
        a = model(x, t, y=torch.tensor([0, 1]))
        b = model(x, t, y=torch.tensor([2, 1]))
        null = model(x, t)
        assert not torch.allclose(a[0], b[0]) and torch.allclose(a[1], b[1])
        torch.testing.assert_close(null, model(x, t, y=torch.tensor([model.null_label] * 2)))
        masked = model(x, t, y=torch.tensor([0, 1]), uncond_mask=torch.tensor([True, False]))
        torch.testing.assert_close(masked[0], null[0])
        torch.testing.assert_close(masked[1], a[1])
    assert model.conditional and not tiny_unet().conditional


def test_conditioning_vector_and_its_learned_null():
    model = tiny_unet(cond_dim=16)
    x, t = torch.randn(2, 4, 8, 8), torch.tensor([7, 7])
    cond = torch.randn(2, 16)
    with torch.no_grad():
        out = model(x, t, cond=cond)
        null = model(x, t)
        masked = model(x, t, cond=cond, uncond_mask=torch.tensor([False, True]))
    assert not torch.allclose(out, null)
    torch.testing.assert_close(masked[0], out[0])
    torch.testing.assert_close(masked[1], null[1])
    assert model.null_cond.requires_grad


def test_bad_inputs_raise_clear_errors():
    model = tiny_unet(num_classes=3)
    x, t = torch.randn(2, 4, 8, 8), torch.tensor([1, 2])
    with pytest.raises(ValueError, match=r"x must have 4 latent channels, got shape \(2, 3, 8, 8\)"):
        model(torch.randn(2, 3, 8, 8), t)
    with pytest.raises(ValueError, match="latent sides must be multiples of 2"):
        model(torch.randn(2, 4, 7, 8), t)
    with pytest.raises(ValueError, match="x must be a float tensor"):
        model(torch.zeros(2, 4, 8, 8, dtype=torch.long), t)
    with pytest.raises(ValueError, match=r"t must be a scalar or have shape \[2\]"):
        model(x, torch.tensor([1, 2, 3]))
    with pytest.raises(ValueError, match=r"labels must be in \[0, 3\)"):
        model(x, t, y=torch.tensor([0, 4]))
    with pytest.raises(ValueError, match="y must be an integer tensor"):
        model(x, t, y=torch.tensor([0.0, 1.0]))
    with pytest.raises(ValueError, match="y must be an integer tensor"):  # True is not class 1
        model(x, t, y=torch.tensor([True, False]))
    with pytest.raises(ValueError, match="takes no conditioning vector"):
        model(x, t, cond=torch.randn(2, 8))
    with pytest.raises(ValueError, match="uncond_mask must be a bool tensor"):
        model(x, t, uncond_mask=torch.tensor([0, 1]))
    with pytest.raises(ValueError, match="has no class labels"):
        tiny_unet()(x, t, y=torch.tensor([0, 1]))
    with pytest.raises(ValueError, match=r"cond must be a float tensor \[2, 16\]"):
        tiny_unet(cond_dim=16)(x, t, cond=torch.randn(2, 15))


def test_config_errors_name_the_problem():
    with pytest.raises(
        ValueError, match=r"attention_resolutions \[3\] match no level; level sides at sample_size: \[8, 4\]"
    ):
        tiny_config(attention_resolutions=(3,))
    with pytest.raises(ValueError, match="multiples of 32"):
        tiny_config(channels=48)
    with pytest.raises(ValueError, match="head_channels 64 must divide"):
        tiny_config(channels=32, channel_mult=(1, 3), head_channels=64)
    with pytest.raises(ValueError, match="sample_size must be a multiple of 2"):
        tiny_config(sample_size=7, attention_resolutions=())
    with pytest.raises(ValueError, match=r"unknown UNetConfig fields \['use_fp16'\]"):
        UNetConfig.from_dict({**tiny_config().to_dict(), "use_fp16": True})


def test_save_load_round_trip_with_ema_weights(tmp_path):
    model = tiny_unet(num_classes=3, cond_dim=8)
    ema = ModelEMA(model, decay=0.5)
    with torch.no_grad():
        for param in model.parameters():
            param.add_(0.1)
    ema.update(model)
    model.save_pretrained(tmp_path, ema=ema)
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "config.json",
        "ema.safetensors",
        "model.safetensors",
    ]
    x, t, y = torch.randn(2, 4, 8, 8), torch.tensor([3, 600]), torch.tensor([0, 2])
    raw = UNet.from_pretrained(tmp_path, weights="model")
    averaged = UNet.from_pretrained(tmp_path)  # "auto": the EMA weights when present
    assert not averaged.training and raw.config == model.config
    with torch.no_grad():
        assert torch.equal(raw(x, t, y=y), model.eval()(x, t, y=y))
        assert torch.equal(averaged(x, t, y=y), ema.module(x, t, y=y))
    for key, value in ema.module.state_dict().items():
        assert torch.equal(averaged.state_dict()[key], value)

    model.save_pretrained(tmp_path)  # without EMA: a stale ema.safetensors must not survive
    assert not (tmp_path / "ema.safetensors").exists()
    with pytest.raises(FileNotFoundError, match="ema.safetensors not found"):
        UNet.from_pretrained(tmp_path, weights="ema")
    with pytest.raises(ValueError, match="weights must be one of"):
        UNet.from_pretrained(tmp_path, weights="best")


def test_loading_is_strict(tmp_path):
    model = tiny_unet()
    model.save_pretrained(tmp_path)
    state = load_file(tmp_path / "model.safetensors")
    state.pop("out.2.bias")
    state["extra.weight"] = torch.zeros(1)
    save_file(state, tmp_path / "model.safetensors")
    with pytest.raises(
        ValueError, match=r"missing keys \['out.2.bias'\].*unexpected keys \['extra.weight'\]"
    ):
        UNet.from_pretrained(tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    (tmp_path / "config.json").write_text(json.dumps({**config, "depth": 3}))
    with pytest.raises(ValueError, match=r"unknown UNetConfig fields \['depth'\]"):
        UNet.from_pretrained(tmp_path)
    with pytest.raises(ValueError, match="ema weights do not match"):
        model.save_pretrained(tmp_path / "other", ema=tiny_unet(num_classes=2))
    with pytest.raises(FileNotFoundError, match="config.json not found"):
        UNet.from_pretrained(tmp_path / "missing")


def test_diffusion_settings_round_trip(tmp_path):
    diffusion = GaussianDiffusion(
        steps=500, schedule="linear", mean_type="v", var_type="learned_range", bin_width=0.05
    )
    diffusion.save_pretrained(tmp_path)
    loaded = GaussianDiffusion.from_pretrained(tmp_path)
    assert loaded.config == diffusion.config
    assert torch.equal(loaded.betas, diffusion.betas)
    spaced = GaussianDiffusion.from_dict(diffusion.respace(25).to_dict())
    assert torch.equal(spaced.timestep_map, diffusion.respace(25).timestep_map)
    (tmp_path / "diffusion.json").write_text(json.dumps({**diffusion.to_dict(), "rescale_timesteps": True}))
    with pytest.raises(ValueError, match="unknown DiffusionConfig fields"):
        GaussianDiffusion.from_pretrained(tmp_path)


def test_imports_stay_light():
    code = (
        "import sys, movq\n"
        "assert 'movq.diffusion' not in sys.modules\n"
        "import movq.diffusion\n"
        "print(sorted(m for m in ('diffusers', 'scipy', 'movq.train', 'movq.metrics') if m in sys.modules))"
    )
    src = str(Path(__file__).resolve().parents[1] / "src")  # this checkout, not an installed movq
    env = {**os.environ, "PYTHONPATH": src + os.pathsep + os.environ.get("PYTHONPATH", "")}
    result = subprocess.run(
        [sys.executable, "-c", code], check=False, capture_output=True, text=True, timeout=120, env=env
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


@pytest.mark.parametrize("weights", ["model", "ema"])
def test_loading_refuses_non_finite_weights(tmp_path, weights):
    model = tiny_unet(num_classes=2)
    model.save_pretrained(tmp_path, ema=tiny_unet(num_classes=2))
    path = tmp_path / f"{weights}.safetensors"
    state = load_file(path)
    name = next(iter(state))
    state[name] = torch.full_like(state[name], float("nan"))
    save_file(state, path)
    with pytest.raises(ValueError, match=rf"{weights}.safetensors: the weights contain NaN or inf values .*{name}"):
        UNet.from_pretrained(tmp_path, weights=weights)


def test_a_unet_too_large_for_memory_is_refused_before_allocating():
    """Its parameters are counted on the meta device first (movq.memory_budget.check_parameters_fit):
    a MemoryBudgetError naming the config, not the allocator's raw error after minutes of work."""
    from movq.memory_budget import MemoryBudgetError

    with pytest.raises(MemoryBudgetError, match=r"a UNet with channels=65536.*needs at least .* GiB"):
        UNet(UNetConfig(channels=2**16))
