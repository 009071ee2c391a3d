"""Hostile command lines and files for the CLIs (``movq-bench``, ``movq-bench speed``, ``movq-train``,
``movq-tokenize``) and the token folders ``movq-tokenize`` writes.

Each case asserts what the CLIs promise (see ``helpers.judge_cli_error``): one ``PROG: error:`` line,
exit code 2, no traceback, nothing written; or a clean run with the right result.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import zipfile
from collections.abc import Callable
from functools import cache
from pathlib import Path
from typing import Any

import pytest
import torch

import movq
from helpers import (
    NO_GPU,
    NOTHING_RUNS,
    CliRun,
    HostileCases,
    RunsCode,
    Work,
    a_file,
    code_ran,
    describe,
    error_lines,
    expect_cli_error,
    expect_cli_ok,
    expect_error,
    expect_ok,
    folder_with,
    hostile_images,
    hostile_tiny_folder,
    jpeg_bytes,
    judge_cli_error,
    judge_cli_ok,
    movq_internal,
    run_cli,
    run_cli_process,
    short,
    torch_zip,
)

CASES = HostileCases()
add, case = CASES.add, CASES.case


HANG_S = 120
"""Seconds a CLI run that reads a FIFO may take before it counts as hung (a run takes a few seconds)."""
ONE_LINE = "one 'PROG: error:' line, exit 2, nothing written"
_TRUNC = jpeg_bytes((64, 48))  # cut to 100 / 200 bytes: a truncated JPEG


def bench_args(data: Path | None = None, *extra: str, model: str = "movqgan-tiny-photos") -> list[str]:
    return [
        "--model",
        model,
        "--data",
        str(data or hostile_images()),
        "--resolution",
        "16",
        "--metrics",
        "psnr,l1",
        "--no-progress",
        "--device",
        "cpu",
        "--batch-size",
        "4",
        *extra,
    ]


def _bench_error(
    extra: list[str],
    contains: tuple[str, ...] = (),
    data: Callable[[], Path] | None = None,
    model: str = "movqgan-tiny-photos",
) -> Callable[[], tuple[bool, str]]:
    def run() -> tuple[bool, str]:
        out = Work.new("bench")
        outputs = (out / "results.json", out / "report.md")
        args = bench_args(
            data() if data else None, "--out", str(outputs[0]), "--markdown", str(outputs[1]), model=model
        )
        return expect_cli_error("movq-bench", args + extra, contains, no_outputs=outputs)

    return run


for _label, _extra, _cont in (
    ("--threads -1", ["--threads", "-1"], ("threads",)),
    ("--threads 0", ["--threads", "0"], ("threads",)),
    ("--device foo", ["--device", "foo"], ("foo",)),
    ("--device cuda (no GPU here)", ["--device", "cuda"], ("cuda",)),
    ("--device cuda:7", ["--device", "cuda:7"], ("cuda",)),
    ("--device mps", ["--device", "mps"], ("mps",)),
    ("--limit 0", ["--limit", "0"], ("--limit",)),
    ("--limit -1", ["--limit", "-1"], ("--limit",)),
    ("--batch-size 0", ["--batch-size", "0"], ("--batch-size",)),
    ("--resolution 100000", ["--resolution", "100000"], ("GiB",)),
    ("--resolution 12 (not a multiple of 8)", ["--resolution", "12"], ("multiple",)),
    ("--resolution 0", ["--resolution", "0"], ("--resolution",)),
    ("--resolution -16", ["--resolution", "-16"], ("--resolution",)),
    ("--metrics foo", ["--metrics", "foo"], ("foo",)),
    ("--metrics ','", ["--metrics", ","], ("metrics",)),
    ("--metrics ms_ssim at --resolution 16", ["--metrics", "ms_ssim"], ("ms_ssim",)),
    ("--chunk-size 0", ["--chunk-size", "0"], ("chunk",)),
    ("--workers -1", ["--workers", "-1"], ("workers",)),
    (
        "--metrics fid --feature-extractor bogus",
        ["--metrics", "fid", "--feature-extractor", "bogus"],
        ("bogus",),
    ),
    (
        "--metrics fid --inception-weights missing.pth",
        ["--metrics", "fid", "--inception-weights", "/nonexistent/missing.pth"],
        ("missing.pth",),
    ),
    (
        "--metrics lpips --lpips-weights missing.pth",
        ["--metrics", "lpips", "--lpips-weights", "/nonexistent/missing.pth"],
        ("missing.pth",),
    ),
    ("--dtype int8", ["--dtype", "int8"], ("dtype",)),
    ("--resolution abc", ["--resolution", "abc"], ("resolution",)),
):
    add(f"bench {_label}", ONE_LINE, _bench_error(_extra, _cont), marks=NO_GPU if "cuda" in _label else ())
add(
    "bench --model movqgan-tiny-photo (typo)",
    ONE_LINE,
    _bench_error([], ("movqgan-tiny-photo", "did you mean"), model="movqgan-tiny-photo"),
)
add("bench --model given twice", ONE_LINE, _bench_error(["--model", "movqgan-tiny-photos"], ("twice",)))
add(
    "bench --model a preset (no weights)",
    ONE_LINE,
    _bench_error([], ("pretrained",), model="movqgan-tiny"),
)
add(
    "bench --data missing folder",
    ONE_LINE,
    _bench_error([], ("does not exist",), data=lambda: Work.root / "no-such-folder"),
)
add(
    "bench --data empty folder",
    ONE_LINE,
    _bench_error([], ("no image files",), data=lambda: Work.new("empty")),
)
add(
    "bench --data is a file",
    ONE_LINE,
    _bench_error([], ("folder",), data=lambda: sorted(hostile_images().iterdir())[0]),
)


@case(
    "bench --data with a FIFO named x.png and a symlink to /dev/zero named z.jpg",
    "no hang; exit 0 with the 2 photos",
    slow=True,
)
def _bench_special_files() -> tuple[bool, str]:
    data = folder_with({}, good=2)
    os.mkfifo(data / "x.png")
    (data / "z.jpg").symlink_to("/dev/zero")
    out = Work.new("bench") / "r.json"
    return judge_cli_ok(  # in a child process stopped after HANG_S seconds: a read of the FIFO could block
        run_cli_process("movq-bench", bench_args(data, "--out", str(out)), HANG_S),
        set(),
        lambda r: (lambda c: (c is not None and 2 in c, f"image counts {c}"))(_n_images(_results(out))),
    )


add(
    "bench --data only non-image files",
    ONE_LINE,
    _bench_error([], ("no image files",), data=lambda: folder_with({"a.txt": b"x", "b.csv": b"y"})),
)
add(
    "bench --data only unreadable images (no readable image)",
    "exit 2, no results.json / report written",
    _bench_error(
        [],
        ("could be read",),
        data=lambda: folder_with({"cut.jpg": _TRUNC[:100], "empty.png": b"", "text.jpg": b"hello"}),
    ),
)


def _bench_unwritable(
    flag: str, target: Callable[[Path], Path], contains: tuple[str, ...]
) -> Callable[[], tuple[bool, str]]:
    def run() -> tuple[bool, str]:
        out = Work.new("bench")
        path = target(out)
        written = out / "results.json"
        args = bench_args() + [flag, str(path)] + (["--out", str(written)] if flag != "--out" else [])
        return expect_cli_error(
            "movq-bench", args, contains, no_outputs=(written,) if flag != "--out" else ()
        )

    return run


add(
    "bench --out under a file (not a folder)",
    ONE_LINE,
    _bench_unwritable("--out", lambda o: a_file(o) / "results.json", ("--out",)),
)
add("bench --out is an existing folder", ONE_LINE, _bench_unwritable("--out", lambda o: o, ("folder",)))
add(
    "bench --out under /proc (unwritable)",
    ONE_LINE,
    _bench_unwritable("--out", lambda o: Path("/proc/movq/results.json"), ("--out",)),
)
add(
    "bench --markdown under a file",
    ONE_LINE,
    _bench_unwritable("--markdown", lambda o: a_file(o) / "r.md", ("--markdown",)),
)
add("bench --cache is a file", ONE_LINE, _bench_unwritable("--cache", a_file, ("--cache",)))
add(
    "bench --cache under /proc",
    ONE_LINE,
    _bench_unwritable("--cache", lambda o: Path("/proc/movq-cache"), ("--cache",)),
)


def _bench_evil_model(kind: str) -> Callable[[], tuple[bool, str]]:
    def run() -> tuple[bool, str]:
        folder = Work.new("evil")
        path = folder / "model.ckpt"
        torch.save({"state_dict": {"x": RunsCode(Work.marker("bench-model"))}}, path)
        if kind == "inception":
            path = folder / "pt_inception.pth"
            torch.save({"x": RunsCode(Work.marker("bench-inception"))}, path)
            return _bench_error(
                ["--metrics", "fid", "--inception-weights", str(path)], ("pt_inception.pth",)
            )()
        if kind == "lpips":
            path = folder / "lpips.pth"
            torch.save({"x": RunsCode(Work.marker("bench-lpips"))}, path)
            return _bench_error(["--metrics", "lpips", "--lpips-weights", str(path)], ("lpips.pth",))()
        return _bench_error([], ("model.ckpt",), model=str(path))()

    return run


add("bench --model Evil checkpoint", NOTHING_RUNS + ", exit 2", _bench_evil_model("model"))
add("bench --inception-weights Evil file", NOTHING_RUNS + ", exit 2", _bench_evil_model("inception"))
add("bench --lpips-weights Evil file", NOTHING_RUNS + ", exit 2", _bench_evil_model("lpips"))
add(
    "bench --lpips-weights garbage file",
    ONE_LINE,
    lambda: (
        lambda p: (
            p.write_bytes(os.urandom(300)),
            _bench_error(["--metrics", "lpips", "--lpips-weights", str(p)], ("garbage.pth",))(),
        )[1]
    )(Work.new("bad") / "garbage.pth"),
)
add(
    "bench --inception-weights garbage file",
    ONE_LINE,
    lambda: (
        lambda p: (
            p.write_bytes(os.urandom(300)),
            _bench_error(["--metrics", "fid", "--inception-weights", str(p)], ("garbage.pth",))(),
        )[1]
    )(Work.new("bad") / "garbage.pth"),
)


def _results(out: Path) -> dict:
    return json.loads(out.read_text())


def _n_images(result: dict) -> Any:
    text = json.dumps(result)
    for key in ("n_images", "images", "count"):
        if f'"{key}"' in text:
            found = []

            def walk(x: Any) -> None:
                if isinstance(x, dict):
                    for k, v in x.items():
                        if k == key and isinstance(v, (int, float)):
                            found.append(v)
                        walk(v)
                elif isinstance(x, list):
                    for v in x:
                        walk(v)

            walk(result)
            if found:
                return found
    return None


add(
    "bench --inception-weights a corrupt TorchScript archive",
    ONE_LINE,
    lambda: (
        lambda p: (
            p.write_bytes(torch_zip(b"garbage", {})),
            zipfile.ZipFile(p, "a").writestr("archive/constants.pkl", b"junk"),
            _bench_error(["--metrics", "fid", "--inception-weights", str(p)], ("script.pt",))(),
        )[2]
    )(Work.new("bad") / "script.pt"),
)


@case(
    "bench: 2 good + 2 unreadable images",
    "exit 0; 2 images measured; 2 skipped files listed with reasons",
)
def _bench_mixed() -> tuple[bool, str]:
    data = folder_with({"cut.jpg": _TRUNC[:200], "text.png": b"not png"}, good=2)
    out = Work.new("bench") / "results.json"

    def check(run: CliRun) -> tuple[bool, str]:
        result = _results(out)
        skipped = result.get("skipped") or result.get("skipped_files") or []
        counts = _n_images(result)
        ok = len(skipped) == 2 and counts is not None and 2 in counts and 4 not in counts
        return (
            ok,
            f"skipped {len(skipped)} ({', '.join(s.get('path', '?') for s in skipped)}), image counts {counts}",
        )

    return expect_cli_ok("movq-bench", bench_args(data, "--out", str(out)), check)


@case("bench --limit 1 on 4 images", "exit 0; exactly 1 image measured")
def _bench_limit() -> tuple[bool, str]:
    out = Work.new("bench") / "results.json"
    return expect_cli_ok(
        "movq-bench",
        bench_args(None, "--limit", "1", "--out", str(out)),
        lambda run: (lambda c: (c is not None and set(c) == {1}, f"image counts {c}"))(
            _n_images(_results(out))
        ),
    )


def _bench_cache_case(damage: str) -> Callable[[], tuple[bool, str]]:
    def run() -> tuple[bool, str]:
        work = Work.new("bench-cache")
        cache_dir, first, second = work / "cache", work / "first.json", work / "second.json"
        args = bench_args(None, "--cache", str(cache_dir), "--chunk-size", "4")
        one = run_cli("movq-bench", args + ["--out", str(first)])
        if one.rc != 0:
            return False, f"first run failed: {short(one.err, 100)}"
        shards = sorted(cache_dir.rglob("shard*.pt"))
        if not shards:
            return False, "no shard file written by the first run"
        for shard in shards:
            if damage == "evil":
                torch.save({"done": [0], "stats": RunsCode(Work.marker("cache")), "skipped": []}, shard)
            elif damage == "garbage":
                shard.write_bytes(os.urandom(200))
            elif damage == "wrong":
                torch.save({"done": [0], "stats": {"nope": 1}, "skipped": []}, shard)

        def check(r: CliRun) -> tuple[bool, str]:
            a, b = _results(first), _results(second)
            def strip(d: dict) -> dict:
                return {k: v for k, v in d.items() if k not in ("timing", "throughput", "elapsed_s", "date", "created", "run")}

            same = json.dumps(strip(a).get("results", strip(a)), sort_keys=True) == json.dumps(
                strip(b).get("results", strip(b)), sort_keys=True
            )
            return same, "same results as the first run" if same else "results differ from the first run"

        return expect_cli_ok("movq-bench", args + ["--out", str(second)], check)

    return run


add(
    "bench --cache: shard file replaced by an Evil pickle",
    "marker never created; recomputed; same results",
    _bench_cache_case("evil"),
)
add(
    "bench --cache: shard file replaced by garbage",
    "recomputed; same results",
    _bench_cache_case("garbage"),
)


def speed_args(out: Path, model: str = "movqgan-tiny-photos", *extra: str) -> list[str]:
    """``movq-bench speed`` on a tiny problem: 16 px, batch 2, one timed iteration, CPU, rows to ``out``."""
    fixed = "--resolution 16 --batch-size 2 --iters 1 --warmup 0 --device cpu".split()
    return ["speed", "--model", model, *fixed, "--out", str(out), *extra]


def _speed_error(
    extra: list[str], contains: tuple[str, ...] = (), model: str = "movqgan-tiny-photos"
) -> Callable[[], tuple[bool, str]]:
    def run() -> tuple[bool, str]:
        out = Work.new("speed") / "speed.json"
        return expect_cli_error("movq-bench speed", speed_args(out, model, *extra), contains, no_outputs=(out,))

    return run


for _label, _extra, _cont in (
    ("--iters 0", ["--iters", "0"], ("--iters",)),
    ("--warmup -1", ["--warmup", "-1"], ("--warmup",)),
    ("--batch-size 0", ["--batch-size", "0"], ("--batch-size",)),
    ("--resolution 100000", ["--resolution", "100000"], ("GiB",)),
    ("--resolution 12", ["--resolution", "12"], ("multiple",)),
    ("--threads -1", ["--threads", "-1"], ("--threads",)),
    ("--device foo", ["--device", "foo"], ("foo",)),
    ("--device cuda", ["--device", "cuda"], ("cuda",)),
    ("--dtype bogus", ["--dtype", "bogus"], ("dtype",)),
):
    add(f"speed {_label}", ONE_LINE, _speed_error(_extra, _cont), marks=NO_GPU if "cuda" in _label else ())
add("speed --model unknown", ONE_LINE, _speed_error([], ("did you mean",), model="movqgan-tiny-photo"))
add(
    "speed --out under a file",
    ONE_LINE,
    lambda: (
        lambda o: expect_cli_error(
            "movq-bench speed",
            [
                "speed",
                "--model",
                "movqgan-tiny-photos",
                "--resolution",
                "16",
                "--iters",
                "1",
                "--out",
                str(a_file(o) / "s.json"),
            ],
            ("--out",),
        )
    )(Work.new("speed")),
)


@case("speed: valid tiny run", "exit 0, a table and the JSON rows")
def _speed_ok() -> tuple[bool, str]:
    out = Work.new("speed") / "speed.json"
    return expect_cli_ok(
        "movq-bench",
        speed_args(out),
        lambda r: (
            out.is_file() and "img/s" in r.out,
            f"wrote {out.name}, {len(json.loads(out.read_text()))} row(s)",
        ),
    )


# ---- movq-train

TRAIN_CODEC = json.dumps(
    {"ch_mult": [1, 2], "attn_resolutions": [], "quantizer": {"kind": "vq", "codebook_size": 64}}
)


def train_args(out: Path, data: Path | None = None, *extra: str) -> list[str]:
    return [
        "--data",
        str(data or hostile_images()),
        "--out",
        str(out),
        "--preset",
        "movqgan-tiny",
        "--codec",
        TRAIN_CODEC,
        "--resolution",
        "16",
        "--batch-size",
        "2",
        "--max-steps",
        "2",
        "--save-every",
        "1",
        "--log-every",
        "1",
        "--num-workers",
        "0",
        "--perceptual-net",
        "none",
        "--no-progress",
        "--device",
        "cpu",
        "--disc-start",
        "1000",
        "--disc-ndf",
        "8",
        "--disc-layers",
        "2",
        "--image-every",
        "1000",
        "--warmup-steps",
        "1",
        *extra,
    ]


def _run_outputs(out: Path) -> tuple[Path, ...]:
    return (out / "checkpoints", out / "log.csv", out / "model.safetensors", out / "config.json")


def _train_error(
    extra: list[str],
    contains: tuple[str, ...] = (),
    data: Callable[[], Path] | None = None,
    replace: dict[str, str] | None = None,
) -> Callable[[], tuple[bool, str]]:
    def run() -> tuple[bool, str]:
        out = Work.new("train")
        args = train_args(out, data() if data else None)
        for flag, value in (replace or {}).items():
            i = args.index(flag)
            if value is None:
                del args[i : i + 2]
            else:
                args[i + 1] = value
        return expect_cli_error("movq-train", args + extra, contains, no_outputs=_run_outputs(out))

    return run


for _label, _extra, _cont in (
    ("--batch-size 0", ["--batch-size", "0"], ("--batch-size",)),
    ("--max-steps 0", ["--max-steps", "0"], ("--max-steps",)),
    ("--save-every 0", ["--save-every", "0"], ("--save-every",)),
    ("--keep-last 0", ["--keep-last", "0"], ("--keep-last",)),
    ("--num-workers -1", ["--num-workers", "-1"], ("--num-workers",)),
    ("--grad-accum 0", ["--grad-accum", "0"], ("--grad-accum",)),
    ("--ema-decay 1.5", ["--ema-decay", "1.5"], ("--ema-decay",)),
    ("--lr nan", ["--lr", "nan"], ("lr",)),
    ("--lr -1", ["--lr", "-1"], ("lr",)),
    ("--amp fp8", ["--amp", "fp8"], ("amp",)),
    ("--device foo", ["--device", "foo"], ("foo",)),
    ("--device cuda (no GPU)", ["--device", "cuda"], ("cuda",)),
    ("--resolution 100000", ["--resolution", "100000"], ("GiB",)),
    ("--batch-size 5 with 4 images", ["--batch-size", "5"], ("batch_size",)),
    ("--crop-ratio 0 1", ["--crop-ratio", "0", "1"], ("crop_ratio",)),
    ("--crop-scale -1 1", ["--crop-scale", "-1", "1"], ("crop_scale",)),
    ("--preset movqgan-tin", ["--preset", "movqgan-tin"], ("did you mean",)),
    ("--codec '{\"ch\": 33}'", ["--codec", '{"ch": 33}'], ("ch",)),
    ("--codec 'notjson'", ["--codec", "notjson"], ("codec",)),
    ("--codec '[1, 2]'", ["--codec", "[1, 2]"], ("codec",)),
    ("--init movqgan-tiny-photo (typo)", ["--init", "movqgan-tiny-photo"], ("did you mean",)),
    ("--init with --codec", ["--init", "movqgan-tiny-photos"], ("--init",)),
    (
        "--perceptual-net vgg --perceptual-weights missing.pth",
        ["--perceptual-net", "vgg", "--perceptual-weights", "/nonexistent/missing.pth"],
        ("missing.pth",),
    ),
    ("--disc-norm layer", ["--disc-norm", "layer"], ("--disc-norm",)),
    ("--warmup-steps -5", ["--warmup-steps", "-5"], ("warmup",)),
):
    add(f"train {_label}", ONE_LINE, _train_error(_extra, _cont), marks=NO_GPU if "cuda" in _label else ())
add("train without --data", ONE_LINE, _train_error([], ("--data",), replace={"--data": None}))
add(
    "train --data missing folder",
    ONE_LINE,
    _train_error([], ("does not exist",), data=lambda: Work.root / "no-such"),
)
add(
    "train --data empty folder",
    ONE_LINE,
    _train_error([], ("no image files",), data=lambda: Work.new("empty")),
)
add(
    "train --data only unreadable images",
    ONE_LINE,
    _train_error(
        [],
        ("could be",),
        data=lambda: folder_with(
            {"a.jpg": _TRUNC[:100], "b.png": b"", "c.jpg": b"text", "d.jpg": b"\xff\xd8"}
        ),
    ),
)
add(
    "train --out is a file",
    ONE_LINE,
    lambda: (lambda w: expect_cli_error("movq-train", train_args(a_file(w)), ("--out",)))(Work.new("train")),
)
add(
    "train --out under /proc",
    ONE_LINE,
    lambda: expect_cli_error("movq-train", train_args(Path("/proc/movq-run")), ("--out",)),
)


def _train_config_file(name: str, text: str, contains: tuple[str, ...]) -> Callable[[], tuple[bool, str]]:
    def run() -> tuple[bool, str]:
        work = Work.new("train")
        path = work / name
        path.write_text(text)
        return expect_cli_error(
            "movq-train",
            ["--config", str(path), "--out", str(work / "out")],
            contains,
            no_outputs=_run_outputs(work / "out"),
        )

    return run


add(
    "train --config missing.json",
    ONE_LINE,
    lambda: expect_cli_error("movq-train", ["--config", "/nonexistent/run.json"], ("run.json",)),
)
add("train --config with invalid JSON", ONE_LINE, _train_config_file("run.json", "{nope", ("run.json",)))
add(
    "train --config holding a JSON list",
    ONE_LINE,
    _train_config_file("run.json", "[1, 2]", ("run.json",)),
)
add(
    "train --config with invalid TOML",
    ONE_LINE,
    _train_config_file("run.toml", "lr = = 3", ("run.toml",)),
)
add(
    "train --config with an unknown field",
    ONE_LINE,
    _train_config_file("run.json", '{"lrr": 0.1}', ("lrr", "did you mean")),
)


def _train_evil(flag: str) -> Callable[[], tuple[bool, str]]:
    def run() -> tuple[bool, str]:
        work = Work.new("train")
        path = work / ("init.ckpt" if flag == "--init" else "lpips.pth")
        torch.save({"state_dict": {"x": RunsCode(Work.marker("train" + flag))}}, path)
        extra = [flag, str(path)] + (["--perceptual-net", "alex"] if flag != "--init" else [])
        args = train_args(work / "out") + extra
        if flag == "--init":
            i = args.index("--codec")
            del args[i : i + 2]
        return expect_cli_error("movq-train", args, (path.name,), no_outputs=_run_outputs(work / "out"))

    return run


add(
    "train --perceptual-weights Evil file", NOTHING_RUNS + ", exit 2", _train_evil("--perceptual-weights")
)
add(
    "train --perceptual-weights garbage file",
    ONE_LINE,
    lambda: (
        lambda w: (
            (w / "lp.pth").write_bytes(os.urandom(100)),
            expect_cli_error(
                "movq-train",
                train_args(w / "out")
                + ["--perceptual-net", "alex", "--perceptual-weights", str(w / "lp.pth")],
                ("lp.pth",),
                no_outputs=_run_outputs(w / "out"),
            ),
        )[1]
    )(Work.new("train")),
)


@cache
def base_run() -> Path:
    """A finished 2-step run with checkpoints step-1 and step-2 (copied by every resume case)."""
    out = Work.shared / "run"
    run = run_cli("movq-train", train_args(out))
    if run.rc != 0:
        raise RuntimeError(f"the base training run failed: {run.err[-2000:]}")
    return out


def resumed_copy() -> Path:
    out = Work.new("resume") / "run"
    shutil.copytree(base_run(), out, symlinks=True)
    return out


@case("train: valid 2-step run", "exit 0; checkpoints step-1, step-2; log.csv; movq.load(OUT) works")
def _train_ok() -> tuple[bool, str]:
    out = base_run()
    steps = sorted(p.name for p in (out / "checkpoints").iterdir())
    rows = (out / "log.csv").read_text().strip().splitlines()
    return expect_ok(
        lambda: movq.load(out),
        lambda c: (
            steps == ["step-00000001", "step-00000002"] and len(rows) == 3,
            f"{steps}, {len(rows) - 1} log rows, load(OUT) -> {describe(c)}",
        ),
    )


def _resume(
    prepare: Callable[[Path], None], extra: list[str], expect: str, contains: tuple[str, ...] = ()
) -> Callable[[], tuple[bool, str]]:
    def run() -> tuple[bool, str]:
        out = resumed_copy()
        prepare(out)
        args = train_args(out, None, "--resume", "--max-steps", "3") + extra
        if expect == "error":
            return expect_cli_error("movq-train", args, contains)
        if expect == "either":  # a fallback (exit 0, warned) or a one-line refusal (exit 2) are both fine
            before = set(code_ran())
            first = run_cli("movq-train", args)
            if first.rc != 0:
                return judge_cli_error("movq-train", first, before, contains)

        def check(r: CliRun) -> tuple[bool, str]:
            warned = all(c.lower() in r.err.lower() for c in contains)
            final = sorted(p.name for p in (out / "checkpoints").iterdir())
            ok = warned and "step-00000003" in final
            return (
                ok,
                f"{'warned' if warned else 'NO warning'}; checkpoints now {final}; {short(r.out.strip().splitlines()[-1] if r.out.strip() else '', 60)}",
            )

        if expect == "either":
            return judge_cli_ok(first, before, check)
        return expect_cli_ok("movq-train", args, check)

    return run


def _newest_state(out: Path) -> Path:
    return out / "checkpoints" / "step-00000002" / "state.pt"


def _write(path: Path, data: bytes | Callable[[Path], Any]) -> None:
    if callable(data):
        data(path)
    else:
        path.write_bytes(data)


add(
    "train --resume: newest state.pt is garbage",
    "warning, falls back to step-1, exit 0",
    _resume(lambda o: _write(_newest_state(o), os.urandom(500)), [], "ok", ("skipping damaged checkpoint",)),
)
add(
    "train --resume: newest state.pt truncated",
    "warning, falls back to step-1, exit 0",
    _resume(
        lambda o: _write(_newest_state(o), _newest_state(o).read_bytes()[:1000]),
        [],
        "ok",
        ("skipping damaged checkpoint",),
    ),
)
add(
    "train --resume: newest state.pt is an Evil pickle",
    "marker never created; warning; falls back; exit 0",
    _resume(
        lambda o: _write(
            _newest_state(o), lambda p: torch.save({"step": 2, "x": RunsCode(Work.marker("resume"))}, p)
        ),
        [],
        "ok",
        ("skipping damaged checkpoint",),
    ),
)
add(
    "train --resume: newest state.pt a valid pickle missing keys ({'step': 2})",
    "warning and fall back (or one-line error)",
    _resume(
        lambda o: _write(_newest_state(o), lambda p: torch.save({"step": 2}, p)), [], "ok", ("step-00000002",)
    ),
)
add(
    "train --resume: newest state.pt holds a list",
    "warning, falls back, exit 0",
    _resume(
        lambda o: _write(_newest_state(o), lambda p: torch.save([1, 2], p)),
        [],
        "ok",
        ("skipping damaged checkpoint",),
    ),
)
add(
    "train --resume: every state.pt garbage",
    ONE_LINE + " (names the files)",
    _resume(
        lambda o: [(_write(p, b"junk")) for p in (o / "checkpoints").rglob("state.pt")],
        [],
        "error",
        ("state.pt",),
    ),
)


def _swap_arch(out: Path) -> None:
    state = torch.load(_newest_state(out), weights_only=True)
    state.pop("codec_config", None)
    state["model"] = {
        k: (torch.zeros(7) if k == "encoder.conv_in.weight" else v) for k, v in state["model"].items()
    }
    torch.save(state, _newest_state(out))


add(
    "train --resume --max-steps 1 (below the saved step 2)",
    ONE_LINE,
    lambda: expect_cli_error(
        "movq-train", train_args(resumed_copy(), None, "--resume", "--max-steps", "1"), ("--max-steps",)
    ),
)
add(
    "train --resume with a changed --codec",
    ONE_LINE,
    lambda: (
        lambda out: expect_cli_error(
            "movq-train",
            [
                a
                if a != TRAIN_CODEC
                else json.dumps(
                    {
                        "ch_mult": [1, 2],
                        "attn_resolutions": [],
                        "quantizer": {"kind": "vq", "codebook_size": 32},
                    }
                )
                for a in train_args(out, None, "--resume", "--max-steps", "3")
            ],
            ("codebook_size",),
        )
    )(resumed_copy()),
)
add(
    "train --resume: garbage log.csv",
    "warning, log moved aside, exit 0",
    _resume(lambda o: (o / "log.csv").write_bytes(b"\x00\xffnot,a,csv\n1,2\n"), [], "ok", ("log.csv",)),
)
add(
    "train --resume: newest train_config.json garbage",
    "falls back to the other saved config, exit 0",
    _resume(
        lambda o: (o / "checkpoints" / "step-00000002" / "train_config.json").write_text("{nope"), [], "ok"
    ),
)
add(
    "train --resume on an empty --out",
    "starts from scratch and says so, exit 0",
    lambda: (
        lambda out: expect_cli_ok(
            "movq-train",
            train_args(out, None, "--resume"),
            lambda r: ("from scratch" in r.out, short(r.out.strip().splitlines()[0], 90)),
        )
    )(Work.new("resume") / "fresh"),
)
add(
    "train --resume when already at --max-steps",
    "exit 0, nothing new trained",
    lambda: (
        lambda out: expect_cli_ok(
            "movq-train",
            train_args(out, None, "--resume"),
            lambda r: (
                sorted(p.name for p in (out / "checkpoints").iterdir()) == ["step-00000001", "step-00000002"],
                short(r.out.strip().splitlines()[-1], 90),
            ),
        )
    )(resumed_copy()),
)


# ---- movq-tokenize and TokenDataset



def tok_args(data: Path | str, out: Path, *extra: str) -> list[str]:
    return [
        "--model",
        str(hostile_tiny_folder()),
        "--data",
        str(data),
        "--out",
        str(out),
        "--resolution",
        "16",
        "--num-workers",
        "0",
        "--no-progress",
        "--device",
        "cpu",
        "--batch-size",
        "2",
        *extra,
    ]


def _tok_error(
    extra: list[str],
    contains: tuple[str, ...] = (),
    data: Callable[[], Path | str] | None = None,
    out: Callable[[Path], Path] | None = None,
) -> Callable[[], tuple[bool, str]]:
    def run() -> tuple[bool, str]:
        work = Work.new("tok")
        target = out(work) if out else work / "out"
        outputs = (target / "index.jsonl", target / "shards") if out is None else ()
        return expect_cli_error(
            "movq-tokenize", tok_args(data() if data else hostile_images(), target, *extra), contains, outputs
        )

    return run


def _manifest(name: str, text: str | bytes) -> Callable[[], Path]:
    def make() -> Path:
        path = Work.new("manifest") / name
        if isinstance(text, bytes):
            path.write_bytes(text)
        else:
            path.write_text(text.replace("GOOD", str(sorted(hostile_images().iterdir())[0])))
        return path

    return make


for _label, _extra, _cont in (
    ("--batch-size 0", ["--batch-size", "0"], ("--batch-size",)),
    ("--shard-size 0", ["--shard-size", "0"], ("--shard-size",)),
    ("--resolution 0", ["--resolution", "0"], ("--resolution",)),
    ("--resolution 15 (not a multiple of f=2)", ["--resolution", "15"], ("multiple",)),
    ("--resolution 100000", ["--resolution", "100000"], ("GiB",)),
    ("--num-workers -1", ["--num-workers", "-1"], ("--num-workers",)),
    ("--threads 0", ["--threads", "0"], ("--threads",)),
    ("--device foo", ["--device", "foo"], ("foo",)),
    ("--device cuda (no GPU)", ["--device", "cuda"], ("cuda",)),
    ("--dtype bogus", ["--dtype", "bogus"], ("dtype",)),
    ("--model movqgan-tiny-photo (typo)", ["--model", "movqgan-tiny-photo"], ("did you mean",)),
):
    add(f"tokenize {_label}", ONE_LINE, _tok_error(_extra, _cont), marks=NO_GPU if "cuda" in _label else ())
add(
    "tokenize --model Evil checkpoint",
    NOTHING_RUNS + ", exit 2",
    lambda: (
        lambda p: (
            torch.save({"state_dict": {"x": RunsCode(Work.marker("tok"))}}, p),
            _tok_error(["--model", str(p)], ("model.ckpt",))(),
        )[1]
    )(Work.new("evil") / "model.ckpt"),
)
for _label, _data, _cont in (
    ("--data missing", lambda: Work.root / "no-such", ("does not exist",)),
    ("--data empty folder", lambda: Work.new("empty"), ("no image files",)),
    ("--data a .txt file", _manifest("list.txt", "GOOD\n"), ("list.txt",)),
    ("--data a glob matching nothing", lambda: str(Work.root / "nothing-*.tar"), ("no files match",)),
    ("--data a garbage .tar", _manifest("shard.tar", os.urandom(2048)), ("shard.tar",)),
    (
        "--data a compressed .tar.gz",
        lambda: (lambda d: (__import__("tarfile").open(d / "s.tar.gz", "w:gz").close(), d / "s.tar.gz")[1])(
            Work.new("tar")
        ),
        ("s.tar.gz",),
    ),
    (
        "--data a .tar without images",
        lambda: (lambda d: (_make_tar(d / "s.tar", {"a.txt": b"hi"}), d / "s.tar")[1])(Work.new("tar")),
        ("no image samples",),
    ),
    ("manifest .jsonl with invalid JSON", _manifest("m.jsonl", "{nope\n"), ("m.jsonl", "line 1")),
    ("manifest .jsonl line is a list", _manifest("m.jsonl", "[1, 2]\n"), ("m.jsonl", "line 1")),
    ("manifest .jsonl row without 'image'", _manifest("m.jsonl", '{"caption": "x"}\n'), ("m.jsonl", "image")),
    ("empty manifest", _manifest("m.jsonl", ""), ("m.jsonl",)),
    (
        "manifest .csv without an 'image' column",
        _manifest("m.csv", "path,caption\nGOOD,x\n"),
        ("m.csv", "image"),
    ),
):
    add(f"tokenize {_label}", ONE_LINE, _tok_error([], _cont, data=_data))


def _make_tar(path: Path, members: dict[str, bytes]) -> None:
    import tarfile

    with tarfile.open(path, "w") as archive:
        for name, content in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(content)
            archive.addfile(info, io.BytesIO(content))


for _label, _prepare, _cont in (
    ("a file", lambda w: a_file(w), ("--out",)),
    ("under /proc", lambda w: Path("/proc/movq-tok"), ("--out",)),
    (
        "holding invalid meta.json",
        lambda w: (lambda o: (o.mkdir(), (o / "meta.json").write_text("{nope"), o)[2])(w / "o"),
        ("meta.json",),
    ),
    (
        "holding another run's meta.json",
        lambda w: (
            lambda o: (
                o.mkdir(),
                (o / "meta.json").write_text(
                    json.dumps(
                        {
                            "format": "movq-tokenize/1",
                            "config_hash": "x",
                            "weights_hash": "y",
                            "model": "other",
                        }
                    )
                ),
                o,
            )[2]
        )(w / "o"),
        ("another model",),
    ),
    (
        "holding shards but no meta.json",
        lambda w: (
            lambda o: (
                (o / "shards").mkdir(parents=True),
                (o / "shards" / "shard-000000.safetensors").write_bytes(b"x"),
                o,
            )[2]
        )(w / "o"),
        ("meta.json",),
    ),
):
    add(f"tokenize --out {_label}", ONE_LINE, _tok_error([], _cont, out=_prepare))


def _tok_ok(
    data: Path, check: Callable[[Path, CliRun], tuple[bool, str]], fifo: bool = False
) -> tuple[bool, str]:
    """movq-tokenize DATA: exit 0 and ``check(out, run)``; with ``fifo`` (a read could block) in a child
    process that is stopped after :data:`HANG_S` seconds."""
    out = Work.new("tok") / "out"
    if not fifo:
        return expect_cli_ok("movq-tokenize", tok_args(data, out), lambda r: check(out, r))
    return judge_cli_ok(run_cli_process("movq-tokenize", tok_args(data, out), HANG_S), set(), lambda r: check(out, r))


def _counts(out: Path) -> tuple[int, int]:
    index = (out / "index.jsonl").read_text().splitlines()
    skipped = (out / "skipped.jsonl").read_text().splitlines()
    return len(index), len(skipped)


def _skip_reasons(out: Path) -> str:
    return (out / "skipped.jsonl").read_text()


@case(
    "tokenize: manifest naming /dev/zero, /etc/passwd, a missing file and a photo",
    "exit 0; 1 image; 3 skipped with reasons",
)
def _tok_manifest_odd() -> tuple[bool, str]:
    m = _manifest(
        "m.jsonl",
        "".join(
            json.dumps({"image": p}) + "\n" for p in ("/dev/zero", "/etc/passwd", "/nonexistent.png", "GOOD")
        ),
    )()
    return _tok_ok(
        m, lambda out, r: (lambda n: (n == (1, 3), f"{n[0]} stored, {n[1]} skipped"))(_counts(out))
    )


@case("tokenize: manifest naming a FIFO", "exit 0, the FIFO skipped, no hang", slow=True)
def _tok_manifest_fifo() -> tuple[bool, str]:
    folder = Work.new("fifo")
    os.mkfifo(folder / "pipe.png")
    m = _manifest(
        "m.jsonl",
        json.dumps({"image": str(folder / "pipe.png")}) + "\n" + json.dumps({"image": "GOOD"}) + "\n",
    )()
    return _tok_ok(
        m,
        lambda out, r: (lambda n: (n == (1, 1), f"{n[0]} stored, {n[1]} skipped"))(_counts(out)),
        fifo=True,
    )


@case("tokenize: image folder whose caption photo0.txt is a FIFO", "exit 0, that image skipped naming the FIFO, no hang",
      slow=True)
def _tok_caption_fifo() -> tuple[bool, str]:
    data = folder_with({}, good=2)
    os.mkfifo(data / "photo0.txt")
    return _tok_ok(
        data,
        lambda out, r: (lambda n: (n == (1, 1) and "photo0.txt is not a regular file" in _skip_reasons(out),
                                   f"{n[0]} stored, {n[1]} skipped"))(_counts(out)),
        fifo=True,
    )




@case("tokenize: every image unreadable", "exit non-zero (nothing tokenized), or exit 0 saying 0 images")
def _tok_all_bad() -> tuple[bool, str]:
    data = folder_with({"a.jpg": b"junk", "b.png": b""})
    out = Work.new("tok") / "out"
    run = run_cli("movq-tokenize", tok_args(data, out))
    last = (error_lines(run) or [""])[-1]
    if run.error is not None:
        return False, f"raw traceback: {type(run.error).__name__}: {short(str(run.error), 80)}"
    if run.rc == 2:
        return True, f"rc=2: {short(last, 90)}"
    return (
        "0 images" in run.out,
        f"rc={run.rc}: {short(run.out.strip().splitlines()[0] if run.out.strip() else '', 90)}",
    )


@cache
def token_folder() -> Path:
    out = Work.shared / "tokens"
    run = run_cli("movq-tokenize", tok_args(hostile_images(), out))
    if run.rc != 0:
        raise RuntimeError(f"tokenize fixture failed: {run.err[-1000:]}")
    return out


def _dataset_case(
    damage: Callable[[Path], None], contains: tuple[str, ...], access: bool = False
) -> Callable[[], tuple[bool, str]]:
    def run() -> tuple[bool, str]:
        TokenDataset = movq_internal("TokenDataset")

        out = Work.new("ds") / "tokens"
        shutil.copytree(token_folder(), out)
        damage(out)
        return expect_error(
            lambda: (
                [TokenDataset(out)[i] for i in range(len(TokenDataset(out)))] if access else TokenDataset(out)
            ),
            (ValueError, FileNotFoundError, IndexError),
            contains=contains,
        )

    return run


add(
    "TokenDataset: valid folder",
    "every item readable",
    lambda: expect_ok(
        lambda: [
            movq_internal("TokenDataset")(token_folder())[i]["tokens"].shape
            for i in range(4)
        ],
        lambda r: (len(r) == 4 and all(tuple(s) == (8, 8) for s in r), f"4 items, tokens {tuple(r[0])}"),
    ),
)
def _rewrite_shard0(out: Path, values: Callable[[torch.Tensor], torch.Tensor] | None = None, run: str | None = None) -> None:
    """Replace shard 0's data file by ``values(its tensor)`` and / or stamp it with another run id."""
    from safetensors import safe_open
    from safetensors.torch import save_file

    path = out / "shards" / "shard-000000.safetensors"
    with safe_open(str(path), framework="pt") as f:
        key, metadata = next(iter(f.keys())), f.metadata()
        old = f.get_tensor(key)
    if run is not None:
        metadata = {"movq": json.dumps({"run": run, "shard": 0})}
    save_file({key: old if values is None else values(old).contiguous()}, str(path), metadata=metadata)


for _label, _damage, _cont, _access in (
    ("shard 0 of another run (same shape)", lambda o: _rewrite_shard0(o, run="0123456789abcdef"),
     ("shard-000000", "0123456789abcdef"), True),
    ("token ids beyond the codebook", lambda o: _rewrite_shard0(o, lambda t: torch.full_like(t, torch.iinfo(t.dtype).max)),
     ("shard-000000", "codebook_size"), True),
    ("float tokens", lambda o: _rewrite_shard0(o, lambda t: t.float() / 3), ("shard-000000", "float32 tokens"), True),
    ("index.jsonl cut at a line boundary",
     lambda o: (o / "index.jsonl").write_text((o / "index.jsonl").read_text().splitlines(keepends=True)[0]),
     ("index.jsonl", "summary.json"), False),
    ("meta.json is a list", lambda o: (o / "meta.json").write_text("[1]"), ("meta.json",), False),
    (
        "index.jsonl not UTF-8",
        lambda o: (o / "index.jsonl").write_bytes(b"\xff\xfe\n"),
        ("index.jsonl",),
        False,
    ),
    ("index.jsonl missing", lambda o: (o / "index.jsonl").unlink(), ("index.jsonl",), False),
    (
        "shard file is a pickle",
        lambda o: torch.save({"x": RunsCode(Work.marker("shard"))}, o / "shards" / "shard-000000.safetensors"),
        ("shard-000000",),
        True,
    ),
    (
        "index naming a missing shard",
        lambda o: (o / "index.jsonl").write_text(  # as many rows as summary.json records, the first naming shard 7
            '{"source": "a", "caption": null, "shard": 7, "offset": 0}\n'
            + "".join((o / "index.jsonl").read_text().splitlines(keepends=True)[1:])
        ),
        ("shard-000007",),
        True,
    ),
):
    add(
        f"TokenDataset: {_label}",
        "ValueError / FileNotFoundError naming the file",
        _dataset_case(_damage, _cont, _access),
    )



# ---- silent wrong results


@case("bench results.json holds finite numbers", "no NaN / inf")
def _bench_numbers() -> tuple[bool, str]:
    out = Work.new("bench") / "r.json"
    return expect_cli_ok(
        "movq-bench",
        bench_args(None, "--out", str(out)),
        lambda r: (
            "nan" not in out.read_text().lower() and "inf" not in out.read_text().lower(),
            "no NaN/inf in results.json",
        ),
    )


@case(
    "train: --max-steps 2 really trains (weights change, 2 log rows)",
    "release weights differ from the initialisation",
)
def _train_changes() -> tuple[bool, str]:
    out = base_run()
    torch.manual_seed(0)
    trained = movq.load(out)
    fresh = movq.load(out, pretrained=False)
    return (
        not torch.equal(trained.decoder.conv_out.weight, fresh.decoder.conv_out.weight),
        f"release weights loaded from {out.name}/model.safetensors, differ from a fresh init",
    )


@pytest.mark.parametrize("hostile", CASES.params())
def test_hostile_input(hostile, hostile_work):
    hostile.check()
