"""movq-bench under torchrun: 2 gloo processes give the same results as 1 process."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch

from helpers import BENCH_FAST

pytestmark = pytest.mark.skipif(not torch.distributed.is_available(), reason="torch.distributed not available")


def torchrun(nproc: int, args: list[str], tmp_path) -> dict:
    out = tmp_path / f"r{nproc}.json"
    npz = ["--export-npz", str(tmp_path / f"recon{nproc}.npz"), "--save-reference", str(tmp_path / f"ref{nproc}.npz")]
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}",
           "-m", "movq.bench", *args, *npz, "--out", str(out), "--device", "cpu"]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(out.read_text())


def test_two_gloo_processes_equal_one(bench_codec_dir, bench_data_dir, tmp_path):
    args = ["--model", str(bench_codec_dir), "--data", str(bench_data_dir), "--metrics", "fid,is,psnr,ssim,l1", *BENCH_FAST,
            "--chunk-size", "2", "--cache", str(tmp_path / "cache"), "--cache-interval", "0"]
    one = torchrun(1, args, tmp_path)
    two = torchrun(2, args, tmp_path)
    assert two["protocol"]["world_size"] == 2 and one["protocol"]["world_size"] == 1
    assert two["skipped"] == one["skipped"] and two["upscaled_images"] == one["upscaled_images"]
    assert len(one["results"]) == len(two["results"]) == 1
    a, b = one["results"][0], two["results"][0]
    assert a["n_images"] == b["n_images"] == 7
    for key in ("fid", "is", "is_real", "psnr", "ssim", "l1", "codebook_usage", "perplexity"):
        assert b[key] == pytest.approx(a[key], rel=1e-9, abs=1e-12), key
    assert b["codebook_usage_per_level"] == a["codebook_usage_per_level"]  # summed histograms: exact
    assert sorted(p.name for p in (tmp_path / "cache").glob("*/shard*.pt")) == [
        "shard0-of-1.pt", "shard0-of-2.pt", "shard1-of-2.pt"]
    # the ADM-evaluator files: rank 0 writes them in the bench's image order, whatever the sharding
    for name in ("recon", "ref"):
        with np.load(tmp_path / f"{name}1.npz", allow_pickle=False) as a, np.load(tmp_path / f"{name}2.npz", allow_pickle=False) as b:
            assert a["arr_0"].shape == (7, 64, 64, 3)
            np.testing.assert_array_equal(a["arr_0"], b["arr_0"])
            if name == "ref":
                np.testing.assert_allclose(a["movq_sigma"], b["movq_sigma"], rtol=1e-9, atol=1e-12)
