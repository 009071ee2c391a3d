"""VQGAN-LC (zh460045050/VQGAN-LC): ``movq.load`` of its training checkpoint against the original,
the projected-codebook quantizer in closed form, and training with a frozen codebook.

``tests/fixtures/vqgan-lc-100k.json`` was recorded from VQGAN-LC's own ``VQModel``
(``vqgan-gpt-lc/models/models_vq.py``) by ``benchmarks/record_family_fixtures.py`` at its published
configuration (100,000 x 768 codebook, 8-dim latents; see ``tests/fixtures/README.md``). Here the
same seeded checkpoint is rebuilt without VQGAN-LC's code: the codec's names are taming's (= movq's)
but for the quantizer's (:data:`movq.hub.vqgan_lc.KEY_MAP`), the discriminator and LPIPS keys come
from the fixture, and the hash of all names and shapes must equal the original's.
"""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

import pytest
import torch

import movq
from helpers import (
    TRAIN_CODEC,
    assert_matches_family_fixture,
    benchmark_module,
    make_images,
    recorded_inputs,
    tiny_train_config,
)
from movq.config import CodecConfig
from movq.hub.formats import VQGAN_LC, detect_format
from movq.hub.llamagen import codec_shapes
from movq.hub.vqgan_lc import KEY_MAP
from movq.loader import codec_from_state
from movq.quantizers import ProjectedConfig, ProjectedQuantizer
from movq.train.losses import LossWeights
from movq.train.trainer import Trainer

torch.set_num_threads(1)
fixtures = benchmark_module("record_family_fixtures")  # benchmarks/record_family_fixtures.py
FIXTURE = json.loads((Path(__file__).parent / "fixtures" / "vqgan-lc-100k.json").read_text())
PRESET = "vqgan-lc-f16-100k"
TO_PUBLISHED = {movq_key: key for key, movq_key in KEY_MAP.items()}


@pytest.fixture(scope="module")
def published(tmp_path_factory) -> tuple[Path, dict[str, torch.Tensor]]:
    """``(file, codec weights in VQGAN-LC's names)``: the fixture's seeded ``checkpoint-last.pth``."""
    codec_keys = {TO_PUBLISHED.get(k, k): tuple(v.shape) for k, v in codec_shapes(movq.get_preset(PRESET)).items()}
    shapes = {**codec_keys, **FIXTURE["non_codec_keys"]}
    assert fixtures.keys_digest(shapes) == FIXTURE["published_keys_sha256"]
    assert len(shapes) == FIXTURE["published_keys"]
    weights = fixtures.seeded_weights(shapes, FIXTURE["recipe"]["weights_seed"])
    args = argparse.Namespace(**fixtures.VQGAN_LC_ARGS, local_embedding_path="codebook.pth")
    path = tmp_path_factory.mktemp("vqgan-lc") / "checkpoint-last.pth"
    torch.save({"model": weights, "optimizer": {}, "epoch": 19, "scaler": {}, "args": args}, path)
    return path, {k: weights[k] for k in codec_keys}


def test_load_matches_the_original_tokens_and_pixels(published, caplog):
    path, weights = published
    images = recorded_inputs(FIXTURE, weights)
    assert detect_format(weights) == VQGAN_LC

    with caplog.at_level(logging.INFO, logger="movq.hub.formats"):
        codec = movq.load(path)  # nothing named; the pickled argparse.Namespace is read inertly
    assert codec.config.name == PRESET == FIXTURE["preset"]
    assert isinstance(codec.quantize, ProjectedQuantizer) and codec.codebook_size == 100000
    assert ("dropping 19 training-only keys (discriminator.main: 16 keys, perceptual_loss.lin0: 1 keys, "
            "perceptual_loss.scaling_layer: 2 keys)") in caplog.text
    assert torch.equal(codec.quantize.codebook, weights["tok_embeddings.weight"])

    assert_matches_family_fixture(codec, images, FIXTURE)


def test_training_path_matches_the_original(published):
    """VQGAN-LC's quantizer loss and its gradients to the latent and to the projection, against the
    original's recorded on the same weights; the frozen codebook gets none."""
    _, weights = published
    quantizer = movq.get_preset(PRESET).build_quantizer()
    quantizer.load_state_dict({"codebook": weights["tok_embeddings.weight"],
                               "projection.weight": weights["codebook_projection.weight"],
                               "projection.bias": weights["codebook_projection.bias"]})
    z = fixtures.training_probe_latent(8).requires_grad_()
    out = quantizer(z)
    (out.loss + (fixtures.probe_weights(out.z_q) * out.z_q).sum()).backward()
    recorded = FIXTURE["training"]
    assert out.loss.item() == pytest.approx(recorded["loss"], rel=1e-5)
    assert z.grad.abs().sum().item() == pytest.approx(recorded["latent_grad_abs_sum"], rel=1e-4)
    assert quantizer.projection.weight.grad.abs().sum().item() == pytest.approx(recorded["projection_weight_grad_abs_sum"], rel=1e-4)
    assert quantizer.projection.bias.grad.abs().sum().item() == pytest.approx(recorded["projection_bias_grad_abs_sum"], rel=1e-4)
    assert not quantizer.codebook.requires_grad and quantizer.codebook.grad is None
    assert recorded["parity"]["max_projection_grad_difference"] < 1e-5


# ------------------------------------------------------------------ the quantizer


def test_code_is_the_nearest_projected_row_and_the_loss_is_vqgan_lcs():
    torch.manual_seed(0)
    q = ProjectedQuantizer(codebook_size=50, dim=4, codebook_dim=12)
    assert [n for n, _ in q.named_parameters()] == ["projection.weight", "projection.bias"]  # the codebook is a buffer
    z = torch.randn(2, 4, 3, 5, requires_grad=True)
    out = q(z)
    codes = (q.codebook.double() @ q.projection.weight.detach().double().T + q.projection.bias.detach().double())
    x = z.detach().permute(0, 2, 3, 1).double()
    nearest = torch.cdist(x.reshape(-1, 4), codes).argmin(-1).reshape(2, 3, 5)
    assert torch.equal(out.indices, nearest) and torch.equal(q.indices(z), nearest)
    chosen = codes[nearest]
    torch.testing.assert_close(out.z_q.double(), chosen.permute(0, 3, 1, 2), rtol=0, atol=1e-6)
    torch.testing.assert_close(q.embed(nearest).double(), chosen.permute(0, 3, 1, 2), rtol=0, atol=1e-6)
    expected = (1 + 0.33) * ((chosen - x) ** 2).mean()  # both terms have the same value
    assert out.loss.item() == pytest.approx(expected.item(), rel=1e-5)
    out.loss.backward()
    assert q.projection.weight.grad.abs().sum() > 0 and z.grad.abs().sum() > 0


def test_config_round_trip_detection_from_shapes_and_refusals():
    config = movq.get_preset(PRESET)
    assert CodecConfig.from_json(config.to_json()) == config
    assert json.loads(config.to_json())["quantizer"] == {"codebook_size": 100000, "codebook_dim": 768, "beta": 0.33,
                                                         "kind": "projected"}
    with torch.device("meta"):
        codec = movq.Codec(config)
        assert sum(p.numel() for p in codec.parameters()) == 71_758_483  # + the frozen 100000 x 768 codebook
        state = dict(codec.state_dict())  # a plain dict: no saved config, read from the shapes
        assert codec_from_state(state, pretrained=False).config == config
    with pytest.raises(movq.strict.ConfigError, match="codebook_dim"):
        ProjectedConfig(codebook_dim=0)
    with pytest.raises(ValueError, match="supports only a plain VQ codebook"):
        movq.hub.diffusers.config_to_diffusers(config)


def test_the_mlp_projector_is_refused(tmp_path):
    small = {"tok_embeddings.weight": torch.zeros(4, 6), "codebook_projection.0.weight": torch.zeros(3, 6),
             "encoder.conv_in.weight": torch.zeros(8, 3, 3, 3)}
    with pytest.raises(ValueError, match="MLP codebook projector.*linear projector"):
        codec_from_state({"model": small}, source="lc.pth")


@pytest.mark.usefixtures("one_thread")
def test_a_codec_with_the_projected_quantizer_trains_only_its_projection(tmp_path):
    codec = {**TRAIN_CODEC, "quantizer": {"kind": "projected", "codebook_size": 64, "codebook_dim": 16}}
    cfg = tiny_train_config(make_images(tmp_path / "data"), tmp_path / "out", codec=codec, max_steps=12, disc_start=1000,
                            loss=LossWeights(l1=1.0), min_lr_ratio=1.0, lr=3e-3)
    trainer = Trainer(cfg)
    x = torch.stack([trainer.dataset[(i, 0)]["image"] for i in range(4)])
    quantizer = trainer.codec.quantize
    codebook, projection = quantizer.codebook.clone(), quantizer.projection.weight.detach().clone()

    def l2() -> float:
        with torch.no_grad():
            return float((trainer.codec.train(False)(x).sample - x).pow(2).mean())

    before = l2()
    trainer.codec.train()
    assert trainer.run() == 12
    assert l2() < 0.8 * before
    assert torch.equal(quantizer.codebook, codebook)  # frozen
    assert not torch.equal(quantizer.projection.weight.detach(), projection)  # learnt
    reloaded = movq.load(tmp_path / "out")
    assert isinstance(reloaded.quantize, ProjectedQuantizer) and torch.equal(reloaded.quantize.codebook, codebook)
