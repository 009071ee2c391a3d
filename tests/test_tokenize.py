"""movq-tokenize and movq.tokenize.dataset.TokenDataset: tokens equal codec.encode, captions, bad files, sources
(folder / manifest / tar), latents, resume (rerun, deleted shard, kill -9), refusal to mix, CLI errors."""

from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path

import pytest
import torch
from PIL import Image
from safetensors import safe_open

import movq
from helpers import (
    TOKENIZE_FAST,
    TOKENIZE_MODEL,
    TOKENIZE_RES,
    kill_tokenize_after_first_shard,
    rewrite_shard,
    token_files,
)
from movq.image_files import load_preprocessed
from movq.tokenize.cli import EXIT_ERROR, main
from movq.tokenize.dataset import TokenDataset, collate_items
from movq.tokenize.encoding import token_dtype
from movq.tokenize.shards import shard_paths

GOOD = ["a.jpg", "b.png", "c_gray.png", "d_small.png", "sub/e.webp"]


def run(args: list[str]) -> int:
    return main(args)


def _items(out: Path) -> dict[str, dict]:
    ds = TokenDataset(out)
    return {ds[i]["source"]: ds[i] for i in range(len(ds))}


def test_tokens_equal_codec_encode_captions_and_skipped(folder_run, token_data_dir):
    codec = movq.load(TOKENIZE_MODEL)
    items = _items(folder_run)
    assert sorted(items) == GOOD  # sorted relative paths; bad.jpg left out
    for source, item in items.items():
        pixels, _ = load_preprocessed(token_data_dir / source, TOKENIZE_RES)
        expected = codec.encode(pixels[None])[0]
        assert item["tokens"].dtype == torch.long and torch.equal(item["tokens"], expected), source
    assert items["a.jpg"]["caption"] == "a red thing" and items["sub/e.webp"]["caption"] == "ünïcode caption"
    assert items["b.png"]["caption"] is None
    skipped = [json.loads(line) for line in (folder_run / "skipped.jsonl").read_text().splitlines()]
    assert [s["source"] for s in skipped] == ["bad.jpg"] and "Error" in skipped[0]["reason"]
    meta = json.loads((folder_run / "meta.json").read_text())
    assert meta["model"] == TOKENIZE_MODEL and meta["resolution"] == TOKENIZE_RES and meta["dtype"] == "float32"
    assert meta["store_dtype"] == "uint16" and meta["item_shape"] == [TOKENIZE_RES // 8, TOKENIZE_RES // 8]
    assert "centre crop 32x32" in meta["preprocessing"] and len(meta["config_hash"]) == 64
    with safe_open(str(shard_paths(folder_run, 0)[0]), framework="pt") as f:
        assert f.get_tensor("tokens").dtype == torch.uint16
    index = [json.loads(line) for line in (folder_run / "index.jsonl").read_text().splitlines()]
    assert [(r["shard"], r["offset"]) for r in index] == [(0, 0), (0, 1), (1, 0), (2, 0), (2, 1)]  # bad.jpg: shard 1
    assert all(r["shape"] == [4, 4] for r in index)
    summary = json.loads((folder_run / "summary.json").read_text())
    assert summary["images"] == 5 and summary["skipped"] == 1 and summary["tokens"] == 5 * 16
    assert summary["used_codes"] + summary["dead_codes"] == 1024 and 1 <= summary["perplexity"] <= 80
    assert Image.open(folder_run / "code_histogram.png").format == "PNG"


def test_token_dtype_is_the_smallest_that_holds_the_codebook():
    assert token_dtype(256) == torch.uint8 and token_dtype(257) == torch.uint16
    assert token_dtype(65536) == torch.uint16 and token_dtype(65537) == torch.uint32


def test_manifests_and_tar_shards_give_the_same_tokens(folder_run, token_data_dir, tmp_path):
    reference = _items(folder_run)
    (tmp_path / "m.jsonl").write_text(
        "".join(json.dumps({"image": str(token_data_dir / s), "caption": f"cap {s}"}) + "\n" for s in GOOD))
    (tmp_path / "m.csv").write_text("image,caption\n" + "".join(f"{token_data_dir / s},\"cap, {s}\"\n" for s in GOOD))
    tar_path = tmp_path / "shard-0000.tar"
    with tarfile.open(tar_path, "w") as tar:
        for i, s in enumerate(GOOD):
            for name, data in ((f"{i:04d}.{s.rsplit('.', 1)[1]}", (token_data_dir / s).read_bytes()),
                               (f"{i:04d}.txt", f"tar {s}".encode())):
                info = tarfile.TarInfo(name)
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
        info = tarfile.TarInfo("9999.json")  # a sample without an image: listed as skipped
        info.size = 2
        tar.addfile(info, io.BytesIO(b"{}"))
    for data, caption in ((tmp_path / "m.jsonl", "cap {}"), (tmp_path / "m.csv", "cap, {}"), (tar_path, "tar {}")):
        out = tmp_path / f"out-{data.suffix}"
        assert run(["--model", TOKENIZE_MODEL, "--data", str(data), "--out", str(out), *TOKENIZE_FAST]) == 0
        ds = TokenDataset(out)
        assert len(ds) == len(GOOD)
        for i, s in enumerate(GOOD):
            assert torch.equal(ds[i]["tokens"], reference[s]["tokens"]) and ds[i]["caption"] == caption.format(s)
    skipped = (tmp_path / "out-.tar" / "skipped.jsonl").read_text()
    assert "9999" in skipped and "no image in sample" in skipped


def test_latents_equal_encode_latents(token_data_dir, tmp_path):
    out = tmp_path / "lat"
    assert run(["--model", TOKENIZE_MODEL, "--data", str(token_data_dir), "--out", str(out), "--latents", *TOKENIZE_FAST]) == 0
    codec = movq.load(TOKENIZE_MODEL)
    ds = TokenDataset(out)
    assert len(ds) == 5 and ds.meta["kind"] == "latents" and ds.meta["store_dtype"] == "float16"
    for i in range(len(ds)):
        item = ds[i]
        pixels, _ = load_preprocessed(token_data_dir / item["source"], TOKENIZE_RES)
        expected = codec.encode_latents(pixels[None])[0].detach().half()
        assert item["latents"].dtype == torch.float16 and torch.equal(item["latents"], expected)
    assert len(json.loads((out / "summary.json").read_text())["std"]) == codec.config.embed_dim
    del ds
    rewrite_shard(out, 0, values=lambda t: torch.full_like(t, float("nan")))
    with pytest.raises(ValueError, match=r"shard-000000.safetensors holds NaN or infinite latents"):
        TokenDataset(out)[0]


def test_rerun_skips_finished_shards_and_redoes_a_deleted_one(token_data_dir, tmp_path, capsys):
    out = tmp_path / "run"
    args = ["--model", TOKENIZE_MODEL, "--data", str(token_data_dir), "--out", str(out), *TOKENIZE_FAST]
    assert run(args) == 0
    first = token_files(out)
    stamps = {p: p.stat().st_mtime_ns for p in (out / "shards").iterdir()}
    data1, sidecar1 = shard_paths(out, 1)
    data1.unlink()
    capsys.readouterr()
    assert run(args) == 0
    assert "2 of 3 shards already finished" in capsys.readouterr().out
    assert token_files(out) == first  # the redone shard is byte-identical
    for path, stamp in stamps.items():
        if path not in (data1, sidecar1):
            assert path.stat().st_mtime_ns == stamp, f"{path.name} was rewritten"


def test_output_folder_inside_the_data_folder_is_not_read_as_data(token_data_dir, tmp_path, capsys):
    data = tmp_path / "data"
    data.mkdir()
    for name in GOOD[:3]:
        (data / name).write_bytes((token_data_dir / name).read_bytes())
    args = ["--model", TOKENIZE_MODEL, "--data", str(data), "--out", str(data / "tokens"), *TOKENIZE_FAST]
    assert run(args) == 0 and (data / "tokens" / "code_histogram.png").is_file()
    assert run(args) == 0  # the histogram PNG inside --out is no new source
    assert "2 of 2 shards already finished" in capsys.readouterr().out and len(TokenDataset(data / "tokens")) == 3


def test_killed_run_resumes_to_the_same_output(token_data_dir, tmp_path):
    manifest = tmp_path / "many.jsonl"
    manifest.write_text("".join(json.dumps({"image": str(token_data_dir / GOOD[i % 5])}) + "\n" for i in range(150)))
    args = ["--model", TOKENIZE_MODEL, "--data", str(manifest), *TOKENIZE_FAST]
    finished, res = kill_tokenize_after_first_shard(args, tmp_path / "killed")
    assert 1 <= finished < 75
    assert res.returncode == 0, res.stderr[-2000:]
    assert f"{finished} of 75 shards already finished" in res.stdout
    assert not list((tmp_path / "killed" / "shards").glob(".*.tmp"))  # a kill's temporary files are cleaned up
    assert run([*args, "--out", str(tmp_path / "clean")]) == 0
    assert token_files(tmp_path / "killed") == token_files(tmp_path / "clean")


def test_token_dataset_with_two_workers_returns_every_item_once(folder_run):
    ds = TokenDataset(folder_run)
    loader = torch.utils.data.DataLoader(ds, batch_size=2, num_workers=2, collate_fn=collate_items)
    batches = list(loader)
    assert sorted(s for b in batches for s in b["source"]) == GOOD
    assert batches[0]["tokens"].shape == (2, 4, 4) and batches[0]["caption"] == ["a red thing", None]
    halves = [list(torch.utils.data.DistributedSampler(ds, num_replicas=2, rank=r, shuffle=False)) for r in (0, 1)]
    assert sorted(set(halves[0]) | set(halves[1])) == list(range(len(ds)))


def test_mixing_models_in_one_folder_is_refused(folder_run, token_data_dir, tmp_path, capsys):
    other = movq.Codec(movq.get_preset("movqgan-tiny")).save_pretrained(tmp_path / "other")
    before = token_files(folder_run)
    capsys.readouterr()
    assert run(["--model", str(other), "--data", str(token_data_dir), "--out", str(folder_run), *TOKENIZE_FAST]) == EXIT_ERROR
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "holds a run of another model ('movqgan-tiny-photos'" in err
    assert run(["--model", TOKENIZE_MODEL, "--data", str(token_data_dir), "--out", str(folder_run), "--latents", *TOKENIZE_FAST]) == EXIT_ERROR
    assert "kind: 'tokens' there, 'latents' now" in capsys.readouterr().err
    assert token_files(folder_run) == before


def _bad_args(token_data_dir: Path, tmp_path: Path) -> list[tuple[list[str], str]]:
    empty = tmp_path / "empty"
    empty.mkdir()
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    out = ["--out", str(tmp_path / "out")]
    data = ["--data", str(token_data_dir)]
    cases = [
        ([*data, *out, "--batch-size", "0"], "--batch-size must be an int >= 1, got 0"),
        ([*data, *out, "--shard-size", "0"], "--shard-size must be an int >= 1, got 0"),
        ([*data, *out, "--num-workers", "-1"], "--num-workers must be an int >= 0, got -1"),
        ([*data, *out, "--device", "foo"], "unknown device 'foo'"),
        (["--data", str(tmp_path / "missing"), *out], "does not exist"),
        (["--data", str(empty), *out], "no image files"),
        ([*data, "--out", str(blocker)], "is a file"),
        ([*data, "--out", str(blocker / "sub")], "not writable"),
        ([*data, *out, "--resolution", "100000"], "--resolution 100000 x --batch-size 32 needs at least"),
        ([*data, *out, "--resolution", "30"], "not a multiple of the model's downsample factor 8"),
        ([*data, "--out", "x", "--model", "no-such-model"], "cannot load model"),
    ]
    if not torch.cuda.is_available():
        cases.append(([*data, *out, "--device", "cuda"], "no CUDA GPU is available"))
    return cases


def test_cli_errors_are_one_line_before_any_compute(token_data_dir, tmp_path, capsys):
    for args, message in _bad_args(token_data_dir, tmp_path):
        full = ["--model", TOKENIZE_MODEL, *args] if "--model" not in args else args
        assert run(full) == EXIT_ERROR, args
        err = capsys.readouterr().err
        assert err.startswith("movq-tokenize: error: ") and err.count("\n") == 1 and message in err, (args, err)
    assert not (tmp_path / "out" / "shards").exists() and not (tmp_path / "out" / "meta.json").exists()


def test_nothing_readable_is_not_a_success(tmp_path, capsys):
    data = tmp_path / "bad"
    data.mkdir()
    (data / "a.jpg").write_bytes(b"junk")
    assert run(["--model", TOKENIZE_MODEL, "--data", str(data), "--out", str(tmp_path / "out"), *TOKENIZE_FAST]) == 2
    assert "none of the source images could be read" in capsys.readouterr().err


def test_a_bf16_run_stores_the_codecs_own_bf16_encode():
    from movq.tokenize.encoding import encode_batch

    torch.manual_seed(0)
    codec = movq.load("movqgan-tiny", pretrained=False, dtype=torch.bfloat16)
    assert codec.quantize.embedding.weight.dtype == torch.float32  # the codebook search stays float32
    pixels = torch.randint(0, 256, (2, 3, 32, 32), dtype=torch.uint8)
    stored = encode_batch(codec, pixels, latents=False, store_dtype=torch.uint16)
    assert torch.equal(stored.long(), codec.encode(pixels))
    latents = encode_batch(codec, pixels, latents=True, store_dtype=torch.float32)
    with torch.no_grad():  # the inference path (eager CPU inference has its own kernels)
        assert torch.equal(latents, codec.encode_latents(pixels).float())
