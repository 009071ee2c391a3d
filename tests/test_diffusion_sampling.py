"""Sampling: classifier-free guidance, conditioning dropout, a tiny model that overfits one
latent per class and samples it back, and the end-to-end path to images through a codec."""

from __future__ import annotations

import pytest
import torch

import movq
from helpers import tiny_unet
from movq.diffusion import (
    ClassifierFreeGuidance,
    GaussianDiffusion,
    drop_conditions,
    generate,
)


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
