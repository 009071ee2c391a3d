"""movq-bench never reports success for work it did not do, and every user error is one line, found
before any compute (and before any output is written)."""

from __future__ import annotations

import pytest
import torch
from PIL import Image

import movq
from movq.bench.cli import EXIT_ERROR, main

FAST = ["--resolution", "16", "--batch-size", "2", "--feature-extractor", "random", "--no-progress", "--threads", "1",
        "--metrics", "l1,psnr"]


@pytest.fixture(scope="module")
def codec_dir(tmp_path_factory):
    torch.manual_seed(0)
    config = movq.CodecConfig(ch=32, ch_mult=(1, 2), attn_resolutions=(), resolution=16)
    return movq.Codec(config).save_pretrained(tmp_path_factory.mktemp("codec") / "tiny")


@pytest.fixture()
def photos(tmp_path):
    root = tmp_path / "photos"
    root.mkdir()
    for i in range(3):
        Image.new("RGB", (20, 16), (40 * i, 90, 200)).save(root / f"p{i}.png")
    return root


def _one_line_error(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert err.startswith("movq-bench: error: ") and "Traceback" not in err and len(err.splitlines()) == 1, err
    return err


def test_no_readable_image_is_an_error_and_writes_nothing(codec_dir, tmp_path, capsys):
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "a.jpg").write_bytes(b"\xff\xd8 not a jpeg")
    (bad / "b.png").write_bytes(b"")
    out = tmp_path / "results.json"
    assert main(["--model", str(codec_dir), "--data", str(bad), *FAST, "--out", str(out)]) == EXIT_ERROR
    err = _one_line_error(capsys)
    assert "none of the 2 image file(s)" in err and "a.jpg" in err
    assert not out.exists()


@pytest.mark.parametrize("limit", ["0", "-1"])
def test_limit_below_one_is_refused(codec_dir, photos, tmp_path, capsys, limit):
    out = tmp_path / "r.json"
    assert main(["--model", str(codec_dir), "--data", str(photos), *FAST, "--limit", limit, "--out", str(out)]) == EXIT_ERROR
    assert f"--limit must be an int >= 1, got {limit}" in _one_line_error(capsys)
    assert not out.exists()


@pytest.mark.parametrize(
    "extra, expected",
    [
        (["--threads", "-1"], "--threads must be an int >= 1, got -1"),
        (["--device", "foo"], "unknown device 'foo'"),
        (["--batch-size", "0"], "--batch-size must be an int >= 1, got 0"),
        (["--resolution", "100000"], "needs at least"),
    ],
)
def test_bad_arguments_are_one_line_before_work(codec_dir, photos, tmp_path, capsys, extra, expected):
    assert main(["--model", str(codec_dir), "--data", str(photos), *FAST, *extra]) == EXIT_ERROR
    assert expected in _one_line_error(capsys)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message on a machine without CUDA")
def test_cuda_without_gpu(codec_dir, photos, capsys):
    assert main(["--model", str(codec_dir), "--data", str(photos), *FAST, "--device", "cuda"]) == EXIT_ERROR
    assert "no CUDA GPU" in _one_line_error(capsys)


def test_unwritable_outputs_are_found_before_the_run(codec_dir, photos, tmp_path, capsys, monkeypatch):
    import movq.bench.runner as runner

    def never(*args, **kwargs):
        raise AssertionError("the run started")

    monkeypatch.setattr(runner.Runner, "run", never)
    blocker = tmp_path / "file.txt"
    blocker.write_text("x")
    for flag in ("--out", "--markdown"):
        assert main(["--model", str(codec_dir), "--data", str(photos), *FAST, flag, str(blocker / "r")]) == EXIT_ERROR
        assert f"{flag} {blocker / 'r'} cannot be written" in _one_line_error(capsys)
    assert main(["--model", str(codec_dir), "--data", str(photos), *FAST, "--out", str(tmp_path)]) == EXIT_ERROR
    assert "is a folder" in _one_line_error(capsys)


def test_speed_batch_size_zero_says_so(codec_dir, capsys):
    assert main(["speed", "--model", str(codec_dir), "--resolution", "16", "--batch-size", "0"]) == EXIT_ERROR
    assert "--batch-size must be an int >= 1, got 0" in _one_line_error(capsys)
