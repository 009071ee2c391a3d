"""examples/encode_decode.py reads images with the project's one reader and writes atomically (issue #25)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
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
