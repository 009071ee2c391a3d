"""Every output gets the process umask's normal mode (``0o666 & ~umask``): token shards and released
``.safetensors`` weights (safetensors itself writes ``0o600``) as well as JSON, so a tokenized dataset
or a release on a shared filesystem is readable by the team."""

from __future__ import annotations

import os
import stat

import pytest

import movq
from helpers import TOKENIZE_FAST, TOKENIZE_MODEL
from movq.tokenize.cli import main


@pytest.fixture(params=[0o022, 0o027])
def umask(request):
    before = os.umask(request.param)
    yield request.param
    os.umask(before)


def modes(folder) -> dict[str, int]:
    return {str(p.relative_to(folder)): stat.S_IMODE(p.stat().st_mode)
            for p in folder.rglob("*") if p.is_file() and not p.is_symlink()}


def test_shards_releases_and_json_get_the_umask_mode(umask, token_data_dir, tmp_path):
    expected = 0o666 & ~umask
    out = tmp_path / "tokens"
    assert main(["--model", TOKENIZE_MODEL, "--data", str(token_data_dir), "--out", str(out), *TOKENIZE_FAST]) == 0
    written = modes(out)
    assert any(name.endswith(".safetensors") for name in written) and "meta.json" in written
    assert {name: oct(mode) for name, mode in written.items() if mode != expected} == {}

    release = tmp_path / "release"
    movq.load("movqgan-tiny", pretrained=False).save_pretrained(release)
    written = modes(release)
    assert {"config.json", "model.safetensors"} <= set(written)
    assert {name: oct(mode) for name, mode in written.items() if mode != expected} == {}


def test_a_training_runs_checkpoint_and_release_get_the_umask_mode(umask, tmp_path):
    from helpers import diffusion_train_config, toy_latents
    from movq.diffusion.train import DiffusionTrainer

    DiffusionTrainer(diffusion_train_config(tmp_path, max_steps=1, save_every=1), toy_latents(8)).run()
    written = modes(tmp_path / "run")
    assert {"ema.safetensors", "model.safetensors", "diffusion.json"} <= set(written)
    assert any(name.endswith("state.pt") for name in written)
    assert {name: oct(mode) for name, mode in written.items() if mode != 0o666 & ~umask} == {}
