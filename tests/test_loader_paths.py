"""One loading path per format: ``movq.load`` of a movq folder is ``Codec.from_pretrained``, the format
names come from one table, and the codec does not depend on the exporter (no import cycle)."""

from __future__ import annotations

import ast
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import movq
import movq.codec
from movq import Codec, CodecConfig
from movq.config import VQConfig
from movq.hub import registry
from movq.hub.diffusers import original_to_diffusers
from movq.hub.formats import FORMATS, WRITE_FORMATS, detect_format

SRC = Path(movq.__file__).parent


def small_codec(seed: int = 0) -> Codec:
    torch.manual_seed(seed)
    config = CodecConfig(
        name="small", ch=32, ch_mult=(1, 2), num_res_blocks=1, attn_resolutions=(), resolution=32,
        z_channels=4, embed_dim=4, quantizer=VQConfig(codebook_size=64),
    )
    return Codec(config).eval()


def test_load_of_a_movq_folder_is_codec_from_pretrained(tmp_path, monkeypatch):
    folder = small_codec().save_pretrained(tmp_path / "codec")
    direct = Codec.from_pretrained(folder)
    calls = []
    original = Codec.from_pretrained.__func__

    def spy(cls, directory, **kwargs):
        calls.append((cls, Path(directory)))
        return original(cls, directory, **kwargs)

    monkeypatch.setattr(Codec, "from_pretrained", classmethod(spy))
    loaded = movq.load(folder)
    assert calls == [(Codec, folder)]
    assert direct.state_dict().keys() == loaded.state_dict().keys()
    for key, value in direct.state_dict().items():
        assert torch.equal(loaded.state_dict()[key], value), key


def test_from_pretrained_names_the_weights_file_like_load(tmp_path):
    folder = small_codec().save_pretrained(tmp_path)
    (folder / "config.json").write_text((folder / "config.json").read_text().replace('"codebook_size": 64', '"codebook_size": 32'))
    messages = []
    for read in (movq.load, Codec.from_pretrained):
        with pytest.raises(ValueError, match=r"model.safetensors: checkpoint does not match") as error:
            read(folder)
        messages.append(str(error.value))
    assert messages[0] == messages[1]


def _imported_modules(path: Path) -> set[str]:
    """Every module ``path`` imports, at the top or inside functions."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            names |= {node.module} | {f"{node.module}.{alias.name}" for alias in node.names}
    return names


def test_codec_does_not_import_the_exporter():
    assert not {m for m in _imported_modules(SRC / "codec.py") if m.startswith("movq.hub.export")}
    for module in ("diffusers", "formats", "upload"):  # what the codec does use: none imports the codec
        assert not {m for m in _imported_modules(SRC / "hub" / f"{module}.py") if m.startswith(("movq.codec", "movq.loader"))}
    subprocess.run([sys.executable, "-c", "import movq.codec"], check=True, env={**os.environ, "PYTHONPATH": str(SRC.parent)})


def test_format_names_come_from_one_table(tmp_path):
    assert {spec.format for spec in registry.REGISTRY.values()} <= set(FORMATS)
    assert set(WRITE_FORMATS) <= set(FORMATS)
    state = small_codec().state_dict()
    assert detect_format(state) in FORMATS and detect_format(original_to_diffusers(state)) in FORMATS
    with pytest.raises(ValueError, match=r"format must be one of \('movq', 'diffusers'\)"):
        small_codec().save_pretrained(tmp_path, format="onnx")
    with pytest.raises(ValueError, match="unknown format"):
        registry.ModelSpec("x", "hub", "ckpt", "", "1M")
