"""The sampling commands (movq-diffusion-sample, movq-t2i-sample) and what they rest on: per-sample generators
in both pipelines (a sample does not depend on its batch), PIL / tensor outputs, progress bars; sample folders
that 2 torchrun processes write byte for byte as 1 does, that a kill -9 and a rerun finish byte for byte as an
uninterrupted run, whose .npz holds exactly the PNGs (read back by PIL) and the labels; bad flags refused."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from helpers import SMALL_2X, SRC, expect_cli_error, kill_when_exists, run_cli, tiny_codec, tiny_unet

CLASSES = ["apple", "bread", "cake"]
DIFF_ARGS = ["--num-samples", "10", "--batch-size", "4", "--timestep-respacing", "4", "--guidance", "1.5",
             "--seed", "3", "--no-progress"]
T2I_ARGS = ["--num-samples", "3", "--batch-size", "4", "--top-k", "20", "--guidance", "3", "--no-progress"]
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": SRC}


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[str, Path]:
    """Tiny random-weight releases as the trainers write them: a class-conditional latent diffusion run
    (3 classes, 8 steps, 8x8 images through a 2x codec) and a t2i run (4x4 tokens of 64 codes), plus a prompt file."""
    from movq.diffusion import GaussianDiffusion
    from movq.diffusion.pipeline import write_release_info
    from movq.t2i import T2IConfig, T2ITransformer
    from movq.tokenize.meta import weights_hash

    root = tmp_path_factory.mktemp("runs")
    codec = tiny_codec(config=SMALL_2X)
    codec_dir = codec.save_pretrained(root / "codec")
    diff = root / "diffusion"
    tiny_unet(in_channels=codec.config.embed_dim, num_classes=len(CLASSES), attention_resolutions=()).save_pretrained(diff)
    GaussianDiffusion(steps=8).save_pretrained(diff)
    write_release_info(diff, {"codec": str(codec_dir), "codec_name": "tiny", "config_hash": "",
                              "weights_hash": weights_hash(codec), "resolution": 8,
                              "latent_shape": [codec.config.embed_dim, 4, 4], "latent_scale": 1.0, "labels": CLASSES})
    t2i = root / "t2i"
    torch.manual_seed(0)
    T2ITransformer(T2IConfig.for_codec(codec, 8, preset="t2i-tiny", init_std=0.3)).save_pretrained(t2i)
    (t2i / "codec.json").write_text(json.dumps({"model": str(codec_dir), "weights_hash": weights_hash(codec)}))
    prompts = root / "prompts.txt"
    prompts.write_text("a red square\n\na blue circle\n", encoding="utf-8")
    return {"diffusion": diff, "t2i": t2i, "prompts": prompts}


def command(kind: str, runs: dict[str, Path]) -> tuple[str, list[str]]:
    """(module, arguments without --out) of a small sampling run of ``kind``."""
    if kind == "diffusion":
        return "movq.diffusion.sample", [str(runs["diffusion"]), *DIFF_ARGS]
    return "movq.t2i.sample", [str(runs["t2i"]), "--prompts", str(runs["prompts"]), *T2I_ARGS]


def folder_bytes(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir()) if p.is_file()}


def pngs(folder: Path) -> np.ndarray:
    return np.stack([np.asarray(Image.open(p).convert("RGB")) for p in sorted(folder.glob("*.png"))])


# ------------------------------------------------------------------ pipelines


def test_per_sample_draws_are_each_generators_own():
    from movq.seeding import multinomial, randn, sample_generators

    noise = randn((3, 2, 4), sample_generators(7, range(3)))
    for i in range(3):
        assert torch.equal(noise[i], torch.randn(2, 4, generator=torch.Generator().manual_seed(7 + i)))
    probs = torch.softmax(torch.randn(3, 50, generator=torch.Generator().manual_seed(0)), dim=-1)
    draws = multinomial(probs, sample_generators(7, range(3)))
    for i in range(3):
        assert draws[i] == torch.multinomial(probs[i], 1, generator=torch.Generator().manual_seed(7 + i))[0]
    one = torch.Generator().manual_seed(1)
    assert torch.equal(randn((3, 2), one), torch.randn(3, 2, generator=torch.Generator().manual_seed(1)))


def test_diffusion_pipeline_per_sample_generators_pil_and_progress(runs, capsys):
    from movq.diffusion import LatentDiffusionPipeline
    from movq.seeding import sample_generators

    pipe = LatentDiffusionPipeline.from_pretrained(runs["diffusion"])
    kwargs = {"num_steps": 4, "sampler": "ddpm", "guidance_scale": 1.5}
    batch = pipe.generate([0, 1, 2], generator=sample_generators(5, range(3)), output_type="pt", progress=False, **kwargs)
    alone = pipe.generate(["bread"], generator=sample_generators(5, [1]), output_type="pt", progress=False, **kwargs)
    assert batch.shape == (3, 3, 8, 8) and batch.min() >= -1 and batch.max() <= 1
    torch.testing.assert_close(alone[0], batch[1], atol=1e-3, rtol=0)  # float rounding of batching; sample 1's noise is its own, not its batch's
    shared = pipe.generate([0, 1, 2], generator=torch.Generator().manual_seed(6), output_type="pt", progress=False, **kwargs)
    assert not torch.allclose(shared[1], batch[1], atol=0.1)  # one generator for the batch is another draw

    capsys.readouterr()
    images = pipe.generate([0, 1, 2], generator=sample_generators(5, range(3)), **kwargs)  # PIL, with a bar by default
    assert "sampling" in capsys.readouterr().err
    assert [im.size for im in images] == [(8, 8)] * 3 and all(im.mode == "RGB" for im in images)
    expected = ((batch.permute(0, 2, 3, 1) + 1) * 127.5).round().to(torch.uint8).numpy()
    assert np.abs(np.stack([np.asarray(im) for im in images]).astype(int) - expected).max() <= 1
    pipe.set_progress_bar_config(disable=True)
    pipe.generate([0], num_steps=2)
    assert capsys.readouterr().err == ""
    with pytest.raises(ValueError, match="2 generators for a batch of 3"):
        pipe.generate([0, 1, 2], generator=sample_generators(0, range(2)), **kwargs)
    with pytest.raises(ValueError, match="output_type"):
        pipe.generate([0], output_type="np")


def test_t2i_pipeline_from_run_per_sample_generators_and_progress(runs, capsys):
    from movq.seeding import sample_generators
    from movq.t2i import T2IPipeline

    pipe = T2IPipeline.from_pretrained(runs["t2i"])
    prompts = ["a red square", "a blue circle", "a red square"]
    capsys.readouterr()
    out = pipe(prompts, top_k=20, guidance_scale=3.0, generator=sample_generators(9, range(3)), batch_size=3)
    assert "tokens" in capsys.readouterr().err  # a tqdm bar over the tokens by default
    alone = pipe(prompts[1:2], top_k=20, guidance_scale=3.0, generator=sample_generators(9, [1]), progress=False)
    assert torch.equal(alone.tokens[0], out.tokens[1])
    assert np.array_equal(np.asarray(alone.images[0]), np.asarray(out.images[1]))
    tensors = pipe(prompts, top_k=20, guidance_scale=3.0, generator=sample_generators(9, range(3)), batch_size=2,
                   output_type="pt", progress=False)
    assert torch.equal(tensors.tokens, out.tokens)  # batches of 2 or 3: the same samples
    assert tensors.images.shape == (3, 3, 8, 8) and tensors.candidates.shape == (3, 1, 3, 8, 8)
    as_uint8 = ((tensors.images.permute(0, 2, 3, 1) + 1) * 127.5).round().to(torch.uint8).numpy()
    assert np.array_equal(as_uint8, np.stack([np.asarray(im) for im in out.images]))
    pipe.set_progress_bar_config(disable=True)
    pipe(["x"], top_k=5)
    assert capsys.readouterr().err == ""


# ------------------------------------------------------------------ sample folders


@pytest.mark.skipif(not torch.distributed.is_available(), reason="torch.distributed not available")
@pytest.mark.parametrize("kind", ["diffusion", "t2i"])
def test_two_processes_write_the_same_folder_as_one(kind, runs, tmp_path):
    module, args = command(kind, runs)
    for n in (1, 2):
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={n}", "-m", module,
               *args, "--device", "cpu", "--out", str(tmp_path / str(n))]
        done = subprocess.run(cmd, check=False, capture_output=True, text=True, env=ENV, timeout=300)
        assert done.returncode == 0, done.stderr[-3000:]
        assert done.stdout.count("samples ->") == 1 and f"{n} process(es)" in done.stdout  # rank 0 reports
    one, two = folder_bytes(tmp_path / "1"), folder_bytes(tmp_path / "2")
    assert sorted(one) == sorted(two) and len([n for n in one if n.endswith(".png")]) == (10 if kind == "diffusion" else 6)
    for name in one:
        assert one[name] == two[name], name


@pytest.mark.parametrize("kind", ["diffusion", "t2i"])
def test_kill_9_then_rerun_equals_an_uninterrupted_run(kind, runs, tmp_path):
    module, args = command(kind, runs)
    args = [*args, "--batch-size", "2"]  # 5 / 3 chunks: chunk 0 done, the others not yet when it is killed
    full = subprocess.run([sys.executable, "-m", module, *args, "--out", str(tmp_path / "full")], check=False,
                          capture_output=True, text=True, env=ENV, timeout=300)
    assert full.returncode == 0, full.stderr[-3000:]
    out = tmp_path / "killed"
    cmd = [sys.executable, "-m", module, *args, "--out", str(out)]
    kill_when_exists(cmd, out / "000001.png", ENV, done=out / "samples.npz")
    (out / ".000003.png.0123456789ab.tmp").write_bytes(b"half a png")  # what a kill inside a write leaves
    again = subprocess.run(cmd, check=False, capture_output=True, text=True, env=ENV, timeout=300)
    assert again.returncode == 0, again.stderr[-3000:]
    assert "chunks already finished" in again.stdout
    assert folder_bytes(out) == folder_bytes(tmp_path / "full")  # and no temporary file is left


def test_npz_holds_the_pngs_and_the_labels(runs, tmp_path):
    from movq.bench.samples import read_samples

    out = tmp_path / "s"
    run = run_cli("movq-diffusion-sample", [str(runs["diffusion"]), *DIFF_ARGS, "--out", str(out)])
    assert run.rc == 0, run.err
    assert "10 samples" in run.out and "arr_0 [10, 8, 8, 3]" in run.out
    with np.load(out / "samples.npz", allow_pickle=False) as data:  # what guided-diffusion's evaluator opens
        assert sorted(data.files) == ["arr_0", "arr_1"]
        images, labels = data["arr_0"], data["arr_1"]
    assert images.dtype == np.uint8 and images.shape == (10, 8, 8, 3)
    assert np.array_equal(images, pngs(out)) and len(np.unique(images.reshape(10, -1), axis=0)) == 10
    assert labels.dtype == np.int64 and labels.tolist() == [0, 1, 2] * 3 + [0]  # spread evenly
    rows = [json.loads(line) for line in (out / "samples.jsonl").read_text().splitlines()]
    assert [(r["file"], r["label"], r["class"]) for r in rows[:2]] == [("000000.png", 0, "apple"), ("000001.png", 1, "bread")]
    arrays, read_labels = read_samples(out)
    assert np.array_equal(arrays, images) and np.array_equal(read_labels, labels)

    # --class picks the classes (names or ids); sample i keeps its noise (seed + i)
    picked = tmp_path / "picked"
    run = run_cli("movq-diffusion-sample", [str(runs["diffusion"]), *DIFF_ARGS, "--class", "cake", "--class", "1",
                                            "--out", str(picked)])
    assert run.rc == 0, run.err
    assert read_samples(picked)[1].tolist() == [2, 1] * 5

    # t2i: no labels, the prompts in samples.jsonl, prompt-major
    t2i = tmp_path / "t2i"
    run = run_cli("movq-t2i-sample", [str(runs["t2i"]), "--prompts", str(runs["prompts"]), "--prompt", "a green disc",
                                      *T2I_ARGS, "--out", str(t2i)])
    assert run.rc == 0, run.err
    images, labels = read_samples(t2i)
    assert labels is None and images.shape == (9, 8, 8, 3) and np.array_equal(images, pngs(t2i))
    rows = [json.loads(line) for line in (t2i / "samples.jsonl").read_text().splitlines()]
    assert [r["prompt"] for r in rows] == ["a red square"] * 3 + ["a blue circle"] * 3 + ["a green disc"] * 3


def test_a_finished_folder_reruns_to_the_same_bytes_and_other_settings_are_refused(runs, tmp_path):
    out = tmp_path / "s"
    assert run_cli("movq-diffusion-sample", [str(runs["diffusion"]), *DIFF_ARGS, "--out", str(out)]).rc == 0
    before = folder_bytes(out)
    again = run_cli("movq-diffusion-sample", [str(runs["diffusion"]), *DIFF_ARGS, "--out", str(out)])
    assert again.rc == 0 and "3 of 3 chunks already finished" in again.out and "generated now: 0" in again.out
    assert folder_bytes(out) == before
    ok, why = expect_cli_error("movq-diffusion-sample", [str(runs["diffusion"]), *DIFF_ARGS, "--seed", "4",
                                                         "--out", str(out)], contains=("seed", "another run"))
    assert ok, why
    assert folder_bytes(out) == before
    stray = tmp_path / "stray"
    stray.mkdir()
    Image.new("RGB", (8, 8)).save(stray / "000000.png")
    ok, why = expect_cli_error("movq-diffusion-sample", [str(runs["diffusion"]), *DIFF_ARGS, "--out", str(stray)],
                               contains=("--out", "PNG files but no samples.json"))
    assert ok, why


BAD_DIFFUSION = [
    (["--num-samples", "0"], "--num-samples"),
    (["--batch-size", "-2"], "--batch-size"),
    (["--seed", "-1"], "--seed"),
    (["--guidance", "nan"], "--guidance"),
    (["--eta", "0.5", "--sampler", "ddpm"], "--eta"),
    (["--eta", "-1"], "--eta"),
    (["--sampler", "euler"], "--sampler"),
    (["--weights", "best"], "--weights"),
    (["--class", "pizza"], "--class"),
    (["--class", "7"], "--class"),
    (["--timestep-respacing", "999"], "--timestep-respacing"),
    (["--timestep-respacing", "0"], "--timestep-respacing"),
]
BAD_T2I = [
    ([], "--prompts"),
    (["--prompts", "missing.txt"], "missing.txt"),
    (["--prompt", "x", "--top-k", "0"], "--top-k"),
    (["--prompt", "x", "--top-p", "1.5"], "--top-p"),
    (["--prompt", "x", "--temperature", "-1"], "--temperature"),
    (["--prompt", "x", "--num-samples", "0"], "--num-samples"),
]


@pytest.mark.parametrize("prog, extra, flag", [("movq-diffusion-sample", *c) for c in BAD_DIFFUSION]
                         + [("movq-t2i-sample", *c) for c in BAD_T2I])
def test_bad_flags_exit_2_with_one_line_before_any_work(prog, extra, flag, runs, tmp_path):
    run = runs["diffusion" if prog == "movq-diffusion-sample" else "t2i"]
    out = tmp_path / "out"
    ok, why = expect_cli_error(prog, [str(run), *extra, "--out", str(out), "--no-progress"], contains=(flag,),
                               no_outputs=(out / "samples.json", out / "000000.png"))
    assert ok, why


@pytest.mark.parametrize("prog", ["movq-diffusion-sample", "movq-t2i-sample"])
def test_missing_run_folder_and_a_file_as_out(prog, tmp_path):
    prompt = ["--prompt", "x"] if prog == "movq-t2i-sample" else []
    (tmp_path / "file").write_text("x")
    ok, why = expect_cli_error(prog, [str(tmp_path / "nope"), *prompt, "--out", str(tmp_path / "o")],
                               contains=("nope", "does not exist"))
    assert ok, why
    ok, why = expect_cli_error(prog, [str(tmp_path), *prompt, "--out", str(tmp_path / "file")], contains=("--out",))
    assert ok, why
