"""Open-MAGVIT2 (TencentARC/SEED-Voken ``src/Open_MAGVIT2``): ``movq.load`` of the published Lightning
checkpoint against the original, its network blocks and LFQ bit order written out.

``tests/fixtures/open-magvit2-256.json`` / ``open-magvit2-128.json`` were recorded from SEED-Voken's
own ``VQModel`` (``src/Open_MAGVIT2/models/lfqgan.py``) by ``benchmarks/record_family_fixtures.py`` at
``imagenet_lfqgan_256_L.yaml`` / ``imagenet_lfqgan_128_L.yaml`` (see ``tests/fixtures/README.md``). Here the same seeded checkpoint is
rebuilt without SEED-Voken's code: the codec's keys are movq's in Open-MAGVIT2's names
(:func:`movq.hub.magvit2.movq_key_to_magvit2`), LitEma's shadows are those names without dots, the
discriminator's keys come from the fixture; the hash of all names and shapes must equal the original's.
"""

from __future__ import annotations

import json
import logging
from dataclasses import replace
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

import movq
from helpers import assert_matches_family_fixture, benchmark_module, make_hub_cache, recorded_inputs
from movq.config import CodecConfig
from movq.hub import registry
from movq.hub.formats import MAGVIT2, detect_format
from movq.hub.llamagen import codec_shapes
from movq.hub.magvit2 import magvit2_key_to_movq, movq_key_to_magvit2
from movq.loader import codec_from_state
from movq.modules import cpu_engine
from movq.modules.blocks import Downsample, Upsample
from movq.modules.norm import AdaptiveGroupNorm
from movq.quantizers import LFQ

torch.set_num_threads(1)
fixtures = benchmark_module("record_family_fixtures")  # benchmarks/record_family_fixtures.py
PRESET = "open-magvit2-f16-262144"
FILE = "imagenet_256_L.ckpt"


def shadow(key: str) -> str:
    """LitEma's buffer name of parameter ``key``."""
    return "model_ema." + key.replace(".", "")


FIXTURES = {
    "open-magvit2-256": (PRESET, FILE),
    "open-magvit2-128": ("open-magvit2-f8-262144", "imagenet_128_L.ckpt"),
}
"""Recorded fixture -> (the preset ``movq.load`` must recognise, the published file name)."""


def fixture(name: str) -> dict:
    return json.loads((Path(__file__).parent / "fixtures" / f"{name}.json").read_text())


def build_published(name: str, folder: Path) -> tuple[Path, dict[str, torch.Tensor]]:
    """``(file, EMA weights in Open-MAGVIT2's names)``: fixture ``name``'s seeded Lightning checkpoint.
    The raw codec weights are zero-stride zeros: the EMA shadows must be the ones read."""
    recorded, (preset, file) = fixture(name), FIXTURES[name]
    codec_keys = {movq_key_to_magvit2(k): tuple(v.shape) for k, v in codec_shapes(movq.get_preset(preset)).items()}
    seeded = {**{shadow(k): s for k, s in codec_keys.items()}, **recorded["non_codec_keys"]}
    assert fixtures.keys_digest({**codec_keys, **seeded}) == recorded["published_keys_sha256"]
    assert len(codec_keys) + len(seeded) == recorded["published_keys"]
    weights = fixtures.seeded_weights(seeded, recorded["recipe"]["weights_seed"])
    raw = {k: torch.zeros(()).expand(s) for k, s in codec_keys.items()}
    path = folder / file
    fixtures._lightning_checkpoint({**raw, **weights}, path)
    return path, {k: weights[shadow(k)] for k in codec_keys}


@pytest.fixture(scope="module")
def published(tmp_path_factory) -> tuple[Path, dict[str, torch.Tensor]]:
    """The fixture's seeded ``imagenet_256_L.ckpt`` (:func:`build_published`)."""
    return build_published("open-magvit2-256", tmp_path_factory.mktemp("open-magvit2"))


@pytest.mark.parametrize("name", sorted(FIXTURES))
def test_load_matches_the_original_tokens_and_pixels(name, tmp_path, caplog):
    recorded, (preset, _) = fixture(name), FIXTURES[name]
    path, ema = build_published(name, tmp_path)
    images = recorded_inputs(recorded, {shadow(k): v for k, v in ema.items()})
    assert detect_format(ema) == MAGVIT2

    with caplog.at_level(logging.INFO, logger="movq.hub.formats"):
        codec = movq.load(path)  # nothing named: the family and the architecture come from the keys and shapes
    assert codec.config.name == preset == recorded["preset"]
    assert isinstance(codec.quantize, LFQ) and codec.quantize.bit_order == "lsb_first" and codec.codebook_size == 2**18
    assert "dropping 35 training-only keys (loss.discriminator: 22 keys, model_ema shadows of them: 13 keys)" in caplog.text
    assert torch.equal(codec.decoder.adaptive[2].gamma.weight, ema["decoder.adaptive.2.gamma.weight"])

    assert_matches_family_fixture(codec, images, recorded)


def test_registered_name_loads_offline_save_pretrained_round_trip_and_a_wrong_file_names_the_keys(
        published, tmp_path, monkeypatch):
    path, ema = published
    make_hub_cache(tmp_path / "hub", "TencentARC/Open-MAGVIT2-Tokenizer-256-resolution", {FILE: path}, monkeypatch)
    codec = movq.load("open-magvit2-256")
    assert codec.config.name == "open-magvit2-256"  # a registered codec is named after its entry
    spec = registry.get_spec("open-magvit2-256")
    assert (spec.filenames, spec.preset, spec.format) == ((FILE,), PRESET, MAGVIT2)
    assert (spec.published.rfid, spec.published.codebook_size, spec.published.tokens) == (1.17, 262144, "16x16")
    assert "authors' figures" in spec.published.describe()

    codec.save_pretrained(tmp_path / "saved")
    again = movq.load(tmp_path / "saved")
    assert again.config == codec.config
    x = fixtures.seeded_images(1, 32)
    assert torch.equal(again.encode(x), codec.encode(x))

    broken = {k: v for k, v in ema.items() if k != "decoder.up.2.upsample.conv1.bias"}
    broken["encoder.mid_block.0.conv1.bias"] = torch.zeros(512)  # Open-MAGVIT2's ResNet convolutions have no bias
    torch.save({"state_dict": broken}, tmp_path / "broken.ckpt")
    with pytest.raises(ValueError, match=r"missing.*decoder\.up\.2\.upsample\.conv1\.bias.*unexpected.*encoder\.mid_block\.0\.conv1\.bias"):
        movq.load(tmp_path / "broken.ckpt")


def test_key_map_round_trip_and_detection_of_a_bare_movq_state_dict():
    config = movq.get_preset(PRESET)
    for key in codec_shapes(config):
        assert magvit2_key_to_movq(movq_key_to_magvit2(key)) == key
    assert movq_key_to_magvit2("encoder.down.0.downsample.conv.weight") == "encoder.down.0.downsample.weight"
    assert movq_key_to_magvit2("decoder.mid.block.3.norm1.bias") == "decoder.mid_block.3.norm1.bias"
    with torch.device("meta"):
        state = dict(movq.Codec(config).state_dict())  # a plain dict in movq's names: no saved config
        assert codec_from_state(state, pretrained=False).config == config
        f8 = dict(movq.Codec(movq.get_preset("open-magvit2-f8-262144")).state_dict())
        assert codec_from_state(f8, pretrained=False).config.name == "open-magvit2-f8-262144"


# ------------------------------------------------------------------ the blocks, written out


def test_adaptive_group_norm_depth_to_space_and_centred_downsampling_in_closed_form():
    torch.manual_seed(0)
    norm = AdaptiveGroupNorm(6, 64)
    x, style = torch.randn(2, 64, 5, 4), torch.randn(2, 6, 3, 3)
    flat = style.double().flatten(2)
    std = (((flat - flat.mean(-1, keepdim=True)) ** 2).sum(-1) / (9 - 1) + 1e-6).sqrt()  # unbiased, as the original
    scale = std @ norm.gamma.weight.double().T + norm.gamma.bias.double()
    shift = flat.mean(-1) @ norm.beta.weight.double().T + norm.beta.bias.double()
    groups = x.double().reshape(2, 32, -1)
    normed = ((groups - groups.mean(-1, keepdim=True)) / (groups.var(-1, unbiased=False, keepdim=True) + 1e-6).sqrt())
    expected = normed.reshape(x.shape) * scale[:, :, None, None] + shift[:, :, None, None]
    torch.testing.assert_close(norm(x, style).double(), expected, rtol=0, atol=1e-5)

    up = Upsample(3, "depth_to_space")
    y = torch.randn(1, 3, 2, 2)
    h = up.conv(y)  # [1, 12, 2, 2]
    out = up(y)
    for i in range(2):
        for j in range(2):  # DCR: sub-pixel (i, j) of channel c is conv channel (2 i + j) * 3 + c
            torch.testing.assert_close(out[:, :, i::2, j::2], h[:, (2 * i + j) * 3:(2 * i + j + 1) * 3])
    assert not torch.equal(out, F.pixel_shuffle(h, 2))

    down = Downsample(4, "conv_centered")
    z = torch.randn(1, 4, 6, 6)
    torch.testing.assert_close(down(z), F.conv2d(z, down.conv.weight, down.conv.bias, stride=2, padding=1))
    with pytest.raises(ValueError, match="Upsample kind must be one of"):
        Upsample(4, "bilinear")  # type: ignore[arg-type]


def test_lfq_bit_order_maps_channel_i_to_bit_i():
    z = torch.tensor([1.0, -1.0, -1.0, -1.0, 1.0, 1.0]).view(1, 6, 1, 1)
    lsb, msb = LFQ(dim=6, bit_order="lsb_first"), LFQ(dim=6)
    assert lsb(z).indices.item() == 1 + 16 + 32  # channels 0, 4, 5 -> bits 0, 4, 5 (Open-MAGVIT2's order)
    assert msb(z).indices.item() == 32 + 2 + 1  # channel 0 is the most significant bit
    ids = torch.randint(0, 64, (2, 3, 3))
    assert torch.equal(lsb(lsb.embed(ids)).indices, ids) and torch.equal(lsb.codes_to_indices(lsb.embed(ids)), ids)
    with pytest.raises(movq.strict.ConfigError, match="bit_order"):
        movq.config.LFQConfig(bit_order="middle")  # type: ignore[arg-type]


def test_config_checks_engine_and_export_refusal():
    config = movq.get_preset(PRESET)
    assert CodecConfig.from_json(config.to_json()) == config
    assert json.loads(config.to_json())["quantizer"]["bit_order"] == "lsb_first"
    with pytest.raises(ValueError, match="network='magvit2' has no attention"):
        CodecConfig.from_dict({**config.to_dict(), "attn_resolutions": [16]})
    with pytest.raises(ValueError, match="embed_dim == z_channels"):
        CodecConfig.from_dict({**config.to_dict(), "embed_dim": 8})
    with pytest.raises(ValueError, match="cannot represent the 'magvit2' network"):
        movq.hub.diffusers.config_to_diffusers(replace(config, quantizer=movq.config.VQConfig(codebook_size=64)))
    with torch.device("meta"):
        codec = movq.Codec(config)
        assert sum(p.numel() for p in codec.parameters()) == 115_127_829
    assert not cpu_engine.handles(codec) and codec.decoder.global_levels == len(config.ch_mult)


def test_a_small_magvit2_codec_trains_one_step():
    small = replace(movq.get_preset(PRESET), ch=32, ch_mult=(1, 2), num_res_blocks=1, z_channels=6, embed_dim=6)
    torch.manual_seed(0)
    codec = movq.Codec(CodecConfig.from_dict(small.to_dict())).train()
    x = torch.rand(2, 3, 16, 16) * 2 - 1
    out = codec(x)
    ((out.sample - x).abs().mean() + out.quantizer.loss).backward()
    assert all(p.grad is not None for p in codec.parameters()), "every weight learns"
    assert codec.encoder.conv_in.bias is None and codec.decoder.adaptive[0].gamma.weight.grad.abs().sum() > 0
