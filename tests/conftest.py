"""Shared test set-up: subprocesses (CLIs, torchrun, examples) import the movq of this checkout;
fixtures used by several test files (their helpers are in ``helpers.py``)."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from helpers import SRC, TOKENIZE_FAST, TOKENIZE_MODEL, bench_photos, smooth_image

# pytest's ``pythonpath`` setting covers this process only; child processes read PYTHONPATH, so an
# editable install of another checkout can never be what a subprocess test exercises.
os.environ["PYTHONPATH"] = os.pathsep.join([SRC, *filter(None, [os.environ.get("PYTHONPATH")])])


@pytest.fixture
def one_thread():
    """Torch on one CPU thread for the test (tiny models run fastest so, and do not fight a shared CPU).

    Use with ``pytestmark = pytest.mark.usefixtures("one_thread")``."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def bench_codec_dir(tmp_path_factory) -> Path:
    """A saved ``movqgan-tiny`` codec with random weights (seed 0)."""
    import torch

    import movq

    torch.manual_seed(0)
    return movq.Codec(movq.get_preset("movqgan-tiny")).save_pretrained(tmp_path_factory.mktemp("codec") / "tiny")


@pytest.fixture(scope="module")
def bench_data_dir(tmp_path_factory) -> Path:
    """Three real photos, a corrupt JPEG, a text file, and gray / RGBA / CMYK / small images."""
    from PIL import Image

    root = tmp_path_factory.mktemp("data")
    photos = bench_photos()
    for p in photos:
        shutil.copy(p, root / p.name)
    base = Image.open(photos[0]).convert("RGB")
    base.convert("L").save(root / "gray.png")
    rgba = base.convert("RGBA")
    rgba.putalpha(128)
    rgba.save(root / "rgba.png")
    base.convert("CMYK").save(root / "cmyk.jpg")
    base.resize((40, 30)).save(root / "small.png")
    (root / "corrupt.jpg").write_bytes(b"\xff\xd8\xff\xe0 definitely not a jpeg")
    (root / "notes.txt").write_text("not an image")
    return root


@pytest.fixture(scope="module")
def token_data_dir(tmp_path_factory) -> Path:
    """5 images (one in a subfolder, one gray, one smaller than TOKENIZE_RES), 2 captions, a corrupt JPEG."""
    root = tmp_path_factory.mktemp("images")
    (root / "sub").mkdir()
    smooth_image(0, (80, 60)).save(root / "a.jpg", quality=95)
    smooth_image(1, (50, 70)).save(root / "b.png")
    smooth_image(2, (64, 64)).convert("L").save(root / "c_gray.png")
    smooth_image(3, (24, 40)).save(root / "d_small.png")
    smooth_image(4, (90, 45)).save(root / "sub" / "e.webp")
    (root / "a.txt").write_text("a red thing\n", encoding="utf-8")
    (root / "sub" / "e.txt").write_text("ünïcode caption", encoding="utf-8")
    (root / "bad.jpg").write_bytes(b"\xff\xd8\xff\xe0 not a jpeg at all")
    return root


@pytest.fixture(scope="module")
def folder_run(token_data_dir, tmp_path_factory) -> Path:
    """A finished movq-tokenize run of :func:`token_data_dir` (3 shards of up to 2 items): copy it before changing it."""
    from movq.tokenize.cli import main

    out = tmp_path_factory.mktemp("runs") / "folder"
    assert main(["--model", TOKENIZE_MODEL, "--data", str(token_data_dir), "--out", str(out), *TOKENIZE_FAST]) == 0
    return out


@pytest.fixture(scope="session")
def hostile_shared(tmp_path_factory) -> Path:
    """The session's folder for the inputs several hostile-input cases share (see ``helpers.Work``)."""
    from helpers import Work

    Work.shared = tmp_path_factory.mktemp("hostile-shared")
    return Work.shared


@pytest.fixture
def hostile_work(tmp_path, hostile_shared, monkeypatch):
    """Point ``helpers.Work`` at this test's ``tmp_path`` (markers in ``tmp_path / "markers"``); offline
    (nothing a hostile case does may touch the network); torch on one thread."""
    import torch

    from helpers import Work

    Work.root, Work.markers = tmp_path, tmp_path / "markers"
    Work.markers.mkdir()
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield Work
    torch.set_num_threads(before)
    assert not list(Work.markers.iterdir()), "a hostile input ran code"
