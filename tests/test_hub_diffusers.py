"""Parity with diffusers.VQModel as an independent reference, and export to the diffusers format."""

from __future__ import annotations

import copy

import pytest
import torch
from safetensors.torch import load_file, save_file

import movq
from helpers import benchmark_module
from movq import Codec, CodecConfig, get_preset
from movq.config import GumbelConfig
from movq.hub.diffusers import diffusers_to_original

spread_weights = benchmark_module("versus").spread_weights  # benchmarks/versus.py

diffusers = pytest.importorskip("diffusers")
VQModel = diffusers.VQModel

torch.set_num_threads(1)

KANDINSKY_MOVQ = {
    "act_fn": "silu",
    "block_out_channels": [128, 256, 256, 512],
    "down_block_types": ["DownEncoderBlock2D", "DownEncoderBlock2D", "DownEncoderBlock2D", "AttnDownEncoderBlock2D"],
    "in_channels": 3,
    "latent_channels": 4,
    "layers_per_block": 2,
    "norm_num_groups": 32,
    "norm_type": "spatial",
    "num_vq_embeddings": 16384,
    "out_channels": 3,
    "sample_size": 32,
    "up_block_types": ["AttnUpDecoderBlock2D", "UpDecoderBlock2D", "UpDecoderBlock2D", "UpDecoderBlock2D"],
    "vq_embed_dim": 4,
}
SMALL_MOVQ = {**KANDINSKY_MOVQ, "block_out_channels": [32, 64, 64, 128], "layers_per_block": 1, "num_vq_embeddings": 512}


def reference_model(config: dict, seed: int) -> VQModel:
    """A random reference whose decoded pixels have a spread of about 0.3 (not near-constant)."""
    torch.manual_seed(seed)
    model = spread_weights(VQModel(**config), seed)
    with torch.no_grad():
        probe = model(torch.rand(1, 3, 32, 32) * 2 - 1).sample
        model.decoder.conv_out.weight.mul_(0.3 / probe.std())
        model.decoder.conv_out.bias.mul_(0.3 / probe.std())
    return model


def write_both_formats(model: VQModel, root) -> tuple:
    """The reference saved by diffusers itself, and its weights renamed to the original format."""
    diffusers_dir = root / "diffusers"
    model.save_pretrained(diffusers_dir, safe_serialization=True)
    original = diffusers_to_original(load_file(diffusers_dir / "diffusion_pytorch_model.safetensors"))
    original_file = root / "movq_original.safetensors"
    save_file(original, original_file)
    return diffusers_dir, original_file


def reference_outputs(model: VQModel, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    with torch.no_grad():
        h = model.encode(x).latents
        _, _, (_, _, indices) = model.quantize(h)
        pixels = model.decode(h).sample  # force_not_quantize=False: quantizes, MoVQ gets zq
    return indices.reshape(x.shape[0], *h.shape[-2:]), pixels


def assert_parity(codec: Codec, model: VQModel, sizes: list[tuple[int, int]], batch: int = 2) -> None:
    for height, width in sizes:
        x = torch.rand(batch, 3, height, width, generator=torch.Generator().manual_seed(height + width)) * 2 - 1
        ref_tokens, ref_pixels = reference_outputs(model, x)
        tokens = codec.encode(x)
        assert tokens.shape == (batch, height // 8, width // 8)
        assert torch.equal(tokens, ref_tokens), f"token ids differ at {height}x{width}"
        assert ref_tokens.unique().numel() > 4, "degenerate reference: almost one code everywhere"
        pixels = codec.decode(tokens, clamp=False)
        assert ref_pixels.std() > 0.05, "degenerate reference: flat output"
        # same arithmetic reassociated (folded norm affine, sub-pixel upsampling, attention
        # products): float32 rounding only
        torch.testing.assert_close(pixels, ref_pixels, atol=1e-4, rtol=1e-5)
        # and as close to diffusers run in float64 (same tokens) as diffusers' own float32 decode
        exact_model = copy.deepcopy(model).double()
        codes = exact_model.quantize.embedding.weight[ref_tokens].permute(0, 3, 1, 2)
        with torch.no_grad():
            exact = exact_model.decode(codes, force_not_quantize=True).sample
        error, ref_error = ((p.double() - exact).abs().max().item() for p in (pixels, ref_pixels))
        assert error <= 1.5 * max(ref_error, 1e-4), f"movq {error:.2e} vs diffusers {ref_error:.2e} from float64"


def test_small_movq_parity_in_diffusers_and_original_formats(tmp_path):
    model = reference_model(SMALL_MOVQ, seed=1)
    diffusers_dir, original_file = write_both_formats(model, tmp_path)
    from_diffusers = movq.load(diffusers_dir)
    from_original = movq.load(original_file)  # architecture inferred from the shapes
    assert from_original.config.norm == "spatial" and from_original.codebook_size == 512
    for codec in (from_diffusers, from_original):
        assert_parity(codec, model, [(256, 256), (64, 96)])


def test_kandinsky_2_2_movq_config_parity(tmp_path):
    model = reference_model(KANDINSKY_MOVQ, seed=2)
    diffusers_dir, original_file = write_both_formats(model, tmp_path)
    original_keys = set(load_file(original_file))
    assert len(original_keys) == 431
    assert {"decoder.up.3.attn.0.norm.conv_y.weight", "encoder.down.1.block.0.nin_shortcut.weight",
            "quantize.embedding.weight"} <= original_keys
    from_diffusers = movq.load(diffusers_dir)
    from_original = movq.load(original_file)
    assert from_original.config.name == "movqgan-67m"  # the shapes are exactly SBER-MoVQGAN 67M's
    size = sum(p.numel() for p in from_diffusers.parameters()) / 1e6
    assert f"{size:.1f}M" == movq.hub.registry.REGISTRY["kandinsky-2.2-movq"].size
    # CPU time: the full 67M model at a reduced size (64x64 and 64x96 instead of 256x256)
    assert_parity(from_diffusers, model, [(64, 64)])
    assert_parity(from_original, model, [(64, 96)])


@pytest.mark.parametrize("norm", ["spatial", "group"])
def test_round_trip_movq_to_diffusers_vqmodel(tmp_path, norm):
    torch.manual_seed(3)
    config = get_preset("movqgan-tiny")
    config.norm = norm
    codec = spread_weights(Codec(CodecConfig.from_dict(config.to_dict())), seed=3)
    out = codec.save_pretrained(tmp_path / "export", format="diffusers")
    assert sorted(p.name for p in out.iterdir()) == ["README.md", "config.json", "diffusion_pytorch_model.safetensors"]
    model = VQModel.from_pretrained(out).eval()
    assert model.config.norm_type == norm
    assert_parity(codec, model, [(64, 64), (32, 48)])
    # and back: movq reads its own export with identical weights
    again = movq.load(out)
    for key, value in codec.state_dict().items():
        assert torch.equal(again.state_dict()[key], value), key


def test_gumbel_codec_cannot_be_exported_to_diffusers(tmp_path):
    config = get_preset("movqgan-tiny")
    config.quantizer = GumbelConfig(codebook_size=64)
    codec = Codec(CodecConfig.from_dict(config.to_dict()))
    with pytest.raises(ValueError, match="only a plain VQ codebook"):
        codec.save_pretrained(tmp_path, format="diffusers")
    with pytest.raises(ValueError, match="format must be"):
        codec.save_pretrained(tmp_path, format="onnx")
