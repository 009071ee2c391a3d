"""Sample folders: the images a generator writes for evaluation (``movq-diffusion-sample``,
``movq-t2i-sample``), as PNG files plus one ``.npz`` that openai/guided-diffusion's evaluator reads.

Layout of ``OUT/``::

    samples.json      what was sampled: the command, its settings, the weights' hashes, the run id
    000000.png ...    sample ``i`` as ``{i:06d}.png`` (RGB; more digits past a million samples)
    samples.jsonl     one line per sample, in order: file, index, and its label / class / prompt
    samples.npz       arr_0 uint8 [N, H, W, 3]: the PNGs in index order; arr_1 int64 [N]: the class
                      labels (class-conditional models only), as guided-diffusion's image_sample.py

The work is cut into chunks of ``batch_size`` samples (chunk ``k``: samples ``[k * B, (k + 1) * B)``)
and, under ``torchrun``, chunk ``k`` goes to rank ``k % world_size`` (as ``movq-tokenize`` deals its
shards). Each PNG is written atomically; a chunk is finished when all its PNGs exist, and a rerun of
the same command skips finished chunks and redoes the others whole, so its batches are those of an
uninterrupted run. The generators draw sample ``i``'s noise from its own generator seeded
``seed + i`` (:func:`movq.seeding.sample_generators`), so the images do not depend on how many
processes made them. When every chunk is done, rank 0 writes ``samples.jsonl`` and then
``samples.npz`` (atomically) from the PNGs; ``samples.npz`` is the mark of a finished folder.
Under ``torchrun`` on several machines ``OUT`` must be on a file system every rank sees.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from movq import distributed as dist
from movq.atomic import (
    atomic_write,
    atomic_write_text,
    check_writable_dir,
    remove_stale_temporaries,
    require_regular_file,
)
from movq.bench.npz import IMAGES_KEY, write_images_npz
from movq.strict import ConfigError, NonNegativeInt, PositiveInt, StrictConfig, error_line

SAMPLES_FORMAT = "movq samples v1"
SPEC_NAME, INDEX_NAME, NPZ_NAME = "samples.json", "samples.jsonl", "samples.npz"
LABELS_KEY = "arr_1"
READ_BLOCK = 256
"""PNGs read per block while ``samples.npz`` is assembled (memory stays at one block)."""


def sample_file(index: int, total: int) -> str:
    """The PNG name of sample ``index`` of ``total``: ``000042.png`` (at least six digits)."""
    return f"{index:0{max(6, len(str(max(total - 1, 0))))}d}.png"


def spread_labels(total: int, classes: Sequence[int]) -> list[int]:
    """Labels of ``total`` samples spread evenly over ``classes``: sample ``i`` gets ``classes[i % len(classes)]``
    (every batch mixes the classes; the counts differ by at most one)."""
    return [int(classes[i % len(classes)]) for i in range(total)]


class SampleFolder:
    """The sample folder ``out`` of one sampling run, checked before any sample is drawn.

    ``spec`` is the JSON-able description of the run (command, settings, weights hashes): a folder that
    holds another run's samples is refused with ``ValueError`` naming the settings that differ; one with
    PNGs but no ``samples.json`` too. ``rows[i]`` is what ``samples.jsonl`` records for sample ``i``
    beside its file and index (e.g. ``{"label": 3, "class": "cat"}`` or ``{"prompt": "..."}``);
    ``labels`` (ints, one per sample) become ``arr_1`` of the ``.npz``.
    """

    def __init__(self, out: str | os.PathLike, spec: dict[str, Any], rows: Sequence[dict[str, Any]],
                 batch_size: int, labels: Sequence[int] | None = None) -> None:
        self.out = check_writable_dir(out)
        self.total, self.batch_size = len(rows), int(batch_size)
        if self.total < 1 or self.batch_size < 1:
            raise ValueError(f"a sample folder needs at least one sample and a batch size >= 1, got {self.total} and "
                             f"{self.batch_size}")
        if labels is not None and len(labels) != self.total:
            raise ValueError(f"{len(labels)} labels for {self.total} samples")
        self.rows, self.labels = list(rows), None if labels is None else [int(v) for v in labels]
        body = {"format": SAMPLES_FORMAT, **spec, "total_samples": self.total, "batch_size": self.batch_size,
                "rows": hashlib.sha256(json.dumps(self.rows, sort_keys=True).encode()).hexdigest()}
        self.spec = {**body, "run": hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()[:16]}
        self._check_compatible()

    def _check_compatible(self) -> None:
        path = self.out / SPEC_NAME
        if not path.exists():
            if any(self.out.glob("*.png")):
                raise ValueError(f"--out {self.out} holds PNG files but no {SPEC_NAME}: use an empty folder")
            return
        require_regular_file(path, "it records the run that wrote this sample folder", ValueError)
        try:
            old = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as error:
            raise ValueError(f"--out {self.out}: {SPEC_NAME} is unreadable ({error}): use another folder") from None
        if not isinstance(old, dict) or old.get("format") != SAMPLES_FORMAT:
            raise ValueError(f"--out {self.out} holds something other than a {SAMPLES_FORMAT!r} folder: use another one")
        there, now = _flat(old), _flat(self.spec)
        keys = sorted(k for k in set(there) | set(now) if k not in ("run", "rows"))
        diffs = [f"{k}: {_shown(there.get(k))} there, {_shown(now.get(k))} now" for k in keys if there.get(k) != now.get(k)]
        if not diffs and there.get("rows") != now.get("rows"):
            diffs = ["the samples' labels / prompts differ"]
        if diffs:
            raise ValueError(f"--out {self.out} holds samples of another run ({'; '.join(diffs)}): use another --out "
                             "(or the same settings to resume)")

    # ------------------------------------------------------------------ the plan

    def chunks(self) -> list[range]:
        """Chunk ``k``: sample indices ``[k * batch_size, (k + 1) * batch_size)`` (the last may be shorter)."""
        return [range(lo, min(lo + self.batch_size, self.total)) for lo in range(0, self.total, self.batch_size)]

    def path(self, index: int) -> Path:
        """The PNG file of sample ``index``."""
        return self.out / sample_file(index, self.total)

    def finished(self, chunk: range) -> bool:
        """All PNGs of ``chunk`` exist (each was written atomically, so each is whole)."""
        return all(self.path(i).is_file() for i in chunk)

    @property
    def complete(self) -> bool:
        """``samples.npz`` exists: a previous run of these settings finished."""
        return (self.out / NPZ_NAME).is_file()

    # ------------------------------------------------------------------ the work

    def run(self, ctx: dist.DistContext, generate: Callable[[range], Sequence[Image.Image]], *, prog: str,
            progress: bool = True) -> dict[str, Any]:
        """Draw this rank's unfinished chunks with ``generate(indices) -> PIL images`` (one per index, in
        order), write them, and on rank 0 assemble ``samples.jsonl`` / ``samples.npz`` after every rank
        is done. Returns the summary (complete on rank 0): counts, seconds, processes, image size."""
        if ctx.is_main:
            atomic_write_text(self.out / SPEC_NAME, json.dumps(self.spec, indent=2) + "\n")
            remove_stale_temporaries(self.out)  # left by a killed run; no process writes before the barrier
        dist.barrier(ctx)
        chunks = self.chunks()
        mine = [c for k, c in enumerate(chunks) if k % ctx.world_size == ctx.rank]
        todo = [c for c in mine if not self.finished(c)]
        skipped = sum(dist.gather_objects(len(mine) - len(todo), ctx))
        if ctx.is_main and skipped:
            print(f"{prog}: {skipped} of {len(chunks)} chunks already finished, skipping them", flush=True)
        start = time.perf_counter()
        bar = _bar(sum(len(c) for c in todo), prog, ctx) if progress and ctx.is_main else None
        for chunk in todo:
            images = list(generate(chunk))
            if len(images) != len(chunk):
                raise RuntimeError(f"generate returned {len(images)} images for {len(chunk)} samples")
            for index, image in zip(chunk, images):
                atomic_write(self.path(index), lambda tmp, image=image: image.convert("RGB").save(tmp, format="PNG"))
            if bar is not None:
                bar.update(len(chunk))
        if bar is not None:
            bar.close()
        made = sum(len(c) for c in todo)
        totals = dist.gather_objects({"made": made, "seconds": time.perf_counter() - start}, ctx)
        dist.barrier(ctx)
        summary: dict[str, Any] = {"samples": self.total, "generated_now": sum(t["made"] for t in totals),
                                   "seconds": round(max(t["seconds"] for t in totals), 3),
                                   "processes": ctx.world_size, "chunks_skipped": skipped}
        if ctx.is_main:
            summary.update(self.assemble())
        dist.barrier(ctx)
        return summary

    def assemble(self) -> dict[str, Any]:
        """Write ``samples.jsonl`` and ``samples.npz`` from the PNGs (all must exist); returns the image size."""
        missing = [self.path(i).name for i in range(self.total) if not self.path(i).is_file()]
        if missing:
            raise RuntimeError(f"{len(missing)} samples are missing in {self.out} (first: {missing[0]}); rerun to make them")
        with Image.open(self.path(0)) as first:
            width, height = first.size
        lines = [json.dumps({"file": self.path(i).name, "index": i, **row}, ensure_ascii=False)
                 for i, row in enumerate(self.rows)]
        atomic_write_text(self.out / INDEX_NAME, "\n".join(lines) + "\n")
        extra = {} if self.labels is None else {LABELS_KEY: np.asarray(self.labels, dtype=np.int64)}
        write_images_npz(self.out / NPZ_NAME, self._blocks(), self.total, (height, width), extra)
        return {"height": height, "width": width, "npz": str(self.out / NPZ_NAME), "labels": self.labels is not None}

    def _blocks(self) -> Iterator[np.ndarray]:
        for lo in range(0, self.total, READ_BLOCK):
            block = []
            for i in range(lo, min(lo + READ_BLOCK, self.total)):
                with Image.open(require_regular_file(self.path(i), "a sample PNG of this folder")) as image:
                    block.append(np.asarray(image.convert("RGB"), dtype=np.uint8))
            yield np.stack(block)


def read_samples(folder: str | os.PathLike) -> tuple[np.ndarray, np.ndarray | None]:
    """``(arr_0, arr_1 or None)`` of a finished sample folder's ``samples.npz`` (read without pickle)."""
    path = require_regular_file(Path(folder) / NPZ_NAME, f"a finished sample folder holds {NPZ_NAME}")
    with np.load(path, allow_pickle=False) as data:
        return data[IMAGES_KEY], data[LABELS_KEY] if LABELS_KEY in data.files else None


def format_summary(prog: str, summary: dict[str, Any], out: str | os.PathLike) -> str:
    """The end-of-run lines printed by rank 0."""
    shape = f"[{summary['samples']}, {summary['height']}, {summary['width']}, 3]"
    labels = f", {LABELS_KEY} labels [{summary['samples']}]" if summary.get("labels") else ""
    rate = summary["generated_now"] / summary["seconds"] if summary["seconds"] > 0 else 0.0
    return (f"{prog}: {summary['samples']} samples -> {out} (PNGs, {INDEX_NAME}, {NPZ_NAME}: {IMAGES_KEY} {shape}{labels})\n"
            f"  generated now: {summary['generated_now']} in {summary['seconds']:.1f} s ({rate:.2f} samples/s, "
            f"{summary['processes']} process(es), {summary['chunks_skipped']} chunk(s) already done)")


def _flat(spec: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"settings": {"seed": 0}}`` -> ``{"settings.seed": 0}`` (so a refusal names the one setting that differs)."""
    flat: dict[str, Any] = {}
    for key, value in spec.items():
        if isinstance(value, dict):
            flat.update(_flat(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def _shown(value: Any) -> str:
    text = json.dumps(value, ensure_ascii=False)
    return text if len(text) <= 60 else text[:57] + "..."


def _bar(total: int, prog: str, ctx: dist.DistContext) -> Any:
    try:
        from tqdm import tqdm
    except ImportError:
        print(f"{prog}: no progress bar (pip install tqdm)", file=sys.stderr)
        return None
    desc = prog if ctx.world_size == 1 else f"{prog} (rank 0 of {ctx.world_size})"
    return tqdm(total=total, unit="img", desc=desc, dynamic_ncols=True)


# ------------------------------------------------------------------ the sampling commands

EXIT_ERROR = 2


@dataclass
class SampleConfig(StrictConfig):
    """The settings every sampling command shares (its flags; each checked against its hint on construction).

    ``run``: the trained run folder; ``out``: the sample folder; ``num_samples`` (per prompt for
    text-to-image); ``batch_size`` samples per forward pass (part of the run's identity: it fixes the
    batches, hence the exact bytes); sample ``i`` is drawn with a generator seeded ``seed + i``;
    ``guidance``: the classifier-free guidance scale (1: none); ``device`` (``None``: CUDA when
    available); ``threads``: ``torch.set_num_threads``; ``progress``: tqdm bars on rank 0.
    """

    run: str
    out: str
    num_samples: PositiveInt = 16
    batch_size: PositiveInt = 16
    seed: NonNegativeInt = 0
    guidance: float = 1.0
    device: str | None = None
    threads: PositiveInt | None = None
    progress: bool = True

    def __post_init__(self) -> None:
        super().__post_init__()
        if not math.isfinite(self.guidance):
            raise ConfigError(f"guidance must be a finite number, got {self.guidance}", owner=type(self).__name__,
                              field="guidance", expected="a finite number", value=self.guidance)

    def settings(self) -> dict[str, Any]:
        """The fields that decide the samples (``samples.json``): all but where they go and how they are shown."""
        return {k: v for k, v in asdict(self).items()
                if k not in ("run", "out", "device", "threads", "progress", "batch_size")}


def add_sample_arguments(parser: argparse.ArgumentParser, samples_help: str) -> None:
    """The flags of :class:`SampleConfig` (``run`` positional)."""
    parser.add_argument("run", help="the trained run folder (what the trainer wrote to its --out)")
    parser.add_argument("--out", required=True, help="sample folder: PNGs, samples.jsonl, samples.npz (a rerun resumes)")
    parser.add_argument("--num-samples", type=int, default=16, help=samples_help)
    parser.add_argument("--batch-size", type=int, default=16, help="samples per forward pass (default 16)")
    parser.add_argument("--seed", type=int, default=0, help="sample i is drawn with a generator seeded seed + i (default 0)")
    parser.add_argument("--guidance", type=float, default=1.0, help="classifier-free guidance scale (default 1: none)")
    parser.add_argument("--device", help="cpu, cuda, cuda:1 (default: cuda if available)")
    parser.add_argument("--threads", type=int, help="torch CPU threads of each process")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")


def config_from_args(config: type[SampleConfig], args: argparse.Namespace, **values: Any) -> SampleConfig:
    """``config`` built from the parsed flags (same names, ``progress`` from ``--no-progress``) and ``values``."""
    given = {f.name: getattr(args, f.name) for f in fields(config) if hasattr(args, f.name)}
    return config(**{**given, "progress": not args.no_progress, **values})


@dataclass
class SampleJob:
    """What a sampling command prepared (every check done): the folder's ``spec`` and ``rows`` (see
    :class:`SampleFolder`), the class ``labels`` (or ``None``) and ``generate(indices) -> PIL images``."""

    spec: dict[str, Any]
    rows: list[dict[str, Any]]
    labels: list[int] | None
    generate: Callable[[range], Sequence[Image.Image]]


def run_sample_command(prog: str, config: SampleConfig, prepare: Callable[[SampleConfig, dist.DistContext], SampleJob],
                       flags: dict[str, str] | None = None) -> int:
    """Run a sampling command: join ``torchrun``'s processes, ``prepare`` the job (loading the model and
    checking everything: a ``ValueError`` / ``FileNotFoundError`` there is one ``PROG: error:`` line and exit
    2, before any sample), check ``--out``, draw and write the samples, print the summary on rank 0."""
    threads = torch.get_num_threads()
    ctx = None
    try:
        try:
            check_writable_dir(config.out)
            if not Path(config.run).is_dir():
                raise FileNotFoundError(f"run folder {config.run} does not exist (or is not a folder)")
            ctx = dist.setup(config.device)
            if config.threads:
                torch.set_num_threads(config.threads)
            job = prepare(config, ctx)
            folder = SampleFolder(config.out, {"command": prog, **job.spec}, job.rows, config.batch_size, job.labels)
        except (ValueError, FileNotFoundError) as error:
            print(error_line(prog, error, type(config), flags), file=sys.stderr)
            return EXIT_ERROR
        summary = folder.run(ctx, job.generate, prog=prog, progress=config.progress)
        if ctx.is_main:
            print(format_summary(prog, summary, config.out), flush=True)
        return 0
    finally:
        torch.set_num_threads(threads)
        if ctx is not None:
            dist.teardown(ctx)


def parse_config(prog: str, parser: argparse.ArgumentParser, argv: list[str] | None, config: type[SampleConfig],
                 build: Callable[[argparse.Namespace], SampleConfig], flags: dict[str, str] | None = None) -> SampleConfig | int:
    """Parse ``argv`` and ``build`` the ``config``; a refused flag is one ``PROG: error:`` line naming it and
    :data:`EXIT_ERROR` (returned instead of the config)."""
    args = parser.parse_args(argv)
    try:
        return build(args)
    except (ValueError, FileNotFoundError) as error:
        print(error_line(prog, error, config, flags), file=sys.stderr)
        return EXIT_ERROR
