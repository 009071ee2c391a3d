"""VAR's multi-scale VQVAE (FoundationVision/VAR ``vae_ch160v4096z32.pth``): ``movq.load`` of the
published file against the original, and :class:`movq.quantizers.MultiScaleResidualVQ` in closed form.

``tests/fixtures/var-vqvae.json`` was recorded from VAR's own ``models/vqvae.py`` / ``quant.py`` /
``basic_vae.py`` by ``benchmarks/record_family_fixtures.py`` (see ``tests/fixtures/README.md``). Here
the same seeded file is rebuilt without that code: the keys are movq's in VAR's names
(:func:`movq.hub.var.movq_to_var`), and the hash of all names and shapes must equal the original's.
"""

from __future__ import annotations

import json
from dataclasses import fields, replace
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

import movq
from helpers import assert_matches_family_fixture, benchmark_module, make_hub_cache, recorded_inputs
from movq.config import CodecConfig, MultiScaleConfig
from movq.hub import registry
from movq.hub.formats import VAR, detect_format
from movq.hub.llamagen import codec_shapes
from movq.hub.var import movq_to_var, var_to_movq
from movq.quantizers import MultiScaleResidualVQ
from movq.quantizers.multiscale import VAR_SCALES, phi_for_scales
from movq.strict import ConfigError

torch.set_num_threads(1)
fixtures = benchmark_module("record_family_fixtures")  # benchmarks/record_family_fixtures.py
FIXTURE = json.loads((Path(__file__).parent / "fixtures" / "var-vqvae.json").read_text())
PRESET = "var-f16-4096"
FILE = "vae_ch160v4096z32.pth"


def published_weights() -> dict[str, torch.Tensor]:
    """The fixture's seeded state dict in VAR's key names (the names and shapes checked against the original's)."""
    with torch.device("meta"):
        movq_shapes = {k: tuple(v.shape) for k, v in codec_shapes(movq.get_preset(PRESET)).items()}
        var_meta = movq_to_var({k: torch.empty(s) for k, s in movq_shapes.items()}, len(VAR_SCALES), 4)
    shapes = {k: tuple(v.shape) for k, v in var_meta.items()}
    assert fixtures.keys_digest(shapes) == FIXTURE["published_keys_sha256"]
    assert len(shapes) == FIXTURE["published_keys"]
    return fixtures.seeded_weights(shapes, FIXTURE["recipe"]["weights_seed"])


@pytest.fixture(scope="module")
def published(tmp_path_factory) -> tuple[Path, dict[str, torch.Tensor]]:
    """``(file, state in VAR's names)``: the fixture's seeded ``vae_ch160v4096z32.pth``."""
    weights = published_weights()
    path = tmp_path_factory.mktemp("var") / FILE
    torch.save(weights, path)
    return path, weights


@pytest.mark.slow
def test_load_matches_the_original_tokens_and_pixels(published):
    path, weights = published
    images = recorded_inputs(FIXTURE, weights)
    assert detect_format(weights) == VAR

    codec = movq.load(path)  # nothing named: VAR is recognised from its keys, the network from the shapes
    assert codec.config.name == PRESET == FIXTURE["preset"]
    assert codec.multiscale and codec.codebook_size == 4096 and codec.quant_conv.kernel_size == (3, 3)
    assert codec.tokens_shape(256, 256) == (680,)

    tokens = assert_matches_family_fixture(codec, images, FIXTURE)  # img_to_idxBl, and the decoded pixels
    assert isinstance(tokens, list) and [tuple(t.shape) for t in tokens] == [(2, s, s) for s in FIXTURE["scales"]]
    assert all(t.dtype == torch.long for t in tokens)
    # decode takes the list of [B, s, s] maps, VAR's [B, s * s] ones, or their concatenation alike
    pixels = codec.decode(tokens)
    assert torch.equal(pixels, codec.decode(codec.flat_tokens(tokens)))
    assert torch.equal(pixels, codec.decode([t.flatten(1) for t in tokens]))
    assert pixels.shape == (2, 3, 256, 256) and pixels.abs().max() <= 1


def test_quantizer_training_path_matches_the_original(published):
    """VAR's ``VectorQuantizer2.forward`` (its VAE training path) on the published weights, recorded:
    loss, and the gradients to the latent, the codebook and the Phi convolutions."""
    _, weights = published
    state = var_to_movq(weights)
    quantizer = MultiScaleResidualVQ(4096, 32)
    quantizer.load_state_dict({k[len("quantize."):]: v for k, v in state.items() if k.startswith("quantize.")})
    z = torch.randn(2, 32, 16, 16, generator=torch.Generator().manual_seed(FIXTURE["recipe"]["inputs_seed"] + 1))
    z.requires_grad_()
    out = quantizer(z)
    (out.loss + (fixtures.probe_weights(out.z_q) * out.z_q).sum()).backward()
    recorded = FIXTURE["training"]
    assert recorded["parity"]["loss_difference"] < 1e-5 and recorded["parity"]["max_codebook_grad_difference"] < 1e-6
    assert float(out.loss.detach()) == pytest.approx(recorded["loss"], rel=1e-5)
    assert float(z.grad.abs().sum()) == pytest.approx(recorded["latent_grad_abs_sum"], rel=1e-5)
    assert float(quantizer.embedding.weight.grad.abs().sum()) == pytest.approx(recorded["codebook_grad_abs_sum"], rel=1e-4)
    phi_grads = sum(float(p.weight.grad.abs().sum()) for p in quantizer.quant_resi)
    assert phi_grads == pytest.approx(recorded["phi_grad_abs_sum"], rel=1e-4)


def test_registered_name_loads_offline_and_a_wrong_file_names_the_keys(published, tmp_path, monkeypatch):
    path, weights = published
    make_hub_cache(tmp_path, "FoundationVision/var", {FILE: path}, monkeypatch)
    codec = movq.load("var-vqvae-f16-256")
    assert codec.config.name == "var-vqvae-f16-256" and codec.multiscale
    assert torch.equal(codec.quantize.embedding.weight, weights["quantize.embedding.weight"])
    assert torch.equal(codec.quantize.quant_resi[2].weight, weights["quantize.quant_resi.qresi_ls.2.weight"])
    qkv = weights["decoder.mid.attn_1.qkv.weight"]
    assert torch.equal(codec.decoder.mid.attn_1.k.weight, qkv[640:1280])  # rows [C, 2C) of the fused qkv are k
    spec = registry.get_spec("var-vqvae-f16-256")
    assert (spec.repo_id, spec.filenames, spec.preset, spec.format) == ("FoundationVision/var", (FILE,), PRESET, VAR)

    broken = dict(weights)
    del broken["quantize.quant_resi.qresi_ls.3.bias"]
    torch.save(broken, tmp_path / "broken.pth")
    with pytest.raises(ValueError, match=r"broken\.pth.*missing.*quantize\.quant_resi\.3\.bias"):
        movq.load(tmp_path / "broken.pth", preset=PRESET)
    log = dict(weights, **{"quantize.ema_vocab_hit_SV": torch.zeros(7, 4096)})
    torch.save(log, tmp_path / "seven.pth")
    with pytest.raises(ValueError, match=r"7 scales.*pass preset="):
        movq.load(tmp_path / "seven.pth")


def test_key_maps_round_trip():
    with torch.device("meta"):
        state = movq.Codec(movq.get_preset(PRESET)).state_dict()
    for phi_count, name in ((1, "qresi."), (4, "qresi_ls.3."), (10, "quant_resi.9.")):
        small = {k: v for k, v in state.items() if not k.startswith("quantize.quant_resi.")}
        small.update({f"quantize.quant_resi.{i}.weight": torch.empty(32, 32, 3, 3, device="meta") for i in range(phi_count)})
        var = movq_to_var(small, 10, phi_count)
        assert any(name in k for k in var) and var["quantize.ema_vocab_hit_SV"].shape == (10, 4096)
        assert set(var_to_movq(var)) == set(small)


# ------------------------------------------------------------------ the quantizer, in closed form


def small_quantizer(**options) -> MultiScaleResidualVQ:
    torch.manual_seed(0)
    quantizer = MultiScaleResidualVQ(codebook_size=32, dim=4, scales=(1, 2, 3, 6), phi_count=2, **options)
    torch.nn.init.normal_(quantizer.embedding.weight)  # codes spread like a trained codebook's
    return quantizer


def test_phi_choice_is_vars():
    # VAR's PhiPartiallyShared with 4 convolutions over 10 scales (np.linspace ticks, argmin): rounding
    # sends scale 3 to Phi 1 although it lies exactly between ticks 0 and 1
    assert phi_for_scales(4, 10) == [0, 0, 1, 1, 1, 2, 2, 3, 3, 3]
    assert phi_for_scales(1, 10) == [0] * 10
    assert phi_for_scales(10, 10) == list(range(10))  # one per scale (VAR's share_quant_resi=0)


def test_shapes_and_the_sum_of_upsampled_code_maps():
    quantizer = small_quantizer().eval()
    z = torch.randn(2, 4, 6, 6)
    out = quantizer(z)
    assert out.indices.shape == (2, 1 + 4 + 9 + 36) and out.indices.dtype == torch.long
    assert out.z_q.shape == z.shape and quantizer.indices_shape(6, 6) == (50,)
    assert torch.equal(quantizer.indices(z), out.indices)
    maps = quantizer.split_scales(out.indices)
    assert [tuple(m.shape) for m in maps] == [(2, s, s) for s in (1, 2, 3, 6)]
    assert torch.equal(quantizer.join_scales(maps), out.indices)

    # f_hat = sum over scales of Phi_k(bicubic(E[idx_k] to 6x6)), Phi(h) = (1 - r) h + r conv3x3(h)
    r, expected, rest = 0.5, torch.zeros(2, 4, 6, 6, dtype=torch.float64), z.double()
    for k, (m, phi) in enumerate(zip(maps, (0, 0, 1, 1))):
        # each scale's ids are the nearest codes (float64 brute force) of the area-averaged residual
        s = m.shape[-1]
        down = rest if s == 6 else F.adaptive_avg_pool2d(rest, s)  # area interpolation = block averages here
        distances = torch.cdist(down.permute(0, 2, 3, 1).reshape(-1, 4), quantizer.embedding.weight.double())
        assert torch.equal(distances.argmin(dim=1).view(2, s, s), m)
        code = quantizer.embedding.weight.double()[m].permute(0, 3, 1, 2)
        up = code if s == 6 else F.interpolate(code, size=(6, 6), mode="bicubic")
        conv = quantizer.quant_resi[phi]
        h = (1 - r) * up + r * F.conv2d(up, conv.weight.double(), conv.bias.double(), padding=1)
        expected, rest = expected + h, rest - h
    torch.testing.assert_close(quantizer.embed(out.indices).double(), expected, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(out.z_q.double(), expected, atol=1e-5, rtol=1e-5)  # forward's value is f_hat
    partial = quantizer.embed_scales(maps[:2])
    assert len(partial) == 2 and partial[-1].shape == (2, 4, 6, 6)


def test_training_loss_and_straight_through_gradient():
    quantizer = small_quantizer(beta=0.25).train()
    z = torch.randn(2, 4, 6, 6, requires_grad=True)
    out = quantizer(z)
    sums = quantizer.embed_scales(quantizer.split_scales(out.indices))
    expected = torch.stack([1.25 * F.mse_loss(f, z) for f in sums]).mean()
    torch.testing.assert_close(out.loss, expected)
    out.z_q.sum().backward()
    assert torch.equal(z.grad, torch.ones_like(z))  # straight through
    z.grad = None
    out = quantizer(z)
    out.loss.backward()
    assert quantizer.embedding.weight.grad.abs().sum() > 0 and all(p.weight.grad.abs().sum() > 0 for p in quantizer.quant_resi)
    assert 1 <= float(out.perplexity) <= 32 and 0 < float(out.usage) <= 1


def test_search_runs_in_float32():
    quantizer = small_quantizer().eval()
    z = torch.randn(2, 4, 6, 6).bfloat16()
    out = quantizer(z)
    assert out.z_q.dtype == torch.bfloat16
    assert torch.equal(out.indices, quantizer(z.float()).indices)  # the bf16 values, searched in float32
    codec = movq.Codec(small_codec_config()).eval().to(torch.bfloat16)
    assert codec.quantize.embedding.weight.dtype == torch.float32 and codec.dtype == torch.bfloat16
    tokens = codec.encode(torch.rand(1, 3, 12, 12) * 2 - 1)
    assert [tuple(t.shape) for t in tokens] == [(1, 1, 1), (1, 2, 2), (1, 3, 3)]


def test_cosine_search_and_bad_inputs():
    quantizer = small_quantizer(l2_normalize=True).eval()
    z = torch.randn(1, 4, 6, 6)
    first = quantizer.indices(z)[:, 0]
    cosine = F.normalize(z.mean(dim=(2, 3)), dim=1) @ F.normalize(quantizer.embedding.weight, dim=1).t()
    assert torch.equal(first, cosine.argmax(dim=1))
    with pytest.raises(ValueError, match=r"quantizes a 6x6 latent.*got 8x8"):
        quantizer(torch.randn(1, 4, 8, 8))
    with pytest.raises(ValueError, match=r"expects 50 tokens per image"):
        quantizer.embed(torch.zeros(1, 49, dtype=torch.long))
    with pytest.raises(ValueError, match=r"list of 4 token maps"):
        quantizer.join_scales([torch.zeros(1, 1, 1, dtype=torch.long)])
    with pytest.raises(ValueError, match=r"token map 2 \(scale 3\) must be an integer tensor \[B, 3, 3\]"):
        quantizer.join_scales([torch.zeros(1, s, s, dtype=torch.long) for s in (1, 2, 4, 6)])
    with pytest.raises(ConfigError, match="scales"):
        MultiScaleConfig(scales=())
    with pytest.raises(ValueError, match="strictly increasing"):
        MultiScaleConfig(scales=(1, 4, 2))
    with pytest.raises(ConfigError, match="quant_resi"):
        MultiScaleConfig(quant_resi=1.5)
    assert len(MultiScaleResidualVQ(8, 4, scales=(1, 2), quant_resi=0.0).quant_resi) == 0  # no Phi: identity


# ------------------------------------------------------------------ a multi-scale codec


def small_codec_config() -> CodecConfig:
    return CodecConfig(
        name="var-small", ch=32, ch_mult=(1, 2, 2), num_res_blocks=1, attn_resolutions=(3,), resolution=12,
        z_channels=8, embed_dim=8, norm="group", quant_conv_kernel=3,
        quantizer=MultiScaleConfig(codebook_size=64, scales=(1, 2, 3)),
    )


def test_codec_round_trips_through_save_pretrained_and_state_dict(tmp_path):
    torch.manual_seed(0)
    codec = movq.Codec(small_codec_config()).eval()
    x = torch.rand(2, 3, 12, 12) * 2 - 1
    tokens = codec.encode(x)
    assert [tuple(t.shape) for t in tokens] == [(2, 1, 1), (2, 2, 2), (2, 3, 3)]
    assert codec.tokens_shape(12, 12) == (14,) and codec.bits_per_pixel(12, 12) == pytest.approx(6 * 14 / 144)
    codec.save_pretrained(tmp_path / "folder")
    torch.save(codec.state_dict(), tmp_path / "state.pt")
    for loaded in (movq.load(tmp_path / "folder"), movq.load(tmp_path / "state.pt")):
        assert loaded.config == codec.config and isinstance(loaded.quantize, MultiScaleResidualVQ)
        assert all(torch.equal(a, b) for a, b in zip(loaded.encode(x), tokens))
        assert torch.equal(loaded.decode(tokens), codec.decode(tokens))
    assert torch.equal(codec.reconstruct(x), codec.decode(tokens))
    with pytest.raises(ValueError, match=r"list of 3 maps \[B, s, s\].*\[B, 14\]"):
        codec.decode(torch.zeros(2, 3, 3, dtype=torch.long))
    with pytest.raises(ValueError, match=r"token ids must be in \[0, 64\)"):
        codec.decode([t + 64 for t in tokens])
    with pytest.raises(ValueError, match=r"multiple|last scale|quantizes a 3x3 latent"):
        codec.encode(torch.rand(1, 3, 16, 16) * 2 - 1)


def test_config_checks_and_export_refusal():
    config = movq.get_preset(PRESET)
    assert CodecConfig.from_json(config.to_json()) == config
    assert json.loads(config.to_json())["quantizer"]["kind"] == "multiscale"
    with pytest.raises(ValueError, match=r"resolution must be 256 \(the last scale x the downsample factor 16\)"):
        replace(config, resolution=512)
    with pytest.raises(ConfigError, match="quant_conv_kernel"):
        CodecConfig.from_dict({**config.to_dict(), "quant_conv_kernel": 5})
    with pytest.raises(ValueError, match="1x1 quant convolutions"):
        movq.hub.diffusers.config_to_diffusers(replace(config, quantizer=movq.config.VQConfig(codebook_size=4096)))
    with pytest.raises(ValueError, match="plain VQ codebook"):
        movq.hub.diffusers.config_to_diffusers(config)
    with torch.device("meta"):
        assert sum(p.numel() for p in movq.load("var-vqvae-f16-256", pretrained=False).parameters()) == 108_948_355


# ------------------------------------------------------------------ training (movq-train --quantizer multiscale)


def test_movq_train_quantizer_multiscale_lowers_the_loss(tmp_path, one_thread):
    from helpers import TRAIN_CODEC, make_images, tiny_train_config
    from movq.train.losses import LossWeights
    from movq.train.trainer import Trainer

    data = make_images(tmp_path / "data")
    cfg = tiny_train_config(data, tmp_path / "out", quantizer="multiscale",
                            codec={**TRAIN_CODEC, "quantizer": {"codebook_size": 32}}, max_steps=20, disc_start=1000,
                            loss=LossWeights(l1=1.0), ema_decay=0.5, min_lr_ratio=1.0, lr=1e-3)
    trainer = Trainer(cfg)
    quantizer = trainer.codec.quantize
    assert isinstance(quantizer, MultiScaleResidualVQ) and quantizer.scales == (1, 2, 3, 4, 5, 6, 8)  # 16 px at f=2
    assert quantizer.codebook_size == 32
    x = torch.stack([trainer.dataset[(i, 0)]["image"] for i in range(4)])

    def l2() -> float:  # the reconstruction error on fixed images (the quantizer loss grows in these first
        with torch.no_grad():  # steps: the latent outgrows the codebook, initialised within +-1/codebook_size)
            return float((trainer.codec.train(False)(x).sample - x).pow(2).mean())

    before = l2()
    trainer.codec.train()
    assert trainer.run() == 20
    after = l2()
    assert after < 0.8 * before, (before, after)
    rows = (tmp_path / "out" / "log.csv").read_text().splitlines()
    header, last = rows[0].split(","), rows[-1].split(",")
    usage, dead = float(last[header.index("usage")]), int(float(last[header.index("dead_codes")]))
    assert 0 < usage <= 1 and dead == round(32 * (1 - usage))  # the code histogram of the step, on CPU too
    released = movq.load(tmp_path / "out")
    assert released.multiscale and [tuple(t.shape) for t in released.encode(x)][-1] == (4, 8, 8)


def test_movq_train_multiscale_resumes_exactly_and_refuses_another_resolution(tmp_path, capsys, one_thread):
    from helpers import make_images, train_args, train_error_line
    from movq.train import checkpoint as ckpt
    from movq.train.cli import main as train_main

    data = make_images(tmp_path / "data")
    flags = ("--quantizer", "multiscale", "--seed", "3", "--lr", "3e-3", "--min-lr-ratio", "1", "--disc-start", "2", "--disc-ndf", "8",
             "--disc-layers", "2", "--save-every", "2", "--keep-last", "10")
    assert train_main(train_args(data, tmp_path / "ref", *flags)) == 0
    assert train_main(train_args(data, tmp_path / "run", *flags, "--max-steps", "2")) == 0  # constant lr: max_steps moves nothing
    assert train_main(train_args(data, tmp_path / "run", *flags, "--resume")) == 0
    assert "resumed from" in capsys.readouterr().out
    ref, run = ckpt.load_checkpoint(tmp_path / "ref" / "last"), ckpt.load_checkpoint(tmp_path / "run" / "last")
    assert ref["step"] == run["step"] == 4
    for part in ("model", "ema", "disc"):
        assert ref[part].keys() == run[part].keys()
        for key in ref[part]:
            assert torch.equal(ref[part][key], run[part][key]), (part, key)

    assert train_main(train_args(data, tmp_path / "bad", *flags, "--resolution", "32")) == 2
    err = train_error_line(capsys)
    assert "--resolution 32" in err and "use --resolution 16" in err
    assert train_main(train_args(data, tmp_path / "bad", "--quantizer", "multiscal")) == 2
    assert "unknown quantizer 'multiscal'" in train_error_line(capsys)


# ------------------------------------------------------------------ movq-tokenize, movq-bench


@pytest.fixture(scope="module")
def small_codec_dir(tmp_path_factory) -> Path:
    torch.manual_seed(0)
    return movq.Codec(small_codec_config()).save_pretrained(tmp_path_factory.mktemp("codec") / "var-small")


def test_movq_tokenize_stores_the_scales_flattened_coarse_to_fine(small_codec_dir, token_data_dir, tmp_path, capsys):
    from helpers import TOKENIZE_FAST
    from movq.image_files import load_preprocessed
    from movq.tokenize.cli import EXIT_ERROR
    from movq.tokenize.cli import main as tokenize_main
    from movq.tokenize.dataset import TokenDataset

    flags = [flag if flag != "32" else "12" for flag in TOKENIZE_FAST]  # the codec takes 12 px images
    out = tmp_path / "tokens"
    assert tokenize_main(["--model", str(small_codec_dir), "--data", str(token_data_dir), "--out", str(out), *flags]) == 0
    codec = movq.load(small_codec_dir)
    meta = json.loads((out / "meta.json").read_text())
    assert meta["item_shape"] == [14] and meta["store_dtype"] == "uint8"
    dataset = TokenDataset(out)
    for i in range(len(dataset)):
        item = dataset[i]
        pixels, _ = load_preprocessed(token_data_dir / item["source"], 12)
        maps = codec.encode(pixels[None])
        assert torch.equal(item["tokens"], torch.cat([m.flatten(1) for m in maps], dim=1)[0])  # 1 + 4 + 9 tokens
        assert torch.equal(codec.decode(item["tokens"][None]), codec.decode(maps))
    capsys.readouterr()
    bad = ["--model", str(small_codec_dir), "--data", str(token_data_dir), "--out", str(tmp_path / "bad"),
           *[flag if flag != "32" else "16" for flag in TOKENIZE_FAST]]
    assert tokenize_main(bad) == EXIT_ERROR
    assert "use --resolution 12" in capsys.readouterr().err


def test_movq_bench_measures_a_multiscale_codec(small_codec_dir, bench_data_dir, tmp_path, capsys):
    from helpers import BENCH_FAST
    from movq.bench.cli import EXIT_ERROR
    from movq.bench.cli import main as bench_main

    flags = [flag if flag != "64" else "12" for flag in BENCH_FAST]
    out = tmp_path / "r.json"
    assert bench_main(["--model", str(small_codec_dir), "--data", str(bench_data_dir), "--metrics", "psnr,l1",
                       *flags, "--out", str(out)]) == 0
    row = json.loads(out.read_text())["results"][0]
    assert 0 < row["psnr"] < 100 and row["n_images"] == 7 and 0 < row["codebook_usage"] <= 1
    table = capsys.readouterr().out
    assert "| 14 | 64 | 4 | 7 |" in table and "| 14 | 0.5833 |" in table  # 14 tokens, 6 bits each over 12 x 12 px
    assert bench_main(["--model", str(small_codec_dir), "--data", str(bench_data_dir), *BENCH_FAST]) == EXIT_ERROR
    assert "use --resolution 12" in capsys.readouterr().err


# ------------------------------------------------------------------ movq.t2i: tokens coarse to fine


def test_t2i_takes_the_scales_coarse_to_fine(small_codec_dir):
    from movq.t2i import T2IConfig, T2IPipeline, T2ITransformer, pad_text, tokens_to_sequence
    from movq.t2i.train import model_config

    codec = movq.load(small_codec_dir)
    config = T2IConfig.for_codec(codec, 12, preset="t2i-tiny")
    assert config.image_scales == (1, 2, 3) and config.image_grid == (3, 3) and config.image_len == 14
    assert T2IConfig.from_json(config.to_json()) == config
    torch.manual_seed(0)
    model = T2ITransformer(config)
    # positions: scale k's cell (r, c) under the grid cell at its centre, plus the scale's embedding
    assert model._image_scale_ids.tolist() == [0] + [1] * 4 + [2] * 9
    assert model._image_row_ids.tolist() == [1] + [0, 0, 2, 2] + [0, 0, 0, 1, 1, 1, 2, 2, 2]
    assert model._image_col_ids.tolist() == [1] + [0, 2, 0, 2] + [0, 1, 2] * 3

    maps = codec.encode(torch.rand(2, 3, 12, 12) * 2 - 1)
    sequence = tokens_to_sequence(maps)
    assert torch.equal(sequence, codec.flat_tokens(maps))  # VAR's order: 1x1, then 2x2, then 3x3, each raster
    assert torch.equal(sequence[:, 1:5], maps[1].flatten(1))
    text = pad_text([[1, 2], [3]], config.text_len, config.text_vocab_size)
    assert torch.isfinite(model.loss(text, sequence).image)
    ids = model.generate(text, generator=torch.Generator().manual_seed(0))
    assert ids.shape == (2, 14) and int(ids.max()) < 64

    pipeline = T2IPipeline(model, codec)
    out = pipeline(["a", "b"], generator=torch.Generator().manual_seed(0), image_prefix=sequence[:, :5])
    assert [im.size for im in out.images] == [(12, 12)] * 2 and torch.equal(out.tokens[:, :5], sequence[:, :5])
    with pytest.raises(ValueError, match="image_prefix"):
        pipeline.encode_prefix(torch.rand(1, 3, 12, 12) * 2 - 1, 1)
    with pytest.raises(ValueError, match=r"multi-scale maps \[1, 2, 3\]"):
        T2IPipeline(model, movq.Codec(replace(movq.get_preset("movqgan-tiny"), quantizer=movq.config.VQConfig(codebook_size=64))))
    with pytest.raises(ValueError, match="image_grid"):
        T2IConfig(image_scales=(1, 2), image_grid=(4, 4))

    # movq-t2i-train reads movq-tokenize's meta of a multi-scale codec: item_shape [14], scales from its config
    meta = {"item_shape": [14], "codebook_size": 64, "config": codec.config.to_dict()}

    class Train:
        preset, model = "t2i-tiny", {}

    class Byte:
        vocab_size, name = 256, "byte"

    assert model_config(Train(), meta, Byte()).image_scales == (1, 2, 3)


def test_movq_train_quantizer_flag_builds_every_kind():
    from typing import get_args

    from helpers import TRAIN_CODEC
    from movq.quantizers import QuantizerConfig
    from movq.train.config import CodecTrainConfig
    from movq.train.trainer import build_codec

    for member in get_args(QuantizerConfig):
        kind, sized = member().kind, "codebook_size" in {f.name for f in fields(member)}
        options = {"codebook_size": 64} if sized else {}  # --codec's quantizer options go to the new kind
        cfg = CodecTrainConfig(data="d", out="o", codec={**TRAIN_CODEC, "quantizer": options}, quantizer=kind,
                               resolution=16, perceptual_net="none")
        codec = build_codec(cfg)
        assert codec.config.quantizer.kind == kind and (codec.codebook_size == 64 or not sized), kind
    with pytest.raises(ValueError, match="must be a JSON object"):
        build_codec(CodecTrainConfig(data="d", out="o", codec={"quantizer": 3}, quantizer="vq", perceptual_net="none"))
