"""movq-tokenize's output does not depend on the caller's torch thread count (on the CPU each process
encodes with ``--threads``, default 1), and ``movq-diffusion-train --labels folder`` refuses a flat image
folder before anything is encoded."""

from __future__ import annotations

import hashlib
import json

import numpy as np
import pytest
import torch
from PIL import Image

from helpers import DIFFUSION_TINY_UNET, TOKENIZE_MODEL
from movq.tokenize.cli import main
from movq.tokenize.encoding import encode_batch

FLAGS = ["--resolution", "64", "--batch-size", "3", "--shard-size", "2", "--num-workers", "0", "--no-progress"]


def shard_digests(out) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted((out / "shards").glob("*.safetensors"))}


@pytest.mark.parametrize("latents", [False, True])
def test_shards_are_byte_identical_with_one_or_two_caller_threads(token_data_dir, tmp_path, latents, monkeypatch):
    """float32 latents of this codec differ in the last bit between 1 and 2 threads (a few float16 values and
    tokens with them): the run encodes with 1 thread whatever the caller set, so the shards are equal."""
    from movq.tokenize import runner

    seen: list[int] = []

    def spy(*args, **kwargs):
        seen.append(torch.get_num_threads())
        return encode_batch(*args, **kwargs)

    monkeypatch.setattr(runner, "encode_batch", spy)
    extra = ["--latents"] if latents else []
    before = torch.get_num_threads()
    digests = []
    try:
        for threads in (1, 2):
            torch.set_num_threads(threads)
            out = tmp_path / f"t{threads}"
            assert main(["--model", TOKENIZE_MODEL, "--data", str(token_data_dir), "--out", str(out), *FLAGS, *extra]) == 0
            assert torch.get_num_threads() == threads  # the run's thread count does not leak into the caller
            digests.append(shard_digests(out))
    finally:
        torch.set_num_threads(before)
    assert len(digests[0]) == 3 and digests[0] == digests[1]
    assert seen and set(seen) == {runner.CPU_THREADS} == {1}


def test_labels_folder_on_a_flat_folder_is_refused_before_encoding(tmp_path, capsys):
    from movq.diffusion.train import main as train_main

    flat = tmp_path / "flat"
    flat.mkdir()
    for i in range(3):
        Image.fromarray(np.full((32, 32, 3), 40 * i, np.uint8)).save(flat / f"{i}.png")
    out = tmp_path / "run"
    argv = ["--data", str(flat), "--codec", TOKENIZE_MODEL, "--resolution", "32", "--out", str(out), "--labels",
            "folder", "--preset", "unet-tiny", "--model", json.dumps(DIFFUSION_TINY_UNET), "--num-workers", "0",
            "--no-progress"]
    assert train_main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "--labels folder: '0.png'" in err and "DATA/<class>/<image>" in err, err
    assert not list(out.rglob("*.safetensors")) and not (out / "latents" / "index.jsonl").exists()
