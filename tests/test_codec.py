"""Codec architecture, presets, API and persistence."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

import movq
from helpers import tiny_codec
from movq import Codec, CodecConfig, get_preset
from movq.config import PRESETS, GumbelConfig, ResidualConfig, VQConfig
from movq.modules import AttnBlock, SpatialNorm

PUBLISHED_PARAMETER_COUNTS = {
    "movqgan-67m": 67_832_495,
    "movqgan-102m": 101_614_255,
    "movqgan-270m": 270_669_103,
}


def count_parameters(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


@pytest.mark.parametrize("name,expected", sorted(PUBLISHED_PARAMETER_COUNTS.items()))
def test_parameter_counts_match_published_models(name, expected):
    with torch.device("meta"):
        codec = Codec(get_preset(name))
    assert count_parameters(codec) == expected


def test_taming_presets_have_their_published_sizes():
    with torch.device("meta"):
        f16 = Codec(get_preset("vqgan-f16-16384"))
        gumbel = Codec(get_preset("vqgan-gumbel-f8-8192"))
    assert f16.downsample_factor == 16 and f16.codebook_size == 16384
    assert gumbel.downsample_factor == 8 and gumbel.codebook_size == 8192
    # the VQGAN decoders are plain GroupNorm: no SpatialNorm anywhere
    assert not any(isinstance(m, SpatialNorm) for m in f16.modules())
    assert f16.quantize.embedding.weight.shape == (16384, 256)
    assert gumbel.quantize.proj.weight.shape == (8192, 256, 1, 1)
    tiny = count_parameters(Codec(get_preset("movqgan-tiny")))
    assert 1_000_000 < tiny < 10_000_000


@pytest.mark.parametrize("name", sorted(n for n, c in PRESETS.items() if c.quantizer.kind != "multiscale"))
def test_every_preset_encodes_and_decodes_with_the_right_shapes(name):
    """Grid-token presets at a non-square size (the multi-scale preset, whose latent is its last scale,
    in tests/test_family_var.py)."""
    torch.manual_seed(0)
    codec = Codec(get_preset(name)).eval()
    f = codec.downsample_factor
    x = torch.rand(1, 3, 2 * f, 3 * f) * 2 - 1
    tokens = codec.encode(x)
    assert tokens.dtype == torch.long and tokens.shape == (1, 2, 3)
    assert codec.tokens_shape(2 * f, 3 * f) == (2, 3)
    assert int(tokens.min()) >= 0 and int(tokens.max()) < codec.codebook_size
    image = codec.decode(tokens)
    assert image.shape == (1, 3, 2 * f, 3 * f) and image.dtype == torch.float32
    assert image.min() >= -1 and image.max() <= 1


def test_state_dict_uses_the_published_key_names():
    keys = set(Codec(get_preset("movqgan-tiny")).state_dict())
    for key in (
        "encoder.conv_in.weight",
        "encoder.down.1.block.0.nin_shortcut.weight",
        "encoder.down.0.downsample.conv.weight",
        "encoder.down.3.attn.0.q.weight",
        "encoder.mid.attn_1.proj_out.weight",
        "encoder.norm_out.weight",
        "quant_conv.weight",
        "quantize.embedding.weight",
        "post_quant_conv.weight",
        "decoder.up.3.attn.0.norm.conv_y.weight",
        "decoder.up.1.upsample.conv.weight",
        "decoder.mid.block_1.norm1.norm_layer.weight",
        "decoder.norm_out.conv_b.bias",
    ):
        assert key in keys, key
    with torch.device("meta"):
        assert len(Codec(get_preset("movqgan-67m")).state_dict()) == 431


def test_shapes_only_builds_run_no_initialiser(tmp_path):
    """``build_on_meta`` (the parameter-size check every ``Codec(...)`` makes) gives the real shapes and
    runs no initialiser: torch's meta ``normal_`` would import ``torch._dynamo`` (seconds per load, and
    a gloo process group made before it outlives ``destroy_process_group``). Checked in a fresh process,
    since other tests may have imported dynamo already."""
    from movq.memory_budget import build_on_meta

    config = get_preset("movqgan-67m")
    meta = build_on_meta(lambda: Codec(config))
    real = {k: v.shape for k, v in Codec(config).state_dict().items()}
    assert {k: v.shape for k, v in meta.state_dict().items()} == real
    assert {v.device.type for v in meta.state_dict().values()} == {"meta"}
    tiny_codec().save_pretrained(tmp_path)
    script = (
        "import sys, movq; movq.load(sys.argv[1], device='cpu'); "
        "movq.Codec(movq.get_preset('movqgan-67m')); assert 'torch._dynamo' not in sys.modules, 'dynamo'"
    )
    proc = subprocess.run([sys.executable, "-c", script, str(tmp_path)], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]


def test_construction_is_deterministic_under_manual_seed():
    a, b, c = tiny_codec(seed=3), tiny_codec(seed=3), tiny_codec(seed=4)
    for (name, pa), pb in zip(a.state_dict().items(), b.state_dict().values()):
        assert torch.equal(pa, pb), name
    assert not torch.equal(a.encoder.conv_in.weight, c.encoder.conv_in.weight)


def test_spatial_norm_matches_its_formula():
    torch.manual_seed(0)
    norm = SpatialNorm(64, 4)
    f, zq = torch.randn(2, 64, 8, 6), torch.randn(2, 4, 4, 3)
    zq_up = zq.repeat_interleave(2, dim=2).repeat_interleave(2, dim=3)
    grouped = f.reshape(2, 32, -1)
    mean, var = grouped.mean(-1, keepdim=True), grouped.var(-1, unbiased=False, keepdim=True)
    normed = ((grouped - mean) / torch.sqrt(var + 1e-6)).reshape_as(f)
    normed = normed * norm.norm_layer.weight[:, None, None] + norm.norm_layer.bias[:, None, None]
    expected = normed * F.conv2d(zq_up, norm.conv_y.weight, norm.conv_y.bias) + F.conv2d(
        zq_up, norm.conv_b.weight, norm.conv_b.bias
    )
    torch.testing.assert_close(norm(f, zq), expected, atol=1e-5, rtol=1e-5)


def test_attention_block_equals_explicit_softmax_attention():
    torch.manual_seed(0)
    block = AttnBlock(32)
    x = torch.randn(2, 32, 5, 7)
    h = block.norm(x)
    q, k, v = (p(h).flatten(2) for p in (block.q, block.k, block.v))  # [B, C, N]
    weights = torch.softmax(q.transpose(1, 2) @ k / 32**0.5, dim=-1)  # [B, N, N]
    out = (v @ weights.transpose(1, 2)).reshape(2, 32, 5, 7)
    torch.testing.assert_close(block(x), x + block.proj_out(out), atol=1e-5, rtol=1e-5)


def test_large_latent_attention_runs_without_quadratic_memory():
    # 128x128 latent = 16384 positions (a 1024x1024 image at f=8): an explicit fp32 score matrix
    # would need 1 GiB per image; SDPA streams it.
    block = AttnBlock(32).eval()
    with torch.no_grad():
        out = block(torch.randn(1, 32, 128, 128))
    assert out.shape == (1, 32, 128, 128) and torch.isfinite(out).all()


def test_save_pretrained_round_trip_is_bit_exact(tmp_path):
    codec = tiny_codec(seed=1)
    with torch.no_grad():  # move the norms off their defaults so the test sees them
        for p in codec.parameters():
            p.add_(torch.randn_like(p) * 0.01)
    codec.save_pretrained(tmp_path / "saved")
    assert sorted(p.name for p in (tmp_path / "saved").iterdir()) == ["README.md", "config.json", "model.safetensors"]
    loaded = movq.load(tmp_path / "saved")
    assert loaded.config == codec.config
    for (name, a), b in zip(codec.state_dict().items(), loaded.state_dict().values()):
        assert torch.equal(a, b), name
    x = torch.rand(2, 3, 32, 48) * 2 - 1
    assert torch.equal(codec.encode(x), loaded.encode(x))
    assert torch.equal(codec.decode(codec.encode(x)), loaded.decode(codec.encode(x)))
    assert json.loads((tmp_path / "saved" / "config.json").read_text())["name"] == "movqgan-tiny"


def test_from_pretrained_refuses_mismatched_weights(tmp_path):
    tiny_codec().save_pretrained(tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    config["quantizer"]["codebook_size"] = 512
    (tmp_path / "config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match="quantize.embedding.weight: checkpoint \\(1024, 4\\) vs model \\(512, 4\\)"):
        movq.load(tmp_path)


def test_load_preset_without_weights_and_unknown_names():
    torch.manual_seed(0)
    a = movq.load("movqgan-tiny", pretrained=False)
    assert not a.training and isinstance(a, Codec)
    with pytest.raises(ValueError, match="unknown preset 'nope'"):
        movq.load("nope", pretrained=False)


def test_load_casts_dtype_and_encodes_in_bfloat16():
    torch.manual_seed(0)
    codec = movq.load("movqgan-tiny", pretrained=False, dtype=torch.bfloat16)
    assert codec.dtype == torch.bfloat16
    x = torch.rand(1, 3, 32, 32) * 2 - 1
    tokens = codec.encode(x)
    assert tokens.dtype == torch.long and codec.decode(tokens).dtype == torch.bfloat16


def test_config_json_round_trip_for_every_quantizer_kind():
    for quantizer in (VQConfig(codebook_size=64, groups=2), GumbelConfig(), ResidualConfig(depth=3)):
        config = CodecConfig(name="x", quantizer=quantizer)
        assert CodecConfig.from_json(config.to_json()) == config
    with pytest.raises(ValueError, match="unknown CodecConfig fields \\['colour'\\]"):
        CodecConfig.from_dict({"colour": 1})
    with pytest.raises(ValueError, match="unknown quantizer kind 'magic'"):
        CodecConfig.from_dict({"quantizer": {"kind": "magic"}})


def test_encode_latents_and_decode_latents():
    codec = tiny_codec(seed=2)
    codec.config.scaling_factor = 0.5
    x = torch.rand(2, 3, 32, 40) * 2 - 1
    latents = codec.encode_latents(x)
    assert latents.shape == (2, 4, 4, 5)
    torch.testing.assert_close(latents, codec.encode_to_prequant(x) * 0.5)
    with torch.no_grad():
        direct = codec.decode_from_quantized(codec.encode_to_prequant(x)).clamp(-1, 1)
        quantized = codec.decode(codec.encode(x))
        torch.testing.assert_close(codec.decode_latents(latents), direct)
        torch.testing.assert_close(codec.decode_latents(latents, quantize=True), quantized)
    with pytest.raises(ValueError, match="latents must have shape"):
        codec.decode_latents(torch.zeros(1, 3, 4, 4))


def test_forward_is_differentiable_and_matches_encode_decode():
    codec = tiny_codec(seed=0)
    x = torch.rand(1, 3, 32, 32) * 2 - 1
    out = codec(x)
    out.sample.sum().backward()
    assert codec.encoder.conv_in.weight.grad is not None
    torch.testing.assert_close(out.sample.clamp(-1, 1), codec.decode(codec.encode(x)))


def test_residual_and_grouped_codecs_use_a_depth_axis():
    torch.manual_seed(0)
    config = get_preset("movqgan-tiny")
    config.quantizer = ResidualConfig(codebook_size=64, depth=3)
    codec = Codec(config).eval()
    x = torch.rand(2, 3, 16, 24) * 2 - 1
    tokens = codec.encode(x)
    assert tokens.shape == (2, 3, 2, 3) and codec.tokens_shape(16, 24) == (3, 2, 3)
    assert codec.decode(tokens).shape == (2, 3, 16, 24)
    with pytest.raises(ValueError, match="depth"):
        codec.decode(tokens[:, 0])


def test_reconstruct_returns_the_input_type_and_size():
    codec = tiny_codec(seed=0)
    rng = np.random.default_rng(0)
    array = rng.integers(0, 256, (30, 45, 3), dtype=np.uint8)
    pil = codec.reconstruct(Image.fromarray(array), pad=True)
    assert isinstance(pil, Image.Image) and pil.size == (45, 30) and pil.mode == "RGB"
    out = codec.reconstruct(array[None], pad=True)
    assert isinstance(out, np.ndarray) and out.shape == (1, 30, 45, 3) and out.dtype == np.uint8
    pils = codec.reconstruct([Image.fromarray(array[:24, :40])] * 2)
    assert isinstance(pils, list) and len(pils) == 2 and pils[0].size == (40, 24)
    t = codec.reconstruct(torch.zeros(3, 16, 16))
    assert isinstance(t, torch.Tensor) and t.shape == (3, 16, 16)


def test_pil_modes_are_converted_to_rgb():
    codec = tiny_codec(seed=0)
    rgb = Image.fromarray(np.full((16, 16, 3), 120, dtype=np.uint8))
    for mode in ("RGBA", "L", "CMYK"):
        tokens = codec.encode(rgb.convert(mode))
        assert tokens.shape == (1, 2, 2)
    assert torch.equal(codec.encode(rgb.convert("RGBA")), codec.encode(rgb))


# ------------------------------------------------------------------------- one codec, any network


def test_bf16_and_fp16_keep_the_codebook_in_float32():
    torch.manual_seed(0)
    reference = movq.load("movqgan-tiny", pretrained=False)
    codebook = reference.quantize.embedding.weight.detach().clone()
    fast = movq.load("movqgan-tiny", pretrained=False, dtype=torch.bfloat16)
    fast.load_state_dict(reference.state_dict())
    assert fast.dtype == torch.bfloat16 and fast.quant_conv.weight.dtype == torch.bfloat16
    assert torch.equal(fast.quantize.embedding.weight, codebook)  # float32, not rounded through bf16
    reference.half()
    assert reference.dtype == torch.float16 and reference.quantize.embedding.weight.dtype == torch.float32
    reference.double()  # above float32 the codebook follows
    assert reference.quantize.embedding.weight.dtype == torch.float64
    x = torch.rand(2, 3, 32, 32) * 2 - 1
    out = fast.train()(x.bfloat16())  # the training path too: float32 search, bf16 networks
    assert out.sample.dtype == torch.bfloat16 and out.quantizer.indices.shape == (2, 4, 4)


def test_parameter_bytes_come_from_a_meta_build():
    from movq.codec import parameter_bytes
    from movq.dvae import DVAE, DVAEConfig
    from movq.memory_budget import module_bytes

    for config, cls in ((get_preset("movqgan-tiny"), Codec), (DVAEConfig(n_hid=16, n_init=8, vocab_size=32), DVAE)):
        assert parameter_bytes(config) == module_bytes(cls(config)) > 0


def test_the_dvae_is_a_codec_assembled_from_its_config():
    from movq.dvae import DVAE, DVAEConfig

    config = DVAEConfig(n_hid=16, n_init=8, vocab_size=32, n_blk_per_group=1)
    torch.manual_seed(0)
    plain = Codec(config).eval()
    torch.manual_seed(0)
    dvae = DVAE(config).eval()
    assert DVAE().config == DVAEConfig() and type(plain) is Codec
    assert list(plain.state_dict()) == list(dvae.state_dict())
    assert all(k.startswith(("encoder.blocks.", "decoder.blocks.")) for k in plain.state_dict())
    x = torch.rand(1, 3, 32, 32) * 2 - 1
    assert torch.equal(plain.encode(x), dvae.encode(x))
    with pytest.raises(ValueError, match="movq format"):
        plain.save_pretrained("unused", format="diffusers")


def test_one_activation_estimate_sizes_the_memory_check_and_the_tiling_plan():
    from movq.memory_budget import feature_bytes_per_pixel, image_bytes

    codec = tiny_codec()
    per_pixel = feature_bytes_per_pixel(codec.config, codec.dtype)
    assert codec.activation_bytes(2, 64, 32) == image_bytes(2, 64, 32) + int(2 * 64 * 32 * per_pixel)
    assert codec.activation_bytes(1, 64, 64, training=True) > codec.activation_bytes(1, 64, 64)
    f = codec.downsample_factor
    codec.enable_tiling(2 * f, 0, auto=True, memory_budget=int(per_pixel * 128 * 128))
    assert codec._plan(torch.empty(1, 3, 256, 256), f).tile is not None  # above the budget: tiled
    assert codec._plan(torch.empty(1, 3, 128, 64), f).tile is None
