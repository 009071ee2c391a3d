"""Pickles that try to run code fail clearly and run nothing; DALL-E's pickled modules load inertly."""

from __future__ import annotations

import os
import pickle
import sys
import zipfile

import pytest
import torch

import movq
from helpers import save_as_foreign_module
from movq.dvae import DVAE, DVAEConfig, DVAEDecoder, DVAEEncoder
from movq.hub import CheckpointReadError, UnsafeCheckpointError
from movq.hub.safe_load import OpaqueObject, load_pickled_modules, load_state_file

torch.set_num_threads(1)


class Evil:
    """Unpickling this runs a shell command that creates ``marker``."""

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


@pytest.mark.parametrize("suffix", [".ckpt", ".pt", ".pth", ".bin"])
def test_torch_saved_pickle_with_code_is_refused_and_runs_nothing(tmp_path, suffix):
    marker = tmp_path / "pwned"
    path = tmp_path / f"model{suffix}"
    torch.save({"state_dict": {"encoder.conv_in.weight": torch.zeros(1), "x": Evil(str(marker))}}, path)
    with pytest.raises(UnsafeCheckpointError, match="system.*nothing was executed"):
        movq.load(path)
    assert not marker.exists()


def test_plain_pickle_with_code_is_refused_and_runs_nothing(tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "model.pt"
    path.write_bytes(pickle.dumps({"state_dict": Evil(str(marker))}, protocol=2))
    with pytest.raises(UnsafeCheckpointError, match="nothing was executed"):
        movq.load(path)
    assert not marker.exists()


def test_malicious_dalle_pickle_is_refused_and_runs_nothing(tmp_path):
    marker = tmp_path / "pwned"
    torch.save(Evil(str(marker)), tmp_path / "encoder.pkl")
    torch.save(Evil(str(marker)), tmp_path / "decoder.pkl")
    with pytest.raises(UnsafeCheckpointError, match="refusing to load .*encoder.pkl"):
        movq.load(tmp_path)
    assert not marker.exists()


def test_malicious_legacy_container_is_refused_and_runs_nothing(tmp_path):
    marker = tmp_path / "pwned"
    for name in ("encoder.pkl", "decoder.pkl"):
        torch.save(Evil(str(marker)), tmp_path / name, _use_new_zipfile_serialization=False)
    with pytest.raises(UnsafeCheckpointError, match="refusing to load .*encoder.pkl.*system.*nothing was executed"):
        movq.load(tmp_path)
    # code hidden in the header pickles (sys_info) or in the storage key list is refused too
    magic, version = 0x1950A86A20F9469CFC6C, 1001
    evil = pickle.dumps(Evil(str(marker)), protocol=2)
    for parts in ([magic, version], [magic, version, {"little_endian": True}, {"a": 1}]):
        path = tmp_path / "crafted.pt"
        path.write_bytes(b"".join(pickle.dumps(p, protocol=2) for p in parts) + evil)
        with pytest.raises(UnsafeCheckpointError, match="nothing was executed"):
            movq.load(path)
    assert not marker.exists()


class Plain:
    """An instance of a user class: rebuilt as an inert :class:`OpaqueObject` (its state kept)."""

    def __init__(self) -> None:
        self.size = 3


def test_legacy_container_state_dicts_and_truncated_files(tmp_path):
    torch.manual_seed(0)
    state = {"w": torch.randn(3, 4), "b": torch.arange(5), "t": torch.randn(4, 3).t(), "h": torch.randn(2).half()}
    state["shared"] = state["w"][1:]  # a view sharing w's storage
    path = tmp_path / "legacy.pkl"
    torch.save({"model": Plain(), **state}, path, _use_new_zipfile_serialization=False)
    loaded = load_pickled_modules(path)
    for key, value in state.items():
        assert torch.equal(loaded[key], value) and loaded[key].dtype == value.dtype
    assert loaded["shared"].data_ptr() == loaded["w"][1:].data_ptr()
    assert isinstance(loaded["model"], OpaqueObject) and loaded["model"].state == {"size": 3}
    data = path.read_bytes()
    for cut in (len(data) - 7, len(data) // 2, 40):
        path.write_bytes(data[:cut])
        with pytest.raises(CheckpointReadError, match="cannot read .*legacy.pkl"):
            load_pickled_modules(path)


@pytest.mark.parametrize("legacy", [False, True], ids=["zip", "legacy"])
def test_dalle_pickled_modules_load_with_the_restricted_unpickler(tmp_path, legacy):
    torch.manual_seed(0)
    config = DVAEConfig(n_hid=64, n_init=32, vocab_size=512)
    reference = DVAE(config).eval()
    with torch.no_grad():  # spread the biases so the test does not pass on zeros
        for param in reference.parameters():
            if param.ndim == 1:
                param.normal_(std=0.05)
    encoder, decoder = DVAEEncoder(config), DVAEDecoder(config)
    encoder.load_state_dict(reference.encoder.state_dict())
    decoder.load_state_dict(reference.decoder.state_dict())
    save_as_foreign_module(encoder, "dall_e_missing.encoder", "Encoder", tmp_path / "encoder.pkl", legacy)
    save_as_foreign_module(decoder, "dall_e_missing.decoder", "Decoder", tmp_path / "decoder.pkl", legacy)
    assert zipfile.is_zipfile(tmp_path / "encoder.pkl") is not legacy

    with pytest.raises(pickle.UnpicklingError):  # torch's weights_only path alone refuses module objects
        torch.load(tmp_path / "encoder.pkl", weights_only=True)
    loaded = movq.load(tmp_path)
    assert "dall_e_missing" not in sys.modules
    assert isinstance(loaded, DVAE) and loaded.config.vocab_size == 512 and loaded.config.n_hid == 64
    x = torch.rand(2, 3, 32, 48) * 2 - 1
    tokens = loaded.encode(x)
    assert tokens.shape == (2, 4, 6) and tokens.max() < 512
    assert torch.equal(tokens, reference.encode(x))
    torch.testing.assert_close(loaded.decode(tokens), reference.decode(tokens))
    image = loaded.decode(tokens)
    assert image.shape == (2, 3, 32, 48) and image.min() >= -1 and image.max() <= 1

    fresh = movq.load(tmp_path, pretrained=False)  # the same architecture, random weights
    assert fresh.config == loaded.config and not torch.equal(fresh.encoder.blocks.input.w, loaded.encoder.blocks.input.w)
    with pytest.raises(ValueError, match="preset='movqgan-tiny' cannot be used with the folder"):
        movq.load(tmp_path, preset="movqgan-tiny")

    with pytest.raises(ValueError, match="pickled module object"):  # one half alone is not a codec
        movq.loader.codec_from_state(load_state_file(tmp_path / "encoder.pkl"))


def test_dvae_shares_the_codec_api_and_saves_in_movq_format(tmp_path):
    torch.manual_seed(1)
    model = DVAE(DVAEConfig(n_hid=64, n_init=32, vocab_size=512)).eval()
    image = torch.randint(0, 256, (16, 16, 3), dtype=torch.uint8).numpy()
    out = model.reconstruct(image)
    assert out.shape == image.shape and out.dtype == image.dtype
    with pytest.raises(ValueError, match="token ids"):
        model.decode(torch.full((1, 2, 2), 512))
    model.save_pretrained(tmp_path / "dvae")
    again = movq.load(tmp_path / "dvae")
    assert isinstance(again, DVAE)
    assert torch.equal(again.encoder.blocks.input.w, model.encoder.blocks.input.w)
    with pytest.raises(ValueError, match="movq format"):
        model.save_pretrained(tmp_path / "x", format="diffusers")
