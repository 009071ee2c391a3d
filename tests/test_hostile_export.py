"""Export (``movq.deploy``): sizes, opsets and the output file are checked before the export's work,
and the file is written atomically (issue #25)."""

from __future__ import annotations

import importlib.util
import os

import pytest
import torch

from movq import Codec, CodecConfig
from movq.deploy import ONNX_OPSETS, export_onnx, export_program
from movq.memory_budget import MemoryBudgetError

HAS_ONNX = all(importlib.util.find_spec(name) for name in ("onnx", "onnxscript"))


def tiny_codec() -> Codec:
    torch.manual_seed(0)
    config = CodecConfig(ch=32, ch_mult=(1, 2), num_res_blocks=1, attn_resolutions=(), resolution=16, z_channels=4,
                         embed_dim=4, quantizer={"kind": "vq", "codebook_size": 16})
    return Codec(config).eval()


def test_export_program_refuses_a_size_beyond_memory_before_work():
    with pytest.raises(MemoryBudgetError, match="exporting 1 x 100000 x 100000 images needs at least"):
        export_program(tiny_codec(), "decoder", 100000, 100000)


@pytest.mark.parametrize(("args", "message"), [((16.0, 16), "height must be an int, got 16.0"),
                                                ((16, True), "width must be an int, got True"),
                                                ((16, 16, 0), "batch must be an int >= 1, got 0")])
def test_export_program_refuses_non_integer_sizes(args, message):
    with pytest.raises(ValueError, match=message):
        export_program(tiny_codec(), "decoder", *args)


@pytest.mark.parametrize("opset", [7, 17, 99])
def test_export_onnx_refuses_an_opset_it_cannot_honour(tmp_path, opset):
    with pytest.raises(ValueError, match=f"opset {opset} cannot be exported: .* writes opsets 18 to 23"):
        export_onnx(tiny_codec(), tmp_path / "m.onnx", "decoder", 16, 16, opset=opset)
    assert not list(tmp_path.iterdir())


def test_export_onnx_checks_the_output_path_before_work(tmp_path, monkeypatch):
    calls = []
    monkeypatch.setattr(torch.onnx, "export", lambda *a, **k: calls.append(a))
    (tmp_path / "folder.onnx").mkdir()
    with pytest.raises(ValueError, match="folder.onnx is a folder, expected a file name"):
        export_onnx(tiny_codec(), tmp_path / "folder.onnx", "decoder", 16, 16)
    if os.geteuid() != 0:
        locked = tmp_path / "locked"
        locked.mkdir()
        locked.chmod(0o500)
        with pytest.raises(ValueError, match="cannot be written"):
            export_onnx(tiny_codec(), locked / "m.onnx", "decoder", 16, 16)
    assert not calls


def test_export_onnx_writes_atomically(tmp_path, monkeypatch):
    """A failing export leaves an older file in place and no temporary file behind."""
    target = tmp_path / "m.onnx"
    target.write_bytes(b"old")

    def half_written(module, args, f, **kwargs):
        with open(f, "wb") as out:
            out.write(b"half")
        raise RuntimeError("export died")

    monkeypatch.setattr(torch.onnx, "export", half_written)
    with pytest.raises(RuntimeError, match="export died"):
        export_onnx(tiny_codec(), target, "decoder", 16, 16)
    assert target.read_bytes() == b"old" and [p.name for p in tmp_path.iterdir()] == ["m.onnx"]


@pytest.mark.skipif(not HAS_ONNX, reason="needs onnx and onnxscript (extra [export])")
def test_export_onnx_writes_the_requested_opset(tmp_path):
    import onnx

    path = export_onnx(tiny_codec(), tmp_path / "m.onnx", "decoder", 16, 16, opset=ONNX_OPSETS[-1], optimize=False)
    assert {o.version for o in onnx.load(path).opset_import if o.domain in ("", "ai.onnx")} == {ONNX_OPSETS[-1]}
    assert [p.name for p in tmp_path.iterdir()] == ["m.onnx"]
