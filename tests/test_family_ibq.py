"""IBQ (TencentARC/SEED-Voken): ``movq.load`` of the published Lightning checkpoint against the
original, the index backpropagation quantizer in closed form, and training with it.

``tests/fixtures/ibq-1024.json`` was recorded from SEED-Voken's own ``IBQ`` class by
``benchmarks/record_family_fixtures.py`` (see ``tests/fixtures/README.md``). Here the same seeded
checkpoint is rebuilt without SEED-Voken's code: the codec's names are taming's (= movq's), LitEma's
shadows are those names without dots, and the loss's discriminator keys come from the fixture; the
hash of all names and shapes must equal the original's.
"""

from __future__ import annotations

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
    make_hub_cache,
    make_images,
    recorded_inputs,
    tiny_train_config,
)
from movq.hub import registry
from movq.hub.ibq import is_ibq_network
from movq.hub.llamagen import codec_shapes
from movq.loader import codec_from_state
from movq.quantizers import IBQConfig, IndexPropagationQuantizer
from movq.train.losses import LossWeights
from movq.train.trainer import Trainer

torch.set_num_threads(1)
fixtures = benchmark_module("record_family_fixtures")  # benchmarks/record_family_fixtures.py
FIXTURE = json.loads((Path(__file__).parent / "fixtures" / "ibq-1024.json").read_text())
PRESET = "ibq-f16-1024"


def shadow(key: str) -> str:
    """LitEma's buffer name of parameter ``key``."""
    return "model_ema." + key.replace(".", "")


@pytest.fixture(scope="module")
def published(tmp_path_factory) -> tuple[Path, dict[str, torch.Tensor]]:
    """``(file, EMA weights)``: the fixture's seeded ``imagenet256_1024.ckpt``. The raw codec weights
    are zero-stride zeros (a few bytes in the file): the EMA shadows must be the ones read."""
    codec_keys = {k: tuple(v.shape) for k, v in codec_shapes(movq.get_preset(PRESET)).items()}
    seeded = {**{shadow(k): s for k, s in codec_keys.items()}, **FIXTURE["non_codec_keys"]}
    weights = fixtures.seeded_weights(seeded, FIXTURE["recipe"]["weights_seed"])
    raw = {k: torch.zeros(()).expand(s) for k, s in codec_keys.items()}
    assert fixtures.keys_digest({**codec_keys, **seeded}) == FIXTURE["published_keys_sha256"]
    assert len(codec_keys) + len(seeded) == FIXTURE["published_keys"]
    path = tmp_path_factory.mktemp("ibq") / "imagenet256_1024.ckpt"
    torch.save({"epoch": 0, "global_step": 0, "pytorch-lightning_version": "2.2.1", "state_dict": {**raw, **weights},
                "optimizer_states": [], "lr_schedulers": []}, path)
    return path, {k: weights[shadow(k)] for k in codec_keys}


def test_load_matches_the_original_tokens_and_pixels(published, caplog):
    path, ema = published
    images = recorded_inputs(FIXTURE, {shadow(k): v for k, v in ema.items()})

    with caplog.at_level(logging.INFO, logger="movq.hub.formats"):
        codec = movq.load(path)  # nothing named: IBQ is recognised from the network's shapes
    assert codec.config.name == PRESET == FIXTURE["preset"]
    assert isinstance(codec.quantize, IndexPropagationQuantizer) and codec.codebook_size == 1024
    # the discriminator and LitEma's shadows of it are dropped, and the log says so
    assert "dropping 35 training-only keys (loss.discriminator: 22 keys, model_ema shadows of them: 13 keys)" in caplog.text
    assert torch.equal(codec.quantize.embedding.weight, ema["quantize.embedding.weight"])

    assert_matches_family_fixture(codec, images, FIXTURE)


def test_training_path_matches_the_original(published):
    """The loss IBQ trains with (its quantizer loss + 0.05 x entropy loss) and its gradients to the
    latent and to every code, against the original's recorded on the same codebook."""
    _, ema = published
    quantizer = movq.get_preset(PRESET).build_quantizer()
    quantizer.embedding.weight.data.copy_(ema["quantize.embedding.weight"])
    z = fixtures.training_probe_latent(256).requires_grad_()
    out = quantizer(z)
    (out.loss + (fixtures.probe_weights(out.z_q) * out.z_q).sum()).backward()
    recorded = FIXTURE["training"]
    assert out.loss.item() == pytest.approx(recorded["loss"], rel=1e-5)
    assert z.grad.abs().sum().item() == pytest.approx(recorded["latent_grad_abs_sum"], rel=1e-4)
    grad = quantizer.embedding.weight.grad
    assert grad.abs().sum().item() == pytest.approx(recorded["codebook_grad_abs_sum"], rel=1e-4)
    assert int((grad.abs().sum(-1) > 0).sum()) == recorded["codebook_rows_with_grad"] == 1024
    assert recorded["parity"]["max_latent_grad_difference"] < 1e-3


def test_ema_false_reads_the_raw_weights_and_the_registered_name_loads_offline(published, tmp_path, monkeypatch):
    path, ema = published
    raw = movq.load(path, ema=False)
    assert not raw.quantize.embedding.weight.any()
    make_hub_cache(tmp_path, "TencentARC/IBQ-Tokenizer-1024", {"imagenet256_1024.ckpt": path}, monkeypatch)
    codec = movq.load("ibq-1024")
    assert codec.config.name == "ibq-1024" and isinstance(codec.quantize, IndexPropagationQuantizer)
    assert torch.equal(codec.quantize.embedding.weight, ema["quantize.embedding.weight"])


def test_only_ibqs_network_is_read_as_ibq():
    for name in ("ibq-f16-1024", "ibq-f16-262144"):
        with torch.device("meta"):
            state = dict(movq.Codec(movq.get_preset(name)).state_dict())  # a plain dict: no saved config
            codec = codec_from_state(state, pretrained=False)
        assert codec.config == movq.get_preset(name)
    taming = movq.get_preset("vqgan-f16-16384")  # same levels and codes, 2 res blocks: a nearest-code VQ
    assert not is_ibq_network(taming) and is_ibq_network(movq.config.CodecConfig.from_dict(
        {**movq.get_preset("ibq-f16-1024").to_dict(), "quantizer": {"kind": "vq", "codebook_size": 1024}}))


def test_registered_names_and_the_authors_figures():
    models = {m["name"]: m for m in movq.list_models()}
    for n, rfid in [(1024, "2.24"), (8192, "1.87"), (16384, "1.37"), (262144, "1.00")]:
        spec = registry.get_spec(f"ibq-{n}")
        assert (spec.repo_id, spec.filenames, spec.preset) == (f"TencentARC/IBQ-Tokenizer-{n}", (f"imagenet256_{n}.ckpt",), f"ibq-f16-{n}")
        assert "authors' figures" in models[f"ibq-{n}"]["published"] and f"rFID {rfid}," in models[f"ibq-{n}"]["published"]
    assert "rFID 1.53, PSNR 22.69" in models["ibq-262144-pretrain"]["published"]
    assert registry.get_spec("ibq-16384-pretrain").filenames == ("IBQ_pretrain_16384.ckpt",)
    with torch.device("meta"):
        assert sum(p.numel() for p in movq.load("ibq-262144", pretrained=False).parameters()) == 173_896_579


# ------------------------------------------------------------------ the quantizer


def test_code_is_the_largest_dot_product_and_the_loss_is_ibqs():
    torch.manual_seed(0)
    q = IndexPropagationQuantizer(codebook_size=40, dim=6, entropy_weight=0.05)
    z = torch.randn(2, 6, 3, 4, requires_grad=True)
    out = q(z)
    x = z.detach().permute(0, 2, 3, 1).double()
    codes = q.embedding.weight.detach().double()
    logits = x @ codes.T
    assert torch.equal(out.indices, logits.argmax(-1))
    nearest = ((x[..., None, :] - codes) ** 2).sum(-1).argmin(-1)
    assert not torch.equal(out.indices, nearest)  # a different rule from nearest-code VQ on these codes
    assert torch.equal(q.indices(z), out.indices)
    chosen = codes[out.indices]
    torch.testing.assert_close(out.z_q.double(), chosen.permute(0, 3, 1, 2), rtol=0, atol=1e-6)
    # quantizer loss: the three squared terms all equal mean((e - z)^2) in value; entropy, written out
    mse = ((chosen - x) ** 2).mean()
    p = torch.softmax(logits.reshape(-1, 40) / 0.01, -1)
    sample_entropy = -(p * torch.log_softmax(logits.reshape(-1, 40) / 0.01 + 1e-5, -1)).sum(-1).mean()
    avg = p.mean(0)
    batch_entropy = -(avg * torch.log(avg + 1e-5)).sum()
    expected = (2 + 0.25) * mse + 0.05 * (sample_entropy - batch_entropy)
    assert out.loss.item() == pytest.approx(expected.item(), rel=1e-4)

    out.loss.backward()  # index backpropagation: every code gets a gradient, not only the chosen ones
    grad = q.embedding.weight.grad
    unused = torch.ones(40, dtype=torch.bool)
    unused[out.indices.unique()] = False
    assert unused.any() and (grad[unused].abs().sum(-1) > 0).all()
    assert z.grad is not None and z.grad.abs().sum() > 0


def test_config_round_trip_and_checks():
    config = movq.get_preset(PRESET)
    assert movq.config.CodecConfig.from_json(config.to_json()) == config
    assert json.loads(config.to_json())["quantizer"]["kind"] == "ibq"
    with pytest.raises(movq.strict.ConfigError, match="entropy_temperature"):
        IBQConfig(entropy_temperature=0)
    with pytest.raises(ValueError, match="accepted range"):
        IndexPropagationQuantizer(8, 4).embed(torch.tensor([[[8]]]))
    with pytest.raises(ValueError, match=r"diffusers' VQModel supports only a plain VQ codebook"):
        movq.hub.diffusers.config_to_diffusers(config)


@pytest.mark.usefixtures("one_thread")
def test_a_codec_with_the_ibq_quantizer_trains(tmp_path):
    codec = {**TRAIN_CODEC, "quantizer": {"kind": "ibq", "codebook_size": 32}}
    cfg = tiny_train_config(make_images(tmp_path / "data"), tmp_path / "out", codec=codec, max_steps=12, disc_start=1000,
                            loss=LossWeights(l1=1.0), min_lr_ratio=1.0, lr=3e-3)
    trainer = Trainer(cfg)
    x = torch.stack([trainer.dataset[(i, 0)]["image"] for i in range(4)])
    codebook = trainer.codec.quantize.embedding.weight.detach().clone()

    def l2() -> float:
        with torch.no_grad():
            return float((trainer.codec.train(False)(x).sample - x).pow(2).mean())

    before = l2()
    trainer.codec.train()
    assert trainer.run() == 12
    assert l2() < 0.8 * before
    moved = (trainer.codec.quantize.embedding.weight.detach() - codebook).abs().sum(-1) > 0
    assert moved.all()  # every code was updated
    assert isinstance(movq.load(tmp_path / "out").quantize, IndexPropagationQuantizer)
