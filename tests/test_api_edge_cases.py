"""Edge cases of the public API: odd PIL modes, empty images, meta tensors, zero-size latents, and
output writes that leave the process umask alone."""

from __future__ import annotations

import os
import stat

import numpy as np
import pytest
import torch
from PIL import Image

import movq
from movq.atomic import atomic_write_text
from movq.images import to_rgb


@pytest.fixture(scope="module")
def codec() -> movq.Codec:
    torch.manual_seed(0)
    return movq.Codec(movq.CodecConfig(ch=32, ch_mult=(1, 2), attn_resolutions=(), resolution=16)).eval()


@pytest.mark.parametrize("value", [np.nan, np.inf])
def test_float_pil_image_with_nan_or_inf_is_refused(codec, value):
    array = np.full((16, 16), 0.5, dtype=np.float32)
    array[3, 4] = value
    with pytest.raises(ValueError, match="NaN or inf"):
        codec.encode(Image.fromarray(array, "F"))


def test_premultiplied_la_is_converted_like_la():
    la = Image.new("LA", (4, 4), (100, 255))
    premultiplied = la.convert("La")
    assert np.array_equal(np.asarray(to_rgb(premultiplied)), np.asarray(to_rgb(la)))
    assert np.asarray(to_rgb(premultiplied))[0, 0].tolist() == [100, 100, 100]


def test_zero_size_pil_image_says_empty(codec):
    with pytest.raises(ValueError, match="empty image: 0x0 pixels"):
        codec.encode(Image.new("RGB", (0, 0)))


def test_meta_tensors_are_refused(codec):
    with pytest.raises(ValueError, match="'meta' device"):
        codec.encode(torch.empty(1, 3, 16, 16, device="meta"))
    with pytest.raises(ValueError, match="'meta' device"):
        codec.decode(torch.zeros(1, 8, 8, dtype=torch.long, device="meta"))
    with pytest.raises(ValueError, match="'meta' device"):
        codec.decode_latents(torch.zeros(1, 4, 2, 2, device="meta"))


def test_zero_size_latents_are_refused(codec):
    with pytest.raises(ValueError, match=r"h>0, w>0"):
        codec.decode_latents(torch.zeros(1, 4, 0, 3))


def test_atomic_write_never_touches_the_umask(tmp_path, monkeypatch):
    current = os.umask(0o022)
    os.umask(current)

    def forbidden(mask):
        raise AssertionError("os.umask changed the process-wide umask")

    monkeypatch.setattr(os, "umask", forbidden)
    path = atomic_write_text(tmp_path / "out.txt", "hello")
    assert path.read_text() == "hello"
    assert stat.S_IMODE(path.stat().st_mode) == 0o666 & ~current
    assert [p.name for p in tmp_path.iterdir()] == ["out.txt"]
