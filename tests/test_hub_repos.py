"""movq.load of any Hub repo id (movq folders, diffusers VQModel folders such as aMUSEd's and
CompVis LDM's VQ), offline from a Hub cache laid out by hand; model cards; refused exports."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

import movq
from helpers import FakeHub, benchmark_module, hub_snapshot, tiny_codec, use_hub_cache
from movq import Codec, CodecConfig
from movq.config import FSQConfig
from movq.hub import WeightsNotAvailableError

torch.set_num_threads(1)
SECOND_COMMIT = "fedcba9876543210fedcba9876543210fedcba98"


def folder_files(folder: Path, prefix: str = "") -> dict[str, Path]:
    return {f"{prefix}{p.name}": p for p in folder.iterdir()}


def same_weights(a: Codec, b: Codec) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


# ----------------------------------------------------------------------------------- repo ids


def test_a_repo_id_loads_the_save_pretrained_folder_it_holds(tmp_path, monkeypatch):
    codec = tiny_codec(1)
    folder = codec.save_pretrained(tmp_path / "saved")
    assert (folder / "README.md").is_file()  # the model card travels with the folder ...
    (tmp_path / "notes.txt").write_text("unrelated")
    hub_snapshot(tmp_path / "cache", "me/my-codec", {**folder_files(folder), "notes.txt": tmp_path / "notes.txt"})
    use_hub_cache(tmp_path / "cache", monkeypatch)
    loaded = movq.load("me/my-codec")  # ... and is ignored by the loader, like the unrelated file
    assert same_weights(loaded, codec) and not loaded.training
    assert loaded.config.name == codec.config.name
    x = torch.rand(1, 3, 32, 32) * 2 - 1
    assert torch.equal(loaded.encode(x), codec.encode(x))
    # pretrained=False reads the architecture only
    fresh = movq.load("me/my-codec", pretrained=False)
    assert fresh.config == codec.config and not same_weights(fresh, codec)


def test_revision_picks_a_snapshot_by_branch_or_commit(tmp_path, monkeypatch):
    first, second = tiny_codec(1), tiny_codec(2)
    cache = tmp_path / "cache"
    hub_snapshot(cache, "me/my-codec", folder_files(first.save_pretrained(tmp_path / "a")))
    hub_snapshot(cache, "me/my-codec", folder_files(second.save_pretrained(tmp_path / "b")), SECOND_COMMIT, ("v2",))
    use_hub_cache(cache, monkeypatch)
    assert same_weights(movq.load("me/my-codec"), first)
    assert same_weights(movq.load("me/my-codec", revision="v2"), second)
    assert same_weights(movq.load("me/my-codec", revision=SECOND_COMMIT), second)
    with pytest.raises(WeightsNotAvailableError, match=r"me/my-codec@v3.*offline"):
        movq.load("me/my-codec", revision="v3")


def test_local_files_only_and_cache_dir_keep_a_repo_id_offline(tmp_path, monkeypatch):
    codec = tiny_codec(3)
    cache = tmp_path / "elsewhere"
    hub_snapshot(cache, "me/my-codec", folder_files(codec.save_pretrained(tmp_path / "a")))
    use_hub_cache(tmp_path / "default-cache", monkeypatch, offline=False)  # online, another cache
    assert same_weights(movq.load("me/my-codec", cache_dir=cache, local_files_only=True), codec)
    with pytest.raises(WeightsNotAvailableError, match="local_files_only"):
        movq.load("me/other-codec", cache_dir=cache, local_files_only=True)


def test_a_repo_without_a_codec_folder_lists_what_it_holds(tmp_path, monkeypatch):
    for name in ("notes.txt", "weights.pt"):
        (tmp_path / name).write_text("x")
    (tmp_path / "config.json").write_text(json.dumps({"hidden_size": 8}))
    cache = tmp_path / "cache"
    hub_snapshot(cache, "me/not-a-codec", {"notes.txt": tmp_path / "notes.txt", "ckpt/weights.pt": tmp_path / "weights.pt"})
    hub_snapshot(cache, "me/text-model", {"config.json": tmp_path / "config.json"})
    use_hub_cache(cache, monkeypatch)
    with pytest.raises(FileNotFoundError) as info:
        movq.load("me/not-a-codec")
    message = str(info.value)
    assert "hf://me/not-a-codec@main holds no codec folder" in message
    assert "notes.txt" in message and "ckpt/weights.pt" in message  # what was found
    assert "model.safetensors" in message and "diffusion_pytorch_model.safetensors" in message  # what is accepted
    with pytest.raises(FileNotFoundError, match=r"hf://me/not-a-codec/ckpt@main holds no codec folder.*weights\.pt"):
        movq.load("me/not-a-codec", subfolder="ckpt")
    # a config.json without weights next to it (another library's model) is no codec folder either
    with pytest.raises(FileNotFoundError, match=r"hf://me/text-model@main holds no codec folder: found \['config.json'\]"):
        movq.load("me/text-model")


def test_a_repo_id_asks_huggingface_hub_for_the_folder_files_only(tmp_path, monkeypatch):
    """What movq asks of ``snapshot_download`` online: the (sub)folder's codec files alone (never an
    optimizer state or anything else in the repo), with the caller's revision, token and cache."""
    import huggingface_hub

    from movq.hub.download import fetch_repo_folder

    codec = tiny_codec(8)
    snapshot = hub_snapshot(tmp_path / "cache", "me/my-codec", folder_files(codec.save_pretrained(tmp_path / "a"), "sub/"))
    calls = []

    def fake_snapshot_download(repo_id, **kwargs):
        calls.append((repo_id, kwargs))
        return str(snapshot)

    use_hub_cache(tmp_path / "cache", monkeypatch, offline=False)
    monkeypatch.setattr(huggingface_hub, "snapshot_download", fake_snapshot_download)
    loaded = movq.load("me/my-codec", subfolder="sub", revision="v1", token="hf_x", cache_dir=tmp_path / "cache")
    assert same_weights(loaded, codec)
    repo_id, kwargs = calls[-1]
    assert repo_id == "me/my-codec" and kwargs["revision"] == "v1" and kwargs["token"] == "hf_x"
    assert kwargs["cache_dir"] == tmp_path / "cache" and kwargs["local_files_only"] is False
    patterns = kwargs["allow_patterns"]
    assert "sub/config.json" in patterns and "sub/model.safetensors" in patterns
    assert all(p.startswith("sub/") and "*" not in p for p in patterns)
    movq.load("me/my-codec", subfolder="sub", pretrained=False, local_files_only=True)
    assert calls[-1][1]["allow_patterns"] == ["sub/config.json"] and calls[-1][1]["local_files_only"] is True
    assert fetch_repo_folder("me/my-codec", patterns=["config.json"]) == snapshot

    # online, a folder without a codec is described by the Hub's own listing of the repo
    class FakeApi:
        def __init__(self, token=None):
            assert token == "hf_x"

        def list_repo_files(self, repo_id, revision=None):
            return ["README.md", "other/weights.ckpt", "other/notes.txt"]

    monkeypatch.setattr(huggingface_hub, "HfApi", FakeApi)
    with pytest.raises(FileNotFoundError, match=r"hf://me/my-codec/other@main holds no codec folder: found \['notes.txt', 'weights.ckpt'\];"):
        movq.load("me/my-codec", subfolder="other", token="hf_x")


def folder_bytes(folder: Path, prefix: str = "") -> dict[str, bytes]:
    return {f"{prefix}{p.name}": p.read_bytes() for p in folder.iterdir()}


def test_download_from_a_loopback_hub_fetches_only_the_codec_files(tmp_path, monkeypatch):
    """The real download code (``huggingface_hub`` over HTTP) against a fake Hub on 127.0.0.1."""
    first, second = tiny_codec(1), tiny_codec(2)
    hub = FakeHub()
    extras = {"optimizer.pt": b"o" * 4096, "logs/events.txt": b"e"}
    hub.add("me/my-codec", "a" * 40, {**folder_bytes(first.save_pretrained(tmp_path / "a")), **extras})
    hub.add("me/my-codec", "b" * 40, folder_bytes(second.save_pretrained(tmp_path / "b"), "vqvae/"), refs=("v2",))
    hub.serve(monkeypatch, tmp_path / "cache")
    assert same_weights(movq.load("me/my-codec", token="hf_secret"), first)
    assert sorted(hub.files_fetched()) == ["config.json", "model.safetensors"]  # not the optimizer, not the card
    assert {auth for _, path, auth in hub.requests if "me/my-codec" in path} == {"Bearer hf_secret"}
    assert same_weights(movq.load("me/my-codec/vqvae", revision="v2"), second)
    # what was downloaded is in the Hub cache: offline, both revisions load without the server
    use_hub_cache(tmp_path / "cache", monkeypatch)
    fetched = len(hub.requests)
    assert same_weights(movq.load("me/my-codec"), first)
    assert same_weights(movq.load("me/my-codec", subfolder="vqvae", revision="v2"), second)
    assert len(hub.requests) == fetched


def test_loopback_hub_errors_name_the_repo_and_what_it_holds(tmp_path, monkeypatch):
    hub = FakeHub()
    hub.add("me/notes", "c" * 40, {"notes.txt": b"hello", "ckpt/last.ckpt": b"x"})
    kandinsky = tiny_codec(3).save_pretrained(tmp_path / "k", format="diffusers")
    hub.add("kandinsky-community/kandinsky-2-2-decoder", "d" * 40, folder_bytes(kandinsky, "movq/"))
    hub.serve(monkeypatch, tmp_path / "cache")
    with pytest.raises(FileNotFoundError, match=r"hf://me/notes@main holds no codec folder: found \['ckpt/last.ckpt', 'notes.txt'\];"):
        movq.load("me/notes")
    assert hub.files_fetched() == []  # nothing matched: nothing downloaded
    with pytest.raises(WeightsNotAvailableError, match=r"hf://me/absent@main: download failed \(RepositoryNotFoundError"):
        movq.load("me/absent")
    with pytest.raises(WeightsNotAvailableError, match=r"hf://me/notes@v9: download failed \(RevisionNotFoundError"):
        movq.load("me/notes", revision="v9")
    # registered names go through the same server and cache (hf_hub_download of their files)
    assert movq.load("kandinsky-2.2-movq").config.name == "kandinsky-2.2-movq"
    assert sorted(hub.files_fetched()) == ["movq/config.json", "movq/diffusion_pytorch_model.safetensors"]


def test_a_repo_id_not_in_the_cache_offline_says_how_to_get_it(tmp_path, monkeypatch):
    use_hub_cache(tmp_path, monkeypatch)
    with pytest.raises(WeightsNotAvailableError) as info:
        movq.load("me/my-codec", subfolder="vqvae")
    message = str(info.value)
    assert "hf://me/my-codec/vqvae@main" in message and "offline" in message
    assert "huggingface-cli download me/my-codec" in message and "movq.load('/path/to/folder')" in message
    assert "No local file or folder 'me/my-codec' exists either" in message
    # one string reaches a subfolder too (command-line tools take one model string)
    with pytest.raises(WeightsNotAvailableError, match=r"hf://me/my-codec/vqvae@main"):
        movq.load("me/my-codec/vqvae")
    with pytest.raises(ValueError, match="already names the subfolder 'vqvae'"):
        movq.load("me/my-codec/vqvae", subfolder="other")


def test_names_paths_and_repo_ids_resolve_in_order(tmp_path, monkeypatch):
    use_hub_cache(tmp_path / "cache", monkeypatch)
    codec = tiny_codec(4)
    codec.save_pretrained(tmp_path / "me" / "my-codec" / "inner")
    monkeypatch.chdir(tmp_path)
    # an existing local folder spelled like a repo id stays a local path; subfolder= works locally too
    assert same_weights(movq.load("me/my-codec", subfolder="inner"), codec)
    with pytest.raises(FileNotFoundError, match="subfolder"):
        movq.load("me/my-codec", subfolder="missing")
    with pytest.raises(ValueError, match="subfolder='vqvae' applies to Hub repo ids"):
        movq.load("kandinsky-2.2-movq", subfolder="vqvae")
    with pytest.raises(ValueError, match="preset='movqgan-tiny' cannot be used with the Hub repo"):
        movq.load("someone/codec", preset="movqgan-tiny")
    with pytest.raises(FileNotFoundError, match="does not exist"):  # a missing checkpoint is not a repo
        movq.load("someone/codec.ckpt")
    with pytest.raises(ValueError, match="unknown model"):
        movq.load("not-a-name")


# ----------------------------------------------------------------------------------- model cards


def test_save_pretrained_writes_a_model_card_the_hub_reads_back(tmp_path):
    from huggingface_hub import ModelCard

    codec = tiny_codec(5)
    folder = codec.save_pretrained(tmp_path / "codec", license="apache-2.0")
    card = ModelCard.load(folder / "README.md")
    assert card.data.library_name == "movq" and card.data.license == "apache-2.0"
    assert {"movq", "image-tokenizer", "vq", "movqgan"} <= set(card.data.tags)
    facts = card.data.movq
    assert facts["format"] == "movq" and facts["resolution"] == codec.config.resolution
    assert facts["input_range"] == [-1.0, 1.0] and facts["codebook_size"] == codec.codebook_size
    assert facts["downsample_factor"] == 8 and "movq.load(" in card.text
    # a card the user wrote is kept (PyTorchModelHubMixin's rule); the loader ignores it
    (folder / "README.md").write_text("# my own card\n")
    codec.save_pretrained(folder)
    assert (folder / "README.md").read_text() == "# my own card\n"
    assert same_weights(movq.load(folder), codec)
    # without a license the card says "other"; the diffusers format gets its own card
    exported = codec.save_pretrained(tmp_path / "diffusers", format="diffusers")
    card = ModelCard.load(exported / "README.md")
    assert card.data.license == "other" and card.data.movq["format"] == "diffusers"
    assert same_weights(movq.load(exported), codec)


# ----------------------------------------------------------------------------------- exports


def test_export_to_diffusers_is_refused_where_vqmodel_cannot_represent_the_codec(tmp_path):
    cases = [
        (tiny_codec(6, quantizer=FSQConfig(levels=(8, 5, 5, 5))), "supports only a plain VQ codebook"),
        (tiny_codec(6, input_range=(0.25, 0.75)), "no field for the input range"),
    ]
    for codec, reason in cases:
        target = tmp_path / "export"
        with pytest.raises(ValueError, match=reason) as info:
            codec.save_pretrained(target, format="diffusers")
        assert "format='movq'" in str(info.value)  # what to do instead
        assert not target.exists()  # refused before anything is written


def test_no_mid_attention_and_a_0_1_range_survive_every_format(tmp_path):
    codec = tiny_codec(7, mid_attention=False, input_range=(0.0, 1.0))
    assert codec.encoder.mid.attn_1 is None and codec.decoder.mid.attn_1 is None
    assert not any(".mid.attn_1." in k for k in codec.state_dict())
    x = torch.rand(2, 3, 32, 32) * 2 - 1
    tokens = codec.encode(x)
    # the networks see [0, 1]: the same as a [-1, 1] codec fed (x + 1) / 2, decoded back to [-1, 1]
    plain = Codec(CodecConfig.from_dict({**codec.config.to_dict(), "input_range": [-1.0, 1.0]}))
    plain.load_state_dict(codec.state_dict())
    assert torch.equal(plain.encode((x + 1) / 2), tokens)
    torch.testing.assert_close(codec.decode(tokens, clamp=False), plain.decode(tokens, clamp=False) * 2 - 1)
    for model in (codec, plain):  # the tiled paths map the range too
        model.enable_tiling(tile_size=32, overlap=8)
    big = torch.rand(1, 3, 64, 64) * 2 - 1
    assert torch.equal(codec.encode(big), plain.encode((big + 1) / 2))
    big_tokens = codec.encode(big)
    torch.testing.assert_close(codec.decode(big_tokens, clamp=False), plain.decode(big_tokens, clamp=False) * 2 - 1)
    for model in (codec, plain):
        model.enable_tiling(auto=True)
    exported = codec.save_pretrained(tmp_path / "diffusers", format="diffusers")
    config = json.loads((exported / "config.json").read_text())
    assert config["mid_block_add_attention"] is False and config["lookup_from_codebook"] is True
    state_file = tmp_path / "state.safetensors"  # original keys: the architecture from the shapes
    save_file(codec.state_dict(), state_file)
    for loaded in (movq.load(codec.save_pretrained(tmp_path / "movq")), movq.load(exported)):
        assert loaded.config.mid_attention is False and tuple(loaded.config.input_range) == (0.0, 1.0)
        assert same_weights(loaded, codec)
    assert movq.load(state_file).config.mid_attention is False


# ----------------------------------------------------------------------------------- diffusers families

PARITY = benchmark_module("hub_parity")  # benchmarks/hub_parity.py: references, Hub cache, comparison
AMUSED_SMALL = {**PARITY.AMUSED_256_VQVAE, "block_out_channels": [32, 64, 64, 128, 192], "latent_channels": 16,
                "num_vq_embeddings": 512}


def test_amused_vq_loads_from_its_hub_subfolder_with_the_same_tokens_and_pixels(tmp_path, monkeypatch):
    model = PARITY.reference_vqmodel(AMUSED_SMALL, seed=1)
    result = PARITY.hub_parity(model, "amused/amused-256", "vqvae", tmp_path, monkeypatch=monkeypatch, size=128)
    codec = result.codec
    assert codec.config.name == "amused/amused-256/vqvae"
    with PARITY.offline_hub_cache(tmp_path / "cache"):  # the same folder spelled as one string, and by its registered name
        assert same_weights(movq.load("amused/amused-256/vqvae"), codec)
        registered = movq.load("amused-256-vq")
        assert registered.config.name == "amused-256-vq" and same_weights(registered, codec)
    assert tuple(codec.config.input_range) == (0.0, 1.0) and codec.config.mid_attention is False
    assert codec.encoder.mid.attn_1 is None and codec.decoder.mid.attn_1 is None
    assert result.tokens_equal == 1.0 and result.distinct_tokens > 20
    assert result.max_pixel_diff < 1e-3


def test_ldm_celebahq_vq_f4_loads_from_its_hub_subfolder_at_the_published_config(tmp_path, monkeypatch):
    model = PARITY.reference_vqmodel(PARITY.LDM_CELEBAHQ_VQVAE, seed=2)
    result = PARITY.hub_parity(model, "CompVis/ldm-celebahq-256", "vqvae", tmp_path, monkeypatch=monkeypatch, size=64)
    codec = result.codec
    assert codec.downsample_factor == 4 and codec.codebook_size == 8192 and codec.config.embed_dim == 3
    with PARITY.offline_hub_cache(tmp_path / "cache"):  # the registered name reads the same folder
        registered = movq.load("ldm-celebahq-256-vq")
        assert registered.config.name == "ldm-celebahq-256-vq" and same_weights(registered, codec)
    # its weight file's name is not pinned: a .bin folder (as diffusers wrote them in 2022) reads the same
    model.save_pretrained(tmp_path / "bin", safe_serialization=False)
    assert (tmp_path / "bin" / "diffusion_pytorch_model.bin").is_file()
    hub_snapshot(tmp_path / "bin-cache", "CompVis/ldm-celebahq-256",
                 {f"vqvae/{f.name}": f for f in (tmp_path / "bin").iterdir()})
    with PARITY.offline_hub_cache(tmp_path / "bin-cache"):
        assert same_weights(movq.load("ldm-celebahq-256-vq"), codec)
    assert tuple(codec.config.input_range) == (-1.0, 1.0) and codec.config.mid_attention is True
    size = sum(p.numel() for p in codec.parameters())
    assert size == sum(p.numel() for p in model.parameters())
    assert result.tokens_equal == 1.0 and result.distinct_tokens > 20
    assert result.max_pixel_diff < 1e-3


def test_movq_tokenize_takes_a_repo_subfolder_as_its_model_string(tmp_path, monkeypatch, token_data_dir):
    from helpers import TOKENIZE_FAST
    from movq.tokenize.cli import main
    from movq.tokenize.dataset import TokenDataset

    codec = tiny_codec(9, mid_attention=False, input_range=(0.0, 1.0))  # an aMUSEd-like diffusers folder
    exported = codec.save_pretrained(tmp_path / "export", format="diffusers")
    hub_snapshot(tmp_path / "cache", "me/pipeline", folder_files(exported, "vqvae/"))
    use_hub_cache(tmp_path / "cache", monkeypatch)
    out = tmp_path / "tokens"
    assert main(["--model", "me/pipeline/vqvae", "--data", str(token_data_dir), "--out", str(out), *TOKENIZE_FAST]) == 0
    dataset = TokenDataset(out)
    assert len(dataset) == 5 and json.loads((out / "meta.json").read_text())["model"] == "me/pipeline/vqvae"
    loaded = movq.load("me/pipeline/vqvae")
    assert same_weights(loaded, codec) and tuple(loaded.config.input_range) == (0.0, 1.0)
