"""Hostile arguments and releases for the generators (issue #25): diffusion and t2i sampling refuse NaN / inf
noise, conditioning, guidance, eta and timesteps, temperatures that overflow the logits, labels that are
not ints in ``[0, num_classes)``, non-integer or oversized sizes and step counts; t2i and UNet releases
with NaN / inf weights and models beyond the machine's memory are refused, naming the file or the config.
"""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import load_file, save_file

import movq
from helpers import t2i_captions as captions
from helpers import tiny_t2i as make_model
from helpers import tiny_unet
from movq.diffusion import ClassifierFreeGuidance, GaussianDiffusion, UNet, UNetConfig, generate
from movq.t2i import T2IConfig, T2ITransformer

pytestmark = pytest.mark.usefixtures("one_thread")


# --------------------------------------------------------------------------------- diffusion sampling


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"guidance_scale": float("nan")}, "guidance_scale must be a finite number, got nan"),
        ({"guidance_scale": float("inf")}, "guidance_scale must be a finite number, got inf"),
        ({"guidance_scale": True}, "guidance_scale must be a finite number, got True"),
        ({"sampler": "ddim", "eta": float("inf")}, "eta must be a finite number, got inf"),
        ({"sampler": "ddim", "eta": float("nan")}, "eta must be a finite number, got nan"),
        ({"clip_denoised": float("nan")}, "clip_denoised must be a finite number or null, got nan"),
        ({"noise": torch.full((1, 4, 4, 4), float("nan"))}, "noise contains NaN or inf values"),
        ({"noise": torch.full((1, 4, 4, 4), float("inf"))}, "noise contains NaN or inf values"),
    ],
)
def test_sample_refuses_non_finite_arguments(kwargs, message):
    model, diffusion = tiny_unet(num_classes=2), GaussianDiffusion(steps=10)
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        diffusion.sample(model, (1, 4, 4, 4), **kwargs)


@pytest.mark.parametrize(
    ("shape", "message"),
    [((1.5, 4, 4, 4), r"shape\[0\] must be an int"), ((True, 4, 4, 4), r"shape\[0\] must be an int"),
     ((1, 4, "4", 4), r"shape\[2\] must be an int"), ((0, 4, 4, 4), r"shape\[0\] must be an int >= 1")],
)
def test_sample_refuses_non_integer_sizes(shape, message):
    with pytest.raises(ValueError, match=message):
        GaussianDiffusion(steps=10).sample(tiny_unet(), shape)


def test_sample_refuses_a_shape_beyond_memory_before_allocating():
    from movq.memory_budget import MemoryBudgetError

    with pytest.raises(MemoryBudgetError, match=r"sampling latents of shape \[1, 4, 100000, 100000\] needs at least"):
        GaussianDiffusion(steps=10).sample(tiny_unet(), (1, 4, 100000, 100000))


def test_unet_refuses_a_non_finite_timestep():
    model = tiny_unet()
    for t in (float("nan"), torch.tensor([float("inf")])):
        with pytest.raises(ValueError, match="t must hold finite real timesteps"):
            model(torch.randn(1, 4, 4, 4), t)


def test_guidance_refuses_a_non_finite_scale():
    with pytest.raises(ValueError, match="guidance_scale must be a finite number, got nan"):
        ClassifierFreeGuidance(tiny_unet(num_classes=2), float("nan"), channels=4)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"labels": [1.5]}, r"labels\[0\] must be an int, got 1.5"),
        ({"labels": [0.7]}, r"labels\[0\] must be an int, got 0.7"),
        ({"labels": [True]}, r"labels\[0\] must be an int, got True"),
        ({"labels": ["1"]}, r"labels\[0\] must be an int, got '1'"),
        ({"labels": [2]}, r"labels\[0\] must be an int in \[0, 1\], got 2"),
        ({"labels": [-1]}, r"labels\[0\] must be an int in \[0, 1\], got -1"),
        ({"labels": torch.tensor([0.7])}, "labels must be an integer tensor"),
        ({"labels": [0], "cond": None, "latent_scale": float("inf")}, "latent_scale must be a finite number, got inf"),
        ({"num_samples": 1.0}, "num_samples must be an int or null, got 1.0"),
        ({"num_samples": True}, "num_samples must be an int or null, got True"),
        ({"labels": [0], "num_steps": 2.5}, "num_steps must be an int or null, got 2.5"),
        ({"labels": [0], "latent_size": 4.0}, "latent_size must be"),
        ({"labels": [0], "num_steps": None, "guidance_scale": float("nan")}, "guidance_scale must be a finite number"),
    ],
)
def test_generate_refuses_bad_labels_and_integer_arguments(kwargs, message):
    model = tiny_unet(num_classes=2)
    codec = movq.load("movqgan-tiny", pretrained=False)
    with pytest.raises(ValueError, match=message):
        generate(model, GaussianDiffusion(steps=10), codec, **kwargs)


def test_generate_refuses_non_finite_conditioning_vectors():
    model = tiny_unet(cond_dim=3)
    codec = movq.load("movqgan-tiny", pretrained=False)
    with pytest.raises(ValueError, match="cond contains NaN or inf values"):
        generate(model, GaussianDiffusion(steps=10), codec, cond=torch.full((1, 3), float("nan")))


def test_pipeline_refuses_more_class_names_than_classes_and_bad_labels():
    from movq.diffusion import LatentDiffusionPipeline

    model = tiny_unet(num_classes=2)
    with pytest.raises(ValueError, match="3 class names are given but the UNet has 2 classes"):
        LatentDiffusionPipeline(model, GaussianDiffusion(steps=10), None, labels=["a", "b", "c"])
    pipe = LatentDiffusionPipeline(model, GaussianDiffusion(steps=10), None, labels=["a", "b"])
    assert pipe.label_ids(["b", 0]).tolist() == [1, 0]
    with pytest.raises(ValueError, match=r"labels\[0\] must be an int, got 1.5"):
        pipe.label_ids([1.5])


def test_diffusion_steps_have_an_upper_bound():
    from movq.strict import ConfigError

    with pytest.raises(ConfigError, match=r"steps.*expected an int in \[2, 100000\], got 1000000000000"):
        GaussianDiffusion(steps=10**12)
    with pytest.raises(ValueError, match="steps must be an int N, .* or a list of step indices, got 2.5"):
        GaussianDiffusion(steps=10).respace(2.5)


# --------------------------------------------------------------------------------- t2i sampling


@pytest.mark.parametrize("temperature", [1e-300, 5e-324, 1e-7, float("inf"), True])
def test_temperatures_that_overflow_the_logits_are_refused(temperature):
    model = make_model()
    with pytest.raises(ValueError, match="temperature must be a finite number >= 0: 0 .greedy. or at least 1e-06"):
        model.generate(captions(model), temperature=temperature)


# --------------------------------------------------------------------------------- releases and model sizes


@pytest.mark.parametrize("value", [float("nan"), float("inf")])
def test_t2i_from_pretrained_refuses_non_finite_weights(tmp_path, value):
    make_model().save_pretrained(tmp_path)
    state = load_file(tmp_path / "model.safetensors")
    state["image_head.weight"][0, 0] = value
    save_file(state, tmp_path / "model.safetensors")
    with pytest.raises(ValueError, match=r"model.safetensors: the weights contain NaN or inf values in 1 tensor\(s\) "
                                         r"\['image_head.weight'\]"):
        T2ITransformer.from_pretrained(tmp_path)


def test_a_t2i_model_beyond_memory_is_refused_before_allocation():
    from movq.memory_budget import MemoryBudgetError

    with pytest.raises(MemoryBudgetError, match="T2ITransformer with text_vocab_size=10000000000.*needs at least"):
        T2ITransformer(T2IConfig(text_vocab_size=10**10))


@pytest.mark.parametrize("weights", ["model", "ema"])
def test_unet_loading_refuses_non_finite_weights(tmp_path, weights):
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
