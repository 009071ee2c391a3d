"""LlamaGen's VQ-16 / VQ-8 tokenizers: ``movq.load`` of the published file against the original.

The golden outputs in ``tests/fixtures/llamagen-*.json`` were recorded from LlamaGen's own
``vq_model.py`` by ``benchmarks/record_family_fixtures.py`` (see ``tests/fixtures/README.md``). Here
the same seeded checkpoint is rebuilt in LlamaGen's key names, without LlamaGen's code: the names
and shapes come from movq's key map, and must hash to what the original model had.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

import movq
from helpers import assert_matches_family_fixture, benchmark_module, make_hub_cache, recorded_inputs
from movq.hub import registry
from movq.hub.formats import LLAMAGEN, detect_format
from movq.hub.llamagen import codec_shapes, llamagen_key_to_movq, movq_key_to_llamagen
from movq.loader import codec_from_state

torch.set_num_threads(1)
fixtures = benchmark_module("record_family_fixtures")  # benchmarks/record_family_fixtures.py
FIXTURES = Path(__file__).parent / "fixtures"
FAMILIES = {"llamagen-vq16": "vq_ds16_c2i.pt", "llamagen-vq8": "vq_ds8_c2i.pt"}
USAGE_BUFFER = {"quantize.codebook_used": (65536,)}  # LlamaGen's codebook_show_usage buffer


def fixture(family: str) -> dict:
    return json.loads((FIXTURES / f"{family}.json").read_text())


def published_shapes(preset: str) -> dict[str, tuple[int, ...]]:
    """LlamaGen's key names and shapes for ``preset``, through movq's key map (checked against the
    original's by hash in the tests)."""
    config = movq.get_preset(preset)
    levels = len(config.ch_mult)
    shapes = {movq_key_to_llamagen(k, levels): tuple(v.shape) for k, v in codec_shapes(config).items()}
    return {**shapes, **USAGE_BUFFER}


@pytest.fixture(scope="module", params=sorted(FAMILIES))
def published(request, tmp_path_factory) -> tuple[str, Path, dict[str, torch.Tensor]]:
    """``(family, file, weights)``: the fixture's seeded checkpoint, saved as LlamaGen publishes it."""
    family = request.param
    recorded = fixture(family)
    weights = fixtures.seeded_weights(published_shapes(family), recorded["recipe"]["weights_seed"])
    path = tmp_path_factory.mktemp(family) / FAMILIES[family]
    torch.save({"model": weights}, path)
    return family, path, weights


def test_the_key_map_gives_the_original_names_and_shapes(published):
    family, _, weights = published
    recorded = fixture(family)
    assert len(weights) == recorded["published_keys"]
    assert fixtures.keys_digest({k: v.shape for k, v in weights.items()}) == recorded["published_keys_sha256"]
    levels = len(movq.get_preset(family).ch_mult)
    assert all(movq_key_to_llamagen(llamagen_key_to_movq(k, levels), levels) == k for k in weights)
    # decoder blocks run in execution order in LlamaGen (0 = lowest resolution), movq's `up` by level
    assert llamagen_key_to_movq("decoder.conv_blocks.0.attn.2.q.weight", levels) == f"decoder.up.{levels - 1}.attn.2.q.weight"
    assert llamagen_key_to_movq("encoder.mid.1.proj_out.bias", levels) == "encoder.mid.attn_1.proj_out.bias"


def test_load_matches_the_original_tokens_and_pixels(published):
    family, path, weights = published
    recorded = fixture(family)
    images = recorded_inputs(recorded, weights)

    codec = movq.load(path)  # nothing named: family and architecture come from the keys and shapes
    assert codec.config.name == family == recorded["preset"]
    assert codec.config.quantizer.l2_normalize and codec.codebook_size == 16384 and codec.config.embed_dim == 8

    assert_matches_family_fixture(codec, images, recorded)


def test_codebook_usage_buffer_is_ignored_and_said_so(published, caplog, tmp_path):
    family, path, weights = published
    with caplog.at_level(logging.INFO, logger="movq.hub.llamagen"):
        codec = movq.load(path)
    assert "quantize.codebook_used" in caplog.text and "ignoring" in caplog.text
    assert not any("codebook_used" in k for k in codec.state_dict())
    with pytest.raises(ValueError, match="l2_normalize"):  # diffusers' VQModel has no l2-normalised codebook
        codec.save_pretrained(tmp_path / "export", format="diffusers")
    assert not (tmp_path / "export").exists()
    # a checkpoint saved with codebook_show_usage=False has no such buffer: loads the same
    without = {k: v for k, v in weights.items() if k not in USAGE_BUFFER}
    assert detect_format(without) == LLAMAGEN
    again = codec_from_state({"model": without}, source="no-usage-buffer")
    assert torch.equal(again.quantize.embedding.weight, codec.quantize.embedding.weight)


def test_strict_keys_are_listed_in_llamagen_names(published):
    family, _, weights = published
    state = dict(weights)
    state.pop("decoder.conv_blocks.0.res.1.conv2.weight")
    state["encoder.conv_blocks.0.extra.weight"] = torch.zeros(1)
    with pytest.raises(ValueError) as info:
        codec_from_state({"model": state}, source="edited.pt")
    message = str(info.value)
    assert "edited.pt" in message and "missing" in message and "unexpected" in message
    assert "decoder.conv_blocks.0.res.1.conv2.weight" in message and "encoder.conv_blocks.0.extra.weight" in message

    state = dict(weights)
    state["quantize.embedding.weight"] = torch.zeros(16384, 4)
    with pytest.raises(ValueError, match=r"quantize\.embedding\.weight: checkpoint \(16384, 4\) vs model \(16384, 8\)"):
        codec_from_state({"model": state}, preset=family, source="resized.pt")


def test_quantizer_is_llamagens_l2_normalised_search_and_loss():
    """LlamaGen's VectorQuantizer: latent and codes l2-normalised, nearest code, loss
    ``mean((q - sg z)^2) + beta * mean((sg q - z)^2)`` on the normalised vectors (closed form here)."""
    torch.manual_seed(0)
    quantizer = movq.get_preset("llamagen-vq8").build_quantizer()
    with torch.no_grad():
        quantizer.embedding.weight.normal_()
    z = torch.randn(2, 8, 3, 5, requires_grad=True)
    out = quantizer(z)
    x = F.normalize(z.detach().permute(0, 2, 3, 1), dim=-1)
    codes = F.normalize(quantizer.embedding.weight.detach(), dim=-1)
    assert torch.equal(out.indices, (x @ codes.T).argmax(-1))  # nearest unit vector = largest dot product
    q = codes[out.indices]
    assert torch.allclose(out.z_q, q.permute(0, 3, 1, 2), atol=1e-6)
    assert out.loss.item() == pytest.approx((1 + 0.25) * F.mse_loss(q, x).item(), rel=1e-5)
    out.loss.backward()  # trains: the commitment term reaches the encoder side
    assert z.grad is not None and z.grad.abs().sum() > 0


def test_registered_names_list_the_authors_figures():
    models = {m["name"]: m for m in movq.list_models()}
    for name, repo, filename, preset in [
        ("llamagen-vq16-c2i", "FoundationVision/LlamaGen", "vq_ds16_c2i.pt", "llamagen-vq16"),
        ("llamagen-vq8-c2i", "FoundationVision/LlamaGen", "vq_ds8_c2i.pt", "llamagen-vq8"),
        ("llamagen-vq16-t2i", "peizesun/llamagen_t2i", "vq_ds16_t2i.pt", "llamagen-vq16"),
    ]:
        spec = registry.get_spec(name)
        assert (spec.repo_id, spec.filenames, spec.preset, spec.format) == (repo, (filename,), preset, LLAMAGEN)
        assert f"{repo}/{filename}" in models[name]["source"]
    assert "authors' figures" in models["llamagen-vq16-c2i"]["published"]
    assert "rFID 2.19" in models["llamagen-vq16-c2i"]["published"] and "16x16 tokens" in models["llamagen-vq16-c2i"]["published"]
    assert "rFID 0.59" in models["llamagen-vq8-c2i"]["published"] and "32x32 tokens" in models["llamagen-vq8-c2i"]["published"]
    assert models["llamagen-vq16-t2i"]["published"] == ""  # the authors give no ImageNet figures for it
    with torch.device("meta"):
        for name, size in [("llamagen-vq16-c2i", 71_883_403), ("llamagen-vq8-c2i", 70_109_835)]:
            codec = movq.load(name, pretrained=False)
            assert sum(p.numel() for p in codec.parameters()) == size  # the README's "72M" and "70M"


def test_registered_name_loads_from_an_offline_hub_cache(published, tmp_path, monkeypatch):
    family, path, weights = published
    name, repo = {"llamagen-vq16": ("llamagen-vq16-t2i", "peizesun/llamagen_t2i"),
                  "llamagen-vq8": ("llamagen-vq8-c2i", "FoundationVision/LlamaGen")}[family]
    make_hub_cache(tmp_path, repo, {registry.get_spec(name).filenames[0]: path}, monkeypatch)
    codec = movq.load(name)
    assert codec.config.name == name
    assert torch.equal(codec.quantize.embedding.weight, weights["quantize.embedding.weight"])


def test_training_checkpoint_with_an_ema_copy(published):
    """LlamaGen's ``vq_train.py`` saves ``{"model", "ema", "optimizer", "discriminator", "steps", ...}``;
    its demo reads ``"ema"`` first: so does ``ema=None``, and ``ema=False`` reads ``"model"``."""
    family, _, weights = published
    shadow = {**weights, "quantize.embedding.weight": weights["quantize.embedding.weight"].flip(0)}
    checkpoint = {"model": weights, "ema": shadow, "optimizer": {"state": {}, "param_groups": []},
                  "discriminator": {"conv.weight": torch.zeros(1)}, "steps": 10}
    for ema, expected in [(None, shadow), (True, shadow), (False, weights)]:
        codec = codec_from_state(checkpoint, ema=ema, source="training.pt")
        assert codec.config.name == family
        assert torch.equal(codec.quantize.embedding.weight, expected["quantize.embedding.weight"])
