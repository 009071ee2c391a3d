"""Hostile token data (issue #25): every shard ``TokenDataset`` or a ``movq-tokenize`` rerun opens is checked
against its folder's ``meta.json`` (a regular file, the run's id and its own number, the item shape and
dtype, ids in ``[0, codebook_size)``); ``index.jsonl`` must list the items ``summary.json`` records; the
generator trainers refuse to ``--resume`` on another codec's tokens or latents.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

import pytest
import torch

from helpers import (
    SRC,
    TOKENIZE_FAST,
    TOKENIZE_MODEL,
    TokenList,
    diffusion_train_config,
    rewrite_shard,
    t2i_train_config,
    token_files,
    toy_latents,
)
from movq.diffusion.data import LatentItems
from movq.diffusion.train import DiffusionTrainer
from movq.t2i.train import T2ITrainer
from movq.tokenize.cli import main as run
from movq.tokenize.dataset import TokenDataset
from movq.tokenize.shards import shard_paths

FOREIGN_RUN = "0123456789abcdef"


SHARD_DAMAGE = {  # shard 0 and shard 2 hold 2 items each (their data files have the same size)
    "another run's shard": (lambda o: rewrite_shard(o, 0, stamp={"run": FOREIGN_RUN, "shard": 0}),
                            rf"shard-000000.safetensors records run '{FOREIGN_RUN}', shard 0, but .* is run '[0-9a-f]+'"),
    "shard 2 copied over shard 0": (lambda o: shutil.copy(shard_paths(o, 2)[0], shard_paths(o, 0)[0]),
                                    r"shard-000000.safetensors records run '[0-9a-f]+', shard 2, .* file is shard 0"),
    "ids beyond the codebook": (lambda o: rewrite_shard(o, 0, values=lambda t: torch.full_like(t, 1024)),
                                r"shard-000000.safetensors holds token ids in \[1024, 1024\], outside \[0, codebook_size\)"),
    "float tokens": (lambda o: rewrite_shard(o, 0, values=lambda t: t.float() + 0.5),
                     r"shard-000000.safetensors holds float32 tokens; token ids are integers"),
    "another dtype": (lambda o: rewrite_shard(o, 0, values=lambda t: t.to(torch.int32)),
                      r"shard-000000.safetensors holds int32 values, but meta.json records 'uint16'"),
    "another item shape": (lambda o: rewrite_shard(o, 0, values=lambda t: t.reshape(len(t), 2, 8)),
                           r"shard-000000.safetensors holds items of shape \[2, 8\], but meta.json records \[4, 4\]"),
}


@pytest.mark.parametrize("damage", list(SHARD_DAMAGE))
def test_token_dataset_refuses_a_shard_that_is_not_the_one_meta_describes(folder_run, tmp_path, damage):
    out = tmp_path / "copy"
    shutil.copytree(folder_run, out)
    change, message = SHARD_DAMAGE[damage]
    change(out)
    ds = TokenDataset(out)
    assert ds[2]["tokens"].shape == (4, 4)  # the other shards stay readable
    with pytest.raises(ValueError, match=message):
        ds[0]


@pytest.mark.parametrize("damage", ["another run's shard", "shard 2 copied over shard 0"])
def test_rerun_redoes_a_foreign_or_swapped_shard(folder_run, token_data_dir, tmp_path, capsys, damage):
    out = tmp_path / "copy"
    shutil.copytree(folder_run, out)
    SHARD_DAMAGE[damage][0](out)
    capsys.readouterr()
    with pytest.warns(UserWarning, match=r"redoing shard 0: the shard .*shard-000000.safetensors records run"):
        assert run(["--model", TOKENIZE_MODEL, "--data", str(token_data_dir), "--out", str(out), *TOKENIZE_FAST]) == 0
    assert "2 of 3 shards already finished" in capsys.readouterr().out
    assert token_files(out) == token_files(folder_run)


def test_an_index_cut_at_a_line_boundary_is_refused(folder_run, tmp_path):
    out = tmp_path / "copy"
    shutil.copytree(folder_run, out)
    index = out / "index.jsonl"
    index.write_text("".join(index.read_text().splitlines(keepends=True)[:-1]))
    with pytest.raises(ValueError, match=r"index.jsonl lists 4 items, but .*summary.json records 5"):
        TokenDataset(out)


def test_a_shard_that_is_a_fifo_is_refused_without_blocking(folder_run, tmp_path):
    out = tmp_path / "copy"
    shutil.copytree(folder_run, out)
    fifo = shard_paths(out, 0)[0]
    fifo.unlink()
    os.mkfifo(fifo)

    # in a child process: safetensors opens without releasing the GIL, so a blocked open would hang pytest itself
    code = "import sys; from movq.tokenize.dataset import TokenDataset; TokenDataset(sys.argv[1])[0]"
    env = {**os.environ, "PYTHONPATH": SRC}
    try:
        res = subprocess.run([sys.executable, "-c", code, str(out)], env=env, capture_output=True, text=True, timeout=20)
    except subprocess.TimeoutExpired:
        pytest.fail("TokenDataset blocked on a FIFO shard")
    assert res.returncode != 0 and "shard-000000.safetensors is not a regular file" in res.stderr, res.stderr[-500:]


def test_resume_on_another_codecs_tokens_is_refused(tmp_path):
    """Same codebook size and grid, another codec (its hashes in meta.json): --resume --data with those
    tokens is refused naming both codecs, and the run's codec.json is left as it was."""
    mine, theirs = TokenList(), TokenList()
    mine.meta.update(model="codec-a", config_hash="a" * 64, weights_hash="1" * 64)
    theirs.meta.update(model="codec-b", config_hash="a" * 64, weights_hash="2" * 64)
    out = tmp_path / "out"
    T2ITrainer(t2i_train_config(out, max_steps=3), mine).run()
    saved = (out / "codec.json").read_text()
    with pytest.raises(ValueError, match=r"codec 'codec-a'.*holds data of 'codec-b'"):
        T2ITrainer(t2i_train_config(out, max_steps=6, resume=True), theirs)
    assert (out / "codec.json").read_text() == saved
    assert T2ITrainer(t2i_train_config(out, max_steps=6, resume=True), mine).run() == 6


def test_resume_refuses_another_codecs_latents(tmp_path):
    latents = toy_latents(16)

    def written_by(model: str, weights: str) -> LatentItems:
        meta = {"model": model, "config_hash": "c" * 64, "weights_hash": weights * 64}
        return LatentItems(latents.latents, latents.labels, latents.label_names, meta=meta)

    DiffusionTrainer(diffusion_train_config(tmp_path, max_steps=2), written_by("codec-a", "1")).run()
    with pytest.raises(ValueError, match=r"codec 'codec-a'.*holds data of 'codec-b'"):
        DiffusionTrainer(diffusion_train_config(tmp_path, max_steps=4, resume=True), written_by("codec-b", "2"))
    assert DiffusionTrainer(diffusion_train_config(tmp_path, max_steps=4, resume=True), written_by("codec-a", "1")).run() == 4
