"""movq-bench's rate and codebook columns (bits per pixel, usage, perplexity) and `movq-bench compare`."""

from __future__ import annotations

import csv
import json
import math
import shutil
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import movq
from helpers import BENCH_FAST, bench_photos, tiny_codec
from movq.bench.cli import EXIT_ERROR, EXIT_INTERRUPTED, main
from movq.bench.report import rate_info
from movq.bench.stats import code_columns
from movq.image_files import load_preprocessed
from movq.metrics.accumulators import HistogramAccumulator, PerImageAccumulator
from movq.quantizers import FSQConfig, LFQConfig, ResidualConfig, VQConfig

pytestmark = pytest.mark.usefixtures("one_thread")

SHIPPED = "movqgan-tiny-photos"
"""The registered codec shipped inside the package (loads offline)."""


# ------------------------------------------------------------------ bits per pixel


@pytest.mark.parametrize("quantizer, bits, levels", [
    (VQConfig(codebook_size=1024), 10, 1),                     # log2(1024) bits per token
    (VQConfig(codebook_size=512, groups=2), 9, 2),             # two groups: two tokens per position
    (ResidualConfig(codebook_size=256, depth=3), 8, 3),        # three depths: three tokens per position
    (FSQConfig(levels=(8, 5, 5, 5)), math.log2(8 * 5 * 5 * 5), 1),  # the product of the levels
    (LFQConfig(), 4, 1),                                       # 2 ** dim codes, dim = embed_dim = 4 bits
])
def test_bits_per_pixel_by_hand(quantizer, bits, levels):
    codec = tiny_codec(quantizer=quantizer)  # f = 8
    for height, width in [(64, 64), (64, 32), (128, 48)]:
        tokens = levels * (height // 8) * (width // 8)
        assert codec.bits_per_pixel(height, width) == pytest.approx(bits * tokens / (height * width), rel=1e-12)
    info = rate_info(codec, 64)
    assert info["tokens_per_image"] == levels * 64 and info["levels"] == levels
    assert info["bits_per_pixel"] == pytest.approx(bits * levels * 64 / 64**2, rel=1e-12)
    assert sum(info["bits_per_pixel_per_level"]) == pytest.approx(info["bits_per_pixel"], rel=1e-12)
    with pytest.raises(ValueError):
        codec.bits_per_pixel(60, 64)


# ------------------------------------------------------------------ usage and perplexity


def numpy_usage_perplexity(ids: np.ndarray, codebook_size: int) -> tuple[float, float]:
    counts = np.bincount(ids[ids >= 0].ravel(), minlength=codebook_size).astype(np.float64)
    p = counts[counts > 0] / counts.sum()
    return float((counts > 0).sum() / codebook_size), float(np.exp(-(p * np.log(p)).sum()))


def test_usage_and_perplexity_match_numpy_and_shards_add_up():
    rng = np.random.default_rng(0)
    ids = rng.choice(50, size=(6, 3, 4, 5), p=np.arange(1, 51) / np.arange(1, 51).sum())  # [B, levels, h, w]
    ids[0, 2, 0, :] = -1  # a dropped residual level: not counted
    whole = HistogramAccumulator(3, 64)
    whole.update(torch.from_numpy(ids))
    halves = [HistogramAccumulator(3, 64), HistogramAccumulator(3, 64)]
    halves[0].update(torch.from_numpy(ids[:2]))
    halves[1].update(torch.from_numpy(ids[2:]))
    halves[0].merge(halves[1])
    assert torch.equal(halves[0].counts, whole.counts)
    columns = code_columns(whole.counts, 64)
    for level in range(3):
        usage, perplexity = numpy_usage_perplexity(ids[:, level], 64)
        assert columns["codebook_usage_per_level"][level] == pytest.approx(usage, rel=1e-6)
        assert columns["perplexity_per_level"][level] == pytest.approx(perplexity, rel=1e-5)
    assert columns["codebook_usage"] == pytest.approx(np.mean(columns["codebook_usage_per_level"]))
    one = HistogramAccumulator(1, 8)
    one.update(torch.tensor([[[0, 0], [3, 7]]]))
    assert code_columns(one.counts, 8)["codebook_usage"] == pytest.approx(3 / 8)
    assert code_columns(one.counts, 8)["perplexity"] == pytest.approx(math.exp(-(0.5 * math.log(0.5) + 0.5 * math.log(0.25))))
    with pytest.raises(ValueError, match="outside"):
        one.update(torch.tensor([[[8]]]))


def test_per_image_values_fill_in_any_order():
    acc, other = PerImageAccumulator(4), PerImageAccumulator(4)
    acc.update(torch.tensor([2, 0]), torch.tensor([5.0, 1.0]))
    other.update(torch.tensor([3]), torch.tensor([7.0]))
    values = acc.merge(other).values()
    assert values[[0, 2, 3]].tolist() == [1.0, 5.0, 7.0] and math.isnan(values[1])


# ------------------------------------------------------------------ the bench's columns, resume


@pytest.fixture(scope="module")
def photo_dir(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("photos")
    for p in bench_photos():
        shutil.copy(p, root / p.name)
    return root


@pytest.fixture(scope="module")
def codec_specs(tmp_path_factory, bench_codec_dir) -> list[str]:
    """Four codecs as ``compare`` takes them: the shipped registered one, a saved tiny VQ preset with random
    weights, a saved FSQ codec, and a residual codec as a ``torch.save(state_dict)`` checkpoint file."""
    root = tmp_path_factory.mktemp("codecs")
    fsq = tiny_codec(1, quantizer=FSQConfig(levels=(8, 5, 5, 5))).save_pretrained(root / "fsq")
    torch.save(tiny_codec(2, quantizer=ResidualConfig(codebook_size=256, depth=3)).state_dict(), root / "rq.pt")
    return [SHIPPED, str(bench_codec_dir), str(fsq), str(root / "rq.pt")]


def hand_code_columns(spec: str, folder: Path, batch: int = 2) -> tuple[list[float], list[float]]:
    """Per-level usage and perplexity of ``spec``'s tokens of the bench's 64 px crops, by numpy."""
    codec = movq.load(spec)
    crops = torch.stack([load_preprocessed(p, 64)[0] for p in sorted(folder.iterdir())]).float() / 255.0
    tokens = torch.cat([codec.encode(crops[i : i + batch] * 2 - 1) for i in range(0, len(crops), batch)]).numpy()
    tokens = tokens[:, None] if tokens.ndim == 3 else tokens
    pairs = [numpy_usage_perplexity(tokens[:, level], codec.codebook_size) for level in range(tokens.shape[1])]
    return [u for u, _ in pairs], [p for _, p in pairs]


def test_resume_keeps_the_code_histograms(codec_specs, photo_dir, tmp_path):
    residual = codec_specs[3]
    args = ["--model", residual, "--data", str(photo_dir), "--metrics", "psnr", *BENCH_FAST, "--chunk-size", "2"]
    one_pass = json.loads((tmp_path / "ref.json").read_text()) if main(args + ["--out", str(tmp_path / "ref.json")]) == 0 else None
    assert one_pass is not None
    cache = ["--cache", str(tmp_path / "cache"), "--cache-interval", "0"]
    assert main(args + cache + ["--max-chunks", "1"]) == EXIT_INTERRUPTED
    assert main(args + cache + ["--out", str(tmp_path / "resumed.json")]) == 0
    resumed = json.loads((tmp_path / "resumed.json").read_text())
    assert resumed["results"] == one_pass["results"]
    row, info = one_pass["results"][0], one_pass["protocol"]["models"][0]
    usage, perplexity = hand_code_columns(residual, photo_dir)
    assert row["codebook_usage_per_level"] == pytest.approx(usage, rel=1e-12)
    assert row["perplexity_per_level"] == pytest.approx(perplexity, rel=1e-9)
    assert info["tokens_per_image"] == 3 * 8 * 8 and info["bits_per_pixel"] == pytest.approx(8 * 192 / 64**2)


# ------------------------------------------------------------------ movq-bench compare


def lpips_available() -> bool:
    try:
        from movq.metrics.lpips import LPIPSMetric

        LPIPSMetric("alex")
    except (ImportError, RuntimeError):
        return False
    return True


class Page(HTMLParser):
    """The links, image sources, table headers and cells of an HTML page."""

    def __init__(self) -> None:
        super().__init__()
        self.sources: list[str] = []
        self.links: list[str] = []
        self.cells: list[str] = []
        self._in_cell = False

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "img":
            self.sources.append(attrs["src"])
        elif tag == "a":
            self.links.append(attrs["href"])
        elif tag == "link" or tag == "script":
            self.sources.append(attrs.get("href") or attrs.get("src") or "")
        self._in_cell = tag in ("td", "th")

    def handle_endtag(self, tag):
        self._in_cell = False

    def handle_data(self, data):
        if self._in_cell:
            self.cells.append(data.strip())


@pytest.fixture(scope="module")
def compare_run(codec_specs, photo_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("compare") / "report"
    metrics = "fid,psnr,ssim,l1" + (",lpips" if lpips_available() else "")
    flags = ["--data", str(photo_dir), "--metrics", metrics, *BENCH_FAST]
    assert main(["compare", "--models", *codec_specs, "--out", str(out), "--grid-images", "2", *flags]) == 0
    return out, flags


def test_compare_writes_one_folder_with_a_self_contained_report(compare_run, codec_specs):
    out, _ = compare_run
    assert sorted(p.name for p in out.iterdir()) == sorted(
        ["results.json", "results.md", "results.csv", "rate_distortion.png", "grid.png", "report.html"])
    page = Page()
    page.feed((out / "report.html").read_text(encoding="utf-8"))
    assert set(page.sources) == {"rate_distortion.png", "grid.png"}
    for ref in page.sources + page.links:
        assert "://" not in ref and not ref.startswith("/") and (out / ref).is_file(), ref
    names = [SHIPPED, "tiny", "fsq", "rq.pt"]  # display labels: a path's last part
    assert [c for c in dict.fromkeys(page.cells) if c in names] == names  # a row per codec, in order
    for png in out.glob("*.png"):
        with Image.open(png) as image:
            image.load()
            assert image.format == "PNG" and image.width >= 300 and image.height >= 200
    with Image.open(out / "grid.png") as grid:  # 2 rows (--grid-images) x 5 columns of 64 px crops (>= 180 px cells)
        assert grid.width > grid.height > 2 * 180
    markdown = (out / "results.md").read_text()
    assert "| Tokens | BPP | Usage | Perplexity |" in markdown
    residual_line = next(line for line in markdown.splitlines() if line.startswith(f"| {codec_specs[3]} |"))
    assert residual_line.count("/") >= 4  # usage and perplexity of each of the 3 depths


def test_compare_numbers_equal_single_model_runs(compare_run, codec_specs, photo_dir, tmp_path):
    out, flags = compare_run
    with open(out / "results.csv", newline="") as f:
        rows = {r["model"]: r for r in csv.DictReader(f)}
    assert list(rows) == codec_specs
    compared = json.loads((out / "results.json").read_text())
    for spec in codec_specs:
        single_json = tmp_path / f"{Path(spec).name}.json"
        assert main(["--model", spec, *flags, "--out", str(single_json)]) == 0
        single = json.loads(single_json.read_text())
        row, info = single["results"][0], single["protocol"]["models"][0]
        csv_row = rows[spec]
        for key, value in {**info, **row}.items():
            if key in ("model", "config", "latent_size", "parameters") or key not in csv_row:
                continue
            if isinstance(value, list):
                assert [float(v) for v in csv_row[key].split("/")] == value, (spec, key)
            elif isinstance(value, float):
                assert float(csv_row[key]) == value, (spec, key)
            else:
                assert csv_row[key] == str(value), (spec, key)
        assert [r for r in compared["results"] if r["model"] == spec] == single["results"]
        assert float(csv_row["psnr"]) > 0 and float(csv_row["bits_per_pixel"]) > 0
    usage, perplexity = hand_code_columns(codec_specs[1], photo_dir)
    assert float(rows[codec_specs[1]]["codebook_usage"]) == pytest.approx(usage[0], rel=1e-12)
    assert float(rows[codec_specs[1]]["perplexity"]) == pytest.approx(perplexity[0], rel=1e-9)


def test_compare_refuses_bad_input_before_any_work(codec_specs, photo_dir, tmp_path, capsys):
    out = tmp_path / "report"
    base = ["--data", str(photo_dir), *BENCH_FAST]
    cases = [
        (["compare", "--models", codec_specs[1], "movqgan-tiny-photoz", "--out", str(out), *base],
         "--models: unknown model 'movqgan-tiny-photoz'; did you mean 'movqgan-tiny-photos'?"),
        (["compare", "--models", codec_specs[1], codec_specs[1], "--out", str(out), *base], "--models:"),
        (["compare", "--models", codec_specs[1], "--out", str(out), "--data", str(tmp_path / "none"), *BENCH_FAST],
         "--data: data folder"),
        (["compare", "--models", codec_specs[1], "--out", str(out), "--grid-images", "0", *base], "--grid-images"),
    ]
    for argv, message in cases:
        assert main(argv) == EXIT_ERROR
        err = capsys.readouterr().err.strip()
        assert message in err and len(err.splitlines()) == 1, err
        assert not out.exists()  # refused before anything was created
    out.write_text("mine")
    assert main(["compare", "--models", codec_specs[1], "--out", str(out), *base]) == EXIT_ERROR
    assert "--out" in capsys.readouterr().err and out.read_text() == "mine"
