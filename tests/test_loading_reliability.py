"""Loading tells the truth: every argument is honoured or refused, every bad file names itself and
the field, plain state dicts of every codec round-trip, and unknown names suggest the closest ones."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

import movq
from movq import Codec, CodecConfig, get_preset
from movq.config import PRESETS, EMAConfig, FSQConfig, GumbelConfig, LFQConfig, ResidualConfig, VQConfig
from movq.dvae import DVAE, DVAEConfig
from movq.hub import CheckpointReadError, get_spec
from movq.loader import codec_from_state
from movq.strict import ConfigError

torch.set_num_threads(1)


def small_codec(quantizer, embed_dim: int = 4, seed: int = 0) -> Codec:
    """A tiny codec (about 0.3M parameters) with the given quantizer, in eval mode."""
    torch.manual_seed(seed)
    config = CodecConfig(
        name="small", ch=32, ch_mult=(1, 2), num_res_blocks=1, attn_resolutions=(), resolution=32,
        z_channels=embed_dim, embed_dim=embed_dim, quantizer=quantizer,
    )
    return Codec(config).eval()


# ------------------------------------------------------------------ plain state-dict round trips

QUANTIZERS = {
    "vq": (VQConfig(codebook_size=64), 4),
    "vq-grouped": (VQConfig(codebook_size=64, groups=2), 4),
    "vq-factorized": (VQConfig(codebook_size=64, code_dim=8, l2_normalize=True), 4),
    "ema": (EMAConfig(codebook_size=64, dead_code_threshold=0.03, kmeans_init=True), 4),
    "gumbel": (GumbelConfig(codebook_size=64), 4),
    "residual-shared": (ResidualConfig(codebook_size=64, depth=3), 4),
    "residual": (ResidualConfig(codebook_size=64, depth=2, shared_codebook=False), 4),
    "fsq": (FSQConfig(levels=(8, 5, 5, 5)), 4),
    "lfq": (LFQConfig(), 6),
}


@pytest.mark.parametrize("kind", sorted(QUANTIZERS))
def test_torch_save_of_a_state_dict_loads_back_identically_for_every_quantizer(tmp_path, kind):
    quantizer, embed_dim = QUANTIZERS[kind]
    codec = small_codec(quantizer, embed_dim)
    torch.save(codec.state_dict(), tmp_path / "codec.pt")
    loaded = movq.load(tmp_path / "codec.pt")
    assert loaded.config == codec.config  # the config travelled with the state dict
    x = torch.rand(2, 3, 16, 24) * 2 - 1
    tokens = codec.encode(x)
    assert torch.equal(loaded.encode(x), tokens)
    assert torch.equal(loaded.decode(tokens), codec.decode(tokens))


def test_state_dict_without_the_saved_config_infers_what_the_tensors_reveal(tmp_path):
    ema = small_codec(QUANTIZERS["ema"][0])
    save_file(ema.state_dict(), tmp_path / "ema.safetensors")  # safetensors: tensors only, no config
    loaded = movq.load(tmp_path / "ema.safetensors")
    assert isinstance(loaded.config.quantizer, EMAConfig) and loaded.codebook_size == 64
    x = torch.rand(1, 3, 16, 16) * 2 - 1
    assert torch.equal(loaded.encode(x), ema.encode(x))

    residual = small_codec(QUANTIZERS["residual"][0])
    save_file(residual.state_dict(), tmp_path / "residual.safetensors")
    assert movq.load(tmp_path / "residual.safetensors").config.quantizer == ResidualConfig(
        codebook_size=64, depth=2, shared_codebook=False
    )
    fsq = small_codec(FSQConfig(levels=(8, 5, 5, 5)))
    save_file(fsq.state_dict(), tmp_path / "fsq.safetensors")
    with pytest.raises(ValueError, match=r"fsq.safetensors: cannot infer the quantizer.*FSQ and LFQ.*preset="):
        movq.load(tmp_path / "fsq.safetensors")


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_every_preset_state_dict_rebuilds_its_preset(name):
    """Without writing hundreds of MB: the saved config, and the shapes alone, both give the preset."""
    with torch.device("meta"):
        state = Codec(get_preset(name)).state_dict()
        from_metadata = codec_from_state(state, pretrained=False)
        from_shapes = codec_from_state(dict(state), pretrained=False)  # a plain dict: no saved config
    assert from_metadata.config == get_preset(name)
    assert from_shapes.config == get_preset(name)


def test_dvae_state_dict_round_trip(tmp_path):
    torch.manual_seed(0)
    model = DVAE(DVAEConfig(n_hid=16, n_init=8, vocab_size=32, n_blk_per_group=1)).eval()
    torch.save(model.state_dict(), tmp_path / "dvae.pt")
    loaded = movq.load(tmp_path / "dvae.pt")
    assert isinstance(loaded, DVAE) and loaded.config == model.config
    x = torch.rand(1, 3, 16, 16) * 2 - 1
    assert torch.equal(loaded.encode(x), model.encode(x))


# ------------------------------------------------------------------ arguments: honoured or refused


def test_pretrained_false_with_a_path_builds_that_architecture_with_fresh_weights(tmp_path):
    codec = small_codec(QUANTIZERS["ema"][0], seed=1)
    codec.save_pretrained(tmp_path / "folder")
    torch.save(codec.state_dict(), tmp_path / "codec.pt")
    for path in (tmp_path / "folder", tmp_path / "codec.pt"):
        torch.manual_seed(5)
        fresh = movq.load(path, pretrained=False)
        torch.manual_seed(5)
        expected = Codec(codec.config)
        assert fresh.config == codec.config
        assert torch.equal(fresh.encoder.conv_in.weight, expected.encoder.conv_in.weight)
        assert not torch.equal(fresh.encoder.conv_in.weight, codec.encoder.conv_in.weight)
    (tmp_path / "folder" / "model.safetensors").unlink()  # only the config is needed
    assert movq.load(tmp_path / "folder", pretrained=False).config == codec.config


def test_preset_and_ema_that_cannot_apply_are_refused(tmp_path):
    codec = small_codec(QUANTIZERS["vq"][0])
    folder = codec.save_pretrained(tmp_path / "movq")
    diffusers_folder = codec.save_pretrained(tmp_path / "diffusers", format="diffusers")
    for path in (folder, diffusers_folder):
        with pytest.raises(ValueError, match=r"preset='movqgan-tiny' cannot be used with the folder .* carries its own"):
            movq.load(path, preset="movqgan-tiny")
        with pytest.raises(ValueError, match=r"ema=True, but the folder .* single set of weights"):
            movq.load(path, ema=True)
        assert movq.load(path, ema=False).config.ch_mult == (1, 2)  # nothing to ignore: honoured
    with pytest.raises(ValueError, match=r"preset='movqgan-67m' cannot be used with the registered model 'sber-vqgan'"):
        movq.load("sber-vqgan", preset="movqgan-67m")
    with pytest.raises(ValueError, match=r"pretrained=False loads none"):
        movq.load("movqgan-tiny", pretrained=False, ema=True)
    with pytest.raises(ValueError, match=r"conflicting architectures"):
        movq.load("movqgan-tiny", pretrained=False, preset="movqgan-67m")
    assert movq.load("movqgan-tiny", pretrained=False, preset="movqgan-tiny").config.name == "movqgan-tiny"


# ------------------------------------------------------------------ bad files name file and field


def write_config(folder: Path, text: str) -> Path:
    (folder / "config.json").write_text(text)
    return folder / "config.json"


@pytest.mark.parametrize(
    "edit,message",
    [
        ({"ch": "32"}, r"field 'ch' in .*config.json: expected an int, got '32' \(a string\)"),
        ({"ch_mult": 4}, r"field 'ch_mult' in .*config.json: expected a list, got 4"),
        ({"num_res_blocks": 1.5}, r"field 'num_res_blocks' in .*config.json: expected an int, got 1.5"),
        ({"ch": -32}, r"field 'ch' in .*config.json: expected an int >= 32, got -32"),
        ({"z_channels": 0}, r"field 'z_channels' in .*config.json: expected an int >= 1, got 0"),
        ({"ch_mult": [1, 0]}, r"field 'ch_mult\[1\]' in .*config.json: expected an int >= 1, got 0"),
        ({"norm": "batch"}, r"field 'norm' in .*config.json: expected one of \['spatial', 'group'\], got 'batch'"),
        ({"quantizer": {"kind": "ema", "codebook_size": 0}},
         r"field 'quantizer.codebook_size' in .*config.json: expected an int >= 1, got 0"),
        ({"quantizer": {"kind": "ema", "decay": 1.5}}, r"field 'quantizer.decay' .*: expected a number in \[0, 1\), got 1.5"),
        ({"quantizer": {"kind": "vq", "code_dim": 0}}, r"field 'quantizer.code_dim' .*: expected an int >= 1 or null"),
        ({"ch": 48}, r"invalid CodecConfig field 'ch' in .*config.json: expected a multiple of 32, got 48"),
        ({"colour": 1}, r"unknown CodecConfig fields \['colour'\].* in .*config.json"),
    ],
)
def test_bad_config_fields_name_the_file_field_value_and_what_is_accepted(tmp_path, edit, message):
    small_codec(VQConfig(codebook_size=64)).save_pretrained(tmp_path)
    data = json.loads((tmp_path / "config.json").read_text())
    data.update(edit)
    write_config(tmp_path, json.dumps(data))
    with pytest.raises(ConfigError, match=message):
        movq.load(tmp_path)


def test_unreadable_config_and_weights_files_are_named(tmp_path):
    codec = small_codec(VQConfig(codebook_size=64))
    codec.save_pretrained(tmp_path)
    good = (tmp_path / "config.json").read_text()
    for text, message in (("", "config.json is empty"), ("{oops", "config.json is not valid JSON"),
                          ("[1, 2]", "config.json holds a JSON list, expected a JSON object")):
        write_config(tmp_path, text)
        with pytest.raises(ConfigError, match=message):
            movq.load(tmp_path)
        with pytest.raises(ConfigError, match=message):
            Codec.from_pretrained(tmp_path)
    write_config(tmp_path, good)
    weights = tmp_path / "model.safetensors"
    data = weights.read_bytes()
    for broken in (data[: len(data) // 2], b"\x00" * 16, b""):
        weights.write_bytes(broken)
        with pytest.raises(CheckpointReadError, match=r"model.safetensors"):
            movq.load(tmp_path)
    dvae = DVAE(DVAEConfig(n_hid=16, n_init=8, vocab_size=32, n_blk_per_group=1))
    folder = dvae.save_pretrained(tmp_path / "dvae")
    data = json.loads((folder / "config.json").read_text())
    write_config(folder, json.dumps({**data, "n_hid": "16"}))
    with pytest.raises(ConfigError, match=r"invalid DVAEConfig field 'n_hid' in .*dvae/config.json: expected an int"):
        movq.load(folder)


def test_bad_diffusers_config_is_named(tmp_path):
    folder = small_codec(VQConfig(codebook_size=64)).save_pretrained(tmp_path, format="diffusers")
    data = json.loads((folder / "config.json").read_text())
    write_config(folder, json.dumps({**data, "block_out_channels": 32}))
    with pytest.raises(ConfigError, match=r"config.json is not a usable diffusers VQModel config"):
        movq.load(folder)


def test_shapes_that_match_no_architecture_say_so_and_suggest_preset(tmp_path):
    state = small_codec(VQConfig(codebook_size=64)).state_dict()
    bad = dict(state)
    bad["encoder.conv_in.weight"] = torch.zeros(64, 3, 3, 3)  # ch 64, but the levels are 32 and 64 wide
    torch.save(bad, tmp_path / "odd.pt")
    with pytest.raises(ValueError, match=r"odd.pt: the tensor shapes match no known architecture .*"
                                         r"found .*ch 64.*level widths \[32, 64\].*pass preset="):
        movq.load(tmp_path / "odd.pt")
    with pytest.raises(ValueError, match=r"odd.pt: checkpoint does not match codec 'movqgan-tiny'"):
        movq.load(tmp_path / "odd.pt", preset="movqgan-tiny")


# ------------------------------------------------------------------ names


def test_unknown_names_suggest_the_closest_ones():
    with pytest.raises(ValueError, match=r"unknown model 'sber-movqgan-67': did you mean 'sber-movqgan-67m'\?"):
        movq.load("sber-movqgan-67")
    with pytest.raises(ValueError, match=r"unknown preset 'movqgan-67'; did you mean 'movqgan-67m'\?"):
        get_preset("movqgan-67")
    with pytest.raises(KeyError, match=r"unknown model 'sber-movqgan67m'; did you mean 'sber-movqgan-67m'\?"):
        get_spec("sber-movqgan67m")
    with pytest.raises(ValueError, match=r"unknown preset 'movqgan-tiny2' for pretrained=False: did you mean 'movqgan-tiny'\?"):
        movq.load("movqgan-tiny2", pretrained=False)
    with pytest.raises(ConfigError, match=r"unknown quantizer kind 'emma'; did you mean 'ema'\?"):
        CodecConfig.from_dict({"quantizer": {"kind": "emma"}})
    with pytest.raises(ConfigError, match=r"unknown VQConfig fields \['codebok_size'\].*did you mean 'codebook_size'\?"):
        CodecConfig.from_dict({"quantizer": {"codebok_size": 3}})


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs named pipes")
def test_config_and_cond_files_that_are_fifos_are_refused_not_read(tmp_path):
    """A FIFO (or device) as a JSON config file or a --cond file would block the read forever: refused
    with the path named. Run in a child process so that an unfixed version fails by timeout."""
    config, cond = tmp_path / "config.json", tmp_path / "cond.safetensors"
    os.mkfifo(config)
    os.mkfifo(cond)
    script = (
        "import sys\n"
        "from movq.strict import ConfigError, read_json_object\n"
        "from movq.diffusion.data import load_cond_file\n"
        "try:\n    read_json_object(sys.argv[1])\nexcept ConfigError as e:\n    print('config:', e)\n"
        "try:\n    load_cond_file(sys.argv[2], 4)\nexcept ValueError as e:\n    print('cond:', e)\n"
    )
    proc = subprocess.run([sys.executable, "-c", script, str(config), str(cond)], capture_output=True, text=True,
                          timeout=60)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert f"config: {config} is not a regular file" in proc.stdout
    assert f"cond: {cond} is not a regular file" in proc.stdout and "--cond expects" in proc.stdout
