"""MaskGIT's VQGAN (the PyTorch conversion ``maskgit-vqgan-imagenet-f16-256.bin`` in
``fun-research/TiTok``): ``movq.load`` of the published file against the original, and its network
blocks written out.

``tests/fixtures/maskgit-vqgan.json`` was recorded from bytedance/1d-tokenizer's own
``modeling/modules/maskgit_vqgan.py`` by ``benchmarks/record_family_fixtures.py`` (see
``tests/fixtures/README.md``). Here the same seeded file is rebuilt without that code: the keys are
movq's in MaskGIT's names (:func:`movq.hub.maskgit.movq_key_to_maskgit`), and the hash of all names
and shapes must equal the original's.
"""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

import movq
from helpers import assert_matches_family_fixture, benchmark_module, make_hub_cache, recorded_inputs
from movq.config import CodecConfig
from movq.hub import registry
from movq.hub.formats import MASKGIT, detect_format
from movq.hub.llamagen import codec_shapes
from movq.hub.maskgit import maskgit_key_to_movq, movq_key_to_maskgit
from movq.modules import cpu_engine
from movq.modules.blocks import Downsample, ResnetBlock

torch.set_num_threads(1)
fixtures = benchmark_module("record_family_fixtures")  # benchmarks/record_family_fixtures.py
FIXTURE = json.loads((Path(__file__).parent / "fixtures" / "maskgit-vqgan.json").read_text())
PRESET = "maskgit-vqgan-f16-1024"
FILE = "maskgit-vqgan-imagenet-f16-256.bin"


@pytest.fixture(scope="module")
def published(tmp_path_factory) -> tuple[Path, dict[str, torch.Tensor]]:
    """``(file, state in MaskGIT's names)``: the fixture's seeded ``maskgit-vqgan-imagenet-f16-256.bin``."""
    shapes = {movq_key_to_maskgit(k): tuple(v.shape) for k, v in codec_shapes(movq.get_preset(PRESET)).items()}
    assert fixtures.keys_digest(shapes) == FIXTURE["published_keys_sha256"]
    assert len(shapes) == FIXTURE["published_keys"]
    weights = fixtures.seeded_weights(shapes, FIXTURE["recipe"]["weights_seed"])
    path = tmp_path_factory.mktemp("maskgit") / FILE
    torch.save(weights, path)
    return path, weights


def test_load_matches_the_original_tokens_and_pixels(published):
    path, weights = published
    images = recorded_inputs(FIXTURE, weights)
    assert detect_format(weights) == MASKGIT

    codec = movq.load(path)  # nothing named: MaskGIT is recognised from its keys, the network from the shapes
    assert codec.config.name == PRESET == FIXTURE["preset"]
    assert codec.input_range == (0.0, 1.0) and codec.codebook_size == 1024
    assert isinstance(codec.quant_conv, torch.nn.Identity) and isinstance(codec.post_quant_conv, torch.nn.Identity)

    # movq's API in [-1, 1]; the network sees (x + 1) / 2 as the original did
    tokens = assert_matches_family_fixture(codec, images, FIXTURE)

    # the CPU engine does not compute MaskGIT's blocks: it declines, and the plain modules give these outputs
    assert not cpu_engine.handles(codec) and cpu_engine.handles(movq.Codec(movq.get_preset("movqgan-tiny")))
    with torch.enable_grad():  # outside eager CPU inference: the plain forwards, engine or not
        assert torch.equal(codec.encode(images), tokens)


def test_registered_name_loads_offline_and_a_wrong_file_names_the_keys(published, tmp_path, monkeypatch):
    path, weights = published
    make_hub_cache(tmp_path, "fun-research/TiTok", {FILE: path}, monkeypatch)
    codec = movq.load("maskgit-vqgan-f16-256")
    assert codec.config.name == "maskgit-vqgan-f16-256"
    assert torch.equal(codec.quantize.embedding.weight, weights["quantize.embedding.weight"])
    spec = registry.get_spec("maskgit-vqgan-f16-256")
    assert (spec.repo_id, spec.filenames, spec.preset, spec.format) == ("fun-research/TiTok", (FILE,), PRESET, MASKGIT)

    broken = dict(weights)
    del broken["decoder.up.1.upsample_conv.bias"]
    broken["encoder.mid.0.conv1.bias"] = torch.zeros(512)  # MaskGIT's convolutions have no bias
    torch.save(broken, tmp_path / "broken.bin")
    with pytest.raises(ValueError, match=r"missing.*decoder\.up\.1\.upsample_conv\.bias.*unexpected.*encoder\.mid\.0\.conv1\.bias"):
        movq.load(tmp_path / "broken.bin")


def test_key_map_round_trip():
    for key in codec_shapes(movq.get_preset(PRESET)):
        assert maskgit_key_to_movq(movq_key_to_maskgit(key)) == key
    assert movq_key_to_maskgit("decoder.up.3.upsample.conv.weight") == "decoder.up.3.upsample_conv.weight"
    assert movq_key_to_maskgit("encoder.mid.block_2.norm1.weight") == "encoder.mid.1.norm1.weight"


# ------------------------------------------------------------------ the blocks, written out


def test_maskgit_blocks_in_closed_form():
    torch.manual_seed(0)
    block = ResnetBlock(32, 64, bias=False, shortcut_from_output=True)
    assert block.conv1.bias is None and block.nin_shortcut.weight.shape == (64, 64, 1, 1)
    x = torch.randn(2, 32, 5, 6)
    h = F.conv2d(F.silu(F.group_norm(x, 32, block.norm1.weight, block.norm1.bias, 1e-6)), block.conv1.weight, padding=1)
    h = F.conv2d(F.silu(F.group_norm(h, 32, block.norm2.weight, block.norm2.bias, 1e-6)), block.conv2.weight, padding=1)
    torch.testing.assert_close(block(x), h + F.conv2d(h, block.nin_shortcut.weight))  # the shortcut reads the output
    down = Downsample(8, "avgpool")
    y = torch.randn(1, 8, 6, 4)
    assert down.conv is None
    torch.testing.assert_close(down(y), y.reshape(1, 8, 3, 2, 2, 2).mean(dim=(3, 5)))
    with pytest.raises(ValueError, match="Downsample kind must be one of .*'avgpool'"):
        Downsample(8, "maxpool")  # type: ignore[arg-type]


def test_config_checks_round_trip_and_export_refusal():
    config = movq.get_preset(PRESET)
    assert CodecConfig.from_json(config.to_json()) == config
    assert json.loads(config.to_json())["network"] == "maskgit"
    with pytest.raises(ValueError, match="no attention"):
        CodecConfig.from_dict({**config.to_dict(), "attn_resolutions": [16]})
    with pytest.raises(ValueError, match="embed_dim must equal z_channels"):
        CodecConfig.from_dict({**config.to_dict(), "embed_dim": 8})
    with pytest.raises(ValueError, match="num_res_blocks must be 2"):
        CodecConfig.from_dict({**config.to_dict(), "num_res_blocks": 3})
    with pytest.raises(ValueError, match="cannot represent the 'maskgit' network"):
        movq.hub.diffusers.config_to_diffusers(config)
    with torch.device("meta"):
        assert sum(p.numel() for p in movq.load("maskgit-vqgan-f16-256", pretrained=False).parameters()) == 54_515_587


def test_a_small_maskgit_codec_trains_one_step():
    small = replace(movq.get_preset(PRESET), ch=32, ch_mult=(1, 2), z_channels=16, embed_dim=16,
                    quantizer=movq.config.VQConfig(codebook_size=32))
    torch.manual_seed(0)
    codec = movq.Codec(CodecConfig.from_dict(small.to_dict())).train()
    x = torch.rand(2, 3, 16, 16) * 2 - 1
    out = codec(x)
    ((out.sample - x).abs().mean() + out.quantizer.loss).backward()
    assert all(p.grad is not None for n, p in codec.named_parameters() if not n.startswith("quantize")), "every weight learns"
    assert codec.encoder.conv_in.bias is None and codec.decoder.conv_in.bias is not None
