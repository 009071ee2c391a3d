"""Sampling: classifier-free guidance, conditioning dropout, a tiny model that overfits one
latent per class and samples it back, and the end-to-end path to images through a codec."""

from __future__ import annotations

import pytest
import torch

import movq
from movq.diffusion import (
    ClassifierFreeGuidance,
    GaussianDiffusion,
    UNet,
    UNetConfig,
    drop_conditions,
    generate,
)


def tiny_unet(seed: int = 0, **overrides) -> UNet:
    torch.manual_seed(seed)
    values = {
        "channels": 32,
        "channel_mult": (1,),
        "num_res_blocks": 1,
        "sample_size": 4,
        "attention_resolutions": (4,),
        "head_channels": 32,
    }
    model = UNet(UNetConfig(**{**values, **overrides}))
    with torch.no_grad():  # randomise the zero-initialised output layers
        for param in model.parameters():
            if not param.any():
                param.normal_(0.0, 0.05)
    return model.eval()


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Tiny tensors: one thread avoids oversubscribing a shared CPU."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


# --------------------------------------------------------------------------------- guidance


def test_guidance_at_scale_1_equals_the_conditional_model_and_combines_linearly():
    model = tiny_unet(num_classes=3)
    x, t, y = torch.randn(2, 4, 4, 4), torch.tensor([10, 900]), torch.tensor([0, 2])
    with torch.no_grad():
        cond = model(x, t, y=y)
        uncond = model(x, t)
        torch.testing.assert_close(
            ClassifierFreeGuidance(model, 1.0, channels=4)(x, t, y=y), cond, rtol=1e-5, atol=1e-6
        )
        guided = ClassifierFreeGuidance(model, 4.0, channels=4)(x, t, y=y)
    torch.testing.assert_close(
        guided[:, :4], uncond[:, :4] + 4.0 * (cond[:, :4] - uncond[:, :4]), rtol=1e-5, atol=1e-5
    )
    torch.testing.assert_close(
        guided[:, 4:], cond[:, 4:], rtol=1e-5, atol=1e-6
    )  # learned variance: conditional


def test_guided_sampling_with_a_conditioning_vector_is_reproducible():
    model = tiny_unet(cond_dim=8)
    d = GaussianDiffusion(steps=100, mean_type="v").respace(5)
    kwargs = {"cond": torch.randn(2, 8)}

    def run(scale, seed):
        return d.sample(
            model,
            (2, 4, 4, 4),
            model_kwargs=kwargs,
            guidance_scale=scale,
            generator=torch.Generator().manual_seed(seed),
        )

    a, b = run(3.0, 0), run(3.0, 0)
    assert torch.equal(a, b) and not torch.equal(a, run(1.0, 0)) and not torch.equal(a, run(3.0, 1))
    with pytest.raises(ValueError, match="classifier-free guidance needs a conditional model"):
        d.sample(tiny_unet(), (2, 4, 4, 4), guidance_scale=2.0)


def test_drop_conditions_marks_a_random_fraction_of_rows():
    y = torch.zeros(4000, dtype=torch.long)
    kwargs = drop_conditions({"y": y}, 0.1, generator=torch.Generator().manual_seed(0))
    assert kwargs["y"] is y and kwargs["uncond_mask"].dtype == torch.bool
    assert 0.08 < kwargs["uncond_mask"].float().mean().item() < 0.12
    assert not drop_conditions({"cond": torch.zeros(8, 3)}, 0.0)["uncond_mask"].any()
    assert drop_conditions({"y": y[:8]}, 1.0)["uncond_mask"].all()
    previous = torch.tensor([True, False, False, False])
    assert (
        drop_conditions({"y": y[:4], "uncond_mask": previous}, 0.0)["uncond_mask"].tolist()
        == previous.tolist()
    )
    with pytest.raises(ValueError, match="needs a tensor 'y'"):
        drop_conditions({}, 0.1)
    with pytest.raises(ValueError, match=r"p_uncond must be a probability in \[0, 1\]"):
        drop_conditions({"y": y}, 1.5)


# --------------------------------------------------------------------------------- a tiny model that overfits


@pytest.fixture(scope="module")
def overfit(one_thread):
    """A tiny class-conditional UNet (v prediction, learned variance, hybrid loss) trained with
    label dropout on one latent per class."""
    torch.manual_seed(0)
    diffusion = GaussianDiffusion(steps=100, mean_type="v")
    model = tiny_unet(num_classes=2)
    latents = torch.randn(2, 4, 4, 4, generator=torch.Generator().manual_seed(1))
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    g = torch.Generator().manual_seed(0)
    model.train()
    for _ in range(250):
        y = torch.randint(0, 2, (8,), generator=g)
        t = torch.randint(0, diffusion.num_timesteps, (8,), generator=g)
        kwargs = drop_conditions({"y": y}, 0.1, generator=g)
        loss = diffusion.training_losses(model, latents[y], t, kwargs)["loss"].mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return model.eval(), diffusion, latents


@pytest.mark.parametrize(
    ("sampler", "steps", "scale"), [("ddim", 10, 1.0), ("ddim", 10, 2.0), ("ddpm", 20, 1.0)]
)
def test_tiny_model_samples_its_latent_back(overfit, sampler, steps, scale):
    model, diffusion, latents = overfit
    y = torch.tensor([0, 1, 1, 0])
    samples = diffusion.respace(steps).sample(
        model,
        (4, 4, 4, 4),
        model_kwargs={"y": y},
        sampler=sampler,
        guidance_scale=scale,
        generator=torch.Generator().manual_seed(0),
    )
    distances = ((samples[:, None] - latents[None]) ** 2).mean(dim=(2, 3, 4))  # [sample, latent]
    own = distances[torch.arange(4), y]
    other = distances[torch.arange(4), 1 - y]
    assert bool((own < 0.35).all()), distances  # the latents have unit variance
    assert bool((own < 0.25 * other).all()), distances


def test_generate_decodes_samples_through_the_codec(overfit):
    model, diffusion, _latents = overfit
    codec = movq.load("movqgan-tiny", pretrained=False)  # f = 8: 4x4 latents -> 32x32 images
    g = torch.Generator().manual_seed(0)
    images = generate(model, diffusion, codec, labels=[0, 1], num_steps=10, generator=g)
    assert images.shape == (2, 3, 32, 32) and images.dtype == torch.float32
    assert float(images.abs().max()) <= 1.0
    again = generate(
        model,
        diffusion,
        codec,
        labels=torch.tensor([0, 1]),
        num_steps=10,
        generator=torch.Generator().manual_seed(0),
    )
    assert torch.equal(images, again)
    quantized = generate(
        model, diffusion, codec, num_samples=1, num_steps=5, quantize=True, guidance_scale=1.0
    )
    assert quantized.shape == (1, 3, 32, 32)
    wide = generate(model, diffusion, codec, labels=[1], latent_size=(4, 8), num_steps=3, sampler="ddpm")
    assert wide.shape == (1, 3, 32, 64)


def test_generate_checks_its_inputs_before_sampling():
    model = tiny_unet(num_classes=2)
    diffusion = GaussianDiffusion(steps=100)
    codec = movq.load("movqgan-tiny", pretrained=False)
    with pytest.raises(ValueError, match="give labels"):
        generate(model, diffusion, codec)
    with pytest.raises(ValueError, match="agreeing on B"):
        generate(model, diffusion, codec, labels=[0, 1], num_samples=3)
    codec8 = movq.load("movqgan-tiny", pretrained=False)
    codec8.config.embed_dim = 8
    with pytest.raises(ValueError, match="the codec's latents have 8 channels but the UNet takes 4"):
        generate(model, diffusion, codec8, labels=[0])
    with pytest.raises(ValueError, match="the model outputs 8 channels but this diffusion needs 4"):
        generate(model, GaussianDiffusion(steps=100, var_type="fixed_small"), codec, labels=[0])
    with pytest.raises(ValueError, match="the model takes 4 latent channels, but the sample shape has 3"):
        diffusion.sample(model, (1, 3, 4, 4))


# --------------------------------------------------------------------------------- hostile arguments (issue #25)


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
    with pytest.raises(ValueError, match="steps must be an int or a list"):
        GaussianDiffusion(steps=10).respace(2.5)
