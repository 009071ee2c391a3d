"""movq.load from the Hub cache, registry, Lightning / EMA checkpoints, errors and push_to_hub."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

import movq
from helpers import benchmark_module, hub_snapshot, make_hub_cache, tiny_codec
from movq import Codec, CodecConfig, get_preset
from movq.hub import CheckpointReadError, WeightsNotAvailableError, registry
from movq.hub.diffusers import config_to_diffusers

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def movqgan_67m_ckpt(tmp_path_factory) -> tuple[Path, dict[str, torch.Tensor]]:
    """A random SBER-MoVQGAN 67M checkpoint in the published layout (plain fp32 state dict)."""
    torch.manual_seed(0)
    state = Codec(get_preset("movqgan-67m")).state_dict()
    path = tmp_path_factory.mktemp("ckpt") / "movqgan_67M.ckpt"
    torch.save(state, path)
    return path, state


def test_load_sber_movqgan_67m_from_an_offline_hub_cache(tmp_path, monkeypatch, movqgan_67m_ckpt):
    path, state = movqgan_67m_ckpt
    make_hub_cache(tmp_path, "ai-forever/MoVQGAN", {"movqgan_67M.ckpt": path}, monkeypatch)
    codec = movq.load("sber-movqgan-67m")
    assert codec.config.name == "sber-movqgan-67m" and not codec.training
    loaded = codec.state_dict()
    assert len(loaded) == 431 == len(state)
    for key in ("decoder.up.3.attn.0.norm.conv_y.weight", "quantize.embedding.weight", "encoder.conv_in.weight"):
        assert torch.equal(loaded[key], state[key])
    tokens = codec.encode(torch.zeros(1, 3, 16, 24))
    assert tokens.shape == (1, 2, 3)


def test_offline_hub_miss_names_repo_file_and_how_to_fix(tmp_path, monkeypatch):
    make_hub_cache(tmp_path, "ai-forever/MoVQGAN", {}, monkeypatch)
    with pytest.raises(WeightsNotAvailableError) as info:
        movq.load("sber-movqgan-102m")
    message = str(info.value)
    assert "ai-forever/MoVQGAN" in message and "movqgan_102M.ckpt" in message
    assert "huggingface-cli download" in message and "movq.load(" in message
    with pytest.raises(FileNotFoundError, match="encoder.pkl"):  # URL-hosted models too
        movq.load("dalle-dvae", cache_dir=tmp_path)


def test_kandinsky_movq_resolves_from_a_diffusers_subfolder_in_the_cache(tmp_path, monkeypatch):
    codec = tiny_codec(1)
    exported = codec.save_pretrained(tmp_path / "export", format="diffusers")
    files = {f"movq/{p.name}": p for p in exported.iterdir()}
    make_hub_cache(tmp_path / "cache", "kandinsky-community/kandinsky-2-2-decoder", files, monkeypatch)
    loaded = movq.load("kandinsky-2.2-movq")
    x = torch.rand(2, 3, 32, 32) * 2 - 1
    assert torch.equal(loaded.encode(x), codec.encode(x))


def test_package_model_resolves_from_its_folder_or_says_it_is_missing(tmp_path, monkeypatch):
    monkeypatch.setattr(registry, "PACKAGE_WEIGHTS", tmp_path)
    with pytest.raises(FileNotFoundError, match="movqgan-tiny-photos"):
        movq.load("movqgan-tiny-photos")
    codec = tiny_codec(2)
    codec.save_pretrained(tmp_path / "movqgan-tiny-photos")
    loaded = movq.load("movqgan-tiny-photos")
    assert loaded.config.name == "movqgan-tiny-photos"
    assert torch.equal(loaded.quantize.embedding.weight, codec.quantize.embedding.weight)


def test_list_models_covers_every_published_family():
    models = {m["name"]: m for m in movq.list_models()}
    expected = {
        "sber-movqgan-67m", "sber-movqgan-102m", "sber-movqgan-270m", "kandinsky-2.2-movq", "sber-vqgan",
        "vqgan-imagenet-f16-16384", "vqgan-gumbel-f8-openimages", "dalle-dvae", "movqgan-tiny-photos",
    }
    assert expected <= set(models)
    for entry in models.values():
        assert entry["source"] and entry["size"] and entry["description"]
    assert "ai-forever/MoVQGAN" in models["sber-movqgan-67m"]["source"]
    # every family of 2022-2025 is listed with the ImageNet figures as its authors published them,
    # labelled so (and where they were read when it was a citing paper), or why there are none
    assert "authors' figures (LlamaGen README" in models["llamagen-vq16-c2i"]["published"]
    assert "rFID 2.28" in models["maskgit-vqgan-f16-256"]["published"]
    assert "as cited by TiTok" in models["maskgit-vqgan-f16-256"]["published"]
    assert "rFID 2.62, PSNR 23.80, 16x16 tokens, 100000 codes" in models["vqgan-lc-100k"]["published"]
    for name in ("amused-256-vq", "amused-512-vq", "ldm-celebahq-256-vq"):
        assert models[name]["published"].startswith("no ImageNet figures published: trained on ")


def test_a_model_published_where_no_program_can_fetch_it_says_where_and_how_to_load_it():
    with pytest.raises(FileNotFoundError, match=r"drive\.google\.com.*vqgan-lc-100K-f16-dim8\.pth.*movq\.load\('/path/to/"):
        movq.load("vqgan-lc-100k")
    with torch.device("meta"):
        codec = movq.load("vqgan-lc-100k", pretrained=False)
    assert codec.codebook_size == 100000 and codec.config.name == "vqgan-lc-100k"


def test_pretrained_false_builds_presets_and_registered_architectures():
    assert movq.load("movqgan-tiny", pretrained=False).config.name == "movqgan-tiny"
    with torch.device("meta"):
        assert movq.load("sber-movqgan-67m", pretrained=False).codebook_size == 16384
        assert movq.load("dalle-dvae", pretrained=False).codebook_size == 8192


def count_parameters(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def test_every_registry_size_is_the_parameter_count_of_the_architecture_it_builds(tmp_path, monkeypatch):
    # Kandinsky's MoVQ is a Hub folder: pretrained=False fetches its config.json alone (no weights in the
    # cache). Its published config equals movqgan-67m; test_hub_diffusers checks that with the real config.
    config_only = tmp_path / "config.json"
    config_only.write_text(json.dumps(config_to_diffusers(get_preset("movqgan-67m"))))
    make_hub_cache(tmp_path / "cache", "kandinsky-community/kandinsky-2-2-decoder", {"movq/config.json": config_only}, monkeypatch)
    # aMUSEd's and LDM's VQ: their published vqvae/config.json (benchmarks/hub_parity.py), config only
    parity = benchmark_module("hub_parity")
    for repo_id, published in [("amused/amused-256", parity.AMUSED_256_VQVAE), ("amused/amused-512", parity.AMUSED_256_VQVAE),
                               ("CompVis/ldm-celebahq-256", parity.LDM_CELEBAHQ_VQVAE)]:
        (tmp_path / repo_id).mkdir(parents=True)
        (tmp_path / repo_id / "config.json").write_text(json.dumps({"_class_name": "VQModel", **published}))
        hub_snapshot(tmp_path / "cache", repo_id, {"vqvae/config.json": tmp_path / repo_id / "config.json"})
    for spec in registry.REGISTRY.values():
        with torch.device("meta"):
            codec = movq.load(spec.name, pretrained=False)
        assert codec.config.name == spec.name
        assert f"{count_parameters(codec) / 1e6:.1f}M" == spec.size, spec.name


def test_package_model_without_weights_builds_its_own_architecture():
    spec = registry.REGISTRY["movqgan-tiny-photos"]
    assert spec.preset is None  # the package's config.json is the architecture
    shipped = json.loads((registry.PACKAGE_WEIGHTS / spec.package_dir / "config.json").read_text())
    torch.manual_seed(0)
    fresh = movq.load(spec.name, pretrained=False)
    assert fresh.config == CodecConfig.from_dict(shipped)
    assert fresh.config.ch_mult == (1, 2, 2, 3) and fresh.config.quantizer.kind == "ema"
    trained = movq.load(spec.name)
    assert trained.config == fresh.config
    assert not torch.equal(trained.encoder.conv_in.weight, fresh.encoder.conv_in.weight)


def test_unknown_names_and_missing_paths_are_clear_errors(tmp_path):
    with pytest.raises(ValueError, match="unknown model 'no-such-model'.*sber-movqgan-67m"):
        movq.load("no-such-model")
    with pytest.raises(ValueError, match="without published weights"):
        movq.load("movqgan-tiny")
    with pytest.raises(FileNotFoundError):
        movq.load(tmp_path / "missing.ckpt")
    with pytest.raises(ValueError, match="unknown preset"):
        movq.load("no-such-preset", pretrained=False)


# ------------------------------------------------------------------------------------ file formats


def test_plain_files_in_every_container_load_with_inferred_or_given_preset(tmp_path):
    codec = tiny_codec(3)
    state = codec.state_dict()
    save_file(state, tmp_path / "w.safetensors")
    for suffix in (".ckpt", ".pt", ".pth", ".bin"):
        torch.save(state, tmp_path / f"w{suffix}")
    for name in ("w.safetensors", "w.ckpt", "w.pt", "w.pth", "w.bin"):
        loaded = movq.load(tmp_path / name)
        assert loaded.config.name == "movqgan-tiny"
        assert torch.equal(loaded.decoder.conv_out.weight, codec.decoder.conv_out.weight)
    assert movq.load(tmp_path / "w.pt", preset="movqgan-tiny", dtype=torch.float64).dtype == torch.float64
    # a single file with diffusers keys (no config.json): converted, architecture from the shapes
    save_file(movq.hub.diffusers.original_to_diffusers(state), tmp_path / "diffusers_keys.safetensors")
    loaded = movq.load(tmp_path / "diffusers_keys.safetensors")
    assert all(torch.equal(loaded.state_dict()[k], v) for k, v in state.items())


def lightning_checkpoint(codec: Codec, with_ema: bool) -> tuple[dict, dict[str, torch.Tensor]]:
    state = {k: v.clone() for k, v in codec.state_dict().items()}
    ema = {k: v + 1.0 for k, v in state.items()}
    wrapped = dict(state)
    wrapped["loss.discriminator.main.0.weight"] = torch.randn(8, 3, 4, 4)
    wrapped["loss.perceptual_loss.net.slice1.0.weight"] = torch.randn(8, 3, 3, 3)
    wrapped["loss.logvar"] = torch.zeros(())
    if with_ema:
        wrapped["model_ema.decay"] = torch.tensor(0.9999)
        wrapped["model_ema.num_updates"] = torch.tensor(1000, dtype=torch.int)
        wrapped.update({"model_ema." + k.replace(".", ""): v for k, v in ema.items()})
    return {"epoch": 3, "global_step": 1000, "state_dict": wrapped, "optimizer_states": [], "lr_schedulers": []}, ema


class ModelCheckpoint:
    """Stands in for Lightning's callback class, stored as a dict key in old checkpoints."""


def test_lightning_checkpoint_drops_training_keys_and_prefers_ema(tmp_path):
    codec = tiny_codec(4)
    ckpt, ema = lightning_checkpoint(codec, with_ema=True)
    ckpt["callbacks"] = {ModelCheckpoint: {"best_model_score": torch.tensor(0.5)}}
    torch.save(ckpt, tmp_path / "last.ckpt")
    loaded = movq.load(tmp_path / "last.ckpt")  # restricted unpickler: the class key is never imported
    assert torch.equal(loaded.encoder.conv_in.weight, ema["encoder.conv_in.weight"])
    raw = movq.load(tmp_path / "last.ckpt", ema=False)
    assert torch.equal(raw.encoder.conv_in.weight, codec.encoder.conv_in.weight)

    plain, _ = lightning_checkpoint(codec, with_ema=False)
    torch.save(plain, tmp_path / "plain.ckpt")
    assert torch.equal(movq.load(tmp_path / "plain.ckpt").encoder.conv_in.weight, codec.encoder.conv_in.weight)
    with pytest.raises(ValueError, match="no EMA weights"):
        movq.load(tmp_path / "plain.ckpt", ema=True)


def test_wrong_shape_missing_and_unexpected_keys_are_listed(tmp_path):
    state = tiny_codec(5).state_dict()
    bad = dict(state)
    bad["decoder.conv_out.weight"] = torch.zeros(3, 32, 1, 1)
    torch.save(bad, tmp_path / "shape.pt")
    with pytest.raises(ValueError, match=r"wrong shapes decoder.conv_out.weight"):
        movq.load(tmp_path / "shape.pt", preset="movqgan-tiny")
    partial = {k: v for k, v in state.items() if not k.startswith("decoder.mid.")}
    partial["decoder.extra.weight"] = torch.zeros(1)
    torch.save(partial, tmp_path / "keys.pt")
    with pytest.raises(ValueError, match=r"missing keys \['decoder.mid.attn_1.*unexpected keys \['decoder.extra"):
        movq.load(tmp_path / "keys.pt", preset="movqgan-tiny")
    with pytest.raises(ValueError, match="wrong shapes"):  # a 67M checkpoint forced into the tiny preset
        with torch.device("meta"):
            big = Codec(get_preset("movqgan-67m")).state_dict()
        movq.loader.codec_from_state(big, preset="movqgan-tiny")


def test_truncated_files_are_clear_errors(tmp_path):
    state = tiny_codec(6).state_dict()
    save_file(state, tmp_path / "w.safetensors")
    torch.save(state, tmp_path / "w.ckpt")
    for name in ("w.safetensors", "w.ckpt"):
        data = (tmp_path / name).read_bytes()
        (tmp_path / name).write_bytes(data[: len(data) // 2])
        with pytest.raises(CheckpointReadError, match="truncated"):
            movq.load(tmp_path / name)
    (tmp_path / "w.txt").write_text("hello")
    with pytest.raises(ValueError, match="unsupported checkpoint type"):
        movq.load(tmp_path / "w.txt")


def test_push_to_hub_uploads_a_saved_folder_through_the_api(monkeypatch):
    from huggingface_hub import ModelCard

    codec = tiny_codec(7)
    calls, cards = [], []

    class FakeApi:
        def __init__(self, token=None):
            calls.append(("init", token))

        def create_repo(self, repo_id, **kwargs):
            calls.append(("create_repo", repo_id, kwargs))

        def upload_folder(self, *, repo_id, folder_path, **kwargs):
            files = sorted(p.name for p in Path(folder_path).iterdir())
            cards.append(ModelCard.load(Path(folder_path) / "README.md"))
            calls.append(("upload_folder", repo_id, files, kwargs))
            return "commit-info"

    import huggingface_hub

    monkeypatch.setattr(huggingface_hub, "HfApi", FakeApi)
    assert codec.push_to_hub("me/tiny", format="diffusers", private=True, token="t") == "commit-info"
    assert calls[0] == ("init", "t")
    assert calls[1][:2] == ("create_repo", "me/tiny") and calls[1][2]["private"] is True
    assert calls[2][:3] == ("upload_folder", "me/tiny", ["README.md", "config.json", "diffusion_pytorch_model.safetensors"])
    codec.push_to_hub("me/tiny", api=FakeApi(), license="apache-2.0")
    assert calls[-1][2] == ["README.md", "config.json", "model.safetensors"]
    # the model card goes up with the weights; its snippet names the repo, its license the one given
    assert [card.data.library_name for card in cards] == ["movq", "movq"]
    assert cards[0].data.movq["format"] == "diffusers" and cards[1].data.license == "apache-2.0"
    assert 'movq.load("me/tiny")' in cards[1].text
