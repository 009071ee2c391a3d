"""movq-tokenize's readers on small real datasets written by each format's own library: WebDataset tars
(webdataset.TarWriter; gzip through tarfile), parquet (datasets, pyarrow), Hugging Face datasets
(``hf://`` on a local folder, no network), manifests and imagefolder metadata, class folders.

Every test compares the stored tokens with ``codec.encode`` of the same preprocessed image, and checks
that labels, captions and ``.json`` are carried through and that a damaged member or row is skipped and
reported, not fatal.
"""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import pytest
import torch
from PIL import Image

import movq
from helpers import (
    BENCH_IMAGES,
    SRC,
    TOKENIZE_FAST,
    TOKENIZE_MODEL,
    TOKENIZE_RES,
    kill_tokenize_after_first_shard,
    token_files,
)
from movq.image_files import load_preprocessed
from movq.tokenize.cli import EXIT_ERROR, main
from movq.tokenize.dataset import TokenDataset, collate_items

pytestmark = pytest.mark.usefixtures("one_thread")

CORRUPT = b"\xff\xd8\xff\xe0 not a jpeg at all"


def photo_bytes(n: int, width: int = 64) -> list[bytes]:
    """The first ``n`` val photos, resized to ``width`` px wide, as JPEG bytes (skipped when absent)."""
    paths = sorted(BENCH_IMAGES.glob("*.jpg"))[:n] if BENCH_IMAGES.is_dir() else []
    if len(paths) < n:
        pytest.skip(f"real photos not found under {BENCH_IMAGES} (the shared image folder is absent)")
    out = []
    for p in paths:
        image = Image.open(p).convert("RGB")
        image = image.resize((width, max(8, round(image.height * width / image.width))), Image.Resampling.BICUBIC)
        buf = io.BytesIO()
        image.save(buf, format="JPEG", quality=90)
        out.append(buf.getvalue())
    return out


@pytest.fixture(scope="module")
def photos() -> list[bytes]:
    return photo_bytes(6)


@pytest.fixture(scope="module")
def expected(photos) -> list[torch.Tensor]:
    """``codec.encode`` of each photo, preprocessed as movq-tokenize does."""
    codec = movq.load(TOKENIZE_MODEL)
    return [codec.encode(load_preprocessed(io.BytesIO(b), TOKENIZE_RES)[0][None])[0] for b in photos]


def run(args: list[str]) -> int:
    return main(args)


def tokenize(data: str, out: Path, *extra: str) -> TokenDataset:
    assert run(["--model", TOKENIZE_MODEL, "--data", data, "--out", str(out), *TOKENIZE_FAST, *extra]) == 0
    return TokenDataset(out)


def skipped(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "skipped.jsonl").read_text().splitlines()]


def write_wds(path: Path, samples: list[dict], compress: bool = False) -> None:
    """A WebDataset shard written by webdataset's own TarWriter."""
    wds = pytest.importorskip("webdataset")
    with wds.TarWriter(str(path), compress=compress) as sink:
        for sample in samples:
            sink.write(sample)


def wds_samples(photos: list[bytes], first: int, count: int) -> list[dict]:
    """Samples ``first .. first + count - 1`` (photo ``i % len(photos)``) with .jpg, .cls, .txt and .json."""
    return [{"__key__": f"s{i:04d}", "jpg": photos[i % len(photos)], "cls": i % 3, "txt": f"photo {i}",
             "json": {"i": i, "url": f"https://example.com/{i}.jpg"}} for i in range(first, first + count)]


# ------------------------------------------------------------------ WebDataset tars


def test_webdataset_brace_pattern_tokens_labels_captions_json_and_a_damaged_member(photos, expected, tmp_path):
    for shard in range(3):
        samples = wds_samples(photos, 2 * shard, 2)
        if shard == 1:  # a damaged image member and a .cls that is no integer: both skipped, the run goes on
            samples += [{"__key__": "bad-jpg", "jpg": CORRUPT, "cls": 1},
                        {"__key__": "bad-cls", "jpg": photos[0], "cls": b"n01440764"}]
        write_wds(tmp_path / f"x-{shard:04d}.tar", samples)
    ds = tokenize(str(tmp_path / "x-{0000..0002}.tar"), tmp_path / "out")
    assert len(ds) == 6 and ds.meta["data"].endswith("x-{0000..0002}.tar")
    for i in range(6):
        item = ds[i]
        assert torch.equal(item["tokens"], expected[i]), i
        assert item["source"] == f"{tmp_path / f'x-{i // 2:04d}.tar'}/s{i:04d}.jpg"
        assert item["label"] == i % 3 and item["caption"] == f"photo {i}"
        assert item["json"] == {"i": i, "url": f"https://example.com/{i}.jpg"}
    reasons = {Path(s["source"]).name: s["reason"] for s in skipped(tmp_path / "out")}
    assert set(reasons) == {"bad-jpg.jpg", "bad-cls.jpg"} and "the label must be an integer" in reasons["bad-cls.jpg"]
    index = [json.loads(line) for line in (tmp_path / "out" / "index.jsonl").read_text().splitlines()]
    # --shard-size 2, never across a tar: tar 0 -> shard 0, tar 1 (4 samples) -> shards 1, 2 (both damaged), tar 2 -> 3
    assert [r["shard"] for r in index] == [0, 0, 1, 1, 3, 3]
    batch = collate_items([ds[i] for i in range(3)])
    assert batch["label"] == [0, 1, 2] and batch["json"][0]["i"] == 0


def test_gzip_tars_are_streamed_to_the_same_tokens(photos, expected, tmp_path):
    write_wds(tmp_path / "a.tar.gz", wds_samples(photos, 0, 3), compress=True)  # webdataset's gzip writer
    samples = wds_samples(photos, 3, 3)
    with tarfile.open(tmp_path / "b.tgz", "w:gz") as tar:  # and tarfile's, members in WebDataset order
        for s in samples:
            for ext in ("jpg", "cls", "txt"):
                data = s[ext] if ext == "jpg" else str(s[ext]).encode()
                info = tarfile.TarInfo(f"{s['__key__']}.{ext}")
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
        info = tarfile.TarInfo("zz.jpg")
        info.size = len(CORRUPT)
        tar.addfile(info, io.BytesIO(CORRUPT))
    with pytest.raises(tarfile.ReadError):
        tarfile.open(tmp_path / "b.tgz", "r:")  # really compressed
    ds = tokenize(str(tmp_path / "*.t*gz"), tmp_path / "out", "--num-workers", "2")
    assert [ds[i]["label"] for i in range(6)] == [0, 1, 2, 0, 1, 2]
    for i in range(6):
        assert torch.equal(ds[i]["tokens"], expected[i]) and ds[i]["caption"] == f"photo {i}", i
    assert [Path(s["source"]).name for s in skipped(tmp_path / "out")] == ["zz.jpg"]


# ------------------------------------------------------------------ parquet


def test_parquet_datasets_image_struct_label_and_text_in_row_groups(photos, expected, tmp_path):
    datasets = pytest.importorskip("datasets")
    import pyarrow.parquet as pq

    images = [{"bytes": b, "path": f"p{i}.jpg"} for i, b in enumerate(photos)] + [{"bytes": CORRUPT, "path": "bad.jpg"}]
    features = datasets.Features({"image": datasets.Image(), "label": datasets.ClassLabel(names=["a", "b", "c"]),
                                  "text": datasets.Value("string")})
    ds = datasets.Dataset.from_dict({"image": images, "label": [i % 3 for i in range(7)],
                                     "text": [f"caption {i}" for i in range(7)]}, features=features)
    ds.to_parquet(str(tmp_path / "train-00000.parquet"), batch_size=3)  # row groups of 3 rows
    assert pq.ParquetFile(tmp_path / "train-00000.parquet").metadata.num_row_groups == 3
    out = tokenize(str(tmp_path / "train-*.parquet"), tmp_path / "out", "--image-column", "image",
                   "--label-column", "label", "--caption-column", "text")
    assert len(out) == 6 and out.meta["columns"] == {"image": "image", "caption": "text", "label": "label"}
    assert out.meta["label_names"] == ["a", "b", "c"]  # the ClassLabel the datasets library stored in the file
    for i in range(6):
        item = out[i]
        assert torch.equal(item["tokens"], expected[i]) and item["label"] == i % 3 and item["caption"] == f"caption {i}"
        assert item["source"] == f"{tmp_path / 'train-00000.parquet'}#{i}"
    assert [s["source"].rsplit("#", 1)[1] for s in skipped(tmp_path / "out")] == ["6"]
    index = [json.loads(line) for line in (tmp_path / "out" / "index.jsonl").read_text().splitlines()]
    # row groups of 3, 3, 1 rows, --shard-size 2: shards (0, 1) (2) | (3, 4) (5) | (6: skipped)
    assert [r["shard"] for r in index] == [0, 0, 1, 2, 2, 3]
    # the datasets library reads the same rows back from the file movq read
    back = datasets.load_dataset("parquet", data_files=str(tmp_path / "train-00000.parquet"), split="train")
    assert back.features["label"].names == ["a", "b", "c"] and back[2]["text"] == "caption 2"


def test_parquet_plain_bytes_and_path_columns_and_a_null_row(photos, expected, tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    (tmp_path / "img").mkdir()
    for i, b in enumerate(photos[:3]):
        (tmp_path / "img" / f"{i}.jpg").write_bytes(b)
    table = pa.table({"jpg": pa.array([photos[0], None, photos[1]], pa.binary()),
                      "cls": pa.array([5, 6, -1], pa.int64()), "caption": ["x", "y", None]})  # -1: datasets' "no label"
    pq.write_table(table, tmp_path / "bytes.parquet", row_group_size=2)
    out = tokenize(str(tmp_path / "bytes.parquet"), tmp_path / "out", "--image-column", "jpg", "--label-column", "cls")
    assert [out[i]["label"] for i in range(2)] == [5, None] and [out[i]["caption"] for i in range(2)] == ["x", None]
    assert torch.equal(out[0]["tokens"], expected[0]) and torch.equal(out[1]["tokens"], expected[1])
    assert "no image in column 'jpg'" in skipped(tmp_path / "out")[0]["reason"]
    pq.write_table(pa.table({"image": ["img/0.jpg", "img/2.jpg"]}), tmp_path / "paths.parquet")  # relative paths
    out = tokenize(str(tmp_path / "paths.parquet"), tmp_path / "out-paths")
    assert torch.equal(out[1]["tokens"], expected[2]) and out[0]["label"] is None and "json" not in out[0]


PEAK_MEMORY = (
    "import json, sys\n"
    "import pyarrow\n"
    "from movq.tokenize.cli import main\n"
    "code = main(sys.argv[1:])\n"
    "peak = next(int(line.split()[1]) for line in open('/proc/self/status') if line.startswith('VmHWM:')) * 1024\n"
    "print(json.dumps({'code': code, 'peak': peak, 'arrow_peak': pyarrow.default_memory_pool().max_memory()}))\n"
)
"""A movq-tokenize run in a fresh process that reports its peak RSS (``VmHWM``: ``ru_maxrss`` can carry the
parent's RSS across fork + exec) and pyarrow's peak allocation."""


@pytest.mark.skipif(not Path("/proc/self/status").is_file(), reason="reads VmHWM from /proc (Linux)")
def test_parquet_bigger_than_its_row_groups_is_read_with_bounded_memory(photos, tmp_path):
    """A 48 MiB parquet file (1 MiB per row: a photo with incompressible bytes after its JPEG end) in row
    groups of 2 rows is tokenized with the peak RSS of a 2-row file (the same pipeline): the file is
    never held in memory, and pyarrow's peak allocation is a row group or two."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    pad = os.urandom(2**20)  # PIL stops at the JPEG's end marker; parquet cannot compress these bytes
    reports = {}
    for rows in (2, 48):
        path = tmp_path / f"rows-{rows}.parquet"
        table = pa.table({"image": pa.array([photos[i % len(photos)] + pad for i in range(rows)], pa.binary())})
        pq.write_table(table, path, row_group_size=2, compression="zstd")
        del table
        args = ["--model", TOKENIZE_MODEL, "--data", str(path), "--out", str(tmp_path / f"out-{rows}"), *TOKENIZE_FAST]
        proc = subprocess.run([sys.executable, "-c", PEAK_MEMORY, *args], capture_output=True, text=True,
                              env={**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": SRC}, timeout=300, check=False)
        assert proc.returncode == 0, proc.stderr[-2000:]
        reports[rows] = json.loads(proc.stdout.strip().splitlines()[-1])
        assert reports[rows]["code"] == 0 and len(TokenDataset(tmp_path / f"out-{rows}")) == rows
    size = (tmp_path / "rows-48.parquet").stat().st_size
    grew = reports[48]["peak"] - reports[2]["peak"]
    print(f"\nparquet {size / 2**20:.1f} MiB in row groups of 2 MiB: peak RSS {reports[48]['peak'] / 2**20:.1f} MiB, "
          f"{grew / 2**20:+.1f} MiB over a 2-row file; pyarrow peak {reports[48]['arrow_peak'] / 2**20:.1f} MiB")
    assert size > 48 * 2**20
    assert reports[48]["arrow_peak"] < 16 * 2**20  # a row group or two, never the file
    assert grew < size / 4


def test_a_row_group_that_cannot_fit_in_memory_is_refused_before_any_work(photos, tmp_path, monkeypatch, capsys):
    import pyarrow as pa
    import pyarrow.parquet as pq

    from movq import memory_budget

    pq.write_table(pa.table({"image": pa.array([photos[0] + os.urandom(2**20) for _ in range(8)], pa.binary())}),
                   tmp_path / "one-group.parquet", row_group_size=8)
    monkeypatch.setattr(memory_budget, "available_bytes", lambda device="cpu": 200 * 2**20 if str(device) == "cpu" else None)
    code = run(["--model", TOKENIZE_MODEL, "--data", str(tmp_path / "one-group.parquet"), "--out", str(tmp_path / "out"),
                *TOKENIZE_FAST, "--num-workers", "16"])
    err = capsys.readouterr().err
    assert code == EXIT_ERROR and err.count("\n") == 1 and "row group" in err, err
    assert not (tmp_path / "out" / "shards").exists()


# ------------------------------------------------------------------ Hugging Face datasets (local, no network)


def test_hf_dataset_with_split_through_the_datasets_library(photos, expected, tmp_path, monkeypatch):
    datasets = pytest.importorskip("datasets")

    repo = tmp_path / "org" / "photos" / "data"
    repo.mkdir(parents=True)
    features = datasets.Features({"image": datasets.Image(), "label": datasets.ClassLabel(names=["x", "y"])})
    for split, rows in (("train", [0, 1]), ("validation", [2, 3, 4])):
        ds = datasets.Dataset.from_dict({"image": [{"bytes": photos[i], "path": None} for i in rows],
                                         "label": [i % 2 for i in rows]}, features=features)
        ds.to_parquet(str(repo / f"{split}-00000-of-00001.parquet"))
    monkeypatch.chdir(tmp_path)  # load_dataset("org/photos") finds the local folder first
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", tmp_path / "cache")
    out = tokenize("hf://datasets/org/photos", tmp_path / "out", "--split", "validation")
    assert len(out) == 3 and out.meta["label_names"] == ["x", "y"]
    for j, i in enumerate((2, 3, 4)):
        assert torch.equal(out[j]["tokens"], expected[i]) and out[j]["label"] == i % 2
        assert out[j]["source"] == f"hf://datasets/org/photos/validation#{j}"


def test_hf_data_needs_a_split_and_split_and_columns_need_a_source_that_has_them(tmp_path, capsys):
    assert run(["--model", TOKENIZE_MODEL, "--data", "hf://datasets/org/name", "--out", str(tmp_path / "o")]) == EXIT_ERROR
    assert "needs --split" in capsys.readouterr().err
    (tmp_path / "m.jsonl").write_text('{"image": "a.jpg"}\n')
    code = run(["--model", TOKENIZE_MODEL, "--data", str(tmp_path / "m.jsonl"), "--split", "train", "--out", str(tmp_path / "o")])
    assert code == EXIT_ERROR and "--split 'train' applies to hf://datasets/ORG/NAME data only" in capsys.readouterr().err
    (tmp_path / "img").mkdir()
    (tmp_path / "img" / "a.jpg").write_bytes(b"")
    code = run(["--model", TOKENIZE_MODEL, "--data", str(tmp_path / "img"), "--label-column", "y", "--out", str(tmp_path / "o")])
    err = capsys.readouterr().err
    assert code == EXIT_ERROR and "--label-column applies to manifests, parquet files and Hugging Face datasets" in err
    assert not (tmp_path / "o" / "meta.json").exists()


# ------------------------------------------------------------------ manifests, imagefolder metadata, class folders


def test_llamagen_manifest_columns_and_a_bad_label_row(photos, expected, tmp_path, capsys):
    for i, b in enumerate(photos[:3]):
        (tmp_path / f"{i}.jpg").write_bytes(b)
    rows = [{"image_path": f"{i}.jpg", "TEXT": f"t{i}", "cls": i} for i in range(3)] + [
        {"image_path": "0.jpg", "TEXT": "bad", "cls": "not a number"}]
    (tmp_path / "m.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = tokenize(str(tmp_path / "m.jsonl"), tmp_path / "out", "--image-column", "image_path",
                   "--caption-column", "TEXT", "--label-column", "cls")
    assert [(out[i]["caption"], out[i]["label"]) for i in range(3)] == [("t0", 0), ("t1", 1), ("t2", 2)]
    assert all(torch.equal(out[i]["tokens"], expected[i]) for i in range(3))
    assert "line 4: the label must be an integer" in skipped(tmp_path / "out")[0]["reason"]
    code = run(["--model", TOKENIZE_MODEL, "--data", str(tmp_path / "m.jsonl"), "--out", str(tmp_path / "o2"),
                "--image-column", "image_path", "--caption-column", "nope", *TOKENIZE_FAST])
    err = capsys.readouterr().err
    assert code == EXIT_ERROR and err.count("\n") == 1 and "has no column 'nope' (--caption-column)" in err


@pytest.mark.parametrize("fmt", ["jsonl", "csv"])
def test_imagefolder_metadata(photos, expected, tmp_path, fmt):
    (tmp_path / "data" / "train").mkdir(parents=True)
    for i, b in enumerate(photos[:3]):
        (tmp_path / "data" / "train" / f"{i}.jpg").write_bytes(b)
    names = ["train/2.jpg", "train/0.jpg"]  # the metadata's order, and only its files
    if fmt == "jsonl":
        (tmp_path / "data" / "metadata.jsonl").write_text(
            "".join(json.dumps({"file_name": n, "text": f"about {n}"}) + "\n" for n in names))
    else:
        (tmp_path / "data" / "metadata.csv").write_text("file_name,text\n" + "".join(f"{n},about {n}\n" for n in names))
    out = tokenize(str(tmp_path / "data"), tmp_path / "out")
    assert [out[i]["source"] for i in range(2)] == names and out[0]["caption"] == "about train/2.jpg"
    assert torch.equal(out[0]["tokens"], expected[2]) and torch.equal(out[1]["tokens"], expected[0])


def test_class_folders_give_labels_in_sorted_class_order(photos, expected, tmp_path):
    for i, cls in enumerate(["dog", "cat", "dog", "ant"]):
        (tmp_path / "data" / cls).mkdir(parents=True, exist_ok=True)
        (tmp_path / "data" / cls / f"{i}.jpg").write_bytes(photos[i])
    out = tokenize(str(tmp_path / "data"), tmp_path / "out")
    assert out.meta["label_names"] == ["ant", "cat", "dog"]
    got = {out[i]["source"]: (out[i]["label"], out[i]["tokens"]) for i in range(len(out))}
    assert {s: v[0] for s, v in got.items()} == {"ant/3.jpg": 0, "cat/1.jpg": 1, "dog/0.jpg": 2, "dog/2.jpg": 2}
    assert torch.equal(got["cat/1.jpg"][1], expected[1])


# ------------------------------------------------------------------ torchrun and resume on a brace pattern


def _tars(photos: list[bytes], root: Path, per_shard: int) -> str:
    root.mkdir()
    for shard in range(3):
        write_wds(root / f"imagenet1k-train-{shard:04d}.tar", wds_samples(photos, shard * per_shard, per_shard))
    return str(root / "imagenet1k-train-{0000..0002}.tar")


def test_two_torchrun_processes_equal_one_on_a_brace_pattern(photos, tmp_path):
    pytest.importorskip("torch.distributed")
    pattern = _tars(photos, tmp_path / "tars", per_shard=3)
    args = ["--model", TOKENIZE_MODEL, "--data", pattern, *TOKENIZE_FAST, "--device", "cpu"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": SRC}
    for nproc, out, workers in ((1, "one", "0"), (2, "two", "2")):  # 2 decoding workers: interleaved batches
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}",
               "-m", "movq.tokenize", *args, "--num-workers", workers, "--out", str(tmp_path / out)]
        proc = subprocess.run(cmd, check=False, capture_output=True, text=True, env=env, timeout=300)
        assert proc.returncode == 0, proc.stderr[-3000:]
    one, two = token_files(tmp_path / "one"), token_files(tmp_path / "two")
    assert sorted(one) == sorted(two) and len([n for n in one if n.endswith(".safetensors")]) == 6
    for name in one:
        assert one[name] == two[name], name
    assert len(TokenDataset(tmp_path / "two")) == 9


def test_killed_run_on_tar_shards_resumes_to_the_same_output(photos, tmp_path):
    pattern = _tars(photos, tmp_path / "tars", per_shard=50)
    args = ["--model", TOKENIZE_MODEL, "--data", pattern, *TOKENIZE_FAST]
    finished, res = kill_tokenize_after_first_shard(args, tmp_path / "killed")
    assert 1 <= finished < 75
    assert res.returncode == 0, res.stderr[-2000:]
    assert f"{finished} of 75 shards already finished" in res.stdout
    assert run([*args, "--out", str(tmp_path / "clean")]) == 0
    assert token_files(tmp_path / "killed") == token_files(tmp_path / "clean")


# ------------------------------------------------------------------ lazy imports, hostile index


def test_readers_import_their_libraries_only_when_used():
    code = ("import sys\nimport movq.tokenize.cli, movq.tokenize.runner, movq.tokenize.sources, movq.tokenize.decode\n"
            "print([m for m in ('pyarrow', 'datasets', 'webdataset', 'braceexpand') if m in sys.modules])")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=False,
                          env={**os.environ, "PYTHONPATH": SRC})
    assert proc.returncode == 0 and proc.stdout.strip() == "[]", proc.stderr[-2000:]


def test_an_index_label_that_is_not_an_int_is_refused(photos, tmp_path):
    for cls in ("a", "b"):
        (tmp_path / "data" / cls).mkdir(parents=True)
        (tmp_path / "data" / cls / "x.jpg").write_bytes(photos[0])
    tokenize(str(tmp_path / "data"), tmp_path / "out")
    index = tmp_path / "out" / "index.jsonl"
    index.write_text(index.read_text().replace('"label": 1', '"label": "1"'))
    with pytest.raises(ValueError, match=r"index.jsonl, line 2: .*optional 'label'"):
        TokenDataset(tmp_path / "out")


def test_a_damaged_parquet_row_group_is_skipped_and_reported(photos, expected, tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = tmp_path / "d.parquet"
    pq.write_table(pa.table({"image": pa.array(photos[:6], pa.binary())}), path, row_group_size=2, compression="none")
    start = pq.ParquetFile(path).metadata.row_group(1).column(0).data_page_offset
    raw = bytearray(path.read_bytes())
    raw[start:start + 32] = b"\xff" * 32  # the page header of row group 1
    path.write_bytes(bytes(raw))
    out = tokenize(str(path), tmp_path / "out")
    assert [out[i]["source"].rsplit("#", 1)[1] for i in range(len(out))] == ["0", "1", "4", "5"]
    assert torch.equal(out[2]["tokens"], expected[4])
    reasons = skipped(tmp_path / "out")
    assert [r["source"].rsplit("#", 1)[1] for r in reasons] == ["2", "3"] and "row group 1" in reasons[0]["reason"]


def test_brace_patterns_and_globs_expand_in_order_and_a_missing_shard_is_named(tmp_path):
    from movq.tokenize.sources import expand_braces, expand_data

    braceexpand = pytest.importorskip("braceexpand").braceexpand  # webdataset's expander, the reference

    for pattern in ("x-{0000..0127}.tar", "{a,b}/s-{8..11}-{1,2}.tar", "plain.tar", "{10..8}", "x{}y", "{-2..2}"):
        assert list(expand_braces(pattern)) == list(braceexpand(pattern)), pattern
    for name in ("x-08.tar", "x-09.tar", "x-10.tar", "y.tar"):
        (tmp_path / name).write_bytes(b"")
    assert [p.name for p in expand_data(str(tmp_path / "x-{08..10}.tar"))] == ["x-08.tar", "x-09.tar", "x-10.tar"]
    assert [p.name for p in expand_data(str(tmp_path / "{y,x-1*}.tar"))] == ["y.tar", "x-10.tar"]
    with pytest.raises(FileNotFoundError, match=r"x-11.tar does not exist \(from the pattern"):
        expand_data(str(tmp_path / "x-{08..11}.tar"))
    start = time.monotonic()
    with pytest.raises(FileNotFoundError, match="x-00000000.tar does not exist"):
        expand_data(str(tmp_path / "x-{00000000..99999999}.tar"))  # not listed first: stops at the first gap
    assert time.monotonic() - start < 1


def test_shard_plan_never_crosses_a_source_shard():
    from movq.tokenize.runner import plan_shards

    assert plan_shards(5, 2, None) == [(0, 2, 0), (2, 4, 1), (4, 5, 2)]
    # source shards of 3, 0 and 4 items: cut per source shard, the unit (rank = unit % world) is the source shard
    assert plan_shards(7, 2, [0, 3, 3]) == [(0, 2, 0), (2, 3, 0), (3, 5, 2), (5, 7, 2)]


def test_each_decoding_worker_reads_whole_source_shards():
    """With W workers the DataLoader gives batch j to worker j % W: for tars / row groups every batch of
    an output shard goes to one worker (shorter shards padded with empty batches), in-order per shard."""
    from types import SimpleNamespace

    from movq.tokenize.runner import Tokenizer, plan_shards

    plan = plan_shards(23, 5, [0, 7, 12, 12, 20])
    me = SimpleNamespace(cfg=SimpleNamespace(batch_size=2, workers=3), plan=plan, sources=SimpleNamespace(groups=[0]))
    shards = list(range(len(plan)))
    batches, owners = Tokenizer._batches(me, shards)
    assert len(batches) % 3 == 0
    workers = {}
    for j, (batch, shard) in enumerate(zip(batches, owners)):
        if shard is None:
            assert batch == []
            continue
        assert workers.setdefault(shard, j % 3) == j % 3
    for k, (lo, hi, _) in enumerate(plan):  # every item once, in order, in its shard's batches
        assert [i for b, s in zip(batches, owners) if s == k for i in b] == list(range(lo, hi))
    me.sources.groups = None  # folders, manifests: the plain order
    batches, owners = Tokenizer._batches(me, shards)
    assert [i for b in batches for i in b] == list(range(23)) and None not in owners
