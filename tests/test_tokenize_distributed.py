"""movq-tokenize under torchrun: 2 gloo processes write byte-identical shards, index and summary to 1 process."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import torch

from helpers import SRC, TOKENIZE_FAST, TOKENIZE_MODEL, token_files

pytestmark = pytest.mark.skipif(not torch.distributed.is_available(), reason="torch.distributed not available")


def torchrun(nproc: int, args: list[str]) -> str:
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}",
           "-m", "movq.tokenize", *args, "--device", "cpu"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": SRC}
    proc = subprocess.run(cmd, check=False, capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc.stdout


def test_two_gloo_processes_equal_one(token_data_dir, tmp_path):
    args = ["--model", TOKENIZE_MODEL, "--data", str(token_data_dir), *TOKENIZE_FAST]
    torchrun(1, [*args, "--out", str(tmp_path / "one")])
    stdout = torchrun(2, [*args, "--out", str(tmp_path / "two")])
    assert "2 process(es)" in stdout and stdout.count("movq-tokenize: 5 images in 3 shard(s)") == 1  # rank 0 reports
    one, two = token_files(tmp_path / "one"), token_files(tmp_path / "two")
    assert sorted(one) == sorted(two) and len([n for n in one if n.endswith(".safetensors")]) == 3
    for name in one:
        assert one[name] == two[name], name
    for name in ("summary.json", "code_histogram.png", "meta.json"):
        assert (tmp_path / "one" / name).read_bytes() == (tmp_path / "two" / name).read_bytes(), name
