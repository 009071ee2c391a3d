#!/usr/bin/env python
"""Hostile-input audit of movq: files that could run code, corrupt files, API edge cases, CLI misuse
and silent wrong results. Each case is a small function; the script prints one table row per case
(``case | expected | outcome | OK?``) and a summary, and exits 1 if any case failed.

    PYTHONPATH=src python benchmarks/hostile_inputs.py                 # every case (~5 min on 2 cores)
    PYTHONPATH=src python benchmarks/hostile_inputs.py --area cli      # one area (substring of its name)
    PYTHONPATH=src python benchmarks/hostile_inputs.py --only pickle   # cases whose name contains a word
    PYTHONPATH=src python benchmarks/hostile_inputs.py --markdown out.md

The rules every case is judged by (README "Guarantees" and the reliability issue):

- no file runs code: every malicious pickle below would create a marker file; the marker must never appear;
- a user error is a ``ValueError`` / ``TypeError`` / ``FileNotFoundError`` (or subclass) raised by movq
  itself, saying what was wrong; an exception that leaks out of torch / PIL / safetensors / numpy / json
  (the innermost frame is there) or of another type counts as a raw traceback;
- CLIs answer a user error with ``PROG: error: ...`` on stderr and exit code 2, no traceback, and write
  no output (argparse's own errors print a usage line first: accepted);
- nothing succeeds with a wrong result.

Everything runs on CPU in a temporary folder, with the process's address space capped (``--mem-limit-gb``)
so that a case that tries to allocate too much fails instead of hurting the machine.
"""

from __future__ import annotations

import argparse
import ast
import contextlib
import io
import json
import os
import pickle
import resource
import shutil
import struct
import sys
import tempfile
import time
import traceback
import warnings
import zipfile
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

import movq
from movq import Codec, CodecConfig

REPO = Path(__file__).resolve().parent.parent
SRC = REPO / "src" / "movq"
PHOTOS = Path(os.environ.get("MOVQ_AUDIT_IMAGES", "/work/shared/images/val"))
USER_ERRORS = (ValueError, TypeError, FileNotFoundError, NotADirectoryError)
DEEP = (
    "/torch/",
    "/PIL/",
    "/safetensors/",
    "/numpy/",
    "/huggingface_hub/",
    "/json/",
    "/pickle.py",
    "/zipfile",
    "/tomllib/",
)

torch.set_num_threads(1)
warnings.filterwarnings("ignore", message="Initializing zero-element tensors")


# ============================================================================ the case table


@dataclass
class Case:
    area: str
    name: str
    expected: str
    fn: Callable[[], tuple[bool, str]]
    mem_gb: float = 4.0
    """Extra address space the case may take beyond what the process holds when it starts."""


@dataclass
class Outcome:
    case: Case
    ok: bool
    text: str
    seconds: float


CASES: list[Case] = []
AREAS = {
    "1-code": "1. Files that could run code",
    "2-files": "2. Corrupt / truncated / wrong-type files",
    "3-api": "3. API edge cases",
    "4-cli": "4. CLIs (movq-bench, movq-bench speed, movq-train)",
    "4-cli-tokenize": "4b. CLI movq-tokenize and movq.data.TokenDataset",
    "5-silent": "5. Silent wrong results",
}


def case(
    area: str, name: str, expected: str, mem_gb: float = 4.0
) -> Callable[[Callable[[], tuple[bool, str]]], Callable[[], tuple[bool, str]]]:
    def register(fn: Callable[[], tuple[bool, str]]) -> Callable[[], tuple[bool, str]]:
        CASES.append(Case(area, name, expected, fn, mem_gb))
        return fn

    return register


def add(area: str, name: str, expected: str, fn: Callable[[], tuple[bool, str]], mem_gb: float = 4.0) -> None:
    CASES.append(Case(area, name, expected, fn, mem_gb))


@contextlib.contextmanager
def memory_cap(extra_gb: float) -> Any:
    """Cap the address space at what the process maps now plus ``extra_gb`` (restored afterwards), so a
    case that tries to allocate too much gets an allocation error instead of starving the machine."""
    soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    if extra_gb <= 0 or not Path("/proc/self/status").exists():
        yield
        return
    mapped = next(
        int(line.split()[1]) * 1024
        for line in Path("/proc/self/status").read_text().splitlines()
        if line.startswith("VmSize:")
    )
    cap = mapped + int(extra_gb * 2**30)
    if hard != resource.RLIM_INFINITY:
        cap = min(cap, hard)
    if soft != resource.RLIM_INFINITY:
        cap = min(cap, soft)
    resource.setrlimit(resource.RLIMIT_AS, (cap, hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_AS, (soft, hard))


# ============================================================================ judging helpers


class Work:
    """The run's temporary folder and the marker folder that malicious pickles write into."""

    root: Path = Path()
    markers: Path = Path()
    counter = 0

    @classmethod
    def new(cls, name: str) -> Path:
        cls.counter += 1
        path = cls.root / f"{cls.counter:03d}-{name}"
        path.mkdir(parents=True)
        return path

    @classmethod
    def marker(cls, name: str) -> Path:
        return cls.markers / f"pwned-{name}-{cls.counter}"


def _short(text: str, n: int = 110) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= n else text[: n - 3] + "..."


def _innermost(error: BaseException) -> str:
    frames = traceback.extract_tb(error.__traceback__)
    return frames[-1].filename if frames else ""


def _deep(error: BaseException) -> str | None:
    """The library the exception leaked out of (its innermost frame), or None when movq raised it."""
    where = _innermost(error)
    if "/movq/" in where:
        return None
    for part in DEEP:
        if part in where:
            return part.strip("/").removesuffix(".py")
    return Path(where).name or "?"


def code_ran() -> list[str]:
    return sorted(p.name for p in Work.markers.iterdir())


def expect_error(
    fn: Callable[[], Any],
    types: tuple[type[BaseException], ...] = USER_ERRORS,
    contains: tuple[str, ...] = (),
    allow_deep: bool = False,
) -> tuple[bool, str]:
    """OK when ``fn`` raises one of ``types`` from movq's own code and the message has every ``contains``."""
    before = set(code_ran())
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            result = fn()
    except BaseException as error:  # noqa: BLE001 - judging every outcome
        if isinstance(error, KeyboardInterrupt):
            raise
        ran = set(code_ran()) - before
        kind = type(error).__name__
        message = f"{kind}: {_short(str(error))}"
        if ran:
            return False, f"CODE RAN (marker {sorted(ran)}); {message}"
        if not isinstance(error, types):
            where = _deep(error)
            return False, f"raw {message}" + (f" (from {where})" if where else "")
        where = _deep(error)
        if where and not allow_deep:
            return False, f"raw {message} (raised inside {where})"
        missing = [c for c in contains if c.lower() not in str(error).lower()]
        if missing:
            return False, f"{message} -- message lacks {missing}"
        return True, message
    ran = set(code_ran()) - before
    if ran:
        return False, f"CODE RAN (marker {sorted(ran)}); returned {type(result).__name__}"
    return False, f"no error: returned {_describe(result)}"


def expect_ok(
    fn: Callable[[], Any], check: Callable[[Any], tuple[bool, str]] | None = None, no_warnings: bool = False
) -> tuple[bool, str]:
    """OK when ``fn`` returns and ``check(result)`` agrees; warnings are reported in the outcome (and
    fail the case with ``no_warnings``)."""
    before = set(code_ran())
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            result = fn()
        except BaseException as error:  # noqa: BLE001
            if isinstance(error, KeyboardInterrupt):
                raise
            where = _deep(error)
            return False, f"{type(error).__name__}: {_short(str(error))}" + (
                f" (from {where})" if where else ""
            )
    ran = set(code_ran()) - before
    if ran:
        return False, f"CODE RAN (marker {sorted(ran)})"
    ok, note = check(result) if check is not None else (True, _describe(result))
    noisy = [w for w in caught if not issubclass(w.category, (DeprecationWarning, PendingDeprecationWarning))]
    if noisy:
        note += f" [warning: {_short(str(noisy[0].message), 70)}]"
        ok = ok and not no_warnings
    return ok, note


def _describe(value: Any) -> str:
    if isinstance(value, torch.Tensor):
        return f"{value.dtype} tensor {tuple(value.shape)}"
    if isinstance(value, np.ndarray):
        return f"{value.dtype} array {value.shape}"
    if isinstance(value, Image.Image):
        return f"PIL {value.mode} {value.size}"
    if isinstance(value, nn_module_types()):
        return f"{type(value).__name__} ({getattr(getattr(value, 'config', None), 'name', '?')})"
    return f"{type(value).__name__} {_short(repr(value), 60)}"


@cache
def nn_module_types() -> tuple[type, ...]:
    return (torch.nn.Module,)


# ---------------------------------------------------------------------------- CLIs (in process)


@dataclass
class CliRun:
    rc: int | None
    out: str
    err: str
    error: BaseException | None
    seconds: float


def run_cli(prog: str, argv: list[str]) -> CliRun:
    """Call the console entry point in this process, capturing stdout, stderr and warnings."""
    if prog == "movq-train":
        from movq.train.cli import main
    elif prog == "movq-tokenize":
        from movq.tokenize.cli import main
    else:
        from movq.bench.cli import main
    out, err = io.StringIO(), io.StringIO()
    start = time.perf_counter()
    rc: int | None = None
    error: BaseException | None = None
    with warnings.catch_warnings():
        warnings.simplefilter("always")  # shown on (captured) stderr where they happen, as in a real run
        warnings.filterwarnings("ignore", category=DeprecationWarning)
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                rc = main(argv)
            except SystemExit as exit_:
                rc = exit_.code if isinstance(exit_.code, int) else (0 if exit_.code is None else 1)
            except BaseException as exc:  # noqa: BLE001 - a traceback is what we look for
                if isinstance(exc, KeyboardInterrupt):
                    raise
                error = exc
                traceback.print_exc(file=err)
    return CliRun(rc, out.getvalue(), err.getvalue(), error, time.perf_counter() - start)


def _error_lines(run: CliRun) -> list[str]:
    return [line for line in run.err.splitlines() if line.strip()]


def expect_cli_error(
    prog: str,
    argv: list[str],
    contains: tuple[str, ...] = (),
    no_outputs: tuple[Path, ...] = (),
    code: int = 2,
) -> tuple[bool, str]:
    """OK when the CLI exits ``code`` with one ``PROG: error:`` line (argparse: usage + error), no
    traceback, no marker, and none of ``no_outputs`` exists afterwards."""
    before = set(code_ran())
    return judge_cli_error(prog, run_cli(prog, argv), before, contains, no_outputs, code)


def judge_cli_error(
    prog: str,
    run: CliRun,
    before: set[str],
    contains: tuple[str, ...] = (),
    no_outputs: tuple[Path, ...] = (),
    code: int = 2,
) -> tuple[bool, str]:
    """See :func:`expect_cli_error`; ``before`` is the set of markers that existed before the run."""
    lines = _error_lines(run)
    ran = set(code_ran()) - before
    last = lines[-1] if lines else ""
    head = f"rc={run.rc}, {len(lines)} stderr line(s), {run.seconds:.1f}s"
    if ran:
        return False, f"CODE RAN (marker {sorted(ran)}); {head}"
    if run.error is not None or "Traceback" in run.err:
        error = run.error
        kind = f"{type(error).__name__}: {_short(str(error), 90)}" if error else _short(last, 90)
        return False, f"raw traceback ({kind}); {head}"
    if run.rc == 0:
        return False, f"no error: exit 0 (the run went ahead); {head}"
    written = [str(p.name) for p in no_outputs if p.exists()]
    if written:
        return False, f"wrote {written} although it failed; {head}; {_short(last, 80)}"
    base = prog.split()[0]
    error_line = last.startswith(f"{base}: error:") or last.startswith(f"{prog}: error:")
    # accepted before the error line: argparse's usage lines, and warnings (with their source line)
    extra = [l for l in lines[:-1] if not l.startswith(("usage:", " ")) and "Warning: " not in l]
    argparse_style = not extra
    if run.rc != code:
        return False, f"exit code {run.rc} (expected {code}); {head}; {_short(last, 90)}"
    if not error_line:
        return False, f"last stderr line is not '{base}: error: ...': {_short(last, 90)}; {head}"
    if not argparse_style:
        return False, f"{len(lines)} stderr lines (extra: {_short(extra[0], 70)}); {_short(last, 80)}"
    missing = [c for c in contains if c.lower() not in last.lower()]
    if missing:
        return False, f"{_short(last, 110)} -- message lacks {missing}"
    return True, f"rc={run.rc}: {_short(last.split('error:', 1)[-1].strip(), 100)}"


def expect_cli_ok(
    prog: str, argv: list[str], check: Callable[[CliRun], tuple[bool, str]]
) -> tuple[bool, str]:
    before = set(code_ran())
    return judge_cli_ok(run_cli(prog, argv), before, check)


def judge_cli_ok(
    run: CliRun, before: set[str], check: Callable[[CliRun], tuple[bool, str]]
) -> tuple[bool, str]:
    ran = set(code_ran()) - before
    if ran:
        return False, f"CODE RAN (marker {sorted(ran)})"
    if run.error is not None or "Traceback" in run.err:
        return (
            False,
            f"raw traceback: {type(run.error).__name__ if run.error else ''} {_short(str(run.error), 90)}",
        )
    if run.rc != 0:
        return False, f"exit code {run.rc}: {_short(_error_lines(run)[-1] if _error_lines(run) else '', 100)}"
    return check(run)


# ============================================================================ fixtures


class Evil:
    """Unpickling this runs ``touch MARKER`` (a shell command): the proof that code ran."""

    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __reduce__(self) -> tuple[Any, ...]:
        return (os.system, (f"touch {self.marker}",))


def tiny_config(**over: Any) -> CodecConfig:
    base = dict(ch=32, ch_mult=(1, 2), attn_resolutions=(), resolution=16)
    base.update(over)
    return CodecConfig(**base)


@cache
def tiny() -> Codec:
    """The audit's small codec: ch 32, ch_mult (1, 2) (f=2), no attention, a VQ codebook of 64 codes."""
    torch.manual_seed(0)
    from movq.config import VQConfig

    return Codec(tiny_config(name="audit-tiny", quantizer=VQConfig(codebook_size=64))).eval()


@cache
def photos() -> Codec:
    """The shipped ``movqgan-tiny-photos`` (f=8, EMA codebook of 1024)."""
    return movq.load("movqgan-tiny-photos")


@cache
def tiny_folder() -> Path:
    path = Work.root / "fixtures" / "tiny-folder"
    tiny().save_pretrained(path)
    return path


@cache
def tiny_state() -> dict[str, torch.Tensor]:
    """The tiny codec's weights as a plain dict (no saved config)."""
    return {k: v.clone() for k, v in tiny().state_dict().items()}


@cache
def preset_state() -> dict[str, torch.Tensor]:
    """Weights of a random ``movqgan-tiny`` preset codec (a plain dict, original key format)."""
    torch.manual_seed(1)
    return {k: v.clone() for k, v in Codec(movq.get_preset("movqgan-tiny")).state_dict().items()}


def good_photos(n: int = 4) -> list[Path]:
    files = sorted(p for p in PHOTOS.iterdir() if p.suffix.lower() in (".jpg", ".jpeg", ".png"))[:n]
    if len(files) < n:
        raise SystemExit(f"need {n} photos under {PHOTOS} (set MOVQ_AUDIT_IMAGES)")
    return files


@cache
def data_good() -> Path:
    """Four real photos, shrunk to ~48 px (the bench / training read them like any photo)."""
    folder = Work.root / "fixtures" / "data-good"
    folder.mkdir(parents=True)
    for i, src in enumerate(good_photos()):
        with Image.open(src) as im:
            im.convert("RGB").resize((56, 48), Image.Resampling.BICUBIC).save(
                folder / f"photo{i}.jpg", quality=92
            )
    return folder


def folder_with(files: dict[str, bytes | Image.Image], good: int = 0) -> Path:
    """A fresh data folder holding ``files`` (bytes or PIL images) plus ``good`` real photos."""
    folder = Work.new("data")
    for name, content in files.items():
        path = folder / name
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, Image.Image):
            content.save(path)
        else:
            path.write_bytes(content)
    for src in sorted(data_good().iterdir())[:good]:
        shutil.copy(src, folder / src.name)
    return folder


def jpeg_bytes(size: tuple[int, int] = (48, 40), color: tuple[int, int, int] = (200, 60, 30)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, color).save(buffer, "JPEG")
    return buffer.getvalue()


def png_with_size(width: int, height: int) -> bytes:
    """A 1x1 PNG whose IHDR claims ``width`` x ``height`` (a decompression-bomb header, no data)."""
    buffer = io.BytesIO()
    Image.new("L", (1, 1)).save(buffer, "PNG")
    data = bytearray(buffer.getvalue())
    ihdr = data.index(b"IHDR")
    data[ihdr + 4 : ihdr + 12] = struct.pack(">II", width, height)
    crc = zlib.crc32(bytes(data[ihdr : ihdr + 17])) & 0xFFFFFFFF
    data[ihdr + 17 : ihdr + 21] = struct.pack(">I", crc)
    return bytes(data)


def save_foreign_module(
    module: torch.nn.Module, module_name: str, class_name: str, path: Path, legacy: bool
) -> None:
    """``torch.save`` a module whose class lives in a package that is not importable at load time (DALL-E)."""
    import types

    fake = types.ModuleType(module_name)
    cls = type(class_name, (type(module),), {"__module__": module_name})
    setattr(fake, class_name, cls)
    package = module_name.split(".")[0]
    sys.modules[package], sys.modules[module_name] = types.ModuleType(package), fake
    try:
        module.__class__ = cls
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.save(module, path, _use_new_zipfile_serialization=not legacy)
    finally:
        del sys.modules[module_name], sys.modules[package]


@cache
def dalle_parts() -> tuple[torch.nn.Module, torch.nn.Module]:
    from movq.dvae import DVAE, DVAEConfig

    torch.manual_seed(2)
    return DVAE(DVAEConfig(n_hid=16, n_init=8, vocab_size=32)).encoder, DVAE(
        DVAEConfig(n_hid=16, n_init=8, vocab_size=32)
    ).decoder


def dalle_folder(legacy: bool = False, evil_in: str | None = None, marker: Path | None = None) -> Path:
    """A folder with DALL-E style ``encoder.pkl`` + ``decoder.pkl`` (pickled module objects); with
    ``evil_in`` the named part carries an :class:`Evil` attribute."""
    import copy

    folder = Work.new("dalle")
    for part, module in zip(("encoder", "decoder"), dalle_parts()):
        module = copy.deepcopy(module)
        if evil_in == part:
            module.payload = Evil(marker)  # type: ignore[assignment]
        save_foreign_module(module, f"dall_e_audit.{part}", part.title(), folder / f"{part}.pkl", legacy)
    return folder


class Pickle:
    """A tiny protocol-2 pickle assembler, for pickles no Python object would produce."""

    def __init__(self) -> None:
        self.data = bytearray(b"\x80\x02")

    def glob(self, module: str, name: str) -> Pickle:
        self.data += b"c" + module.encode() + b"\n" + name.encode() + b"\n"
        return self

    def raw(self, ops: bytes) -> Pickle:
        self.data += ops
        return self

    def str(self, text: str) -> Pickle:
        encoded = text.encode()
        self.data += b"X" + struct.pack("<I", len(encoded)) + encoded
        return self

    def int(self, value: int) -> Pickle:
        if 0 <= value < 2**31:
            self.data += b"J" + struct.pack("<i", value)
        else:
            self.data += b"\x8a\x08" + struct.pack("<q", value)
        return self

    def done(self) -> bytes:
        return bytes(self.data + b".")


def torch_zip(payload: bytes, storages: dict[str, bytes], compress: bool = False) -> bytes:
    """A PyTorch-style zip archive (``archive/data.pkl`` + ``archive/data/<key>``)."""
    buffer = io.BytesIO()
    method = zipfile.ZIP_DEFLATED if compress else zipfile.ZIP_STORED
    with zipfile.ZipFile(buffer, "w", method) as archive:
        archive.writestr("archive/data.pkl", payload)
        archive.writestr("archive/version", "3\n")
        for key, raw in storages.items():
            archive.writestr(f"archive/data/{key}", raw)
    return buffer.getvalue()


def evil_os_system_p0(marker: Path) -> bytes:
    """The classic protocol-0 pickle ``os.system("touch MARKER")``."""
    return f"cos\nsystem\n(S'touch {marker}'\ntR.".encode()


# ============================================================================ 1. files that could run code

A1 = "1-code"
NOTHING_RUNS = "refused, names the file, marker never created"


def _evil_checkpoint(
    suffix: str, wrap: Callable[[Evil], Any], legacy: bool = False
) -> Callable[[], tuple[bool, str]]:
    def run() -> tuple[bool, str]:
        folder = Work.new("evil")
        path = folder / f"model{suffix}"
        torch.save(wrap(Evil(Work.marker("ckpt"))), path, _use_new_zipfile_serialization=not legacy)
        return expect_error(
            lambda: movq.load(path), (ValueError, pickle.UnpicklingError), contains=(path.name,)
        )

    return run


for _suffix in (".ckpt", ".pt", ".pth", ".bin"):
    add(
        A1,
        f"torch.save'd pickle with os.system, {_suffix}",
        NOTHING_RUNS,
        _evil_checkpoint(_suffix, lambda e: {"encoder.conv_in.weight": torch.zeros(1), "x": e}),
    )
add(
    A1,
    "Lightning dict {'state_dict': ..., 'callbacks': Evil}",
    NOTHING_RUNS,
    _evil_checkpoint(".ckpt", lambda e: {"state_dict": tiny_state(), "callbacks": {"cb": e}}),
)
add(A1, "Evil object as the whole checkpoint (.pt)", NOTHING_RUNS, _evil_checkpoint(".pt", lambda e: e))
add(
    A1,
    "Evil inside state_dict values (legacy container .pth)",
    NOTHING_RUNS,
    _evil_checkpoint(".pth", lambda e: {"state_dict": {"encoder.conv_in.weight": e}}, legacy=True),
)
add(
    A1,
    "Evil as whole object, legacy container (.ckpt)",
    NOTHING_RUNS,
    _evil_checkpoint(".ckpt", lambda e: e, legacy=True),
)


@case(A1, "plain pickle.dumps (protocol 2) with os.system, .pt", NOTHING_RUNS)
def _plain_pickle() -> tuple[bool, str]:
    path = Work.new("evil") / "model.pt"
    path.write_bytes(pickle.dumps({"state_dict": Evil(Work.marker("plain"))}, protocol=2))
    return expect_error(lambda: movq.load(path), (ValueError, pickle.UnpicklingError), contains=("model.pt",))


@case(A1, "protocol-0 'cos\\nsystem' pickle, .bin", NOTHING_RUNS)
def _p0_pickle() -> tuple[bool, str]:
    path = Work.new("evil") / "pytorch_model.bin"
    path.write_bytes(evil_os_system_p0(Work.marker("p0")))
    return expect_error(
        lambda: movq.load(path), (ValueError, pickle.UnpicklingError), contains=("pytorch_model.bin",)
    )


@case(A1, "INST opcode calling os.system, .pt", NOTHING_RUNS)
def _inst_pickle() -> tuple[bool, str]:
    path = Work.new("evil") / "model.pt"
    path.write_bytes(f"(S'touch {Work.marker('inst')}'\nios\nsystem\n.".encode())
    return expect_error(lambda: movq.load(path), (ValueError, pickle.UnpicklingError), contains=("model.pt",))


@case(A1, "builtins.eval via STACK_GLOBAL/REDUCE, .ckpt", NOTHING_RUNS)
def _eval_pickle() -> tuple[bool, str]:
    path = Work.new("evil") / "model.ckpt"
    code = f"__import__('os').system('touch {Work.marker('eval')}')"
    path.write_bytes(Pickle().glob("builtins", "eval").str(code).raw(b"\x85R").done())
    return expect_error(
        lambda: movq.load(path), (ValueError, pickle.UnpicklingError), contains=("model.ckpt",)
    )


@case(A1, "torch.load(weights_only=False) smuggled as a global call", NOTHING_RUNS)
def _torch_load_pickle() -> tuple[bool, str]:
    folder = Work.new("evil")
    inner = folder / "inner.pt"
    torch.save(Evil(Work.marker("inner")), inner)
    path = folder / "model.pt"
    path.write_bytes(
        Pickle()
        .glob("torch", "load")
        .str(str(inner))
        .raw(b"}X\x0c\x00\x00\x00weights_only\x89s")
        .raw(b"\x86R")
        .done()
    )
    return expect_error(lambda: movq.load(path), (ValueError, pickle.UnpicklingError), contains=("model.pt",))


@case(A1, "OrderedDict rebuilder fed an Evil, .pt", NOTHING_RUNS)
def _ordered_dict_pickle() -> tuple[bool, str]:
    path = Work.new("evil") / "model.pt"
    path.write_bytes(
        pickle.dumps({"a": __import__("collections").OrderedDict(x=Evil(Work.marker("od")))}, protocol=2)
    )
    return expect_error(lambda: movq.load(path), (ValueError, pickle.UnpicklingError), contains=("model.pt",))


@case(A1, "DALL-E encoder.pkl + decoder.pkl, both Evil (zip)", NOTHING_RUNS)
def _dalle_evil_zip() -> tuple[bool, str]:
    folder = Work.new("dalle-evil")
    for name in ("encoder.pkl", "decoder.pkl"):
        torch.save(Evil(Work.marker("dalle")), folder / name)
    return expect_error(
        lambda: movq.load(folder), (ValueError, pickle.UnpicklingError), contains=("encoder.pkl",)
    )


@case(A1, "DALL-E encoder.pkl + decoder.pkl, both Evil (legacy container)", NOTHING_RUNS)
def _dalle_evil_legacy() -> tuple[bool, str]:
    folder = Work.new("dalle-evil")
    for name in ("encoder.pkl", "decoder.pkl"):
        torch.save(Evil(Work.marker("dalle-legacy")), folder / name, _use_new_zipfile_serialization=False)
    return expect_error(
        lambda: movq.load(folder), (ValueError, pickle.UnpicklingError), contains=("encoder.pkl",)
    )


for _legacy in (False, True):
    for _part in ("encoder", "decoder"):
        add(
            A1,
            f"DALL-E real module with Evil attribute in {_part}.pkl ({'legacy' if _legacy else 'zip'})",
            NOTHING_RUNS,
            (
                lambda legacy=_legacy, part=_part: expect_error(
                    lambda: movq.load(dalle_folder(legacy, part, Work.marker(f"dalle-{part}"))),
                    (ValueError, pickle.UnpicklingError),
                    contains=(f"{part}.pkl",),
                )
            ),
        )


@case(A1, "legacy container: Evil in the sys_info header pickle", NOTHING_RUNS)
def _legacy_header() -> tuple[bool, str]:
    path = Work.new("evil") / "model.ckpt"
    magic, version = 0x1950A86A20F9469CFC6C, 1001
    parts = [
        pickle.dumps(magic, protocol=2),
        pickle.dumps(version, protocol=2),
        pickle.dumps(Evil(Work.marker("sysinfo")), protocol=2),
    ]
    path.write_bytes(b"".join(parts))
    return expect_error(
        lambda: movq.load(path), (ValueError, pickle.UnpicklingError), contains=("model.ckpt",)
    )


@case(A1, "legacy container: Evil as the storage-key list", NOTHING_RUNS)
def _legacy_keys() -> tuple[bool, str]:
    path = Work.new("evil") / "model.ckpt"
    magic, version = 0x1950A86A20F9469CFC6C, 1001
    parts = [magic, version, {"little_endian": True, "protocol_version": 1001}, {"a": 1}]
    path.write_bytes(
        b"".join(pickle.dumps(p, protocol=2) for p in parts)
        + pickle.dumps(Evil(Work.marker("keys")), protocol=2)
    )
    return expect_error(
        lambda: movq.load(path), (ValueError, pickle.UnpicklingError), contains=("model.ckpt",)
    )


@case(A1, "diffusers folder whose diffusion_pytorch_model.bin is Evil", NOTHING_RUNS)
def _diffusers_bin_evil() -> tuple[bool, str]:
    from movq.hub.diffusers import config_to_diffusers

    folder = Work.new("diffusers-evil")
    (folder / "config.json").write_text(json.dumps(config_to_diffusers(tiny().config)))
    torch.save({"x": Evil(Work.marker("diffusers"))}, folder / "diffusion_pytorch_model.bin")
    return expect_error(
        lambda: movq.load(folder),
        (ValueError, pickle.UnpicklingError),
        contains=("diffusion_pytorch_model.bin",),
    )


@case(A1, "torch.save(codec.state_dict()) with Evil in _metadata", NOTHING_RUNS)
def _metadata_evil() -> tuple[bool, str]:
    path = Work.new("evil") / "codec.pt"
    state = tiny().state_dict()
    state._metadata[""]["movq_config"] = Evil(Work.marker("metadata"))  # type: ignore[attr-defined]
    torch.save(state, path)
    return expect_error(lambda: movq.load(path), (ValueError, pickle.UnpicklingError), contains=("codec.pt",))


@case(A1, "pickle renamed to .safetensors", "refused as not safetensors, names the file")
def _pickle_as_safetensors() -> tuple[bool, str]:
    path = Work.new("evil") / "model.safetensors"
    torch.save({"x": Evil(Work.marker("st"))}, path)
    return expect_error(lambda: movq.load(path), contains=("model.safetensors",))


@case(A1, "pickle as a save_pretrained folder's model.safetensors", "refused, names the file")
def _pickle_in_folder() -> tuple[bool, str]:
    folder = Work.new("folder-evil")
    shutil.copy(tiny_folder() / "config.json", folder / "config.json")
    torch.save({"x": Evil(Work.marker("folder"))}, folder / "model.safetensors")
    return expect_error(lambda: movq.load(folder), contains=("model.safetensors",))


@case(A1, "pickle as a t2i model folder's model.safetensors", "refused, names the file")
def _pickle_in_t2i() -> tuple[bool, str]:
    from movq.t2i import T2IConfig, T2ITransformer

    folder = Work.new("t2i-evil")
    (folder / "config.json").write_text(json.dumps(T2IConfig().to_dict()))
    torch.save({"x": Evil(Work.marker("t2i"))}, folder / "model.safetensors")
    return expect_error(lambda: T2ITransformer.from_pretrained(folder), contains=("model.safetensors",))


@case(A1, "pickle as a diffusion UNet folder's ema.safetensors", "refused, names the file")
def _pickle_in_unet() -> tuple[bool, str]:
    from movq.diffusion.unet import UNet, UNetConfig

    folder = Work.new("unet-evil")
    (folder / "config.json").write_text(json.dumps(UNetConfig().to_dict()))
    torch.save({"x": Evil(Work.marker("unet"))}, folder / "ema.safetensors")
    torch.save({"x": Evil(Work.marker("unet"))}, folder / "model.safetensors")
    return expect_error(lambda: UNet.from_pretrained(folder), contains=("safetensors",))


@case(A1, "LPIPS / perceptual weights file that is Evil (movq.perceptual.load_lpips)", NOTHING_RUNS)
def _lpips_evil() -> tuple[bool, str]:
    from movq.perceptual import load_lpips

    path = Work.new("evil") / "lpips.pth"
    torch.save({"x": Evil(Work.marker("lpips"))}, path)
    return expect_error(lambda: load_lpips("alex", path), contains=("lpips.pth",))


@case(A1, "FID Inception weights file that is Evil (load_inception_file)", NOTHING_RUNS)
def _inception_evil() -> tuple[bool, str]:
    from movq.metrics.inception import load_inception_file

    path = Work.new("evil") / "pt_inception.pth"
    torch.save({"x": Evil(Work.marker("inception"))}, path)
    return expect_error(lambda: load_inception_file(path), contains=("pt_inception.pth",))


@case(A1, "training state.pt that is Evil (checkpoint.load_checkpoint)", NOTHING_RUNS)
def _state_evil() -> tuple[bool, str]:
    from movq.train.checkpoint import CheckpointError, load_checkpoint

    folder = Work.new("ckpt") / "step-00000001"
    folder.mkdir()
    torch.save({"step": 1, "x": Evil(Work.marker("state"))}, folder / "state.pt")
    return expect_error(lambda: load_checkpoint(folder), (CheckpointError,), contains=("state.pt",))


@case(A1, "bench --cache shard file that is Evil (ShardCache.load)", "not run; the shard is recomputed")
def _cache_evil() -> tuple[bool, str]:
    from movq.bench.cache import ShardCache

    folder = Work.new("cache")
    cache_ = ShardCache(folder, {"k": 1}, 0, 1)
    cache_.folder.mkdir(parents=True)
    torch.save({"done": Evil(Work.marker("cache"))}, cache_.path)
    return expect_ok(cache_.load, lambda r: (r is None, f"load() -> {r!r} (recomputed)"))


@case(
    A1,
    "static check: every torch.load in src/movq has weights_only=True; no pickle.load, np.load(allow_pickle=True)",
    "only safe readers in the source",
)
def _static_loads() -> tuple[bool, str]:
    bad, loads, jit = [], 0, []
    for file in sorted(SRC.rglob("*.py")):
        for node in ast.walk(ast.parse(file.read_text())):
            if not isinstance(node, ast.Call):
                continue
            name = ast.unparse(node.func)
            where = f"{file.relative_to(SRC)}:{node.lineno}"
            keywords = {k.arg: ast.unparse(k.value) for k in node.keywords}
            if name == "torch.load":
                loads += 1
                if keywords.get("weights_only") != "True":
                    bad.append(f"{where} torch.load without weights_only=True")
            elif name == "torch.jit.load":
                jit.append(where)
            elif name in ("pickle.load", "pickle.loads", "pickle.Unpickler", "dill.load", "cloudpickle.load"):
                bad.append(f"{where} {name}")
            elif name.endswith("np.load") and keywords.get("allow_pickle") == "True":
                bad.append(f"{where} np.load(allow_pickle=True)")
    note = (
        f"{loads} torch.load calls, all weights_only=True; torch.jit.load (TorchScript, no Python) at {jit}"
    )
    return (not bad, note if not bad else "; ".join(bad))


@case(
    A1,
    "crafted DALL-E pickle: tensor view outside its storage",
    "CheckpointReadError naming the file, no crash",
)
def _oob_view() -> tuple[bool, str]:
    folder = Work.new("dalle-oob")
    p = Pickle().glob("dall_e_x", "Encoder").raw(b")\x81")  # an inert module instance
    p.raw(b"}").str("_parameters").raw(b"}").str("blocks.input.w")  # state {"_parameters": {name: tensor}}
    p.glob("torch._utils", "_rebuild_tensor_v2").raw(b"(")  # (storage, offset, size, stride, grad, hooks)
    p.raw(b"(").str("storage").glob("torch", "FloatStorage").str("0").str("cpu").int(4).raw(b"tQ")  # 4 floats
    p.int(0).int(2**20).raw(b"\x85").int(1).raw(b"\x85").raw(b"\x89").glob("collections", "OrderedDict").raw(
        b")R"
    )
    p.raw(b"tR").raw(b"ssb")  # a 2**20-element view of a 4-element storage
    raw = torch_zip(p.done(), {"0": b"\x00" * 16})
    for name in ("encoder.pkl", "decoder.pkl"):
        (folder / name).write_bytes(raw)
    return expect_error(lambda: movq.load(folder), contains=("encoder.pkl",))


@case(A1, "crafted legacy container declaring a 4 TB storage in a 200-byte file", "refused before allocating")
def _legacy_huge_storage() -> tuple[bool, str]:
    path = Work.new("evil") / "encoder.pkl"
    magic, version = 0x1950A86A20F9469CFC6C, 1001
    head = b"".join(pickle.dumps(x, protocol=2) for x in (magic, version, {"little_endian": True}))
    body = Pickle().glob("dall_e_x", "Encoder").raw(b")\x81}X\x01\x00\x00\x00w(X\x07\x00\x00\x00storage")
    body.glob("torch", "FloatStorage").str("0").str("cpu").int(2**40).raw(b"N").raw(b"tQs").raw(b"b")
    path.write_bytes(head + body.done() + pickle.dumps(["0"], protocol=2))
    return expect_error(lambda: movq.hub.safe_load.load_state_file(path), contains=("encoder.pkl",))


@case(
    A1, "DALL-E pickle whose module tree contains itself (cycle)", "error naming the file, no RecursionError"
)
def _dalle_cycle() -> tuple[bool, str]:
    import copy

    folder = Work.new("dalle-cycle")
    for part, module in zip(("encoder", "decoder"), dalle_parts()):
        module = copy.deepcopy(module)
        module.blocks._modules["loop"] = module  # a pickle can reference an object from inside itself
        save_foreign_module(module, f"dall_e_cyc.{part}", part.title(), folder / f"{part}.pkl", False)
    return expect_error(lambda: movq.load(folder), contains=("encoder.pkl",))


# ============================================================================ 2. corrupt / wrong-type files

A2 = "2-files"
NAMES_FILE = "ValueError/FileNotFoundError naming the file"


def _bad_file(
    name: str,
    content: bytes | Callable[[Path], None],
    contains: tuple[str, ...] | None = None,
    load: Callable[[Path], Any] = lambda p: movq.load(p),
) -> Callable[[], tuple[bool, str]]:
    def run() -> tuple[bool, str]:
        path = Work.new("bad") / name
        if callable(content):
            content(path)
        else:
            path.write_bytes(content)
        return expect_error(lambda: load(path), contains=contains if contains is not None else (path.name,))

    return run


def _safetensors_bytes() -> bytes:
    from safetensors.torch import save

    return save(tiny_state())


add(A2, "empty .safetensors (0 bytes)", NAMES_FILE, _bad_file("model.safetensors", b""))
add(
    A2,
    "truncated .safetensors (half)",
    NAMES_FILE,
    _bad_file(
        "model.safetensors", lambda p: p.write_bytes(_safetensors_bytes()[: len(_safetensors_bytes()) // 2])
    ),
)
add(
    A2,
    ".safetensors with a header claiming 2**62 bytes",
    NAMES_FILE,
    _bad_file("model.safetensors", struct.pack("<Q", 2**62) + b"{}"),
)
add(
    A2,
    ".safetensors with a non-JSON header",
    NAMES_FILE,
    _bad_file("model.safetensors", struct.pack("<Q", 8) + b"notjson!" + b"\0" * 16),
)
add(
    A2,
    ".safetensors with offsets past the end",
    NAMES_FILE,
    _bad_file(
        "model.safetensors",
        (lambda h: struct.pack("<Q", len(h)) + h)(
            json.dumps({"w": {"dtype": "F32", "shape": [1000], "data_offsets": [0, 4000]}}).encode()
        )
        + b"\0" * 8,
    ),
)
add(A2, "random bytes .safetensors", NAMES_FILE, _bad_file("model.safetensors", os.urandom(4096)))
add(A2, "empty .ckpt (0 bytes)", NAMES_FILE, _bad_file("model.ckpt", b""))
add(A2, "random bytes .pt", NAMES_FILE, _bad_file("model.pt", os.urandom(4096)))
add(A2, "text file named .pth", NAMES_FILE, _bad_file("model.pth", b"hello, I am not a checkpoint\n" * 20))
add(
    A2,
    "truncated torch zip .ckpt",
    NAMES_FILE,
    _bad_file(
        "model.ckpt",
        lambda p: (torch.save(tiny_state(), p), p.write_bytes(p.read_bytes()[: p.stat().st_size // 2])),
    ),
)
add(
    A2,
    "zip with no data.pkl, .pt",
    NAMES_FILE,
    _bad_file("model.pt", lambda p: zipfile.ZipFile(p, "w").writestr("x.txt", "hi")),
)
add(
    A2,
    "truncated legacy container .pth",
    NAMES_FILE,
    _bad_file(
        "model.pth",
        lambda p: (
            torch.save(tiny_state(), p, _use_new_zipfile_serialization=False),
            p.write_bytes(p.read_bytes()[:-100]),
        ),
    ),
)
for _label, _obj in (
    ("a list", [1, 2, 3]),
    ("an int", 7),
    ("None", None),
    ("a string", "weights"),
    ("a bare tensor", torch.zeros(3)),
    ("a dict of non-tensors", {"a": 1, "b": "x"}),
    ("Lightning dict with state_dict=None", {"state_dict": None, "epoch": 3}),
    ("a dict with int keys", {1: torch.zeros(1)}),
    ("an empty dict", {}),
):
    add(
        A2,
        f".ckpt holding {_label}",
        "ValueError naming the file and what it holds",
        _bad_file("model.ckpt", (lambda obj: lambda p: torch.save(obj, p))(_obj)),
    )
add(
    A2,
    "checkpoint whose shapes match no architecture",
    "ValueError naming the file: no architecture fits",
    _bad_file(
        "model.pt",
        lambda p: torch.save({**preset_state(), "encoder.conv_in.weight": torch.zeros(7, 3, 3, 3)}, p),
    ),
)
add(
    A2,
    "checkpoint with keys missing, preset= given",
    "strict error listing the missing keys",
    _bad_file(
        "model.pt",
        lambda p: torch.save({k: v for k, v in preset_state().items() if "decoder.up.0" not in k}, p),
        load=lambda p: movq.load(p, preset="movqgan-tiny"),
        contains=("model.pt", "missing"),
    ),
)
add(
    A2,
    "checkpoint with an extra key, preset= given",
    "strict error listing the unexpected key",
    _bad_file(
        "model.pt",
        lambda p: torch.save({**preset_state(), "encoder.evil": torch.zeros(1)}, p),
        load=lambda p: movq.load(p, preset="movqgan-tiny"),
        contains=("model.pt", "encoder.evil"),
    ),
)
add(
    A2,
    "file with unknown suffix .onnx",
    "ValueError naming accepted suffixes",
    _bad_file("model.onnx", b"\0" * 10, contains=("model.onnx", ".ckpt")),
)
add(
    A2,
    "folder named model.ckpt (a directory)",
    "FileNotFoundError: not a codec folder",
    _bad_file("model.ckpt", lambda p: p.mkdir(), contains=("model.ckpt",)),
)


@case(A2, "checkpoint with NaN weights", "refused (or at least not silently all-black output)")
def _nan_weights() -> tuple[bool, str]:
    path = Work.new("bad") / "model.pt"
    state = tiny().state_dict()
    state["decoder.conv_out.weight"] = torch.full_like(state["decoder.conv_out.weight"], float("nan"))
    torch.save(state, path)
    return expect_error(
        lambda: movq.load(path).decode(torch.zeros(1, 4, 4, dtype=torch.long)), contains=("nan",)
    )


# ---- config.json of a save_pretrained folder


def _config_case(
    mutate: Callable[[dict], Any] | str | bytes,
    contains: tuple[str, ...] = ("config.json",),
    pretrained: bool = True,
) -> Callable[[], tuple[bool, str]]:
    def run() -> tuple[bool, str]:
        folder = Work.new("cfg")
        shutil.copy(tiny_folder() / "model.safetensors", folder / "model.safetensors")
        if isinstance(mutate, bytes):
            (folder / "config.json").write_bytes(mutate)
        elif isinstance(mutate, str):
            (folder / "config.json").write_text(mutate)
        else:
            data = tiny().config.to_dict()
            data = mutate(data) or data
            (folder / "config.json").write_text(json.dumps(data))
        return expect_error(lambda: movq.load(folder, pretrained=pretrained), contains=contains)

    return run


def _set(**kv: Any) -> Callable[[dict], None]:
    def apply(d: dict) -> None:
        for k, v in kv.items():
            if "." in k:
                outer, inner = k.split(".")
                d[outer][inner] = v
            else:
                d[k] = v

    return apply


for _label, _mut, _cont in (
    ("empty", "", ("config.json", "empty")),
    ("whitespace only", "  \n\t", ("config.json",)),
    ("a JSON list", "[1, 2]", ("config.json", "list")),
    ("a JSON string", '"movq"', ("config.json",)),
    ("JSON null", "null", ("config.json",)),
    ("invalid JSON", "{'ch': 32,}", ("config.json", "JSON")),
    ("not UTF-8", b"\xff\xfe\x00{\x00}", ("config.json",)),
    ("100000-deep nested arrays", "[" * 100000 + "]" * 100000, ("config.json",)),
    ("unknown field 'chh'", _set(chh=32), ("config.json", "chh", "did you mean")),
    ("ch as a string '32'", _set(ch="32"), ("config.json", "'ch'")),
    ("ch = 32.0 (float)", _set(ch=32.0), ("config.json", "'ch'")),
    ("ch = true (bool)", _set(ch=True), ("config.json", "'ch'")),
    ("ch = 0", _set(ch=0), ("config.json", "'ch'")),
    ("ch = 33 (not a multiple of 32)", _set(ch=33), ("config.json", "ch")),
    ("ch_mult = []", _set(ch_mult=[]), ("config.json", "ch_mult")),
    ("ch_mult = [0, 2]", _set(ch_mult=[0, 2]), ("config.json", "ch_mult")),
    ("ch_mult = '12'", _set(ch_mult="12"), ("config.json", "ch_mult")),
    ("num_res_blocks = -1", _set(num_res_blocks=-1), ("config.json", "num_res_blocks")),
    ("resolution = 0", _set(resolution=0), ("config.json", "resolution")),
    ("embed_dim = 0", _set(embed_dim=0), ("config.json", "embed_dim")),
    ("norm = 'batch'", _set(norm="batch"), ("config.json", "norm")),
    (
        "scaling_factor = NaN (JSON NaN literal)",
        _set(scaling_factor=float("nan")),
        ("config.json", "scaling_factor"),
    ),
    ("scaling_factor = 0", _set(scaling_factor=0), ("config.json", "scaling_factor")),
    ("dropout = 1.5", _set(dropout=1.5), ("config.json", "dropout")),
    ("quantizer kind 'vqq'", _set(**{"quantizer.kind": "vqq"}), ("config.json", "vqq", "did you mean")),
    ("quantizer codebook_size = 0", _set(**{"quantizer.codebook_size": 0}), ("config.json", "codebook_size")),
    ("quantizer = 'vq' (a string)", _set(quantizer="vq"), ("config.json", "quantizer")),
    ("attn_resolutions = ['16']", _set(attn_resolutions=["16"]), ("config.json", "attn_resolutions")),
):
    add(
        A2,
        f"config.json: {_label}",
        "ConfigError naming file, field, value, accepted",
        _config_case(_mut, _cont),
    )


def _huge_config(field: str, value: Any) -> Callable[[], tuple[bool, str]]:
    def mutate(d: dict) -> None:
        _set(**{field: value})(d)

    return _config_case(mutate, ("config.json",), pretrained=False)


add(
    A2,
    "config.json: ch = 2**24 (a 10^17-byte model), pretrained=False",
    "refused before allocating: ConfigError / ValueError naming the size",
    _huge_config("ch", 2**24),
)
add(
    A2,
    "config.json: codebook_size = 2**40, pretrained=False",
    "refused before allocating: ConfigError / ValueError naming the size",
    _huge_config("quantizer.codebook_size", 2**40),
)


@case(A2, "config.json of a DALL-E dVAE with n_hid = 2**22, pretrained=False", "refused before allocating")
def _huge_dvae() -> tuple[bool, str]:
    folder = Work.new("cfg")
    (folder / "config.json").write_text(json.dumps({"architecture": "dalle-dvae", "n_hid": 2**22}))
    return expect_error(lambda: movq.load(folder, pretrained=False), contains=("config.json",))


add(
    A2,
    "config.json valid but model.safetensors missing",
    "FileNotFoundError naming model.safetensors",
    lambda: (
        lambda f: (
            shutil.copy(tiny_folder() / "config.json", f / "config.json"),
            expect_error(lambda: movq.load(f), contains=("model.safetensors",)),
        )[1]
    )(Work.new("cfg")),
)
add(
    A2,
    "config.json from another architecture than the weights",
    "ValueError naming model.safetensors and the keys",
    _config_case(_set(num_res_blocks=1, ch_mult=[1, 2, 2]), ("model.safetensors",)),
)
add(
    A2,
    "config.json is a directory",
    "FileNotFoundError: not a codec folder",
    lambda: (
        lambda f: (
            (f / "config.json").mkdir(),
            shutil.copy(tiny_folder() / "model.safetensors", f / "model.safetensors"),
            expect_error(lambda: movq.load(f), contains=(str(f.name),)),
        )[2]
    )(Work.new("cfg")),
)


# ---- diffusers folders


def _diffusers_case(
    config: Any, contains: tuple[str, ...] = ("config.json",), pretrained: bool = False
) -> Callable[[], tuple[bool, str]]:
    def run() -> tuple[bool, str]:
        folder = Work.new("diffusers")
        (folder / "config.json").write_text(json.dumps(config) if not isinstance(config, str) else config)
        (folder / "diffusion_pytorch_model.safetensors").write_bytes(_safetensors_bytes())
        return expect_error(lambda: movq.load(folder, pretrained=pretrained), contains=contains)

    return run


_VQ = {
    "_class_name": "VQModel",
    "block_out_channels": [32, 64],
    "down_block_types": ["DownEncoderBlock2D"] * 2,
    "up_block_types": ["UpDecoderBlock2D"] * 2,
    "latent_channels": 4,
    "num_vq_embeddings": 64,
    "norm_type": "spatial",
}
for _label, _cfg in (
    ("_class_name UNet2DModel", {**_VQ, "_class_name": "UNet2DModel"}),
    (
        "block_out_channels = []",
        {**_VQ, "block_out_channels": [], "down_block_types": [], "up_block_types": []},
    ),
    (
        "block_out_channels = [0]",
        {
            **_VQ,
            "block_out_channels": [0],
            "down_block_types": ["DownEncoderBlock2D"],
            "up_block_types": ["UpDecoderBlock2D"],
        },
    ),
    ("block_out_channels = 64 (not a list)", {**_VQ, "block_out_channels": 64}),
    ("block_out_channels = ['a', 'b']", {**_VQ, "block_out_channels": ["a", "b"]}),
    ("down_block_types = [1, 2]", {**_VQ, "down_block_types": [1, 2]}),
    ("latent_channels = 'four'", {**_VQ, "latent_channels": "four"}),
    ("latent_channels = 0", {**_VQ, "latent_channels": 0}),
    ("num_vq_embeddings = 0", {**_VQ, "num_vq_embeddings": 0}),
    ("layers_per_block = -1", {**_VQ, "layers_per_block": -1}),
    ("norm_num_groups = 16", {**_VQ, "norm_num_groups": 16}),
    ("act_fn = 'relu'", {**_VQ, "act_fn": "relu"}),
    ("config.json is a JSON list", [1, 2]),
):
    add(
        A2,
        f"diffusers folder: {_label}",
        "ConfigError naming config.json and the field",
        _diffusers_case(_cfg),
    )
add(
    A2,
    "diffusers folder: valid config, weights of another model",
    "ValueError naming the weights file",
    _diffusers_case(
        {**_VQ, "layers_per_block": 1}, ("diffusion_pytorch_model.safetensors",), pretrained=True
    ),
)


@case(A2, "diffusers folder: config.json without weights", "FileNotFoundError naming what is missing")
def _diffusers_no_weights() -> tuple[bool, str]:
    folder = Work.new("diffusers")
    (folder / "config.json").write_text(json.dumps(_VQ))
    return expect_error(lambda: movq.load(folder), contains=("diffusion_pytorch_model",))


# ---- image files (read by movq.image_files, as the bench / training / examples do)


def _open(path: Path) -> Any:
    from movq.image_files import load_preprocessed

    return load_preprocessed(path, 16)


def _image_file_error(name: str, content: bytes) -> Callable[[], tuple[bool, str]]:
    """Unreadable image files: the reader's error (bench and training skip such files and report them)."""

    def run() -> tuple[bool, str]:
        path = Work.new("img") / name
        path.write_bytes(content)
        from movq.bench.data import ImageRecord, load_image

        loaded = load_image(ImageRecord(str(path), name, "all"), 0, 16)
        ok = loaded.pixels is None and bool(loaded.error)
        return (
            ok,
            f"bench load_image -> skipped: {_short(loaded.error, 90)}"
            if ok
            else "decoded garbage as an image",
        )

    return run


_TRUNC = jpeg_bytes((64, 48))
add(
    A2,
    "truncated JPEG (half the bytes)",
    "skipped by the reader with the reason",
    _image_file_error("cut.jpg", _TRUNC[: len(_TRUNC) // 2]),
)
add(A2, "zero-byte PNG", "skipped with the reason", _image_file_error("empty.png", b""))
add(
    A2,
    "text file named .jpg",
    "skipped with the reason",
    _image_file_error("notes.jpg", b"this is text, not a JPEG\n" * 10),
)
add(
    A2,
    "PNG header claiming 100000x100000 (decompression bomb)",
    "skipped (PIL's bomb guard), nothing allocated",
    _image_file_error("bomb.png", png_with_size(100_000, 100_000)),
)
add(
    A2,
    "PNG header claiming 10000x10000 without data",
    "skipped (truncated)",
    _image_file_error("hdr.png", png_with_size(10_000, 10_000)),
)
add(A2, "GIF header only", "skipped with the reason", _image_file_error("x.gif", b"GIF89a\x10\x00\x10\x00"))


@case(
    A2,
    "real 12000x12000 1-bit PNG (between PIL's warning and error limits)",
    "read or skipped, bounded memory, no crash",
)
def _real_bomb() -> tuple[bool, str]:
    path = Work.new("img") / "bomb.png"
    Image.new("1", (12000, 12000), 1).save(path, optimize=True)
    start = time.perf_counter()
    result = expect_ok(
        lambda: _open(path),
        lambda r: (
            tuple(r[0].shape) == (3, 16, 16) and int(r[0].min()) == 255,
            f"uint8 {tuple(r[0].shape)}, white as expected",
        ),
    )
    return result[0], result[1] + f", {time.perf_counter() - start:.1f}s"


@case(
    A2,
    "1x100000 PNG (extreme aspect ratio) at --resolution 256",
    "read with bounded memory (not a 20 GB upscale)",
)
def _aspect_bomb() -> tuple[bool, str]:
    from movq.image_files import load_preprocessed

    path = Work.new("img") / "line.png"
    Image.new("RGB", (1, 100_000), (10, 120, 250)).save(path)
    start = time.perf_counter()
    ok, text = expect_ok(
        lambda: load_preprocessed(path, 256),
        lambda r: (tuple(r[0].shape) == (3, 256, 256), f"{tuple(r[0].shape)}"),
    )
    return ok, text + f", {time.perf_counter() - start:.1f}s"


def _pixel(path_or_image: Path | Image.Image) -> tuple[int, ...]:
    from movq.image_files import open_rgb

    image = open_rgb(path_or_image) if isinstance(path_or_image, Path) else path_or_image
    return image.getpixel((0, 0))


@case(A2, "16-bit grayscale PNG (value 32768 = mid-gray)", "read as gray ~128, not white")
def _png16() -> tuple[bool, str]:
    path = Work.new("img") / "g16.png"
    Image.fromarray(np.full((8, 8), 32768, np.uint16)).save(path)
    return expect_ok(
        lambda: _pixel(path),
        lambda px: (all(120 <= v <= 136 for v in px), f"pixel {px} (mode {Image.open(path).mode})"),
    )


@case(A2, "16-bit grayscale PNG, dark (value 1000 of 65535)", "read as ~4, not 255")
def _png16_dark() -> tuple[bool, str]:
    path = Work.new("img") / "g16.png"
    Image.fromarray(np.full((8, 8), 1000, np.uint16)).save(path)
    return expect_ok(lambda: _pixel(path), lambda px: (all(v <= 6 for v in px), f"pixel {px}"))


@case(A2, "palette PNG with a transparent index", "transparent pixels composited on white")
def _palette_transparency() -> tuple[bool, str]:
    path = Work.new("img") / "p.png"
    im = Image.new("P", (8, 8), 0)
    im.putpalette([0, 0, 0, 255, 0, 0] + [0] * 762)
    im.putpixel((1, 0), 1)
    im.save(path, transparency=0)
    from movq.image_files import open_rgb

    return expect_ok(
        lambda: open_rgb(path),
        lambda r: (
            r.getpixel((0, 0)) == (255, 255, 255) and r.getpixel((1, 0)) == (255, 0, 0),
            f"transparent -> {r.getpixel((0, 0))}, opaque red -> {r.getpixel((1, 0))}",
        ),
    )


@case(A2, "RGBA PNG, fully transparent black", "white")
def _rgba_png() -> tuple[bool, str]:
    path = Work.new("img") / "a.png"
    Image.new("RGBA", (8, 8), (0, 0, 0, 0)).save(path)
    return expect_ok(lambda: _pixel(path), lambda px: (px == (255, 255, 255), f"pixel {px}"))


@case(A2, "LA PNG, half-transparent black", "mid-gray ~128")
def _la_png() -> tuple[bool, str]:
    path = Work.new("img") / "la.png"
    Image.new("LA", (8, 8), (0, 128)).save(path)
    return expect_ok(lambda: _pixel(path), lambda px: (all(120 <= v <= 135 for v in px), f"pixel {px}"))


@case(A2, "CMYK JPEG (pure cyan)", "converted to RGB cyan-ish")
def _cmyk() -> tuple[bool, str]:
    path = Work.new("img") / "cmyk.jpg"
    Image.new("CMYK", (8, 8), (255, 0, 0, 0)).save(path, quality=95)
    return expect_ok(
        lambda: _pixel(path), lambda px: (px[0] < 40 and px[1] > 200 and px[2] > 200, f"pixel {px}")
    )


@case(A2, "EXIF-rotated JPEG (orientation 6, stored 40x20)", "rotated: 20x40")
def _exif() -> tuple[bool, str]:
    path = Work.new("img") / "rot.jpg"
    im = Image.new("RGB", (40, 20), (200, 10, 10))
    exif = Image.Exif()
    exif[0x0112] = 6
    im.save(path, exif=exif)
    from movq.image_files import open_rgb

    return expect_ok(lambda: open_rgb(path), lambda r: (r.size == (20, 40), f"size {r.size}"))


@case(A2, "JPEG with a corrupt EXIF block", "read (orientation ignored) or skipped, no traceback")
def _bad_exif() -> tuple[bool, str]:
    path = Work.new("img") / "badexif.jpg"
    Image.new("RGB", (16, 16), (1, 2, 3)).save(path, exif=b"Exif\x00\x00MM\x00*\x00\x00\x00\x08\xff\xff")
    from movq.bench.data import ImageRecord, load_image

    return expect_ok(
        lambda: load_image(ImageRecord(str(path), "b.jpg", "all"), 0, 16),
        lambda r: (True, "read" if r.pixels is not None else f"skipped: {_short(r.error, 80)}"),
    )


@case(A2, "animated GIF", "first frame read")
def _gif() -> tuple[bool, str]:
    path = Work.new("img") / "anim.gif"
    frames = [Image.new("RGB", (8, 8), c) for c in ((255, 0, 0), (0, 255, 0))]
    frames[0].save(path, save_all=True, append_images=frames[1:])
    return expect_ok(lambda: _pixel(path), lambda px: (px[0] > 200 and px[1] < 60, f"pixel {px}"))


@case(A2, "1x1 PNG at --resolution 16", "upscaled and counted")
def _tiny_png() -> tuple[bool, str]:
    path = Work.new("img") / "dot.png"
    Image.new("RGB", (1, 1), (9, 9, 9)).save(path)
    return expect_ok(
        lambda: _open(path),
        lambda r: (r[1] and tuple(r[0].shape) == (3, 16, 16), f"upscaled={r[1]} {tuple(r[0].shape)}"),
    )


@case(A2, "t2i model folder: config.json invalid JSON", "ConfigError naming the file")
def _t2i_cfg() -> tuple[bool, str]:
    from movq.t2i import T2ITransformer

    folder = Work.new("t2i")
    (folder / "config.json").write_text("{nope")
    (folder / "model.safetensors").write_bytes(_safetensors_bytes())
    return expect_error(lambda: T2ITransformer.from_pretrained(folder), contains=("config.json",))


@case(A2, "diffusion folder: diffusion.json invalid JSON", "ConfigError naming the file")
def _diffusion_json() -> tuple[bool, str]:
    from movq.diffusion import GaussianDiffusion

    folder = Work.new("diff")
    (folder / "diffusion.json").write_text("{nope")
    return expect_error(lambda: GaussianDiffusion.from_pretrained(folder), contains=("diffusion.json",))


@case(A2, "movq.load of a t2i model folder", "ConfigError: not a codec config, names the file")
def _load_t2i_folder() -> tuple[bool, str]:
    from movq.t2i import T2IConfig

    folder = Work.new("t2i")
    (folder / "config.json").write_text(json.dumps(T2IConfig().to_dict()))
    (folder / "model.safetensors").write_bytes(_safetensors_bytes())
    return expect_error(lambda: movq.load(folder), contains=("config.json",))


# ============================================================================ 3. API edge cases

A3 = "3-api"


def enc(x: Any, codec: Callable[[], Codec] = photos, **kw: Any) -> Callable[[], Any]:
    return lambda: codec().encode(x() if callable(x) else x, **kw)


def _tokens_ok(shape: tuple[int, ...]) -> Callable[[Any], tuple[bool, str]]:
    def check(t: Any) -> tuple[bool, str]:
        ok = isinstance(t, torch.Tensor) and t.dtype == torch.long and tuple(t.shape) == shape
        return ok, f"tokens {_describe(t)}"

    return check


def _same_tokens(reference: Callable[[], Any]) -> Callable[[Any], tuple[bool, str]]:
    def check(t: Any) -> tuple[bool, str]:
        ref = photos().encode(reference())
        return bool(
            torch.equal(t, ref)
        ), f"tokens {tuple(t.shape)} {'==' if torch.equal(t, ref) else '!='} reference"

    return check


def _gradient(mode: str, size: tuple[int, int] = (16, 16)) -> Image.Image:
    base = Image.linear_gradient("L").resize(size)
    if mode in ("1", "L", "P", "CMYK", "YCbCr", "RGB", "HSV", "LAB", "RGBX"):
        return base.convert(mode) if mode != "LAB" else Image.merge("LAB", (base, base, base))
    if mode in ("LA", "PA", "RGBA"):
        return base.convert(mode)
    if mode == "La":
        return base.convert("LA").convert("La")
    if mode == "RGBa":
        return base.convert("RGBA").convert("RGBa")
    if mode in ("I", "F"):
        return base.convert(mode)
    if mode in ("I;16", "I;16B"):
        return (
            Image.fromarray(np.asarray(base, np.uint16) * 257).convert(mode)
            if mode == "I;16"
            else Image.frombytes("I;16B", size, (np.asarray(base, np.uint16) * 257).astype(">u2").tobytes())
        )
    raise ValueError(mode)


for _mode in (
    "1",
    "L",
    "LA",
    "La",
    "P",
    "PA",
    "RGB",
    "RGBA",
    "RGBa",
    "CMYK",
    "YCbCr",
    "I",
    "I;16",
    "I;16B",
    "F",
    "HSV",
    "LAB",
    "RGBX",
):
    add(
        A3,
        f"encode PIL mode {_mode} (16x16)",
        "LongTensor [1, 2, 2]",
        (lambda m=_mode: expect_ok(enc(lambda: _gradient(m)), _tokens_ok((1, 2, 2)))),
    )

add(
    A3,
    "encode PIL I;16 gradient == its 8-bit L version",
    "same tokens (16-bit scaled, not clipped to white)",
    lambda: expect_ok(enc(lambda: _gradient("I;16")), _same_tokens(lambda: _gradient("L"))),
)
add(
    A3,
    "encode PIL F image containing NaN",
    "ValueError: NaN",
    lambda: expect_error(
        enc(lambda: Image.fromarray(np.full((16, 16), np.nan, np.float32))), contains=("nan",)
    ),
)
add(
    A3,
    "encode PIL F image containing inf",
    "ValueError: inf",
    lambda: expect_error(
        enc(lambda: Image.fromarray(np.full((16, 16), np.inf, np.float32))), contains=("inf",)
    ),
)
add(
    A3,
    "encode PIL 0x0 image",
    "ValueError: empty image",
    lambda: expect_error(enc(lambda: Image.new("RGB", (0, 0))), contains=("empty",)),
)
add(
    A3,
    "encode PIL 15x16 (not a multiple of 8)",
    "ValueError naming nearest sizes / pad=True",
    lambda: expect_error(enc(lambda: Image.new("RGB", (15, 16))), contains=("pad=true",)),
)
add(
    A3,
    "encode PIL 1x1 with pad=True",
    "LongTensor [1, 1, 1]",
    lambda: expect_ok(enc(lambda: Image.new("RGB", (1, 1)), pad=True), _tokens_ok((1, 1, 1))),
)
add(
    A3,
    "encode list of PIL images of different sizes",
    "ValueError listing sizes",
    lambda: expect_error(
        enc(lambda: [Image.new("RGB", (16, 16)), Image.new("RGB", (24, 16))]), contains=("same size",)
    ),
)
add(
    A3,
    "encode list of PIL images of different modes",
    "LongTensor [2, 2, 2]",
    lambda: expect_ok(
        enc(lambda: [Image.new("RGB", (16, 16)), Image.new("P", (16, 16))]), _tokens_ok((2, 2, 2))
    ),
)
add(A3, "encode an empty list", "ValueError: empty batch", lambda: expect_error(enc([]), contains=("empty",)))
add(
    A3,
    "encode list of tensors",
    "TypeError: only PIL images in a list",
    lambda: expect_error(enc(lambda: [torch.zeros(3, 16, 16)]), (TypeError,)),
)
add(
    A3,
    "encode list of numpy arrays",
    "TypeError",
    lambda: expect_error(enc(lambda: [np.zeros((16, 16, 3), np.uint8)]), (TypeError,)),
)
add(
    A3,
    "encode None",
    "TypeError naming accepted inputs",
    lambda: expect_error(enc(None), (TypeError,), contains=("PIL",)),
)
add(
    A3,
    "encode a file path string",
    "TypeError naming accepted inputs",
    lambda: expect_error(enc("photo.jpg"), (TypeError,), contains=("PIL",)),
)
add(A3, "encode bytes", "TypeError", lambda: expect_error(enc(b"\xff\xd8"), (TypeError,)))
add(
    A3,
    "encode a nested Python list of floats",
    "TypeError",
    lambda: expect_error(enc([[[0.0] * 16] * 16] * 3), (TypeError,)),
)
add(
    A3,
    "encode a generator of PIL images",
    "TypeError",
    lambda: expect_error(enc(lambda: (Image.new("RGB", (16, 16)) for _ in range(2))), (TypeError,)),
)


@case(
    A3,
    "encode a lazily opened PIL image of a truncated JPEG",
    "ValueError saying the image cannot be decoded",
)
def _lazy_truncated() -> tuple[bool, str]:
    path = Work.new("img") / "cut.jpg"
    buffer = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(
        buffer, "JPEG", quality=95
    )
    path.write_bytes(buffer.getvalue()[: len(buffer.getvalue()) * 2 // 3])  # header intact, pixel data cut
    image = Image.open(path)  # opens lazily: the error comes when the pixels are decoded
    return expect_error(enc(image), contains=("cut.jpg", "truncated"))


@case(A3, "encode a closed PIL image", "ValueError")
def _closed_pil() -> tuple[bool, str]:
    path = Work.new("img") / "ok.png"
    Image.new("RGB", (16, 16)).save(path)
    im = Image.open(path)
    im.close()
    return expect_error(enc(im), (ValueError,), allow_deep=True)


# numpy
for _label, _arr, _exc, _cont in (
    ("float32 HWC in [0,1]", lambda: np.zeros((16, 16, 3), np.float32), TypeError, ("uint8",)),
    ("float64 HWC", lambda: np.zeros((16, 16, 3)), TypeError, ("uint8",)),
    ("int64 HWC", lambda: np.zeros((16, 16, 3), np.int64), TypeError, ("uint8",)),
    ("uint16 HWC", lambda: np.zeros((16, 16, 3), np.uint16), TypeError, ("uint8",)),
    ("bool HWC", lambda: np.zeros((16, 16, 3), bool), TypeError, ("uint8",)),
    ("object array", lambda: np.empty((16, 16, 3), object), TypeError, ("uint8",)),
    ("HW (2-D gray)", lambda: np.zeros((16, 16), np.uint8), ValueError, ("HWC",)),
    ("5-D", lambda: np.zeros((1, 1, 16, 16, 3), np.uint8), ValueError, ("HWC",)),
    ("1 channel HWC", lambda: np.zeros((16, 16, 1), np.uint8), ValueError, ("3",)),
    ("4 channels HWC (RGBA)", lambda: np.zeros((16, 16, 4), np.uint8), ValueError, ("3",)),
    ("CHW order (3,16,16)", lambda: np.zeros((3, 16, 16), np.uint8), ValueError, ("HWC",)),
    ("0-size BHWC", lambda: np.zeros((0, 16, 16, 3), np.uint8), ValueError, ("empty",)),
    ("0-height HWC", lambda: np.zeros((0, 16, 3), np.uint8), ValueError, ("empty",)),
):
    add(
        A3,
        f"encode numpy {_label}",
        f"{_exc.__name__} naming what is accepted",
        (lambda a=_arr, e=_exc, c=_cont: expect_error(enc(a), (e,), contains=c)),
    )
add(
    A3,
    "encode numpy uint8 BHWC batch of 2",
    "LongTensor [2, 2, 2]",
    lambda: expect_ok(enc(lambda: np.zeros((2, 16, 16, 3), np.uint8)), _tokens_ok((2, 2, 2))),
)
add(
    A3,
    "encode read-only numpy (np.asarray(PIL))",
    "tokens, no warning",
    lambda: expect_ok(
        enc(lambda: np.asarray(Image.new("RGB", (16, 16)))), _tokens_ok((1, 2, 2)), no_warnings=True
    ),
)
add(
    A3,
    "encode non-contiguous numpy (every 2nd pixel)",
    "same tokens as the contiguous copy",
    lambda: expect_ok(
        enc(lambda: np.asarray(_gradient("RGB", (32, 32)))[::2, ::2]),
        _same_tokens(lambda: np.ascontiguousarray(np.asarray(_gradient("RGB", (32, 32)))[::2, ::2])),
    ),
)
add(
    A3,
    "encode numpy with negative strides (np.flip)",
    "same tokens as the flipped copy",
    lambda: expect_ok(
        enc(lambda: np.flip(np.asarray(_gradient("RGB")), 1)),
        _same_tokens(lambda: np.ascontiguousarray(np.flip(np.asarray(_gradient("RGB")), 1))),
    ),
)

# tensors
_G = lambda: torch.from_numpy(np.asarray(_gradient("RGB"))).permute(2, 0, 1).float() / 127.5 - 1  # noqa: E731
for _label, _t, _exc, _cont in (
    ("float out of range (max 1.5)", lambda: torch.full((3, 16, 16), 1.5), ValueError, ("[-1, 1]",)),
    ("float in [0, 255]", lambda: torch.full((3, 16, 16), 200.0), ValueError, ("uint8",)),
    ("float with NaN", lambda: torch.full((3, 16, 16), float("nan")), ValueError, ("nan",)),
    ("float with +inf", lambda: torch.full((3, 16, 16), float("inf")), ValueError, ("inf",)),
    ("float with -inf", lambda: torch.full((3, 16, 16), float("-inf")), ValueError, ("inf",)),
    ("int32", lambda: torch.zeros(3, 16, 16, dtype=torch.int32), TypeError, ("uint8",)),
    ("int64", lambda: torch.zeros(3, 16, 16, dtype=torch.long), TypeError, ("uint8",)),
    ("bool", lambda: torch.zeros(3, 16, 16, dtype=torch.bool), TypeError, ("uint8",)),
    ("complex64", lambda: torch.zeros(3, 16, 16, dtype=torch.complex64), TypeError, ("float",)),
    ("meta device", lambda: torch.zeros(3, 16, 16, device="meta"), ValueError, ("meta",)),
    ("0-size batch", lambda: torch.zeros(0, 3, 16, 16), ValueError, ("empty",)),
    ("0 height", lambda: torch.zeros(1, 3, 0, 16), ValueError, ("empty",)),
    ("1 channel", lambda: torch.zeros(1, 1, 16, 16), ValueError, ("3",)),
    ("4 channels", lambda: torch.zeros(1, 4, 16, 16), ValueError, ("3",)),
    ("2-D", lambda: torch.zeros(16, 16), ValueError, ("CHW",)),
    ("5-D", lambda: torch.zeros(1, 1, 3, 16, 16), ValueError, ("CHW",)),
    ("HWC layout float (16,16,3)", lambda: torch.zeros(16, 16, 3), ValueError, ("3",)),
    ("sparse COO", lambda: torch.zeros(3, 16, 16).to_sparse(), (TypeError, ValueError), ("sparse",)),
    (
        "huge: expand(1,3,65536,65536) of one pixel",
        lambda: torch.zeros(1, 3, 1, 1).expand(1, 3, 65536, 65536),
        ValueError,
        ("GiB",),
    ),
):
    add(
        A3,
        f"encode tensor {_label}",
        f"{getattr(_exc, '__name__', 'ValueError/TypeError')} before any compute",
        (lambda t=_t, e=_exc, c=_cont: expect_error(enc(t), e if isinstance(e, tuple) else (e,), contains=c)),
    )
for _label, _t in (
    ("uint8", lambda: ((_G() + 1) * 127.5).round().to(torch.uint8)),
    ("float16", lambda: _G().half()),
    ("bfloat16", lambda: _G().bfloat16()),
    ("float64", lambda: _G().double()),
    ("non-contiguous (transposed twice)", lambda: _G().transpose(1, 2).contiguous().transpose(1, 2)),
    ("channels_last", lambda: _G()[None].contiguous(memory_format=torch.channels_last)),
    ("requires_grad", lambda: _G().requires_grad_()),
    ("slightly outside [-1, 1] (1.0005, within tolerance)", lambda: _G() * 1.0005),
):
    add(
        A3,
        f"encode tensor {_label}",
        "same tokens as the float32 tensor",
        (
            lambda t=_t: expect_ok(
                enc(t),
                lambda r: (
                    lambda ref: (
                        bool((r == ref).float().mean() >= 0.75),
                        f"tokens {tuple(r.shape)}, {int((r == ref).sum())}/{ref.numel()} equal to float32's",
                    )
                )(photos().encode(_G())),
            )
        ),
    )

# decode
_TOK = lambda: torch.randint(0, 1024, (1, 2, 2))  # noqa: E731
for _label, _t, _exc, _cont in (
    ("float tokens", lambda: _TOK().float(), TypeError, ("integer",)),
    ("bool tokens", lambda: torch.zeros(1, 2, 2, dtype=torch.bool), TypeError, ("integer",)),
    ("complex tokens", lambda: torch.zeros(1, 2, 2, dtype=torch.complex64), TypeError, ("integer",)),
    ("id = codebook_size (1024)", lambda: torch.full((1, 2, 2), 1024), ValueError, ("[0, 1024)",)),
    ("negative id", lambda: torch.full((1, 2, 2), -1), ValueError, ("[0, 1024)",)),
    ("int64 max id", lambda: torch.full((1, 2, 2), 2**63 - 1), ValueError, ("[0, 1024)",)),
    ("1-D tokens", lambda: torch.zeros(4, dtype=torch.long), ValueError, ("shape",)),
    ("2-D tokens (no batch axis)", lambda: torch.zeros(2, 2, dtype=torch.long), ValueError, ("batch",)),
    (
        "4-D tokens for a single-codebook codec",
        lambda: torch.zeros(1, 1, 2, 2, dtype=torch.long),
        ValueError,
        ("shape",),
    ),
    ("meta tokens", lambda: torch.zeros(1, 2, 2, dtype=torch.long, device="meta"), ValueError, ("meta",)),
    ("empty batch (0,2,2)", lambda: torch.zeros(0, 2, 2, dtype=torch.long), ValueError, ("empty",)),
    ("empty grid (1,0,0)", lambda: torch.zeros(1, 0, 0, dtype=torch.long), ValueError, ("empty",)),
    ("numpy tokens", lambda: np.zeros((1, 2, 2), np.int64), TypeError, ("tensor",)),
    ("list tokens", lambda: [[[0, 1], [2, 3]]], TypeError, ("tensor",)),
    ("sparse COO tokens", lambda: torch.zeros(1, 2, 2, dtype=torch.long).to_sparse(), TypeError, ("sparse",)),
    (
        "huge grid (1, 8192, 8192) = 65536 px",
        lambda: torch.zeros(1, 1, 1, dtype=torch.long).expand(1, 8192, 8192),
        ValueError,
        ("GiB",),
    ),
):
    add(
        A3,
        f"decode {_label}",
        f"{_exc.__name__} before any compute",
        (lambda t=_t, e=_exc, c=_cont: expect_error(lambda: photos().decode(t()), (e,), contains=c)),
    )
for _label, _dtype in (("int32", torch.int32), ("int16", torch.int16), ("uint8 (ids < 256)", torch.uint8)):
    add(
        A3,
        f"decode {_label} tokens",
        "same image as int64 tokens",
        (
            lambda d=_dtype: expect_ok(
                lambda: photos().decode(torch.tensor([[[1, 2], [3, 200]]]).to(d)),
                lambda r: (
                    torch.equal(r, photos().decode(torch.tensor([[[1, 2], [3, 200]]]))),
                    f"{_describe(r)}",
                ),
            )
        ),
    )
add(
    A3,
    "decode non-contiguous tokens (transposed)",
    "image [1, 3, 16, 16]",
    lambda: expect_ok(
        lambda: photos().decode(_TOK().transpose(1, 2)),
        lambda r: (tuple(r.shape) == (1, 3, 16, 16), _describe(r)),
    ),
)

# decode_latents / encode_latents
for _label, _t, _exc, _cont in (
    ("3 channels (codec has 4)", lambda: torch.zeros(1, 3, 2, 2), ValueError, ("4",)),
    ("NaN", lambda: torch.full((1, 4, 2, 2), float("nan")), ValueError, ("nan",)),
    ("inf", lambda: torch.full((1, 4, 2, 2), float("inf")), ValueError, ("inf",)),
    ("0-size", lambda: torch.zeros(0, 4, 2, 2), ValueError, ("shape",)),
    ("meta", lambda: torch.zeros(1, 4, 2, 2, device="meta"), ValueError, ("meta",)),
    ("int tensor", lambda: torch.zeros(1, 4, 2, 2, dtype=torch.long), TypeError, ("float",)),
    ("3-D (no batch)", lambda: torch.zeros(4, 2, 2), (TypeError, ValueError), ("[B",)),
    ("numpy array", lambda: np.zeros((1, 4, 2, 2), np.float32), TypeError, ("tensor",)),
    ("sparse COO", lambda: torch.zeros(1, 4, 2, 2).to_sparse(), TypeError, ("sparse",)),
    (
        "huge: expand(1,4,8192,8192)",
        lambda: torch.zeros(1, 4, 1, 1).expand(1, 4, 8192, 8192),
        ValueError,
        ("GiB",),
    ),
):
    add(
        A3,
        f"decode_latents {_label}",
        "ValueError/TypeError before any compute",
        (
            lambda t=_t, e=_exc, c=_cont: expect_error(
                lambda: photos().decode_latents(t()), e if isinstance(e, tuple) else (e,), contains=c
            )
        ),
    )
add(
    A3,
    "decode_latents float16 latents",
    "image [1, 3, 16, 16] float32",
    lambda: expect_ok(
        lambda: photos().decode_latents(torch.zeros(1, 4, 2, 2, dtype=torch.float16)),
        lambda r: (r.dtype == torch.float32 and tuple(r.shape) == (1, 3, 16, 16), _describe(r)),
    ),
)
add(
    A3,
    "encode_latents tensor with NaN",
    "ValueError: NaN",
    lambda: expect_error(
        lambda: photos().encode_latents(torch.full((1, 3, 16, 16), float("nan"))), contains=("nan",)
    ),
)
add(
    A3,
    "encode_latents -> decode_latents(quantize=True) round trip",
    "image [1, 3, 16, 16]",
    lambda: expect_ok(
        lambda: photos().decode_latents(photos().encode_latents(_G()), quantize=True),
        lambda r: (tuple(r.shape) == (1, 3, 16, 16), _describe(r)),
    ),
)

# reconstruct keeps the input's form
for _label, _x, _check in (
    (
        "PIL P 20x20 with pad=True",
        lambda: _gradient("P", (20, 20)),
        lambda r: (isinstance(r, Image.Image) and r.size == (20, 20) and r.mode == "RGB", _describe(r)),
    ),
    (
        "numpy uint8 HWC",
        lambda: np.asarray(_gradient("RGB")),
        lambda r: (
            isinstance(r, np.ndarray) and r.dtype == np.uint8 and r.shape == (16, 16, 3),
            _describe(r),
        ),
    ),
    (
        "uint8 tensor CHW",
        lambda: torch.zeros(3, 16, 16, dtype=torch.uint8),
        lambda r: (r.dtype == torch.uint8 and tuple(r.shape) == (3, 16, 16), _describe(r)),
    ),
    (
        "float16 tensor BCHW",
        lambda: _G()[None].half(),
        lambda r: (r.dtype == torch.float16 and tuple(r.shape) == (1, 3, 16, 16), _describe(r)),
    ),
    (
        "list of 2 PIL",
        lambda: [_gradient("RGB"), _gradient("L")],
        lambda r: (isinstance(r, list) and len(r) == 2, f"list of {len(r)}"),
    ),
):
    add(
        A3,
        f"reconstruct {_label}",
        "same kind, size and dtype as the input",
        (lambda x=_x, c=_check: expect_ok(lambda: photos().reconstruct(x(), pad=True), c)),
    )
add(
    A3,
    "tokens_shape(12, 16)",
    "ValueError: not a multiple of 8",
    lambda: expect_error(lambda: photos().tokens_shape(12, 16), contains=("multiple",)),
)
add(
    A3,
    "tokens_shape(0, 0)",
    "ValueError suggesting a valid size (8x8), not 0x0",
    lambda: expect_error(lambda: photos().tokens_shape(0, 0), contains=("8x8",)),
)


@case(
    A3,
    "decode [B, h, w] tokens on a residual-quantizer codec (needs [B, depth, h, w])",
    "ValueError naming the shape",
)
def _residual_tokens() -> tuple[bool, str]:
    from movq.config import ResidualConfig

    torch.manual_seed(0)
    codec = Codec(tiny_config(quantizer=ResidualConfig(codebook_size=32, depth=2))).eval()
    return expect_error(lambda: codec.decode(torch.zeros(1, 4, 4, dtype=torch.long)), contains=("depth",))


@case(
    A3,
    "save_pretrained into a path that is an existing file",
    "an error naming the path (nothing half-written)",
)
def _save_into_file() -> tuple[bool, str]:
    path = Work.new("save") / "model.ckpt"
    path.write_bytes(b"x")
    return expect_error(
        lambda: tiny().save_pretrained(path), (OSError, ValueError), contains=("model.ckpt",), allow_deep=True
    )


@case(A3, "DVAE decode id >= vocab_size", "ValueError naming the range")
def _dvae_range() -> tuple[bool, str]:
    from movq.dvae import DVAE, DVAEConfig

    torch.manual_seed(0)
    model = DVAE(DVAEConfig(n_hid=16, n_init=8, vocab_size=32)).eval()
    return expect_error(lambda: model.decode(torch.full((1, 2, 2), 32)), contains=("[0, 32)",))


# load arguments
_LOAD = "ValueError/FileNotFoundError/TypeError, clear"
for _label, _call, _exc, _cont in (
    (
        "unknown name 'sber-movqgan-67'",
        lambda: movq.load("sber-movqgan-67"),
        ValueError,
        ("did you mean 'sber-movqgan-67m'",),
    ),
    (
        "unknown name 'movqgan-tiny-photo'",
        lambda: movq.load("movqgan-tiny-photo"),
        ValueError,
        ("did you mean",),
    ),
    (
        "unknown preset with pretrained=False",
        lambda: movq.load("movqgan-67", pretrained=False),
        ValueError,
        ("did you mean",),
    ),
    (
        "a preset name with pretrained=True",
        lambda: movq.load("movqgan-tiny"),
        ValueError,
        ("pretrained=false",),
    ),
    (
        "preset name + a different preset=",
        lambda: movq.load("movqgan-tiny", pretrained=False, preset="movqgan-67m"),
        ValueError,
        ("conflicting",),
    ),
    (
        "pretrained=False with ema=True",
        lambda: movq.load("movqgan-tiny", pretrained=False, ema=True),
        ValueError,
        ("ema",),
    ),
    (
        "preset= with a save_pretrained folder",
        lambda: movq.load(tiny_folder(), preset="movqgan-tiny"),
        ValueError,
        ("preset",),
    ),
    (
        "ema=True with a save_pretrained folder",
        lambda: movq.load(tiny_folder(), ema=True),
        ValueError,
        ("ema",),
    ),
    (
        "preset= with another registered model",
        lambda: movq.load("sber-movqgan-67m", preset="movqgan-102m"),
        ValueError,
        ("preset",),
    ),
    (
        "preset= with the package model",
        lambda: movq.load("movqgan-tiny-photos", preset="movqgan-tiny"),
        ValueError,
        ("preset",),
    ),
    (
        "unknown preset= with a checkpoint file",
        lambda: movq.load(_ckpt_file(), preset="movqgan-tinyy"),
        ValueError,
        ("did you mean",),
    ),
    (
        "wrong preset= for a checkpoint file",
        lambda: movq.load(_ckpt_file(), preset="movqgan-67m"),
        ValueError,
        ("tiny.ckpt", "shape"),
    ),
    ("ema=True on a checkpoint without EMA", lambda: movq.load(_ckpt_file(), ema=True), ValueError, ("ema",)),
    (
        "missing file 'nope.ckpt'",
        lambda: movq.load(str(Work.root / "nope.ckpt")),
        FileNotFoundError,
        ("nope.ckpt",),
    ),
    (
        "missing folder 'nope/sub'",
        lambda: movq.load(str(Work.root / "nope" / "sub")),
        FileNotFoundError,
        ("nope",),
    ),
    ("an empty folder", lambda: movq.load(Work.new("empty")), FileNotFoundError, ("config.json",)),
    ("a folder of images", lambda: movq.load(data_good()), FileNotFoundError, ("photo0.jpg",)),
    ("an image file", lambda: movq.load(sorted(data_good().iterdir())[0]), ValueError, (".jpg",)),
    ("name_or_path=123 (an int)", lambda: movq.load(123), TypeError, ("str",)),
    ("name_or_path='' (empty)", lambda: movq.load(""), ValueError, ("empty",)),
    ("device='foo'", lambda: movq.load("movqgan-tiny-photos", device="foo"), ValueError, ("device",)),
    (
        "device='cuda' on a machine without GPU",
        lambda: movq.load("movqgan-tiny-photos", device="cuda"),
        ValueError,
        ("cuda",),
    ),
    (
        "dtype='float16' (a string)",
        lambda: movq.load("movqgan-tiny-photos", dtype="float16"),
        TypeError,
        ("dtype",),
    ),
    (
        "dtype=torch.int64",
        lambda: movq.load("movqgan-tiny-photos", dtype=torch.int64),
        (TypeError, ValueError),
        ("float",),
    ),
    (
        "revision= with a local folder (cannot apply)",
        lambda: movq.load(tiny_folder(), revision="v2"),
        ValueError,
        ("revision",),
    ),
    (
        "revision= with the package model (cannot apply)",
        lambda: movq.load("movqgan-tiny-photos", revision="v2"),
        ValueError,
        ("revision",),
    ),
    (
        "Hub model offline (local_files_only=True)",
        lambda: movq.load("sber-movqgan-67m", local_files_only=True),
        FileNotFoundError,
        ("sber-movqgan-67m", "offline"),
    ),
    (
        "URL model offline (HF_HUB_OFFLINE)",
        lambda: _offline(lambda: movq.load("dalle-dvae")),
        FileNotFoundError,
        ("dalle-dvae",),
    ),
):
    add(
        A3,
        f"load: {_label}",
        f"{getattr(_exc, '__name__', 'TypeError/ValueError')} saying what is accepted",
        (lambda c=_call, e=_exc, k=_cont: expect_error(c, e if isinstance(e, tuple) else (e,), contains=k)),
    )


def _offline(fn: Callable[[], Any]) -> Any:
    old = os.environ.get("HF_HUB_OFFLINE")
    os.environ["HF_HUB_OFFLINE"] = "1"
    try:
        return fn()
    finally:
        if old is None:
            del os.environ["HF_HUB_OFFLINE"]
        else:
            os.environ["HF_HUB_OFFLINE"] = old


@cache
def _ckpt_file() -> Path:
    """A plain original-format checkpoint of a random movqgan-tiny (no saved config)."""
    path = Work.root / "fixtures" / "tiny.ckpt"
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"state_dict": preset_state()}, path)
    return path


# ============================================================================ 4. CLIs

A4 = "4-cli"
ONE_LINE = "one 'PROG: error:' line, exit 2, nothing written"


def bench_args(data: Path | None = None, *extra: str, model: str = "movqgan-tiny-photos") -> list[str]:
    return [
        "--model",
        model,
        "--data",
        str(data or data_good()),
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
    add(A4, f"bench {_label}", ONE_LINE, _bench_error(_extra, _cont))
add(
    A4,
    "bench --model movqgan-tiny-photo (typo)",
    ONE_LINE,
    _bench_error([], ("movqgan-tiny-photo", "did you mean"), model="movqgan-tiny-photo"),
)
add(A4, "bench --model given twice", ONE_LINE, _bench_error(["--model", "movqgan-tiny-photos"], ("twice",)))
add(
    A4,
    "bench --model a preset (no weights)",
    ONE_LINE,
    _bench_error([], ("pretrained",), model="movqgan-tiny"),
)
add(
    A4,
    "bench --data missing folder",
    ONE_LINE,
    _bench_error([], ("does not exist",), data=lambda: Work.root / "no-such-folder"),
)
add(
    A4,
    "bench --data empty folder",
    ONE_LINE,
    _bench_error([], ("no image files",), data=lambda: Work.new("empty")),
)
add(
    A4,
    "bench --data is a file",
    ONE_LINE,
    _bench_error([], ("folder",), data=lambda: sorted(data_good().iterdir())[0]),
)


@case(
    A4,
    "bench --data with a FIFO named x.png and a symlink to /dev/zero named z.jpg",
    "no hang; exit 0 with the 2 photos",
)
def _bench_special_files() -> tuple[bool, str]:
    data = folder_with({}, good=2)
    os.mkfifo(data / "x.png")
    (data / "z.jpg").symlink_to("/dev/zero")
    out = Work.new("bench") / "r.json"
    return expect_cli_ok(
        "movq-bench",
        bench_args(data, "--out", str(out)),
        lambda r: (lambda c: (c is not None and 2 in c, f"image counts {c}"))(_n_images(_results(out))),
    )


add(
    A4,
    "bench --data only non-image files",
    ONE_LINE,
    _bench_error([], ("no image files",), data=lambda: folder_with({"a.txt": b"x", "b.csv": b"y"})),
)
add(
    A4,
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


def _a_file(out: Path) -> Path:
    (out / "file").write_text("x")
    return out / "file"


add(
    A4,
    "bench --out under a file (not a folder)",
    ONE_LINE,
    _bench_unwritable("--out", lambda o: _a_file(o) / "results.json", ("--out",)),
)
add(A4, "bench --out is an existing folder", ONE_LINE, _bench_unwritable("--out", lambda o: o, ("folder",)))
add(
    A4,
    "bench --out under /proc (unwritable)",
    ONE_LINE,
    _bench_unwritable("--out", lambda o: Path("/proc/movq/results.json"), ("--out",)),
)
add(
    A4,
    "bench --markdown under a file",
    ONE_LINE,
    _bench_unwritable("--markdown", lambda o: _a_file(o) / "r.md", ("--markdown",)),
)
add(A4, "bench --cache is a file", ONE_LINE, _bench_unwritable("--cache", _a_file, ("--cache",)))
add(
    A4,
    "bench --cache under /proc",
    ONE_LINE,
    _bench_unwritable("--cache", lambda o: Path("/proc/movq-cache"), ("--cache",)),
)


def _bench_evil_model(kind: str) -> Callable[[], tuple[bool, str]]:
    def run() -> tuple[bool, str]:
        folder = Work.new("evil")
        path = folder / "model.ckpt"
        torch.save({"state_dict": {"x": Evil(Work.marker("bench-model"))}}, path)
        if kind == "inception":
            path = folder / "pt_inception.pth"
            torch.save({"x": Evil(Work.marker("bench-inception"))}, path)
            return _bench_error(
                ["--metrics", "fid", "--inception-weights", str(path)], ("pt_inception.pth",)
            )()
        if kind == "lpips":
            path = folder / "lpips.pth"
            torch.save({"x": Evil(Work.marker("bench-lpips"))}, path)
            return _bench_error(["--metrics", "lpips", "--lpips-weights", str(path)], ("lpips.pth",))()
        return _bench_error([], ("model.ckpt",), model=str(path))()

    return run


add(A4, "bench --model Evil checkpoint", NOTHING_RUNS + ", exit 2", _bench_evil_model("model"))
add(A4, "bench --inception-weights Evil file", NOTHING_RUNS + ", exit 2", _bench_evil_model("inception"))
add(A4, "bench --lpips-weights Evil file", NOTHING_RUNS + ", exit 2", _bench_evil_model("lpips"))
add(
    A4,
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
    A4,
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
    A4,
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
    A4,
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


@case(A4, "bench --limit 1 on 4 images", "exit 0; exactly 1 image measured")
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
            return False, f"first run failed: {_short(one.err, 100)}"
        shards = sorted(cache_dir.rglob("shard*.pt"))
        if not shards:
            return False, "no shard file written by the first run"
        for shard in shards:
            if damage == "evil":
                torch.save({"done": [0], "stats": Evil(Work.marker("cache")), "skipped": []}, shard)
            elif damage == "garbage":
                shard.write_bytes(os.urandom(200))
            elif damage == "wrong":
                torch.save({"done": [0], "stats": {"nope": 1}, "skipped": []}, shard)

        def check(r: CliRun) -> tuple[bool, str]:
            a, b = _results(first), _results(second)
            strip = lambda d: {
                k: v
                for k, v in d.items()
                if k not in ("timing", "throughput", "elapsed_s", "date", "created", "run")
            }  # noqa: E731
            same = json.dumps(strip(a).get("results", strip(a)), sort_keys=True) == json.dumps(
                strip(b).get("results", strip(b)), sort_keys=True
            )
            return same, "same results as the first run" if same else "results differ from the first run"

        return expect_cli_ok("movq-bench", args + ["--out", str(second)], check)

    return run


add(
    A4,
    "bench --cache: shard file replaced by an Evil pickle",
    "marker never created; recomputed; same results",
    _bench_cache_case("evil"),
)
add(
    A4,
    "bench --cache: shard file replaced by garbage",
    "recomputed; same results",
    _bench_cache_case("garbage"),
)
add(
    A4,
    "bench --cache: shard file with a valid pickle of wrong content",
    "recomputed (or one-line error); no traceback",
    _bench_cache_case("wrong"),
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
    add(A4, f"speed {_label}", ONE_LINE, _speed_error(_extra, _cont))
add(A4, "speed --model unknown", ONE_LINE, _speed_error([], ("did you mean",), model="movqgan-tiny-photo"))
add(
    A4,
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
                str(_a_file(o) / "s.json"),
            ],
            ("--out",),
        )
    )(Work.new("speed")),
)


@case(A4, "speed: valid tiny run", "exit 0, a table and the JSON rows")
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
        str(data or data_good()),
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
    ("--batch-size 0", ["--batch-size", "0"], ("batch_size",)),
    ("--max-steps 0", ["--max-steps", "0"], ("max_steps",)),
    ("--save-every 0", ["--save-every", "0"], ("save_every",)),
    ("--keep-last 0", ["--keep-last", "0"], ("keep_last",)),
    ("--num-workers -1", ["--num-workers", "-1"], ("num_workers",)),
    ("--grad-accum 0", ["--grad-accum", "0"], ("grad_accum",)),
    ("--ema-decay 1.5", ["--ema-decay", "1.5"], ("ema_decay",)),
    ("--lr nan", ["--lr", "nan"], ("lr",)),
    ("--lr -1", ["--lr", "-1"], ("lr",)),
    ("--amp fp8", ["--amp", "fp8"], ("amp",)),
    ("--device foo", ["--device", "foo"], ("foo",)),
    ("--device cuda (no GPU)", ["--device", "cuda"], ("cuda",)),
    ("--resolution 100000", ["--resolution", "100000"], ("GiB",)),
    ("--resolution 0", ["--resolution", "0"], ("resolution",)),
    ("--resolution 15 (not a multiple of f=2)", ["--resolution", "15"], ("multiple",)),
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
    ("--disc-norm layer", ["--disc-norm", "layer"], ("disc_norm",)),
    ("--warmup-steps -5", ["--warmup-steps", "-5"], ("warmup",)),
):
    add(A4, f"train {_label}", ONE_LINE, _train_error(_extra, _cont))
add(
    A4,
    "train --codec with a 2**40-code codebook",
    ONE_LINE + ", before allocating",
    _train_error(
        [
            "--codec",
            json.dumps(
                {
                    "ch_mult": [1, 2],
                    "attn_resolutions": [],
                    "quantizer": {"kind": "vq", "codebook_size": 2**40},
                }
            ),
        ],
        ("GiB",),
    ),
)
add(
    A4,
    "train --out inside --data (image grids would become training data)",
    ONE_LINE,
    lambda: (
        lambda data: expect_cli_error(
            "movq-train", train_args(data / "run", data), ("--out",), no_outputs=_run_outputs(data / "run")
        )
    )(folder_with({}, good=4)),
)
add(A4, "train without --data", ONE_LINE, _train_error([], ("--data",), replace={"--data": None}))
add(
    A4,
    "train --data missing folder",
    ONE_LINE,
    _train_error([], ("does not exist",), data=lambda: Work.root / "no-such"),
)
add(
    A4,
    "train --data empty folder",
    ONE_LINE,
    _train_error([], ("no image files",), data=lambda: Work.new("empty")),
)
add(
    A4,
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
    A4,
    "train --out is a file",
    ONE_LINE,
    lambda: (lambda w: expect_cli_error("movq-train", train_args(_a_file(w)), ("--out",)))(Work.new("train")),
)
add(
    A4,
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
    A4,
    "train --config missing.json",
    ONE_LINE,
    lambda: expect_cli_error("movq-train", ["--config", "/nonexistent/run.json"], ("run.json",)),
)
add(A4, "train --config with invalid JSON", ONE_LINE, _train_config_file("run.json", "{nope", ("run.json",)))
add(
    A4,
    "train --config holding a JSON list",
    ONE_LINE,
    _train_config_file("run.json", "[1, 2]", ("run.json",)),
)
add(
    A4,
    "train --config with invalid TOML",
    ONE_LINE,
    _train_config_file("run.toml", "lr = = 3", ("run.toml",)),
)
add(
    A4,
    "train --config with an unknown field",
    ONE_LINE,
    _train_config_file("run.json", '{"lrr": 0.1}', ("lrr", "did you mean")),
)


def _train_evil(flag: str) -> Callable[[], tuple[bool, str]]:
    def run() -> tuple[bool, str]:
        work = Work.new("train")
        path = work / ("init.ckpt" if flag == "--init" else "lpips.pth")
        torch.save({"state_dict": {"x": Evil(Work.marker("train" + flag))}}, path)
        extra = [flag, str(path)] + (["--perceptual-net", "alex"] if flag != "--init" else [])
        args = train_args(work / "out") + extra
        if flag == "--init":
            i = args.index("--codec")
            del args[i : i + 2]
        return expect_cli_error("movq-train", args, (path.name,), no_outputs=_run_outputs(work / "out"))

    return run


add(A4, "train --init Evil checkpoint", NOTHING_RUNS + ", exit 2", _train_evil("--init"))
add(
    A4, "train --perceptual-weights Evil file", NOTHING_RUNS + ", exit 2", _train_evil("--perceptual-weights")
)
add(
    A4,
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
    out = Work.root / "fixtures" / "run"
    run = run_cli("movq-train", train_args(out))
    if run.rc != 0:
        raise RuntimeError(f"the base training run failed: {run.err[-2000:]}")
    return out


def resumed_copy() -> Path:
    out = Work.new("resume") / "run"
    shutil.copytree(base_run(), out, symlinks=True)
    return out


@case(A4, "train: valid 2-step run", "exit 0; checkpoints step-1, step-2; log.csv; movq.load(OUT) works")
def _train_ok() -> tuple[bool, str]:
    out = base_run()
    steps = sorted(p.name for p in (out / "checkpoints").iterdir())
    rows = (out / "log.csv").read_text().strip().splitlines()
    return expect_ok(
        lambda: movq.load(out),
        lambda c: (
            steps == ["step-00000001", "step-00000002"] and len(rows) == 3,
            f"{steps}, {len(rows) - 1} log rows, load(OUT) -> {_describe(c)}",
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
                f"{'warned' if warned else 'NO warning'}; checkpoints now {final}; {_short(r.out.strip().splitlines()[-1] if r.out.strip() else '', 60)}",
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
    A4,
    "train --resume: newest state.pt is garbage",
    "warning, falls back to step-1, exit 0",
    _resume(lambda o: _write(_newest_state(o), os.urandom(500)), [], "ok", ("skipping damaged checkpoint",)),
)
add(
    A4,
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
    A4,
    "train --resume: newest state.pt is an Evil pickle",
    "marker never created; warning; falls back; exit 0",
    _resume(
        lambda o: _write(
            _newest_state(o), lambda p: torch.save({"step": 2, "x": Evil(Work.marker("resume"))}, p)
        ),
        [],
        "ok",
        ("skipping damaged checkpoint",),
    ),
)
add(
    A4,
    "train --resume: newest state.pt a valid pickle missing keys ({'step': 2})",
    "warning and fall back (or one-line error)",
    _resume(
        lambda o: _write(_newest_state(o), lambda p: torch.save({"step": 2}, p)), [], "ok", ("step-00000002",)
    ),
)
add(
    A4,
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
    A4,
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
    A4,
    "train --resume: newest state.pt with a mis-shaped weight (no codec_config)",
    "warning and fall back, or one-line error",
    _resume(_swap_arch, [], "either", ("encoder.conv_in.weight",)),
)
add(
    A4,
    "train --resume: newest state.pt has the loop's keys but no 'model'",
    "warning and fall back, or one-line error",
    _resume(
        lambda o: _write(
            _newest_state(o),
            lambda p: torch.save(
                {k: v for k, v in torch.load(p, weights_only=True).items() if k != "model"}, p
            ),
        ),
        [],
        "either",
        ("model",),
    ),
)
add(
    A4,
    "train --resume --max-steps 1 (below the saved step 2)",
    ONE_LINE,
    lambda: expect_cli_error(
        "movq-train", train_args(resumed_copy(), None, "--resume", "--max-steps", "1"), ("--max-steps",)
    ),
)
add(
    A4,
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
    A4,
    "train --resume: garbage log.csv",
    "warning, log moved aside, exit 0",
    _resume(lambda o: (o / "log.csv").write_bytes(b"\x00\xffnot,a,csv\n1,2\n"), [], "ok", ("log.csv",)),
)
add(
    A4,
    "train --resume: newest train_config.json garbage",
    "falls back to the other saved config, exit 0",
    _resume(
        lambda o: (o / "checkpoints" / "step-00000002" / "train_config.json").write_text("{nope"), [], "ok"
    ),
)
add(
    A4,
    "train --resume on an empty --out",
    "starts from scratch and says so, exit 0",
    lambda: (
        lambda out: expect_cli_ok(
            "movq-train",
            train_args(out, None, "--resume"),
            lambda r: ("from scratch" in r.out, _short(r.out.strip().splitlines()[0], 90)),
        )
    )(Work.new("resume") / "fresh"),
)
add(
    A4,
    "train --resume when already at --max-steps",
    "exit 0, nothing new trained",
    lambda: (
        lambda out: expect_cli_ok(
            "movq-train",
            train_args(out, None, "--resume"),
            lambda r: (
                sorted(p.name for p in (out / "checkpoints").iterdir()) == ["step-00000001", "step-00000002"],
                _short(r.out.strip().splitlines()[-1], 90),
            ),
        )
    )(resumed_copy()),
)


# ---- movq-tokenize and TokenDataset

A4T = "4-cli-tokenize"


def tok_args(data: Path | str, out: Path, *extra: str) -> list[str]:
    return [
        "--model",
        str(tiny_folder()),
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
            "movq-tokenize", tok_args(data() if data else data_good(), target, *extra), contains, outputs
        )

    return run


def _manifest(name: str, text: str | bytes) -> Callable[[], Path]:
    def make() -> Path:
        path = Work.new("manifest") / name
        if isinstance(text, bytes):
            path.write_bytes(text)
        else:
            path.write_text(text.replace("GOOD", str(sorted(data_good().iterdir())[0])))
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
    add(A4T, f"tokenize {_label}", ONE_LINE, _tok_error(_extra, _cont))
add(
    A4T,
    "tokenize --model Evil checkpoint",
    NOTHING_RUNS + ", exit 2",
    lambda: (
        lambda p: (
            torch.save({"state_dict": {"x": Evil(Work.marker("tok"))}}, p),
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
    (
        "manifest .jsonl 100000-deep nesting",
        _manifest("m.jsonl", "[" * 100000 + "]" * 100000 + "\n"),
        ("m.jsonl",),
    ),
    ("manifest .jsonl not UTF-8", _manifest("m.jsonl", b'{"image": "\xff\xfe"}\n'), ("m.jsonl",)),
    ("empty manifest", _manifest("m.jsonl", ""), ("m.jsonl",)),
    (
        "manifest .csv without an 'image' column",
        _manifest("m.csv", "path,caption\nGOOD,x\n"),
        ("m.csv", "image"),
    ),
    (
        "manifest .csv with a 200 kB field",
        _manifest("m.csv", "image,caption\nGOOD," + "x" * 200_000 + "\n"),
        ("m.csv",),
    ),
):
    add(A4T, f"tokenize {_label}", ONE_LINE, _tok_error([], _cont, data=_data))


def _make_tar(path: Path, members: dict[str, bytes]) -> None:
    import tarfile

    with tarfile.open(path, "w") as archive:
        for name, content in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(content)
            archive.addfile(info, io.BytesIO(content))


for _label, _prepare, _cont in (
    ("a file", lambda w: _a_file(w), ("--out",)),
    ("under /proc", lambda w: Path("/proc/movq-tok"), ("--out",)),
    (
        "holding meta.json = [1]",
        lambda w: (lambda o: (o.mkdir(), (o / "meta.json").write_text("[1]"), o)[2])(w / "o"),
        ("meta.json",),
    ),
    (
        "holding a binary meta.json",
        lambda w: (lambda o: (o.mkdir(), (o / "meta.json").write_bytes(b"\xff\xfe\x00"), o)[2])(w / "o"),
        ("meta.json",),
    ),
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
    add(A4T, f"tokenize --out {_label}", ONE_LINE, _tok_error([], _cont, out=_prepare))


def _fifo_guard(fifo: Path, seconds: float = 8.0) -> list[bool]:
    """Open ``fifo`` for writing after ``seconds`` (releasing a reader blocked on it); the list says whether it had to."""
    import threading

    released: list[bool] = []

    def release() -> None:
        time.sleep(seconds)
        try:
            fd = os.open(fifo, os.O_WRONLY | os.O_NONBLOCK)
        except OSError:  # nobody is reading it: nothing hung
            return
        released.append(True)
        os.close(fd)

    threading.Thread(target=release, daemon=True).start()
    return released


def _tok_ok(
    data: Path, check: Callable[[Path, CliRun], tuple[bool, str]], fifo: Path | None = None
) -> tuple[bool, str]:
    out = Work.new("tok") / "out"
    released = _fifo_guard(fifo) if fifo is not None else []
    ok, text = expect_cli_ok("movq-tokenize", tok_args(data, out), lambda r: check(out, r))
    if released:
        return False, f"HUNG on the FIFO until the audit released it; then: {text}"
    return ok, text


def _counts(out: Path) -> tuple[int, int]:
    index = (out / "index.jsonl").read_text().splitlines()
    skipped = (out / "skipped.jsonl").read_text().splitlines()
    return len(index), len(skipped)


@case(
    A4T,
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


@case(A4T, "tokenize: manifest naming a FIFO", "exit 0, the FIFO skipped, no hang")
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
        fifo=folder / "pipe.png",
    )


@case(A4T, "tokenize: image folder whose caption photo0.txt is a FIFO", "exit 0, no caption, no hang")
def _tok_caption_fifo() -> tuple[bool, str]:
    data = folder_with({}, good=2)
    os.mkfifo(data / "photo0.txt")
    return _tok_ok(
        data,
        lambda out, r: (lambda n: (n == (2, 0), f"{n[0]} stored, {n[1]} skipped"))(_counts(out)),
        fifo=data / "photo0.txt",
    )


@case(
    A4T, "tokenize: .tar whose member header claims 8 GB", "one-line error naming the tar, nothing allocated"
)
def _tok_tar_huge() -> tuple[bool, str]:
    import tarfile

    folder = Work.new("tar")
    good = sorted(data_good().iterdir())[0].read_bytes()
    path = folder / "s.tar"
    with open(path, "wb") as f:
        info = tarfile.TarInfo("a.jpg")
        info.size = len(good)
        f.write(info.tobuf() + good + b"\0" * (-len(good) % 512))
        info = tarfile.TarInfo("b.jpg")
        info.size = 8 * 2**30
        f.write(info.tobuf() + good[:1000])
    return expect_cli_error("movq-tokenize", tok_args(path, folder / "out"), ("s.tar", "truncated"))


@case(A4T, "tokenize: every image unreadable", "exit non-zero (nothing tokenized), or exit 0 saying 0 images")
def _tok_all_bad() -> tuple[bool, str]:
    data = folder_with({"a.jpg": b"junk", "b.png": b""})
    out = Work.new("tok") / "out"
    run = run_cli("movq-tokenize", tok_args(data, out))
    last = (_error_lines(run) or [""])[-1]
    if run.error is not None:
        return False, f"raw traceback: {type(run.error).__name__}: {_short(str(run.error), 80)}"
    if run.rc == 2:
        return True, f"rc=2: {_short(last, 90)}"
    return (
        "0 images" in run.out,
        f"rc={run.rc}: {_short(run.out.strip().splitlines()[0] if run.out.strip() else '', 90)}",
    )


@cache
def token_folder() -> Path:
    out = Work.root / "fixtures" / "tokens"
    run = run_cli("movq-tokenize", tok_args(data_good(), out))
    if run.rc != 0:
        raise RuntimeError(f"tokenize fixture failed: {run.err[-1000:]}")
    return out


def _dataset_case(
    damage: Callable[[Path], None], contains: tuple[str, ...], access: bool = False
) -> Callable[[], tuple[bool, str]]:
    def run() -> tuple[bool, str]:
        from movq.data import TokenDataset

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
    A4T,
    "TokenDataset: valid folder",
    "every item readable",
    lambda: expect_ok(
        lambda: [
            __import__("movq.data", fromlist=["TokenDataset"]).TokenDataset(token_folder())[i]["tokens"].shape
            for i in range(4)
        ],
        lambda r: (len(r) == 4 and all(tuple(s) == (8, 8) for s in r), f"4 items, tokens {tuple(r[0])}"),
    ),
)
for _label, _damage, _cont, _access in (
    ("meta.json is a list", lambda o: (o / "meta.json").write_text("[1]"), ("meta.json",), False),
    (
        "meta.json kind 'pixels'",
        lambda o: (o / "meta.json").write_text(
            json.dumps({**json.loads((o / "meta.json").read_text()), "kind": "pixels"})
        ),
        ("kind",),
        False,
    ),
    (
        "index.jsonl garbage",
        lambda o: (o / "index.jsonl").write_text("{nope\n"),
        ("index.jsonl", "line 1"),
        False,
    ),
    (
        "index.jsonl row without 'shard'",
        lambda o: (o / "index.jsonl").write_text('{"source": "a", "caption": null, "offset": 0}\n'),
        ("index.jsonl", "line 1"),
        False,
    ),
    (
        "index.jsonl not UTF-8",
        lambda o: (o / "index.jsonl").write_bytes(b"\xff\xfe\n"),
        ("index.jsonl",),
        False,
    ),
    ("index.jsonl missing", lambda o: (o / "index.jsonl").unlink(), ("index.jsonl",), False),
    (
        "shard file garbage",
        lambda o: (o / "shards" / "shard-000000.safetensors").write_bytes(os.urandom(100)),
        ("shard-000000",),
        True,
    ),
    (
        "shard file is a pickle",
        lambda o: torch.save({"x": Evil(Work.marker("shard"))}, o / "shards" / "shard-000000.safetensors"),
        ("shard-000000",),
        True,
    ),
    (
        "index offset past the shard's rows",
        lambda o: (o / "index.jsonl").write_text(
            '{"source": "a", "caption": null, "shard": 0, "offset": 99}\n'
        ),
        ("row 99",),
        True,
    ),
    (
        "index naming a missing shard",
        lambda o: (o / "index.jsonl").write_text(
            '{"source": "a", "caption": null, "shard": 7, "offset": 0}\n'
        ),
        ("shard-000007",),
        True,
    ),
):
    add(
        A4T,
        f"TokenDataset: {_label}",
        "ValueError / FileNotFoundError naming the file",
        _dataset_case(_damage, _cont, _access),
    )


# ============================================================================ 5. silent wrong results

A5 = "5-silent"


@case(A5, "load(folder, pretrained=False): the architecture, fresh weights", "same config, different weights")
def _pretrained_false_folder() -> tuple[bool, str]:
    def check(c: Codec) -> tuple[bool, str]:
        same_cfg = c.config.to_dict() == tiny().config.to_dict()
        differ = not torch.equal(c.decoder.conv_out.weight, tiny().decoder.conv_out.weight)
        return (
            same_cfg and differ,
            f"config {'same' if same_cfg else 'DIFFERS'}, weights {'fresh' if differ else 'LOADED (ignored pretrained=False)'}",
        )

    return expect_ok(lambda: movq.load(tiny_folder(), pretrained=False), check)


@case(A5, "load(checkpoint file, pretrained=False)", "fresh weights of the inferred architecture")
def _pretrained_false_file() -> tuple[bool, str]:
    return expect_ok(
        lambda: movq.load(_ckpt_file(), pretrained=False),
        lambda c: (
            not torch.equal(c.decoder.conv_out.weight, preset_state()["decoder.conv_out.weight"]),
            f"{c.config.name}, fresh weights",
        ),
    )


def _ema_ckpt() -> Path:
    path = Work.new("ema") / "ema.ckpt"
    state = dict(preset_state())
    state["model_ema.decoderconv_outweight"] = torch.full_like(state["decoder.conv_out.weight"], 0.5)
    state["model_ema.decay"] = torch.tensor(0.999)
    torch.save({"state_dict": state}, path)
    return path


for _ema, _want in ((None, 0.5), (True, 0.5), (False, None)):
    add(
        A5,
        f"load(ckpt with model_ema.*, ema={_ema})",
        "EMA weights" if _want else "raw weights",
        (
            lambda e=_ema, w=_want: expect_ok(
                lambda: movq.load(_ema_ckpt(), ema=e),
                lambda c: (
                    bool((c.decoder.conv_out.weight == 0.5).all()) == (w is not None),
                    f"conv_out {'= EMA 0.5' if (c.decoder.conv_out.weight == 0.5).all() else '= raw'}",
                ),
            )
        ),
    )
add(
    A5,
    "load(..., dtype=torch.bfloat16)",
    "codec in bfloat16",
    lambda: expect_ok(
        lambda: movq.load(tiny_folder(), dtype=torch.bfloat16),
        lambda c: (c.dtype == torch.bfloat16, str(c.dtype)),
    ),
)
add(
    A5,
    "load() returns eval mode",
    "training is False everywhere",
    lambda: expect_ok(
        lambda: movq.load(tiny_folder()), lambda c: (not any(m.training for m in c.modules()), "eval")
    ),
)


@case(
    A5,
    "encode() on a codec left in train mode does not change its codebook",
    "codebook unchanged, same tokens twice",
)
def _train_mode_encode() -> tuple[bool, str]:
    from movq.config import EMAConfig

    torch.manual_seed(0)
    codec = Codec(
        tiny_config(quantizer=EMAConfig(codebook_size=32, dead_code_threshold=0.0))
    )  # train mode: nn.Module's default
    before = {k: v.clone() for k, v in codec.quantize.state_dict().items()}
    x = torch.rand(2, 3, 16, 16) * 2 - 1

    def run() -> Any:
        first = codec.encode(x)
        return first, codec.encode(x)

    def check(r: Any) -> tuple[bool, str]:
        changed = [k for k, v in codec.quantize.state_dict().items() if not torch.equal(v, before[k])]
        return not changed and torch.equal(*r), f"changed buffers {changed[:3]}" if changed else "unchanged"

    return expect_ok(run, check)


@case(A5, "reconstruct a 16-bit PIL photo-like image", "not all white; close to the 8-bit version")
def _recon16() -> tuple[bool, str]:
    with Image.open(sorted(data_good().iterdir())[0]) as im:
        gray8 = im.convert("L").resize((32, 32))
    gray16 = Image.fromarray(np.asarray(gray8, np.uint16) * 257)
    return expect_ok(
        lambda: photos().reconstruct(gray16),
        lambda r: (
            lambda a, b: (
                abs(a.mean() - b.mean()) < 10 and a.mean() < 250,
                f"mean {a.mean():.0f} vs 8-bit {b.mean():.0f}",
            )
        )(np.asarray(r, float), np.asarray(photos().reconstruct(gray8), float)),
    )


@case(A5, "bench results.json holds finite numbers", "no NaN / inf")
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
    A5,
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


@case(
    A5,
    "load a .ckpt of a movq codec with FSQ (config saved in the state dict)",
    "same tokens as the original codec",
)
def _fsq_roundtrip() -> tuple[bool, str]:
    from movq.config import FSQConfig

    torch.manual_seed(0)
    codec = Codec(tiny_config(embed_dim=3, quantizer=FSQConfig(levels=(5, 4, 3)))).eval()
    path = Work.new("fsq") / "fsq.pt"
    torch.save(codec.state_dict(), path)
    x = torch.rand(1, 3, 16, 16) * 2 - 1
    return expect_ok(
        lambda: movq.load(path), lambda c: (torch.equal(c.encode(x), codec.encode(x)), "identical tokens")
    )


# ============================================================================ main


def run_cases(cases: list[Case], verbose: bool) -> list[Outcome]:
    outcomes = []
    for i, c in enumerate(cases, 1):
        start = time.perf_counter()
        try:
            with memory_cap(c.mem_gb):
                ok, text = c.fn()
        except Exception as error:  # noqa: BLE001 - a broken case is reported, not fatal
            ok, text = False, f"AUDIT CASE CRASHED: {type(error).__name__}: {_short(str(error))}"
            if verbose:
                traceback.print_exc()
        outcome = Outcome(
            c,
            ok,
            text.replace(str(Work.root) + "/", "$TMP/").replace(str(Work.root), "$TMP"),
            time.perf_counter() - start,
        )
        outcomes.append(outcome)
        if verbose:
            print(
                f"[{i}/{len(cases)}] {'OK  ' if ok else 'FAIL'} {c.name} -> {text} ({outcome.seconds:.1f}s)",
                file=sys.stderr,
                flush=True,
            )
    return outcomes


def table(outcomes: list[Outcome]) -> str:
    lines = []
    for area, title in AREAS.items():
        rows = [o for o in outcomes if o.case.area == area]
        if not rows:
            continue
        lines += [
            "",
            f"## {title} ({sum(o.ok for o in rows)}/{len(rows)} OK)",
            "",
            "| case | expected | outcome | OK? |",
            "|---|---|---|---|",
        ]
        for o in rows:
            cell = lambda s: s.replace("|", "\\|")  # noqa: E731
            lines.append(
                f"| {cell(o.case.name)} | {cell(o.case.expected)} | {cell(o.text)} | {'OK' if o.ok else '**FAIL**'} |"
            )
    return "\n".join(lines) + "\n"


def summary(outcomes: list[Outcome]) -> str:
    failed = [o for o in outcomes if not o.ok]
    text = [f"\n{len(outcomes)} cases: {len(outcomes) - len(failed)} OK, {len(failed)} failed."]
    kinds = {
        "code execution": sum("CODE RAN" in o.text for o in failed),
        "raw tracebacks / wrong exception types": sum(o.text.startswith("raw") for o in failed),
        "silent wrong results / no error": sum(
            o.text.startswith("no error") or o.case.area == A5 for o in failed
        ),
    }
    text.append(
        "Failures by kind: "
        + ", ".join(f"{k}: {v}" for k, v in kinds.items())
        + f", other: {len(failed) - sum(kinds.values())}."
    )
    for area, title in AREAS.items():
        rows = [o for o in outcomes if o.case.area == area]
        if rows:
            text.append(f"  {title}: {sum(o.ok for o in rows)}/{len(rows)} OK")
    if code_ran():
        text.append(f"MARKERS CREATED (code ran): {code_ran()}")
    return "\n".join(text) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--area", help="run only areas whose key contains this (code, files, api, cli, silent)"
    )
    parser.add_argument("--only", help="run only cases whose name contains this (case-insensitive)")
    parser.add_argument("--markdown", help="also write the table and summary to this file")
    parser.add_argument("--keep", action="store_true", help="keep the temporary folder")
    parser.add_argument("--quiet", action="store_true", help="no per-case progress on stderr")
    parser.add_argument(
        "--mem-limit-gb", type=float, default=12.0, help="address-space cap of this process (0: none)"
    )
    args = parser.parse_args(argv)
    if args.mem_limit_gb > 0:
        limit = int(args.mem_limit_gb * 2**30)
        soft, hard = resource.getrlimit(resource.RLIMIT_AS)
        resource.setrlimit(
            resource.RLIMIT_AS, (limit if hard == resource.RLIM_INFINITY else min(limit, hard), hard)
        )
    cases = [
        c
        for c in CASES
        if (not args.area or args.area in c.area) and (not args.only or args.only.lower() in c.name.lower())
    ]
    Work.root = Path(tempfile.mkdtemp(prefix="movq-hostile-"))
    Work.markers = Work.root / "markers"
    Work.markers.mkdir()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # nothing here may touch the network
    try:
        outcomes = run_cases(cases, verbose=not args.quiet)
        report = table(outcomes) + summary(outcomes)
    finally:
        if not args.keep:
            shutil.rmtree(Work.root, ignore_errors=True)
    print(report)
    if args.markdown:
        Path(args.markdown).write_text(report)
    return 0 if all(o.ok for o in outcomes) else 1


if __name__ == "__main__":
    raise SystemExit(main())
