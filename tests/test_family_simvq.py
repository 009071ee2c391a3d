"""SimVQ (youngsheen/SimVQ): ``movq.load`` of its Lightning checkpoint against the original, the
quantizer against vector-quantize-pytorch's SimVQ and in closed form, and training with it.

``tests/fixtures/simvq-1024.json`` was recorded from SimVQ's own ``VQModel`` (``taming/models/vq.py``)
by ``benchmarks/record_family_fixtures.py`` at ``configs/imagenet_simvq_128_B.yaml`` (see
``tests/fixtures/README.md``). Here the same seeded checkpoint is rebuilt without SimVQ's code: the
codec's keys are movq's in SimVQ's names (:func:`movq.hub.magvit2.movq_key_to_magvit2`), LitEma's
shadows are those names without dots (none for the frozen codebook), the discriminator's keys come
from the fixture; the hash of all names and shapes must equal the original's.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest
import torch
from torch import nn

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
from movq.hub.formats import MAGVIT2, detect_format
from movq.hub.llamagen import codec_shapes
from movq.hub.magvit2 import movq_key_to_magvit2
from movq.loader import codec_from_state
from movq.quantizers import SimVQ, SimVQConfig
from movq.train.cli import main
from movq.train.losses import LossWeights
from movq.train.trainer import Trainer, build_codec

torch.set_num_threads(1)
fixtures = benchmark_module("record_family_fixtures")  # benchmarks/record_family_fixtures.py
FIXTURE = json.loads((Path(__file__).parent / "fixtures" / "simvq-1024.json").read_text())
PRESET = "simvq-f8-1024"
FROZEN = "quantize.embedding.weight"


def shadow(key: str) -> str:
    """LitEma's buffer name of parameter ``key``."""
    return "model_ema." + key.replace(".", "")


@pytest.fixture(scope="module")
def published(tmp_path_factory) -> tuple[Path, dict[str, torch.Tensor]]:
    """``(file, the weights movq must read, in SimVQ's names)``: the fixture's seeded checkpoint. The
    raw trainable weights are zero-stride zeros (the EMA shadows must be the ones read); the frozen
    codebook has no shadow, so its raw tensor is read."""
    codec_keys = {movq_key_to_magvit2(k): tuple(v.shape) for k, v in codec_shapes(movq.get_preset(PRESET)).items()}
    seeded = {FROZEN: codec_keys[FROZEN], **{shadow(k): s for k, s in codec_keys.items() if k != FROZEN},
              **FIXTURE["non_codec_keys"]}
    assert fixtures.keys_digest({**codec_keys, **seeded}) == FIXTURE["published_keys_sha256"]
    assert len({**codec_keys, **seeded}) == FIXTURE["published_keys"]
    weights = fixtures.seeded_weights(seeded, FIXTURE["recipe"]["weights_seed"])
    raw = {k: torch.zeros(()).expand(s) for k, s in codec_keys.items() if k != FROZEN}
    path = tmp_path_factory.mktemp("simvq") / "epoch=49-step=1000000.ckpt"
    fixtures._lightning_checkpoint({**raw, **weights}, path)
    read = {k: weights[FROZEN if k == FROZEN else shadow(k)] for k in codec_keys}
    return path, read


def test_load_matches_the_original_tokens_and_pixels(published, caplog, tmp_path):
    path, read = published
    images = recorded_inputs(FIXTURE, {(k if k == FROZEN else shadow(k)): v for k, v in read.items()})
    assert detect_format(read) == MAGVIT2

    with caplog.at_level(logging.INFO, logger="movq.hub.formats"):
        codec = movq.load(path)  # nothing named: SimVQ's network (no adaptive norms) and quantizer from the keys
    assert codec.config.name == PRESET == FIXTURE["preset"] and codec.config.network == "simvq"
    assert isinstance(codec.quantize, SimVQ) and codec.codebook_size == 1024
    assert "dropping 35 training-only keys" in caplog.text
    assert torch.equal(codec.quantize.embedding.weight, read[FROZEN])
    assert torch.equal(codec.quantize.embedding_proj.weight, read["quantize.embedding_proj.weight"])

    tokens = assert_matches_family_fixture(codec, images, FIXTURE)

    codec.save_pretrained(tmp_path / "saved")
    again = movq.load(tmp_path / "saved")
    assert again.config == codec.config and torch.equal(again.encode(images), tokens)


def test_training_path_matches_the_original(published):
    """SimVQ's commitment loss and its gradients to the latent and to the projection, against the
    original's recorded on the same weights; the frozen codebook gets none."""
    _, read = published
    quantizer = movq.get_preset(PRESET).build_quantizer()
    quantizer.load_state_dict({k.removeprefix("quantize."): v for k, v in read.items() if k.startswith("quantize.")})
    z = fixtures.training_probe_latent(128).requires_grad_()
    out = quantizer(z)
    (out.loss + (fixtures.probe_weights(out.z_q) * out.z_q).sum()).backward()
    recorded = FIXTURE["training"]
    assert out.loss.item() == pytest.approx(recorded["loss"], rel=1e-5)
    assert z.grad.abs().sum().item() == pytest.approx(recorded["latent_grad_abs_sum"], rel=1e-4)
    assert quantizer.embedding_proj.weight.grad.abs().sum().item() == pytest.approx(
        recorded["projection_weight_grad_abs_sum"], rel=1e-4)
    assert quantizer.embedding.weight.grad is None
    assert recorded["parity"]["max_projection_grad_difference"] < 1e-5


# ------------------------------------------------------------------ the quantizer


@pytest.mark.parametrize("bias", [True, False])
def test_same_outputs_as_vector_quantize_pytorch(bias):
    """vector-quantize-pytorch's ``SimVQ`` is the same method with ``rotation_trick=False`` (straight
    through, as the paper) and a linear ``codebook_transform``: same inputs and weights -> same
    codes, indices, loss and gradients."""
    from vector_quantize_pytorch import SimVQ as VqpSimVQ

    torch.manual_seed(0)
    ours = SimVQ(codebook_size=64, dim=8, projection_bias=bias)
    theirs = VqpSimVQ(dim=8, codebook_size=64, codebook_transform=nn.Linear(8, 8, bias=bias), rotation_trick=False,
                      channel_first=True, input_to_quantize_commit_loss_weight=0.25, commitment_weight=1.0)
    theirs.frozen_codebook.copy_(ours.embedding.weight)
    theirs.code_transform.load_state_dict(ours.embedding_proj.state_dict())
    z = torch.randn(2, 8, 5, 3)
    grads = []
    for module in (ours, theirs):
        x = z.clone().requires_grad_()
        if module is ours:
            out = ours(x)
            z_q, indices, loss = out.z_q, out.indices, out.loss
        else:
            z_q, indices, loss = theirs(x)
        (loss + (fixtures.probe_weights(z_q) * z_q).sum()).backward()
        transform = module.embedding_proj if module is ours else module.code_transform
        grads.append((z_q.detach(), indices, loss.detach(), x.grad, transform.weight.grad))
        transform.zero_grad()
    (zq_a, ids_a, loss_a, xg_a, wg_a), (zq_b, ids_b, loss_b, xg_b, wg_b) = grads
    assert torch.equal(ids_a, ids_b)
    torch.testing.assert_close(zq_a, zq_b)
    torch.testing.assert_close(loss_a, loss_b)
    torch.testing.assert_close(xg_a, xg_b)
    torch.testing.assert_close(wg_a, wg_b)
    torch.testing.assert_close(ours.embed(ids_a), theirs.indices_to_codes(ids_b), atol=1e-6, rtol=1e-6)


def test_code_is_the_nearest_projected_row_and_only_the_projection_is_trainable():
    torch.manual_seed(0)
    q = SimVQ(codebook_size=50, dim=4)
    assert [n for n, p in q.named_parameters() if p.requires_grad] == ["embedding_proj.weight", "embedding_proj.bias"]
    z = torch.randn(2, 4, 3, 5, requires_grad=True)
    out = q(z)
    codes = q.embedding.weight.double() @ q.embedding_proj.weight.detach().double().T + q.embedding_proj.bias.detach().double()
    x = z.detach().permute(0, 2, 3, 1).double()
    nearest = torch.cdist(x.reshape(-1, 4), codes).argmin(-1).reshape(2, 3, 5)
    assert torch.equal(out.indices, nearest) and torch.equal(q.indices(z), nearest)
    chosen = codes[nearest]
    torch.testing.assert_close(out.z_q.double(), chosen.permute(0, 3, 1, 2), rtol=0, atol=1e-6)
    torch.testing.assert_close(q.embed(nearest).double(), chosen.permute(0, 3, 1, 2), rtol=0, atol=1e-6)
    assert out.loss.item() == pytest.approx(((1 + 0.25) * ((chosen - x) ** 2).mean()).item(), rel=1e-5)
    with pytest.raises(movq.strict.ConfigError, match="codebook_size"):
        SimVQConfig(codebook_size=0)


def test_config_round_trip_and_detection_from_shapes():
    config = movq.get_preset(PRESET)
    assert CodecConfig.from_json(config.to_json()) == config
    assert json.loads(config.to_json())["quantizer"] == {"codebook_size": 1024, "beta": 0.25, "projection_bias": True,
                                                         "kind": "simvq"}
    with torch.device("meta"):
        codec = movq.Codec(config)
        assert codec.decoder.adaptive is None
        state = dict(codec.state_dict())  # movq's names, no saved config
        assert codec_from_state(state, pretrained=False).config == config


@pytest.mark.usefixtures("one_thread")
def test_a_codec_with_simvq_trains_only_its_projection(tmp_path):
    """``movq-train --quantizer simvq`` (SimVQ in place of the preset's quantizer,
    ``--codec`` setting its codebook size): the loss falls, the codebook stays, the projection moves."""
    codec = {**TRAIN_CODEC, "quantizer": {"codebook_size": 64}}
    cfg = tiny_train_config(make_images(tmp_path / "data"), tmp_path / "out", codec=codec, quantizer="simvq",
                            max_steps=12, disc_start=1000, loss=LossWeights(l1=1.0), min_lr_ratio=1.0, lr=3e-3)
    trainer = Trainer(cfg)
    x = torch.stack([trainer.dataset[(i, 0)]["image"] for i in range(4)])
    quantizer = trainer.codec.quantize
    codebook, projection = quantizer.embedding.weight.detach().clone(), quantizer.embedding_proj.weight.detach().clone()

    def l2() -> float:
        with torch.no_grad():
            return float((trainer.codec.train(False)(x).sample - x).pow(2).mean())

    before = l2()
    trainer.codec.train()
    assert trainer.run() == 12
    assert l2() < 0.9 * before  # 0.255 -> 0.210 in 12 steps
    assert torch.equal(quantizer.embedding.weight, codebook)  # frozen
    assert not torch.equal(quantizer.embedding_proj.weight.detach(), projection)  # learnt
    reloaded = movq.load(tmp_path / "out")
    assert isinstance(reloaded.quantize, SimVQ) and torch.equal(reloaded.quantize.embedding.weight, codebook)


def test_the_quantizer_flag_is_checked_before_any_work(tmp_path, capsys):
    assert main(["--data", str(tmp_path), "--out", str(tmp_path / "out"), "--quantizer", "simvqq"]) == 2
    assert "unknown quantizer 'simvqq'; expected one of" in capsys.readouterr().err and not (tmp_path / "out").exists()
    with pytest.raises(ValueError, match="unknown quantizer 'simvqq'; expected one of .*'simvq'"):
        tiny_train_config(tmp_path, tmp_path / "out", quantizer="simvqq")
    with pytest.raises(ValueError, match="cannot be combined with --init"):
        build_codec(tiny_train_config(tmp_path, tmp_path / "out", codec={}, quantizer="simvq", init="movqgan-tiny-photos"))
