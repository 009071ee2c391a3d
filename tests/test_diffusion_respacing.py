"""Timestep respacing as improved-diffusion's ``timestep_respacing`` strings ("250", "ddim50",
"10,15,20") and integers: the kept timesteps against a re-derivation written here with numpy, the
one-line errors, and the sampling entry points (respace, generate, the pipeline) taking the spec."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from helpers import tiny_unet
from movq.diffusion import GaussianDiffusion, LatentDiffusionPipeline, generate
from movq.diffusion.schedules import is_ddim_respacing, space_timesteps

pytestmark = pytest.mark.usefixtures("one_thread")


def reference_sections(steps: int, counts: list[int]) -> list[int]:
    """improved-diffusion's section spacing re-derived: ``np.array_split`` cuts ``0..steps-1`` into
    equal sections (the first ``steps % n`` one longer); section of ``size`` keeping ``k`` takes the
    indices ``round(cumsum(stride))`` (float64 running sum, half to even) with ``stride = (size-1)/(k-1)``."""
    kept: list[int] = []
    for section, k in zip(np.array_split(np.arange(steps), len(counts)), counts):
        stride = 1.0 if k == 1 else (len(section) - 1) / (k - 1)
        positions = np.concatenate([[0.0], np.cumsum(np.full(k - 1, stride))])
        kept += section[np.round(positions).astype(int)].tolist()
    return kept


def reference_ddim(steps: int, count: int) -> list[int]:
    """DDIM's striding: ``range(0, steps, s)`` for the smallest integer ``s`` with ``ceil(steps / s) == count``."""
    stride = next(s for s in range(1, steps) if math.ceil(steps / s) == count)
    return list(range(0, steps, stride))


@pytest.mark.parametrize("steps", [1000, 4000, 1234])
def test_kept_timesteps_match_the_rederivation(steps):
    assert space_timesteps(steps, "250") == reference_sections(steps, [250])
    assert space_timesteps(steps, 250) == space_timesteps(steps, "250")
    assert space_timesteps(steps, "10,15,20") == reference_sections(steps, [10, 15, 20])
    assert space_timesteps(steps, "ddim50") == reference_ddim(steps, 50)
    assert space_timesteps(steps, " ddim50 ") == reference_ddim(steps, 50)


def test_kept_timesteps_known_values():
    assert space_timesteps(1000, "ddim50") == list(range(0, 1000, 20))  # DDIM: stride 20, 999 not kept
    assert space_timesteps(1000, "ddim7") == list(range(0, 1000, 143))  # ceil(1000 / 143) = 7
    assert space_timesteps(300, "10,15,20")[:10] == [0, 11, 22, 33, 44, 55, 66, 77, 88, 99]
    assert space_timesteps(301, "1,1,1") == [0, 101, 201]  # 301 = 101 + 100 + 100
    kept = space_timesteps(1000, "250")
    assert len(kept) == 250 and kept[0] == 0 and kept[-1] == 999
    assert is_ddim_respacing("ddim50") and not is_ddim_respacing("50") and not is_ddim_respacing(50)


@pytest.mark.parametrize(
    ("steps", "spec", "message"),
    [
        (10, "ddim7", r"'ddim7': no integer stride takes exactly 7 of 10 steps"),
        (1000, "ddim999", r"no integer stride takes exactly 999 of 1000 steps"),
        (1000, "abc", r"must be an int N, a string 'N', 'ddimN' .* or section counts 'a,b,c', got 'abc'"),
        (1000, "ddimx", r"must be an int N, .*got 'ddimx'"),
        (1000, "2.5", r"must be an int N, .*got '2.5'"),
        (1000, "", r"must be an int N, .*got ''"),
        (1000, 2.5, r"must be an int N, .*got 2.5"),
        (1000, "1001", r"cannot keep 1001 of 1000 steps"),
        (300, "10,15,200", r"section 2 has 100 steps and cannot keep 200 of 100 steps"),
        (300, "10,0,20", r"section 1 has 100 steps and cannot keep 0"),
        (1000, 1, r"keeps 1 step; keep between 2 and 1000"),
    ],
)
def test_bad_specs_raise_one_line_errors(steps, spec, message):
    with pytest.raises(ValueError, match=message) as info:
        space_timesteps(steps, spec)
    assert "\n" not in str(info.value)
    with pytest.raises(ValueError, match=message):
        GaussianDiffusion(steps=steps).respace(spec)


def test_respace_takes_the_spec_and_keeps_alpha_bar():
    base = GaussianDiffusion(steps=1000)
    for spec in ("250", "ddim50", "10,15,20"):
        spaced = base.respace(spec)
        assert spaced.timestep_map.tolist() == space_timesteps(1000, spec)
        torch.testing.assert_close(spaced.alphas_cumprod, base.alphas_cumprod[spaced.timestep_map], rtol=1e-10,
                                   atol=1e-15)
        assert GaussianDiffusion.from_dict(spaced.to_dict()).timestep_map.tolist() == spaced.timestep_map.tolist()


class _IdentityCodec:
    """Decodes latents to themselves, so generate's result is the diffusion sample."""

    def decode_latents(self, latents, quantize=False):
        return latents


def test_generate_and_the_pipeline_take_respacing_strings():
    model = tiny_unet(num_classes=2)
    diffusion = GaussianDiffusion(steps=100)
    codec = _IdentityCodec()
    expected = diffusion.respace(list(range(0, 100, 10))).sample(
        model, (1, 4, 4, 4), model_kwargs={"y": torch.tensor([1])}, sampler="ddim",
        generator=torch.Generator().manual_seed(3),
    )
    by_string = generate(model, diffusion, codec, labels=[1], num_steps="ddim10",
                         generator=torch.Generator().manual_seed(3))
    assert torch.equal(by_string, expected)
    pipe = LatentDiffusionPipeline(model, diffusion, codec)
    by_name = pipe.generate([1], timestep_respacing="ddim10", generator=torch.Generator().manual_seed(3), output_type="pt")
    assert torch.equal(by_name, expected.clamp(-1, 1))  # the pipeline's tensor output is clamped
    sections = pipe.generate([1], timestep_respacing="3,2", sampler="ddpm", generator=torch.Generator().manual_seed(0),
                             output_type="pt")
    direct = diffusion.respace(space_timesteps(100, "3,2")).sample(
        model, (1, 4, 4, 4), model_kwargs={"y": torch.tensor([1])}, generator=torch.Generator().manual_seed(0))
    assert torch.equal(sections, direct.clamp(-1, 1))
    with pytest.raises(ValueError, match="got 'ddim'"):
        pipe.generate([1], timestep_respacing="ddim")
