"""Throughput of ``movq-tokenize`` next to the plain loop a user would write, same codec, same machine.

The plain loop::

    for path in files:
        image, _ = resize_center_crop(open_rgb(path), resolution)   # the bench's preprocessing
        tokens.append(codec.encode(image))

``movq-tokenize`` decodes in DataLoader worker processes, encodes in batches, and optionally runs
the encoder in bfloat16 (the codebook search stays float32). Each row reports images/s of the
encode loop (as the CLI prints it) and the wall time including model loading, listing and the
end-of-run index / summary; the token columns compare every stored token with the plain loop's.

    python benchmarks/tokenize_speed.py                                  # ../shared/images, tiny codec, 256 px
    python benchmarks/tokenize_speed.py --model movqgan-67m --limit 16   # a random-init 67M (same compute)

``--readers`` compares the source readers instead: the same images written as an image folder, a
JSONL manifest, WebDataset tars (plain and gzip, by ``webdataset.TarWriter``), a parquet file of the
``datasets`` image struct (pyarrow) and a Hugging Face dataset folder read through ``hf://`` (when
``datasets`` is installed); each is tokenized in its own process, which reports its encode-loop rate,
wall time and peak RSS (its own ``VmHWM``, and the largest of its decoding workers'), and the tokens
are compared with the folder run's::

    python benchmarks/tokenize_speed.py --readers --limit 64 --workers 1
"""

from __future__ import annotations

import os
import sys

# This file is named like the standard library's ``tokenize`` (which torch imports through
# ``inspect``); run as a script, its folder comes first on sys.path and would shadow it.
sys.path[:] = [p for p in sys.path if os.path.abspath(p or ".") != os.path.dirname(os.path.abspath(__file__))]

import argparse
import json
import shutil
import tempfile
import time
from pathlib import Path

import torch

import movq
from movq.image_files import list_image_files, open_rgb, resize_center_crop
from movq.tokenize.config import TokenizeConfig, default_workers
from movq.tokenize.dataset import TokenDataset
from movq.tokenize.runner import Tokenizer

IMAGES = Path(__file__).resolve().parents[1].parent / "shared" / "images"


SCRATCH = Path(tempfile.mkdtemp(prefix="movq-tokenize-bench-"))
"""Every file this benchmark writes (removed at the end)."""


def load_codec(name: str, device: str) -> tuple[torch.nn.Module, str]:
    """The codec and a spec movq-tokenize can load: a preset name gets random weights saved to a folder."""
    if name in movq.PRESETS and not Path(name).exists():
        torch.manual_seed(0)
        codec = movq.load(name, pretrained=False)
        spec = str(codec.save_pretrained(SCRATCH / name))
        return codec.to(device), spec
    return movq.load(name, device=device), name


def plain_loop(codec: torch.nn.Module, files: list[Path], resolution: int) -> tuple[dict[str, torch.Tensor], float]:
    tokens = {}
    start = time.perf_counter()
    for path in files:
        image, _ = resize_center_crop(open_rgb(path), resolution)
        tokens[path] = codec.encode(image)[0].cpu()
    return tokens, time.perf_counter() - start


def tokenize(model: str, data: str, resolution: int, dtype: str, batch: int, workers: int,
             device: str) -> tuple[TokenDataset, dict, float]:
    out = tempfile.mkdtemp(prefix="out-", dir=SCRATCH)
    cfg = TokenizeConfig(model=model, data=data, out=out, resolution=resolution, batch_size=batch,
                         num_workers=workers, dtype=dtype, device=device, progress=False)
    start = time.perf_counter()
    tokenizer = Tokenizer(cfg)
    try:
        summary = tokenizer.run()
    finally:
        tokenizer.close()
    return TokenDataset(out), summary, time.perf_counter() - start


READER_CHILD = """
import json, resource, sys, time
from movq.tokenize.config import TokenizeConfig
from movq.tokenize.runner import Tokenizer
model, data, out, res, batch, workers, device, shard_rows, split = sys.argv[1:10]
start = time.perf_counter()
tokenizer = Tokenizer(TokenizeConfig(model=model, data=data, out=out, resolution=int(res), batch_size=int(batch),
                                     num_workers=int(workers), device=device, progress=False, split=split or None))
try:
    summary = tokenizer.run()
finally:
    tokenizer.close()
wall = time.perf_counter() - start
peak = next(int(line.split()[1]) for line in open("/proc/self/status") if line.startswith("VmHWM:")) * 1024
workers_peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024
print(json.dumps({"images": summary["images"], "images_per_s": summary["run"]["images_per_s"], "wall_s": wall,
                  "peak_rss": peak, "workers_peak_rss": workers_peak}))
"""
"""One movq-tokenize run in a fresh process (so each reader's peak memory is its own)."""


def write_reader_inputs(files: list[Path], root: Path) -> list[tuple[str, str, str]]:
    """The images ``files`` written in every source format: ``(reader, --data, --split)`` rows, all
    listing the images in the same order as the folder reader (sorted relative paths)."""
    import io
    import tarfile

    folder = root / "folder"
    folder.mkdir()
    for i, f in enumerate(files):
        shutil.copy(f, folder / f"{i:06d}{f.suffix.lower()}")
    names = sorted(p.name for p in folder.iterdir())
    blobs = [(folder / n).read_bytes() for n in names]
    rows = [("folder", str(folder), "")]
    (root / "manifest.jsonl").write_text("".join(json.dumps({"image": str(folder / n)}) + "\n" for n in names))
    rows.append(("manifest (.jsonl)", str(root / "manifest.jsonl"), ""))
    for kind, suffix, mode in (("tar", ".tar", "w"), ("tar.gz", ".tar.gz", "w:gz")):
        (root / kind).mkdir()
        half = (len(names) + 1) // 2
        for shard, part in enumerate((range(half), range(half, len(names)))):
            with tarfile.open(root / kind / f"shard-{shard:04d}{suffix}", mode) as tar:
                for i in part:
                    info = tarfile.TarInfo(f"{i:06d}.{names[i].rsplit('.', 1)[1]}")
                    info.size = len(blobs[i])
                    tar.addfile(info, io.BytesIO(blobs[i]))
        rows.append((f"WebDataset {kind}", str(root / kind / ("shard-{0000..0001}" + suffix)), ""))
    try:
        import pyarrow as pa
        import pyarrow.parquet as pq
    except ImportError:
        print("pyarrow not installed: no parquet row", file=sys.stderr)
        return rows
    image = pa.array([{"bytes": b, "path": n} for b, n in zip(blobs, names)],
                     pa.struct([("bytes", pa.binary()), ("path", pa.string())]))
    pq.write_table(pa.table({"image": image}), root / "data.parquet", row_group_size=16)
    rows.append(("parquet (datasets image struct)", str(root / "data.parquet"), ""))
    try:
        import datasets  # noqa: F401
    except ImportError:
        print("datasets not installed: no hf:// row", file=sys.stderr)
        return rows
    (root / "hub" / "local" / "images" / "data").mkdir(parents=True)
    shutil.copy(root / "data.parquet", root / "hub" / "local" / "images" / "data" / "train-00000-of-00001.parquet")
    rows.append(("hf://datasets (datasets library)", "hf://datasets/local/images", "train"))
    return rows


def compare_readers(args: argparse.Namespace, model_spec: str, files: list[Path]) -> None:
    """``--readers``: each reader on the same images, one process each; prints a Markdown table."""
    import subprocess

    root = SCRATCH / "readers"
    root.mkdir()
    table = []
    reference: TokenDataset | None = None
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "HF_DATASETS_CACHE": str(root / "hf-cache")}
    for name, data, split in write_reader_inputs(files, root):
        out = root / f"out-{len(table)}"
        cmd = [sys.executable, "-c", READER_CHILD, model_spec, data, str(out), str(args.resolution),
               str(args.batch_size), str(args.workers), args.device, "0", split]
        proc = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=root / "hub", check=False)
        if proc.returncode != 0:
            print(f"{name}: failed\n{proc.stderr[-2000:]}", file=sys.stderr)
            continue
        row = json.loads(proc.stdout.strip().splitlines()[-1])
        ds = TokenDataset(out)
        reference = reference or ds
        equal = all(torch.equal(ds[i]["tokens"], reference[i]["tokens"]) for i in range(len(ds))) and len(ds) == len(reference)
        table.append((name, row, equal))
        print(f"{name}: {row['images_per_s']:.2f} images/s", file=sys.stderr)
    base = table[0][1]["images_per_s"] if table else 0.0
    print("| reader | images | images/s | vs folder | wall s (incl. load, listing) | peak RSS MiB (main / worker) "
          "| tokens equal to folder |")
    print("|---|---|---|---|---|---|---|")
    for name, row, equal in table:
        print(f"| {name} | {row['images']} | {row['images_per_s']:.2f} | {row['images_per_s'] / base:.2f}x | "
              f"{row['wall_s']:.1f} | {row['peak_rss'] / 2**20:.0f} / {row['workers_peak_rss'] / 2**20:.0f} | "
              f"{'yes' if equal else 'NO'} |")
    if args.out:
        Path(args.out).write_text(json.dumps([{"reader": n, **r, "tokens_equal": e} for n, r, e in table], indent=2) + "\n")


def _best(row: dict, rate: float, wall: float) -> None:
    row["images_per_s"], row["wall_s"] = max(row["images_per_s"], rate), min(row["wall_s"], wall)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="movqgan-tiny-photos")
    p.add_argument("--data", default=str(IMAGES))
    p.add_argument("--resolution", type=int, default=256)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--workers", type=int, default=default_workers())
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--limit", type=int, help="use the first N images only (a manifest of them)")
    p.add_argument("--repeats", type=int, default=1, help="interleaved repeats; the best of them is reported")
    p.add_argument("--out", help="write the rows as JSON here")
    p.add_argument("--readers", action="store_true", help="compare the source readers (folder, manifest, tar, "
                   "tar.gz, parquet, hf://) on the same images instead")
    args = p.parse_args()

    files = list_image_files(args.data)[: args.limit]
    if args.readers:
        _, model_spec = load_codec(args.model, "cpu")
        compare_readers(args, model_spec, files)
        return
    data = args.data
    if args.limit:
        data = str(SCRATCH / "subset.jsonl")
        Path(data).write_text("".join(json.dumps({"image": str(f)}) + "\n" for f in files))
    codec, model_spec = load_codec(args.model, args.device)
    codec.encode(torch.zeros(1, 3, args.resolution, args.resolution))  # warm-up
    print(f"{len(files)} images from {args.data}, {args.model} at {args.resolution} px on {args.device}, "
          f"{torch.get_num_threads()} torch threads, {torch.backends.cpu.get_cpu_capability()}", file=sys.stderr)
    configs = [("float32", 0), ("float32", args.workers), ("bfloat16", args.workers)]
    rows = [{"method": "plain loop (PIL, codec.encode per image)", "dtype": "float32", "batch": 1, "workers": 0,
             "images_per_s": 0.0, "wall_s": float("inf"), "tokens_equal": 1.0}]
    rows += [{"method": "movq-tokenize", "dtype": d, "batch": args.batch_size, "workers": w, "images_per_s": 0.0,
              "wall_s": float("inf"), "tokens_equal": 0.0} for d, w in configs]
    for repeat in range(args.repeats):  # interleaved, best of the repeats: the machine may be shared
        reference, seconds = plain_loop(codec, files, args.resolution)
        rates = [len(files) / seconds]
        _best(rows[0], rates[0], seconds)
        by_source = {Path(f).relative_to(args.data).as_posix() if not args.limit else str(f): t
                     for f, t in reference.items()}
        for row, (dtype, workers) in zip(rows[1:], configs):
            ds, summary, wall = tokenize(model_spec, data, args.resolution, dtype, args.batch_size, workers, args.device)
            equal = [torch.eq(ds[i]["tokens"], by_source[ds[i]["source"]]).float().mean().item() for i in range(len(ds))]
            row["tokens_equal"] = sum(equal) / len(equal)
            rates.append(summary["run"]["images_per_s"])
            _best(row, rates[-1], wall)
        print(f"repeat {repeat}: images/s " + ", ".join(f"{r['dtype']}/{r['workers']}w {rate:.2f}"
                                                         for r, rate in zip(rows, rates)), file=sys.stderr)
    plain_rate = rows[0]["images_per_s"]
    print("| method | dtype | batch | decode workers | images/s | speed-up | wall s (incl. load) | tokens equal to plain loop |")
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['method']} | {r['dtype']} | {r['batch']} | {r['workers']} | {r['images_per_s']:.2f} | "
              f"{r['images_per_s'] / plain_rate:.2f}x | {r['wall_s']:.1f} | {100 * r['tokens_equal']:.2f}% |")
    if args.out:
        Path(args.out).write_text(json.dumps(rows, indent=2) + "\n")


if __name__ == "__main__":
    try:
        main()
    finally:
        shutil.rmtree(SCRATCH, ignore_errors=True)
