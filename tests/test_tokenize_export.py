"""movq-tokenize export: parquet (read back by pyarrow and datasets), WebDataset shards (read back by
webdataset and tarfile), LlamaGen's layout (read back by a reader that follows LlamaGen's CustomDataset and
train_c2i.py), push_to_hub with a dataset card (an offline fake HfApi), and the --out rules."""

from __future__ import annotations

import json
import os
import shutil
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch

from helpers import TOKENIZE_FAST, TOKENIZE_MODEL
from movq.tokenize.cli import EXIT_ERROR, main
from movq.tokenize.dataset import TokenDataset

LABELS = [3, 1, 4, 1, 5]


def _label(out: Path, labels: list[int] | None) -> Path:
    """Give the items of a finished run class labels in its index (what a labelled source records)."""
    if labels is not None:
        index = out / "index.jsonl"
        rows = [json.loads(line) for line in index.read_text().splitlines()]
        index.write_text("".join(json.dumps({**row, "label": lab}) + "\n" for row, lab in zip(rows, labels, strict=True)))
    return out


@pytest.fixture(scope="module")
def runs(token_data_dir, tmp_path_factory):
    root = tmp_path_factory.mktemp("export-src")
    made = {}
    for name, extra in (("plain", []), ("flip", ["--augment", "flip"]), ("ten-crop", ["--augment", "ten-crop"]),
                        ("latents", ["--latents"])):
        out = root / name
        assert main(["--model", TOKENIZE_MODEL, "--data", str(token_data_dir), "--out", str(out), *TOKENIZE_FAST, *extra]) == 0
        made[name] = _label(out, None if name == "latents" else LABELS)
    unlabelled = root / "unlabelled"
    shutil.copytree(made["plain"], unlabelled)
    index = unlabelled / "index.jsonl"
    index.write_text("".join(json.dumps({k: v for k, v in json.loads(line).items() if k != "label"}) + "\n"
                             for line in index.read_text().splitlines()))
    made["unlabelled"] = unlabelled
    return made


def export(*args: str) -> int:
    return main(["export", *map(str, args)])


def _stored(ds: TokenDataset, i: int) -> np.ndarray:
    return ds[i][ds.key].to(getattr(torch, ds.meta["store_dtype"])).numpy()


# ------------------------------------------------------------------ parquet


@pytest.mark.parametrize("run", ["plain", "ten-crop"])
def test_parquet_export_read_back_by_pyarrow_and_datasets(runs, tmp_path, run):
    import pyarrow.parquet as pq

    src, out = runs[run], tmp_path / "pq"
    assert export(src, "--format", "parquet", "--out", out, "--shard-size", 3, "--row-group-size", 2) == 0
    ds = TokenDataset(src)
    files = sorted((out / "data").glob("*.parquet"))
    assert [f.name for f in files] == ["train-00000-of-00002.parquet", "train-00001-of-00002.parquet"]
    assert [pq.ParquetFile(f).metadata.num_row_groups for f in files] == [2, 1]  # 3 rows = 2 + 1, then 2 rows
    table = pq.read_table(out / "data")
    assert table.schema.field("tokens").type.value_type == "uint16"  # the stored dtype, not int64
    rows = table.to_pylist()
    assert [r["key"] for r in rows] == [f"{i:08d}" for i in range(5)]
    for i, row in enumerate(rows):
        expected = _stored(ds, i)
        assert row["shape"] == list(expected.shape) and row["source"] == ds[i]["source"]
        assert np.array_equal(np.asarray(row["tokens"], dtype=np.uint16).reshape(row["shape"]), expected)
        assert row["label"] == LABELS[i] and row["caption"] == ds[i]["caption"]
    assert json.loads(table.schema.metadata[b"movq"])["item_shape"] == ds.meta["item_shape"]

    datasets = pytest.importorskip("datasets")
    loaded = datasets.load_dataset("parquet", data_files=str(out / "data" / "*.parquet"), split="train",
                                   cache_dir=str(tmp_path / "hf-cache"))
    assert len(loaded) == 5 and loaded.features["tokens"].feature.dtype == "uint16"
    for i, row in enumerate(loaded.with_format("numpy")):
        assert np.array_equal(row["tokens"].reshape(row["shape"]), _stored(ds, i)) and row["label"] == LABELS[i]
    by_card = datasets.load_dataset(str(out), split="train", cache_dir=str(tmp_path / "hf-cache"))  # README.md's configs
    assert by_card["key"] == loaded["key"] and by_card["tokens"] == loaded["tokens"]
    assert not list(out.rglob(".*.tmp"))


def test_latents_export_to_parquet_keeps_float16(runs, tmp_path):
    import pyarrow.parquet as pq

    out = tmp_path / "lat"
    assert export(runs["latents"], "--format", "parquet", "--out", out) == 0
    table = pq.read_table(out / "data")
    assert str(table.schema.field("tokens").type.value_type) == "halffloat"
    ds = TokenDataset(runs["latents"])
    row = table.slice(1, 1).to_pylist()[0]
    assert np.array_equal(np.asarray(row["tokens"], dtype=np.float16).reshape(row["shape"]), ds[1]["latents"].numpy())
    assert row["label"] is None


# ------------------------------------------------------------------ webdataset


def test_webdataset_export_read_back_by_webdataset_and_tarfile(runs, tmp_path):
    src, out = runs["flip"], tmp_path / "wds"
    assert export(src, "--format", "webdataset", "--out", out, "--shard-size", 2) == 0
    ds = TokenDataset(src)
    tars = sorted(out.glob("shard-*.tar"))
    assert [t.name for t in tars] == ["shard-000000.tar", "shard-000001.tar", "shard-000002.tar"]
    with tarfile.open(tars[0]) as tar:
        names = tar.getnames()
        assert names[:4] == ["00000000.tokens.npy", "00000000.txt", "00000000.cls", "00000000.json"]
        assert "00000001.txt" not in names  # b.png has no caption
        assert all(m.mtime == 0 and m.uname == "" for m in tar.getmembers())
        assert tar.extractfile("00000000.txt").read().decode() == "a red thing"
    wds = pytest.importorskip("webdataset")
    urls = str(out / "shard-{000000..000002}.tar")
    samples = list(wds.WebDataset(urls, shardshuffle=False, empty_check=False).decode())
    assert [s["__key__"] for s in samples] == [f"{i:08d}" for i in range(5)]
    for i, sample in enumerate(samples):
        tokens = sample["tokens.npy"]
        assert tokens.dtype == np.uint16 and tokens.shape == (2, 4, 4) and np.array_equal(tokens, _stored(ds, i))
        assert sample["cls"] == LABELS[i] and sample.get("txt") == ds[i]["caption"]
        assert sample["json"] == {"source": ds[i]["source"], "shape": [2, 4, 4]}
    before = {t.name: t.read_bytes() for t in tars}
    assert export(src, "--format", "webdataset", "--out", out, "--shard-size", 2) == 0  # a re-export: same bytes
    assert {t.name: t.read_bytes() for t in sorted(out.glob("shard-*.tar"))} == before
    assert export(src, "--format", "webdataset", "--out", out, "--shard-size", 5) == 0  # stale shards removed
    assert [t.name for t in sorted(out.glob("shard-*.tar"))] == ["shard-000000.tar"]


# ------------------------------------------------------------------ llamagen


class LlamaGenCodes(torch.utils.data.Dataset):
    """LlamaGen's dataset/imagenet.py CustomDataset, re-derived from its code: feature and label folders
    of {i}.npy, one view drawn at random per item when 'flip' is in the feature folder's path, and no
    'ten_crop_105' twin folder here. The file count is len(listdir) instead of its fixed 1281167."""

    def __init__(self, feature_dir: str, label_dir: str) -> None:
        self.feature_dir, self.label_dir = feature_dir, label_dir
        self.flip = "flip" in feature_dir
        count = len(os.listdir(feature_dir))
        self.files = [f"{i}.npy" for i in range(count)]

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, idx: int):
        features = np.load(os.path.join(self.feature_dir, self.files[idx]))
        if self.flip:
            aug = torch.randint(low=0, high=features.shape[1], size=(1,)).item()
            features = features[:, aug]
        labels = np.load(os.path.join(self.label_dir, self.files[idx]))
        return torch.from_numpy(features), torch.from_numpy(labels)


@pytest.mark.parametrize("run", ["plain", "flip", "ten-crop"])
def test_llamagen_layout_is_read_by_llamagen_custom_dataset(runs, tmp_path, run):
    src = runs[run]
    code_path = tmp_path / "imagenet_code_c2i_flip_ten_crop"
    assert export(src, "--format", "llamagen", "--out", code_path) == 0
    ds = TokenDataset(src)
    n_aug = ds.n_aug
    feature_dir, label_dir = f"{code_path}/imagenet32_codes", f"{code_path}/imagenet32_labels"  # build_imagenet_code
    for i in range(5):
        codes, labels = np.load(f"{feature_dir}/{i}.npy"), np.load(f"{label_dir}/{i}.npy")
        assert codes.dtype == np.int64 and codes.shape == (1, n_aug, 16)  # extract_codes_c2i: (1, num_aug, h*w)
        assert labels.dtype == np.int64 and labels.shape == (1,) and labels[0] == LABELS[i]
        assert np.array_equal(codes[0], ds[i]["tokens"].reshape(n_aug, 16).numpy())
    torch.manual_seed(0)
    loader = torch.utils.data.DataLoader(LlamaGenCodes(feature_dir, label_dir), batch_size=5)
    x, y = next(iter(loader))
    z_indices, c_indices = x.reshape(x.shape[0], -1), y.reshape(-1)  # train_c2i.py
    assert z_indices.shape == (5, 16) and c_indices.tolist() == LABELS
    for i in range(5):  # each row is one of the item's views
        views = ds[i]["tokens"].reshape(n_aug, 16)
        assert any(torch.equal(z_indices[i], v) for v in views)


def test_llamagen_export_refusals(runs, tmp_path, capsys):
    cases = [
        ((runs["unlabelled"], "--out", tmp_path / "a_flip"), "--format llamagen needs a class label per item"),
        ((runs["latents"], "--out", tmp_path / "b_flip"), "--format llamagen stores token codes"),
        ((runs["ten-crop"], "--out", tmp_path / "codes"), "the code path contains 'flip'"),
        ((runs["plain"], "--push-to-hub", "org/name"), "--push-to-hub uploads --format parquet or webdataset"),
    ]
    for args, message in cases:
        assert export(args[0], "--format", "llamagen", *args[1:]) == EXIT_ERROR
        err = capsys.readouterr().err
        assert err.startswith("movq-tokenize export: error: ") and err.count("\n") == 1 and message in err, err
    assert not any((tmp_path / name).exists() and any((tmp_path / name).iterdir()) for name in ("a_flip", "b_flip", "codes"))


# ------------------------------------------------------------------ --out rules and flags


def test_out_must_be_empty_or_a_previous_export_of_the_same_data(runs, tmp_path, capsys):
    out = tmp_path / "out"
    out.mkdir()
    (out / "mine.txt").write_text("keep me")
    assert export(runs["plain"], "--format", "parquet", "--out", out) == EXIT_ERROR
    assert "holds files that are not a movq export; use an empty folder or --overwrite" in capsys.readouterr().err
    assert export(runs["plain"], "--format", "parquet", "--out", out, "--overwrite") == 0
    assert (out / "mine.txt").read_text() == "keep me"
    marker = json.loads((out / "movq-export.json").read_text())
    assert marker["complete"] and marker["export"] == "parquet" and marker["items"] == 5
    assert export(runs["plain"], "--format", "parquet", "--out", out) == 0  # the same data again
    assert export(runs["flip"], "--format", "parquet", "--out", out) == EXIT_ERROR  # another run
    assert "an export of another run or format (parquet of" in capsys.readouterr().err
    assert export(runs["plain"], "--format", "webdataset", "--out", out) == EXIT_ERROR  # another format
    assert export(runs["flip"], "--format", "parquet", "--out", out, "--overwrite") == 0
    assert len(list((out / "data").glob("*.parquet"))) == 1
    # a killed export (marker written, not complete) is redone by the same command
    killed = json.loads((out / "movq-export.json").read_text())
    (out / "movq-export.json").write_text(json.dumps({**killed, "complete": False}))
    assert export(runs["flip"], "--format", "parquet", "--out", out) == 0


@pytest.mark.parametrize("args, message", [
    (["--format", "parquet", "--out", "OUT", "--shard-size", "0"], "--shard-size must be an int >= 1, got 0"),
    (["--format", "parquet", "--out", "OUT", "--row-group-size", "-1"], "--row-group-size must be an int >= 1, got -1"),
    (["--format", "parquet"], "--out is required (or --push-to-hub ORG/NAME)"),
    (["--format", "parquet", "--push-to-hub", "not a repo"], "--push-to-hub 'not a repo' is not a Hub repo id"),
    (["--format", "parquet", "--out", "SRC/inner"], "lies inside the token folder"),
])
def test_export_flags_are_checked_before_any_work(runs, tmp_path, capsys, args, message):
    argv = [a.replace("OUT", str(tmp_path / "out")).replace("SRC", str(runs["plain"])) for a in args]
    assert export(runs["plain"], *argv) == EXIT_ERROR
    err = capsys.readouterr().err
    assert err.startswith("movq-tokenize export: error: ") and err.count("\n") == 1 and message in err, err
    assert not (tmp_path / "out" / "movq-export.json").exists() and not (runs["plain"] / "inner").exists()


def test_export_tokens_from_python(runs, tmp_path):
    from movq.tokenize.config import TokenizeError
    from movq.tokenize.export import export_tokens

    result = export_tokens(runs["plain"], tmp_path / "w", "webdataset", shard_size=4)
    assert result == {"format": "webdataset", "items": 5, "files": 2, "out": str(tmp_path / "w")}
    with pytest.raises(TokenizeError, match="--shard-size must be an int >= 1, got 0"):
        export_tokens(runs["plain"], tmp_path / "x", "parquet", shard_size=0)
    with pytest.raises(TokenizeError, match=r"format must be one of"):
        export_tokens(runs["plain"], tmp_path / "x", "csv")


def test_exporting_an_unfinished_folder_is_one_line(tmp_path, capsys):
    assert export(tmp_path / "nothing", "--format", "parquet", "--out", tmp_path / "out") == EXIT_ERROR
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "has no meta.json: not a movq-tokenize output folder" in err


# ------------------------------------------------------------------ push_to_hub


class FakeApi:
    """An offline stand-in for huggingface_hub.HfApi: records the repo and keeps a copy of the uploaded folder."""

    def __init__(self, keep: Path, token=None) -> None:
        self.keep, self.calls = keep, []

    def create_repo(self, repo_id, **kw):
        self.calls.append(("create_repo", repo_id, kw))

    def upload_folder(self, *, repo_id, folder_path, **kw):
        shutil.copytree(folder_path, self.keep)
        self.calls.append(("upload_folder", repo_id, kw))
        return "https://huggingface.co/datasets/commit/fake"


def _card(folder: Path):
    from huggingface_hub import DatasetCard

    return DatasetCard.load(folder / "README.md")


def test_push_to_hub_uploads_the_export_with_a_dataset_card(runs, tmp_path):
    from movq.tokenize.export import push_to_hub

    api = FakeApi(tmp_path / "uploaded")
    info = push_to_hub(runs["ten-crop"], "org/tokens", format="parquet", api=api, private=True)
    assert info.endswith("fake")
    assert api.calls[0] == ("create_repo", "org/tokens", {"private": True, "exist_ok": True, "repo_type": "dataset"})
    assert api.calls[1][2]["repo_type"] == "dataset"
    uploaded = tmp_path / "uploaded"
    assert sorted(p.relative_to(uploaded).as_posix() for p in uploaded.rglob("*") if p.is_file()) == [
        "README.md", "data/train-00000-of-00001.parquet", "movq-export.json"]
    meta = TokenDataset(runs["ten-crop"]).meta
    card = _card(uploaded).data.to_dict()
    assert card["library_name"] == "movq"
    assert card["configs"] == [{"config_name": "default", "data_files": [{"split": "train", "path": "data/train-*.parquet"}]}]
    block = card["movq"]
    assert block["codec"] == TOKENIZE_MODEL and block["weights_hash"] == meta["weights_hash"]
    assert block["config_hash"] == meta["config_hash"] and block["preprocessing"] == meta["preprocessing"]
    assert block["augment"] == {"mode": "ten-crop", "crop_range": 1.1, "n_aug": 10} and block["item_shape"] == [10, 4, 4]
    assert "ADM centre crop" in block["preprocessing"] and block["items"] == 5


def test_cli_push_to_hub_with_out_uploads_that_folder(runs, tmp_path, monkeypatch, capsys):
    import huggingface_hub

    apis = []
    monkeypatch.setattr(huggingface_hub, "HfApi", lambda token=None: apis.append(FakeApi(tmp_path / "up")) or apis[-1])
    out = tmp_path / "wds"
    assert export(runs["plain"], "--format", "webdataset", "--out", out, "--push-to-hub", "org/wds") == 0
    assert "uploaded to https://huggingface.co/datasets/org/wds" in capsys.readouterr().out
    assert (tmp_path / "up" / "shard-000000.tar").read_bytes() == (out / "shard-000000.tar").read_bytes()
    card = _card(tmp_path / "up").data.to_dict()
    assert card["library_name"] == "movq" and card["configs"][0]["data_files"][0]["path"] == "shard-*.tar"
    assert card["movq"]["augment"] is None and card["movq"]["format"] == "webdataset"
    code = _card(tmp_path / "up").text.split("```python\n", 1)[1].split("```", 1)[0]  # the card's example runs
    monkeypatch.chdir(tmp_path / "up")
    scope: dict = {}
    exec(code, scope)
    assert scope["tokens"].shape == (4, 4) and scope["sample"]["cls"] == LABELS[-1]
