"""examples/encode_decode.py reads images with the project's one reader and writes atomically (issue #25)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from movq import Codec, CodecConfig

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "encode_decode.py"


def test_encode_decode_reads_16_bit_pngs_with_the_project_reader(tmp_path):
    torch.manual_seed(0)
    config = CodecConfig(ch=32, ch_mult=(1, 2), num_res_blocks=1, attn_resolutions=(), resolution=16, z_channels=4,
                         embed_dim=4, quantizer={"kind": "vq", "codebook_size": 16})
    Codec(config).save_pretrained(tmp_path / "codec")
    gray = np.full((16, 32), 32768, dtype=np.uint16)  # mid-gray, 16 bits; a landscape strip
    image = Image.fromarray(gray)
    exif = Image.Exif()
    exif[0x0112] = 6  # orientation: rotate 90 degrees -> portrait
    image.save(tmp_path / "gray16.png", exif=exif.tobytes())
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1] / "src")}
    subprocess.run([sys.executable, str(EXAMPLE), str(tmp_path / "gray16.png"), "--model", str(tmp_path / "codec"),
                    "--out", str(tmp_path / "out"), "--size", "16"], check=True, env=env, capture_output=True)
    original = np.asarray(Image.open(tmp_path / "out" / "original.png"))
    assert original.shape == (16, 16, 3) and abs(int(original.mean()) - 128) <= 1  # not white
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["original.png", "reconstruction.png"]


def _run_example(monkeypatch, *argv: str) -> None:
    """Run examples/encode_decode.py in this process with ``argv``."""
    import runpy

    monkeypatch.setattr(sys, "argv", [str(EXAMPLE), *argv])
    runpy.run_path(str(EXAMPLE), run_name="__main__")


def test_encode_decode_composites_transparency_on_white_and_never_half_writes(tmp_path, monkeypatch):
    from helpers import SMALL_2X, tiny_codec
    from movq.image_files import load_preprocessed

    tiny_codec(config=SMALL_2X).save_pretrained(tmp_path / "codec")
    Image.new("RGBA", (32, 16), (255, 0, 0, 0)).save(tmp_path / "clear.png")  # transparent red
    args = (str(tmp_path / "clear.png"), "--model", str(tmp_path / "codec"), "--out", str(tmp_path / "out"), "--size", "16")
    with monkeypatch.context() as patch:
        _run_example(patch, *args)
    original = tmp_path / "out" / "original.png"
    pixels = np.asarray(Image.open(original))
    assert (pixels == 255).all()  # on white, as movq.image_files reads it
    assert np.array_equal(pixels, load_preprocessed(tmp_path / "clear.png", 16)[0].permute(1, 2, 0).numpy())
    before = original.read_bytes()

    def dies_half_way(self, fp, *a, **k):  # a crash (or kill) while PIL writes the PNG
        Path(fp).write_bytes(b"\x89PNG half")
        raise OSError("crashed while writing")

    with monkeypatch.context() as patch:
        patch.setattr(Image.Image, "save", dies_half_way)
        with pytest.raises(OSError, match="crashed while writing"):
            _run_example(patch, *args)
    assert original.read_bytes() == before
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["original.png", "reconstruction.png"]
