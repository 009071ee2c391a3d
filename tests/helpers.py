"""Helpers shared by several test files (the fixtures built on them are in ``conftest.py``).

Test files import these (``from helpers import tiny_codec``), never private names of other test files.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import hashlib
import io
import json
import os
import struct
import subprocess
import sys
import threading
import traceback
import types
import warnings
import zipfile
import zlib
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlparse

import numpy as np
import pytest
import torch
from PIL import Image

from movq import Codec, CodecConfig, get_preset
from movq.config import VQConfig
from movq.train.config import CodecTrainConfig

SRC = str(Path(__file__).resolve().parents[1] / "src")
"""This checkout's ``src`` folder (what subprocesses must import)."""

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


def benchmark_module(name: str) -> types.ModuleType:
    """The script ``benchmarks/<name>.py`` imported as a module (benchmarks are measurements, not part of
    the package), cached in ``sys.modules`` under its name."""
    if name not in sys.modules:
        import importlib.util

        spec = importlib.util.spec_from_file_location(name, BENCHMARKS / f"{name}.py")
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return sys.modules[name]

# ------------------------------------------------------------------ Hub cache

def make_hub_cache(root: Path, repo_id: str, files: dict[str, Path], monkeypatch: pytest.MonkeyPatch) -> None:
    """A Hub cache (``models--org--name/refs/main`` + ``snapshots/<commit>/``) and offline mode."""
    hub_snapshot(root, repo_id, files, HUB_COMMIT)
    use_hub_cache(root, monkeypatch)


# ------------------------------------------------------------------ codecs

SMALL_2X = CodecConfig(ch=32, ch_mult=(1, 2), num_res_blocks=1, attn_resolutions=(), resolution=8,
                       quantizer=VQConfig(codebook_size=64))
"""A 2x-downsampling codec small enough for CPU tests (``tiny_codec(config=SMALL_2X)``)."""


def tiny_codec(seed: int = 0, config: CodecConfig | None = None, **fields: Any) -> Codec:
    """An eval-mode :class:`Codec` with random weights drawn after ``torch.manual_seed(seed)``:
    ``config`` (default: the ``movqgan-tiny`` preset) with ``fields`` replaced (``quantizer=...``)."""
    torch.manual_seed(seed)
    config = dataclasses.replace(config or get_preset("movqgan-tiny"), **fields)
    return Codec(CodecConfig.from_dict(config.to_dict())).eval()


def recorded_inputs(recorded: dict[str, Any], weights: dict[str, torch.Tensor]) -> torch.Tensor:
    """The images a family's recording (``tests/fixtures/<family>.json``) ran its original on, rebuilt from
    the recipe's seed; asserts first that ``weights`` (as the recorder checksummed them) and the images
    are the recorded ones (checksums within 1e-9 relative), so a change of torch's generator cannot hide."""
    fixtures = benchmark_module("record_family_fixtures")
    assert fixtures.checksum(weights) == pytest.approx(recorded["weights_checksum"], rel=1e-9), (
        "the seeded weights differ from the recording (did torch's random generator change?)"
    )
    recipe = recorded["recipe"]
    images = fixtures.seeded_images(recipe["batch"], recipe["size"], recipe["inputs_seed"])
    assert fixtures.checksum(images) == pytest.approx(recorded["inputs_checksum"], rel=1e-9)
    return images


def assert_matches_family_fixture(codec: Any, images: torch.Tensor, recorded: dict[str, Any]) -> torch.Tensor:
    """``codec`` against a family's recorded original (``tests/fixtures/<family>.json``, written by
    ``benchmarks/record_family_fixtures.py``): ``codec.encode(images)`` (a multi-scale codec's maps
    flattened coarse to fine) equals the original's token ids on
    at least 99.9% of positions, and ``codec.decode`` of those ids matches the recorded crop and per-channel
    mean / std within 1e-3; the recording itself measured the same bounds. Returns ``codec.encode(images)``."""
    crop_size = benchmark_module("record_family_fixtures").CROP
    tokens = codec.encode(images)
    expected = torch.tensor(recorded["tokens"])
    flat = codec.flat_tokens(tokens)  # a multi-scale codec's per-scale maps, concatenated coarse to fine
    assert flat.shape == expected.shape
    assert (flat == expected).double().mean() >= 0.999
    pixels = codec.decode(expected, clamp=False)
    summary = recorded["pixels"]
    top, left = summary["crop_top_left"]
    crop = pixels[:, :, top:top + crop_size, left:left + crop_size].double()
    assert (crop - torch.tensor(summary["crop"], dtype=torch.float64)).abs().max() < 1e-3
    assert torch.allclose(pixels.double().mean(dim=(2, 3)), torch.tensor(summary["mean"], dtype=torch.float64), atol=1e-3)
    assert torch.allclose(pixels.double().std(dim=(2, 3)), torch.tensor(summary["std"], dtype=torch.float64), atol=1e-3)
    assert recorded["parity"]["tokens_equal"] >= 0.999 and recorded["parity"]["max_pixel_difference"] < 1e-3
    return tokens


# ------------------------------------------------------------------ Hugging Face Hub cache

HUB_COMMIT = "0123456789abcdef0123456789abcdef01234567"


def hub_snapshot(root: Path, repo_id: str, files: dict[str, Path], commit: str = HUB_COMMIT,
                 refs: tuple[str, ...] = ("main",)) -> Path:
    """One snapshot of ``repo_id`` laid out by hand in the Hub cache ``root``
    (``benchmarks/hub_parity.py``'s :func:`hub_snapshot`); returns the snapshot folder."""
    return benchmark_module("hub_parity").hub_snapshot(root, repo_id, files, commit, refs)


def use_hub_cache(root: Path, monkeypatch: Any, offline: bool = True) -> None:
    """Point ``huggingface_hub`` at the cache ``root`` (``HF_HUB_CACHE``) and, with ``offline``, set
    ``HF_HUB_OFFLINE=1`` (both the variable and ``huggingface_hub.constants``, read at import)."""
    from huggingface_hub import constants

    monkeypatch.setenv("HF_HUB_CACHE", str(root))
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(root))
    if offline:
        monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    else:
        monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", offline)


class FakeHub:
    """A loopback Hugging Face Hub for the download code: serves model repos from memory (``add``) on
    127.0.0.1 with the endpoints ``huggingface_hub`` uses (``/api/models/<repo>/revision/<rev>``,
    ``/api/models/<repo>/tree/<commit>``, ``HEAD``/``GET /<repo>/resolve/<rev>/<path>``) and records
    every request as ``(method, path, authorization header)`` in ``requests``. ``serve(monkeypatch,
    cache)`` points ``huggingface_hub`` at it, online, with the Hub cache ``cache``."""

    def __init__(self) -> None:
        self.repos, self.refs, self.requests = {}, {}, []
        hub = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_HEAD(self):
                self.respond(head=True)

            def do_GET(self):
                self.respond(head=False)

            def respond(self, head):
                path = unquote(urlparse(self.path).path)
                hub.requests.append((self.command, path, self.headers.get("authorization")))
                status, headers, body = hub.route(path)
                self.send_response(status)
                for k, v in {**headers, "Content-Length": str(len(body))}.items():
                    self.send_header(k, v)
                self.end_headers()
                if not head:
                    self.wfile.write(body)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def serve(self, monkeypatch: Any, cache: Path) -> None:
        from huggingface_hub import constants

        use_hub_cache(cache, monkeypatch, offline=False)
        monkeypatch.setattr(constants, "ENDPOINT", self.url)
        monkeypatch.setattr(constants, "HUGGINGFACE_CO_URL_TEMPLATE", self.url + "/{repo_id}/resolve/{revision}/{filename}")
        monkeypatch.setenv("HF_ENDPOINT", self.url)

    def files_fetched(self) -> list[str]:
        """Paths of the files downloaded (``GET .../resolve/<rev>/<path>``), in order."""
        return [path.split("/resolve/", 1)[1].split("/", 1)[1] for method, path, _ in self.requests
                if method == "GET" and "/resolve/" in path]

    def add(self, repo_id: str, commit: str, files: dict[str, bytes], refs: tuple[str, ...] = ("main",)) -> None:
        self.repos.setdefault(repo_id, {})[commit] = dict(files)
        for ref in refs:
            self.refs[(repo_id, ref)] = commit

    def commit_of(self, repo_id: str, rev: str) -> str | None:
        if rev in self.repos.get(repo_id, {}):
            return rev
        return self.refs.get((repo_id, rev))

    def route(self, path: str) -> tuple[int, dict[str, str], bytes]:
        error = (404, {"X-Error-Code": "RepoNotFound"}, b'{"error": "Repository not found"}')
        parts = path.strip("/").split("/")
        if parts[:2] == ["api", "models"]:
            repo_id = "/".join(parts[2:4])
            kind, rev = parts[4], parts[5]
            commit = self.commit_of(repo_id, rev)
            if repo_id not in self.repos:
                return error
            if commit is None:
                return 404, {"X-Error-Code": "RevisionNotFound"}, b'{"error": "Invalid rev id"}'
            files = self.repos[repo_id][commit]
            if kind == "revision":
                info = {"id": repo_id, "modelId": repo_id, "sha": commit, "siblings": [{"rfilename": p} for p in files]}
                return 200, {"Content-Type": "application/json"}, json.dumps(info).encode()
            tree = [{"type": "file", "oid": hashlib.sha1(b).hexdigest(), "size": len(b), "path": p} for p, b in files.items()]
            return 200, {"Content-Type": "application/json"}, json.dumps(tree).encode()
        if len(parts) >= 5 and parts[2] == "resolve":
            repo_id, rev, name = "/".join(parts[:2]), parts[3], "/".join(parts[4:])
            commit = self.commit_of(repo_id, rev)
            files = self.repos.get(repo_id, {}).get(commit)
            if files is None or name not in files:
                return 404, {"X-Error-Code": "EntryNotFound"}, b"{}"
            body = files[name]
            return 200, {"X-Repo-Commit": commit, "ETag": f'"{hashlib.sha256(body).hexdigest()}"'}, body
        return error


# ------------------------------------------------------------------ movq-bench

BENCH_IMAGES = Path(__file__).resolve().parents[1].parent / "shared" / "images" / "val"
BENCH_PHOTOS = ["065_tuxpaint-dat_mossy_bark.jpg", "020_matplotlib_grace_hopper.jpg", "060_tuxpaint-dat_burnt_bark.jpg"]
BENCH_FAST = ["--resolution", "64", "--batch-size", "2", "--feature-extractor", "random", "--no-progress", "--threads", "1"]
"""movq-bench flags for quick CPU runs."""


def bench_photos() -> list[Path]:
    """Three real photos from the shared image folder (the test is skipped when it is absent)."""
    paths = [BENCH_IMAGES / name for name in BENCH_PHOTOS]
    if not all(p.is_file() for p in paths):
        pytest.skip(f"real photos not found under {BENCH_IMAGES} (the shared image folder is absent)")
    return paths


# ------------------------------------------------------------------ movq-tokenize

TOKENIZE_MODEL = "movqgan-tiny-photos"
TOKENIZE_RES = 32
TOKENIZE_FAST = ["--resolution", str(TOKENIZE_RES), "--batch-size", "3", "--shard-size", "2", "--num-workers", "0",
                 "--no-progress", "--threads", "1"]
"""movq-tokenize flags for quick CPU runs."""


def smooth_image(seed: int, size: tuple[int, int]) -> Image.Image:
    """A ``size`` (width, height) RGB image of smooth colour waves plus noise, different per ``seed``."""
    rng = np.random.default_rng(seed)
    w, h = size
    yy, xx = np.mgrid[0:h, 0:w]
    base = np.stack([np.sin(xx / (5 + seed) + c) * np.cos(yy / (7 + c)) for c in range(3)], -1)
    pixels = (base * 100 + 128 + rng.normal(0, 20, (h, w, 3))).clip(0, 255).astype(np.uint8)
    return Image.fromarray(pixels)


def token_files(out: Path) -> dict[str, bytes]:
    """``{relative path: bytes}`` of a movq-tokenize output folder's shards, index and summary (not meta.json)."""
    names = sorted(p for p in out.rglob("*") if p.is_file() and p.suffix in (".safetensors", ".json", ".jsonl"))
    return {p.relative_to(out).as_posix(): p.read_bytes() for p in names if p.name != "meta.json"}


def kill_when_exists(cmd: list[str], marker: Path, env: dict[str, str], done: Path | None = None) -> None:
    """Run ``cmd`` in a child and SIGKILL it as soon as ``marker`` exists (asserting it was still running
    then, and, when given, that its end-of-run file ``done`` was not written yet)."""
    import signal
    import time

    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    start = time.time()
    while not marker.exists():
        assert proc.poll() is None, proc.communicate()[0][-2000:]
        assert time.time() - start < 120
        time.sleep(0.005)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert done is None or not done.exists(), "the run finished before it could be killed"


def kill_tokenize_after_first_shard(args: list[str], out: Path) -> tuple[int, subprocess.CompletedProcess]:
    """Run ``movq-tokenize ARGS --out OUT`` in a child, SIGKILL it as soon as shard 0's sidecar exists, then
    rerun the same command to completion (asserting the killed run wrote no index). Returns (shard sidecars
    finished before the kill, the rerun's result)."""
    from movq.tokenize.shards import shard_paths

    cmd = [sys.executable, "-m", "movq.tokenize", *args, "--out", str(out)]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": SRC}
    kill_when_exists(cmd, shard_paths(out, 0)[1], env, done=out / "index.jsonl")  # killed before the end: no index yet
    finished = len(list((out / "shards").glob("*.json")))
    return finished, subprocess.run(cmd, check=False, env=env, capture_output=True, text=True, timeout=300)


def rewrite_shard(out: Path, shard: int, values=None, stamp: dict | None = None) -> None:
    """Replace shard ``shard``'s data file (atomically) by ``values(old tensor)`` and / or another run stamp."""
    from safetensors import safe_open
    from safetensors.torch import save_file

    from movq.tokenize.shards import shard_paths

    path = shard_paths(out, shard)[0]
    with safe_open(str(path), framework="pt") as f:
        key, metadata = next(iter(f.keys())), f.metadata()
        old = f.get_tensor(key)
    metadata = {"movq": json.dumps(stamp)} if stamp is not None else metadata
    save_file({key: old if values is None else values(old).contiguous()}, str(path) + ".tmp", metadata=metadata)
    os.replace(str(path) + ".tmp", path)


# ------------------------------------------------------------------ movq-train

TRAIN_CODEC = {"ch": 32, "ch_mult": [1, 2], "attn_resolutions": [], "resolution": 16}
"""``--codec`` overrides of a codec small enough to train on CPU in seconds."""


def make_images(root: Path, n: int = 6) -> Path:
    """Smooth random colour images (sizes vary) in a nested folder."""
    rng = np.random.default_rng(0)
    (root / "sub").mkdir(parents=True, exist_ok=True)
    for i in range(n):
        small = rng.integers(0, 255, (4, 5, 3), dtype=np.uint8)
        img = Image.fromarray(small).resize((40 + 3 * i, 32), Image.BICUBIC)
        img.save(root / ("sub" if i % 2 else "") / f"img{i}.png")
    return root


def tiny_train_config(data: Path, out: Path, **kw: Any) -> CodecTrainConfig:
    """A :class:`CodecTrainConfig` of a few CPU steps of :data:`TRAIN_CODEC` at 16 px; ``kw`` override fields."""
    base = dict(
        data=str(data), out=str(out), codec=TRAIN_CODEC, resolution=16, batch_size=2, max_steps=4,
        perceptual_net="none", num_workers=0, warmup_steps=1, lr=1e-3, log_every=1, save_every=2,
        image_every=2, progress=False, disc_start=2, amp="none", disc_ndf=8, disc_layers=2,
    )
    base.update(kw)
    return CodecTrainConfig(**base)


def train_args(data, out, *extra) -> list[str]:
    """movq-train flags of a 4-step CPU run of :data:`TRAIN_CODEC` at 16 px (checkpoints every 2 steps);
    ``extra`` flags are appended (a later flag wins)."""
    return [
        "--data", str(data), "--out", str(out), "--codec", json.dumps(TRAIN_CODEC), "--resolution", "16",
        "--batch-size", "2", "--max-steps", "4", "--save-every", "2", "--perceptual-net", "none",
        "--num-workers", "0", "--warmup-steps", "0", "--disc-start", "100", "--no-progress", *extra,
    ]


def train_error_line(capsys) -> str:
    """The one ``movq-train: error: ...`` line a failed run printed (asserted: one line, no traceback)."""
    err = capsys.readouterr().err.strip()
    assert err.startswith("movq-train: error: ") and "Traceback" not in err and len(err.splitlines()) == 1, err
    return err


# ------------------------------------------------------------------ hostile pickles


class RunsCode:
    """A pickle payload that would create ``marker`` when unpickled."""

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def save_as_foreign_module(module: torch.nn.Module, module_name: str, class_name: str, path, legacy: bool = False) -> None:
    """``torch.save`` a whole module whose class lives in a package that is NOT importable at load time
    (like OpenAI's ``dall_e``): the loader must rebuild it without importing anything. ``legacy``:
    PyTorch's pre-1.6 (non-zip) container, the one OpenAI's published files use."""
    fake = types.ModuleType(module_name)
    cls = type(class_name, (type(module),), {"__module__": module_name})
    setattr(fake, class_name, cls)
    package = module_name.split(".")[0]
    sys.modules[package] = types.ModuleType(package)
    sys.modules[module_name] = fake
    try:
        module.__class__ = cls
        with warnings.catch_warnings():  # the legacy saver warns that it cannot find the class's source
            warnings.simplefilter("ignore")
            torch.save(module, path, _use_new_zipfile_serialization=not legacy)
    finally:
        del sys.modules[module_name], sys.modules[package]


# ------------------------------------------------------------------ hostile-input cases
# The hostile-input suite (tests/test_hostile_*.py) states each case as a small function returning
# ``(ok, detail)``; the judges below decide ``ok`` by the README's rules:
# - no file runs code: every malicious pickle would create a marker file; the marker must never appear;
# - a user error is a ValueError / TypeError / FileNotFoundError (or subclass) raised by movq itself,
#   its message naming what was wrong; an exception leaking out of torch / PIL / safetensors / numpy /
#   json (its innermost frame is there) counts as a raw traceback;
# - CLIs answer a user error with one ``PROG: error: ...`` line on stderr and exit code 2, no traceback,
#   and write no output (argparse's usage line before it is accepted);
# - nothing succeeds with a wrong result.

NOTHING_RUNS = "refused, names the file, marker never created"
"""What every malicious-file case expects."""

HOSTILE_USER_ERRORS = (ValueError, TypeError, FileNotFoundError, NotADirectoryError)
_DEEP = ("/torch/", "/PIL/", "/safetensors/", "/numpy/", "/huggingface_hub/", "/json/", "/pickle.py", "/zipfile",
         "/tomllib/")

MOVQ_INTERNALS = {
    "config_to_diffusers": "movq.hub.diffusers:config_to_diffusers",
    "load_state_file": "movq.hub.safe_load:load_state_file",
    "load_lpips": "movq.metrics.lpips:load_lpips",
    "load_inception_file": "movq.metrics.inception:load_inception_file",
    "CheckpointError": "movq.train.checkpoint:CheckpointError",
    "load_checkpoint": "movq.train.checkpoint:load_checkpoint",
    "ShardCache": "movq.bench.cache:ShardCache",
    "ImageRecord": "movq.bench.data:ImageRecord",
    "load_image": "movq.bench.data:load_image",
    "load_preprocessed": "movq.image_files:load_preprocessed",
    "open_rgb": "movq.image_files:open_rgb",
    "DVAE": "movq.dvae:DVAE",
    "DVAEConfig": "movq.dvae:DVAEConfig",
    "T2IConfig": "movq.t2i:T2IConfig",
    "T2ITransformer": "movq.t2i:T2ITransformer",
    "UNet": "movq.diffusion.unet:UNet",
    "UNetConfig": "movq.diffusion.unet:UNetConfig",
    "GaussianDiffusion": "movq.diffusion:GaussianDiffusion",
    "TokenDataset": "movq.tokenize.dataset:TokenDataset",
}
"""The movq names below the public API that hostile-input cases use: the one place to fix when one moves."""


def movq_internal(name: str) -> Any:
    """The object :data:`MOVQ_INTERNALS` names ``name`` (imported on first use)."""
    import importlib

    module, attr = MOVQ_INTERNALS[name].split(":")
    return getattr(importlib.import_module(module), attr)


def console_script(prog: str) -> tuple[str, str]:
    """``(module, function)`` of console script ``prog`` (``movq-bench``, ...), as pyproject.toml declares it."""
    try:
        import tomllib
    except ImportError:  # Python 3.10
        import tomli as tomllib

    scripts = tomllib.loads((Path(SRC).parent / "pyproject.toml").read_text())["project"]["scripts"]
    module, attr = scripts[prog].split(":")
    return module, attr


def cli_main(prog: str) -> Any:
    """The ``main(argv)`` of console script ``prog``."""
    import importlib

    module, attr = console_script(prog)
    return getattr(importlib.import_module(module), attr)


class Work:
    """Where a hostile case writes: ``root`` (this test's tmp_path), ``markers`` (what malicious pickles
    would create) and ``shared`` (the session's folder for the cached inputs several cases use).
    The ``hostile_work`` fixture of conftest.py sets them."""

    root: Path = Path()
    markers: Path = Path()
    shared: Path = Path()
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


def code_ran() -> list[str]:
    """Names of the marker files malicious pickles created (must stay empty)."""
    return sorted(p.name for p in Work.markers.iterdir()) if Work.markers.is_dir() else []


@contextlib.contextmanager
def memory_cap(extra_gb: float = 4.0) -> Iterator[None]:
    """Cap the address space at what the process maps now plus ``extra_gb`` (restored afterwards), so a
    case that tries to allocate too much gets an allocation error instead of starving the machine."""
    try:
        import resource
    except ImportError:  # not on Linux: no cap
        yield
        return
    status = Path("/proc/self/status")
    if extra_gb <= 0 or not status.exists():
        yield
        return
    soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    mapped = next(int(line.split()[1]) * 1024 for line in status.read_text().splitlines() if line.startswith("VmSize:"))
    cap = mapped + int(extra_gb * 2**30)
    for limit in (hard, soft):
        if limit != resource.RLIM_INFINITY:
            cap = min(cap, limit)
    resource.setrlimit(resource.RLIMIT_AS, (cap, hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_AS, (soft, hard))


@dataclasses.dataclass
class HostileCase:
    """One hostile input: ``fn()`` builds it, feeds it to movq and returns ``(ok, what happened)``."""

    name: str
    expected: str
    fn: Callable[[], tuple[bool, str]]
    slow: bool = False
    xfail: str | None = None
    marks: tuple[Any, ...] = ()
    mem_gb: float = 4.0

    def check(self) -> None:
        with memory_cap(self.mem_gb):
            ok, detail = self.fn()
        assert ok, f"{self.name}: expected {self.expected}; got {detail}"


NO_GPU = (pytest.mark.skipif(torch.cuda.is_available(), reason="checks the no-GPU message"),)
"""``marks`` of a case that asks for CUDA and expects to be told there is no GPU."""


class HostileCases(list):
    """The cases of one test file; :meth:`params` feeds them to ``pytest.mark.parametrize``."""

    def add(self, name: str, expected: str, fn: Callable[[], tuple[bool, str]], **kw: Any) -> None:
        self.append(HostileCase(name, expected, fn, **kw))

    def case(self, name: str, expected: str, **kw: Any) -> Callable[[Callable], Callable]:
        def register(fn: Callable[[], tuple[bool, str]]) -> Callable[[], tuple[bool, str]]:
            self.add(name, expected, fn, **kw)
            return fn

        return register

    def params(self) -> list[Any]:
        names = [c.name for c in self]
        assert len(set(names)) == len(names), "hostile case names must be unique"
        return [
            pytest.param(c, id=c.name, marks=[
                *c.marks,
                *([pytest.mark.slow] if c.slow else []),
                *([pytest.mark.xfail(strict=True, reason=c.xfail)] if c.xfail else []),
            ])
            for c in self
        ]


def short(text: str, n: int = 110) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= n else text[: n - 3] + "..."


def _deep(error: BaseException) -> str | None:
    """The library the exception leaked out of (its innermost frame), or None when movq raised it."""
    frames = traceback.extract_tb(error.__traceback__)
    where = frames[-1].filename if frames else ""
    if "/movq/" in where:
        return None
    for part in _DEEP:
        if part in where:
            return part.strip("/").removesuffix(".py")
    return Path(where).name or "?"


def describe(value: Any) -> str:
    """A short description of a result (type, dtype, shape)."""
    if isinstance(value, torch.Tensor):
        return f"{value.dtype} tensor {tuple(value.shape)}"
    if isinstance(value, np.ndarray):
        return f"{value.dtype} array {value.shape}"
    if isinstance(value, Image.Image):
        return f"PIL {value.mode} {value.size}"
    if isinstance(value, torch.nn.Module):
        return f"{type(value).__name__} ({getattr(getattr(value, 'config', None), 'name', '?')})"
    return f"{type(value).__name__} {short(repr(value), 60)}"


def expect_error(fn: Callable[[], Any], types: tuple[type[BaseException], ...] = HOSTILE_USER_ERRORS,
                 contains: tuple[str, ...] = (), allow_deep: bool = False) -> tuple[bool, str]:
    """OK when ``fn`` raises one of ``types`` from movq's own code, the message has every ``contains``
    (case-insensitive) and no marker appeared."""
    before = set(code_ran())
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            result = fn()
    except Exception as error:  # noqa: BLE001 - judging every outcome
        ran = set(code_ran()) - before
        message = f"{type(error).__name__}: {short(str(error))}"
        if ran:
            return False, f"CODE RAN (marker {sorted(ran)}); {message}"
        where = _deep(error)
        if not isinstance(error, types):
            return False, f"raw {message}" + (f" (from {where})" if where else "")
        if where and not allow_deep:
            return False, f"raw {message} (raised inside {where})"
        missing = [c for c in contains if c.lower() not in str(error).lower()]
        if missing:
            return False, f"{message} -- message lacks {missing}"
        return True, message
    ran = set(code_ran()) - before
    if ran:
        return False, f"CODE RAN (marker {sorted(ran)}); returned {type(result).__name__}"
    return False, f"no error: returned {describe(result)}"


def expect_ok(fn: Callable[[], Any], check: Callable[[Any], tuple[bool, str]] | None = None,
              no_warnings: bool = False) -> tuple[bool, str]:
    """OK when ``fn`` returns, no marker appeared and ``check(result)`` agrees (and, with ``no_warnings``,
    nothing but deprecations was warned)."""
    before = set(code_ran())
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            result = fn()
        except Exception as error:  # noqa: BLE001
            where = _deep(error)
            return False, f"{type(error).__name__}: {short(str(error))}" + (f" (from {where})" if where else "")
    ran = set(code_ran()) - before
    if ran:
        return False, f"CODE RAN (marker {sorted(ran)})"
    ok, note = check(result) if check is not None else (True, describe(result))
    noisy = [w for w in caught if not issubclass(w.category, (DeprecationWarning, PendingDeprecationWarning))]
    if noisy:
        note += f" [warning: {short(str(noisy[0].message), 70)}]"
        ok = ok and not no_warnings
    return ok, note


@dataclasses.dataclass
class CliRun:
    """What one console-script run did: exit code, stdout, stderr, and the exception that escaped."""

    rc: int | None
    out: str
    err: str
    error: BaseException | None = None


def run_cli(prog: str, argv: list[str]) -> CliRun:
    """Call console script ``prog``'s ``main(argv)`` in this process, capturing stdout, stderr and warnings."""
    main = cli_main(prog.split()[0])
    out, err = io.StringIO(), io.StringIO()
    rc: int | None = None
    error: BaseException | None = None
    with warnings.catch_warnings():
        warnings.simplefilter("always")  # shown on (captured) stderr where they happen, as in a real run
        warnings.filterwarnings("ignore", category=DeprecationWarning)
        # to the captured stderr, as in a real run (not to pytest's recorder)
        warnings.showwarning = lambda message, category, filename, lineno, file=None, line=None: err.write(
            warnings.formatwarning(message, category, filename, lineno, line))
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                rc = main(argv)
            except SystemExit as exit_:
                rc = exit_.code if isinstance(exit_.code, int) else (0 if exit_.code is None else 1)
            except Exception as exc:  # noqa: BLE001 - a traceback is what we look for
                error = exc
                traceback.print_exc(file=err)
    return CliRun(rc, out.getvalue(), err.getvalue(), error)


def run_cli_process(prog: str, argv: list[str], timeout: float = 120) -> CliRun:
    """Run console script ``prog`` in a child process (this checkout's movq), for cases that could hang:
    a run past ``timeout`` seconds comes back as ``rc=None`` with a TimeoutError."""
    module, attr = console_script(prog)
    code = f"import sys; from {module} import {attr} as main; sys.exit(main(sys.argv[1:]))"
    try:
        done = subprocess.run([sys.executable, "-c", code, *argv], capture_output=True, text=True, timeout=timeout,
                              env={**os.environ, "PYTHONPATH": os.pathsep.join([SRC, os.environ.get("PYTHONPATH", "")])})
    except subprocess.TimeoutExpired:
        return CliRun(None, "", "", TimeoutError(f"{prog} still running after {timeout} s (hung)"))
    return CliRun(done.returncode, done.stdout, done.stderr)


def error_lines(run: CliRun) -> list[str]:
    return [line for line in run.err.splitlines() if line.strip()]


def judge_cli_error(prog: str, run: CliRun, before: set[str], contains: tuple[str, ...] = (),
                    no_outputs: tuple[Path, ...] = (), code: int = 2) -> tuple[bool, str]:
    """OK when the run exited ``code`` with one ``PROG: error:`` line (argparse: usage + error) holding
    every ``contains``, no traceback, no new marker (``before``: those that existed), and none of
    ``no_outputs`` exists."""
    lines = error_lines(run)
    ran = set(code_ran()) - before
    last = lines[-1] if lines else ""
    head = f"rc={run.rc}, {len(lines)} stderr line(s)"
    if ran:
        return False, f"CODE RAN (marker {sorted(ran)}); {head}"
    if run.error is not None or "Traceback" in run.err:
        kind = f"{type(run.error).__name__}: {short(str(run.error), 90)}" if run.error else short(last, 90)
        return False, f"raw traceback ({kind}); {head}"
    if run.rc == 0:
        return False, f"no error: exit 0 (the run went ahead); {head}"
    written = [str(p.name) for p in no_outputs if p.exists()]
    if written:
        return False, f"wrote {written} although it failed; {head}; {short(last, 80)}"
    base = prog.split()[0]
    # accepted before the error line: argparse's usage lines, and warnings (with their source line)
    extra = [line for line in lines[:-1] if not line.startswith(("usage:", " ")) and "Warning: " not in line]
    if run.rc != code:
        return False, f"exit code {run.rc} (expected {code}); {head}; {short(last, 90)}"
    if not last.startswith((f"{base}: error:", f"{prog}: error:")):
        return False, f"last stderr line is not '{base}: error: ...': {short(last, 90)}; {head}"
    if extra:
        return False, f"{len(lines)} stderr lines (extra: {short(extra[0], 70)}); {short(last, 80)}"
    missing = [c for c in contains if c.lower() not in last.lower()]
    if missing:
        return False, f"{short(last, 110)} -- message lacks {missing}"
    return True, f"rc={run.rc}: {short(last.split('error:', 1)[-1].strip(), 100)}"


def expect_cli_error(prog: str, argv: list[str], contains: tuple[str, ...] = (), no_outputs: tuple[Path, ...] = (),
                     code: int = 2) -> tuple[bool, str]:
    """Run ``prog argv`` (in this process) and judge it with :func:`judge_cli_error`."""
    before = set(code_ran())
    return judge_cli_error(prog, run_cli(prog, argv), before, contains, no_outputs, code)


def judge_cli_ok(run: CliRun, before: set[str], check: Callable[[CliRun], tuple[bool, str]]) -> tuple[bool, str]:
    """OK when the run exited 0 without a traceback or a new marker and ``check(run)`` agrees."""
    ran = set(code_ran()) - before
    if ran:
        return False, f"CODE RAN (marker {sorted(ran)})"
    if run.error is not None or "Traceback" in run.err:
        return False, f"raw traceback: {type(run.error).__name__ if run.error else ''} {short(str(run.error), 90)}"
    if run.rc != 0:
        lines = error_lines(run)
        return False, f"exit code {run.rc}: {short(lines[-1] if lines else '', 100)}"
    return check(run)


def expect_cli_ok(prog: str, argv: list[str], check: Callable[[CliRun], tuple[bool, str]]) -> tuple[bool, str]:
    """Run ``prog argv`` (in this process) and judge it with :func:`judge_cli_ok`."""
    before = set(code_ran())
    return judge_cli_ok(run_cli(prog, argv), before, check)


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
        self.data += b"J" + struct.pack("<i", value) if 0 <= value < 2**31 else b"\x8a\x08" + struct.pack("<q", value)
        return self

    def done(self) -> bytes:
        return bytes(self.data + b".")


def torch_zip(payload: bytes, storages: dict[str, bytes]) -> bytes:
    """A PyTorch-style zip archive (``archive/data.pkl`` + ``archive/data/<key>``)."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_STORED) as archive:
        archive.writestr("archive/data.pkl", payload)
        archive.writestr("archive/version", "3\n")
        for key, raw in storages.items():
            archive.writestr(f"archive/data/{key}", raw)
    return buffer.getvalue()


def jpeg_bytes(size: tuple[int, int] = (48, 40), color: tuple[int, int, int] = (200, 60, 30)) -> bytes:
    """A plain-colour JPEG file's bytes."""
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
    data[ihdr + 17 : ihdr + 21] = struct.pack(">I", zlib.crc32(bytes(data[ihdr : ihdr + 17])) & 0xFFFFFFFF)
    return bytes(data)


def a_file(folder: Path) -> Path:
    """A small regular file ``folder/file`` (where a folder is expected)."""
    (folder / "file").write_text("x")
    return folder / "file"


HOSTILE_CONFIG = dataclasses.replace(SMALL_2X, name="audit-tiny", resolution=16, num_res_blocks=2)
"""The hostile cases' small codec: ch 32, ch_mult (1, 2) (f=2), no attention, a VQ codebook of 64 codes."""


@functools.cache
def hostile_tiny() -> Codec:
    """An eval-mode codec of :data:`HOSTILE_CONFIG` (seed 0), built once."""
    return tiny_codec(config=HOSTILE_CONFIG)


@functools.cache
def hostile_photos() -> Codec:
    """The shipped ``movqgan-tiny-photos`` (f=8, EMA codebook of 1024), loaded once."""
    import movq

    return movq.load("movqgan-tiny-photos")


@functools.cache
def hostile_tiny_folder() -> Path:
    """:func:`hostile_tiny` saved with ``save_pretrained``."""
    return hostile_tiny().save_pretrained(Work.shared / "tiny-folder")


@functools.cache
def hostile_tiny_state() -> dict[str, torch.Tensor]:
    """:func:`hostile_tiny`'s weights as a plain dict (no saved config)."""
    return {k: v.clone() for k, v in hostile_tiny().state_dict().items()}


@functools.cache
def hostile_preset_state() -> dict[str, torch.Tensor]:
    """Weights of a random ``movqgan-tiny`` preset codec (seed 1; a plain dict, original key format)."""
    return {k: v.clone() for k, v in tiny_codec(seed=1).state_dict().items()}


@functools.cache
def hostile_ckpt_file() -> Path:
    """A plain original-format checkpoint ``tiny.ckpt`` of :func:`hostile_preset_state` (no saved config)."""
    path = Work.shared / "tiny.ckpt"
    torch.save({"state_dict": hostile_preset_state()}, path)
    return path


@functools.cache
def hostile_images() -> Path:
    """Four photo-like 56x48 JPEGs ``photo0.jpg`` .. ``photo3.jpg`` (what the bench and training read)."""
    folder = Work.shared / "images"
    folder.mkdir()
    for i in range(4):
        smooth_image(i, (56, 48)).save(folder / f"photo{i}.jpg", quality=92)
    return folder


def folder_with(files: dict[str, bytes | Image.Image], good: int = 0) -> Path:
    """A fresh data folder holding ``files`` (bytes or PIL images) plus ``good`` of :func:`hostile_images`."""
    import shutil

    folder = Work.new("data")
    for name, content in files.items():
        path = folder / name
        path.parent.mkdir(parents=True, exist_ok=True)
        content.save(path) if isinstance(content, Image.Image) else path.write_bytes(content)
    for src in sorted(hostile_images().iterdir())[:good]:
        shutil.copy(src, folder / src.name)
    return folder


# ------------------------------------------------------------------ generator trainers (t2i, diffusion)

T2I_COLOURS = ["red", "green", "blue", "white"]
T2I_TINY_MODEL = {"n_layer": 2, "n_head": 2, "n_embd": 32, "text_len": 12}
"""``model`` overrides of a t2i transformer small enough to train on CPU in seconds."""


class TokenList(torch.utils.data.Dataset):
    """What the trainer reads from movq.tokenize.dataset.TokenDataset: ``{"tokens", "source", "caption"}`` items and ``meta``.

    Each caption names a colour; its image is a 4x4 token grid of that colour's code with a random
    speck, so the text predicts the image and a few steps show it."""

    def __init__(self, n: int = 32, codes: int = 16, depth: int | None = None) -> None:
        g = torch.Generator().manual_seed(0)
        shape = (4, 4) if depth is None else (depth, 4, 4)
        self.items = []
        for i in range(n):
            colour = i % len(T2I_COLOURS)
            tokens = torch.full(shape, colour, dtype=torch.long)
            tokens.view(-1)[torch.randint(0, tokens.numel(), (1,), generator=g)] = int(
                torch.randint(4, codes, (1,), generator=g)
            )
            caption = None if i % 8 == 7 else f"a {T2I_COLOURS[colour]} image"
            self.items.append({"tokens": tokens, "source": f"{i}.png", "caption": caption})
        self.meta = {
            "kind": "tokens",
            "codebook_size": codes,
            "item_shape": list(shape),
            "model": "synthetic",
        }

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> dict:
        return self.items[i]


def t2i_train_config(out: Path, **kw: Any) -> Any:
    """A ``T2ITrainConfig`` of a few CPU steps of :data:`T2I_TINY_MODEL` on a :class:`TokenList`; ``kw`` override fields."""
    from movq.t2i.train import T2ITrainConfig

    base = dict(
        data="synthetic",
        out=str(out),
        preset="t2i-tiny",
        model=T2I_TINY_MODEL,
        batch_size=8,
        max_steps=6,
        warmup_steps=2,
        lr=3e-3,
        num_workers=0,
        log_every=1,
        save_every=3,
        progress=False,
        amp="none",
        ema_decay=0.9,
    )
    base.update(kw)
    return T2ITrainConfig(**base)


DIFFUSION_TINY_UNET = {"channels": 32, "channel_mult": [1], "attention_levels": [], "head_channels": 32}
"""A one-level, 32-wide UNet: the smallest that trains (runs in milliseconds on 4x4 latents)."""


def toy_latents(n: int = 16, classes: int = 4, seed: int = 0) -> Any:
    """``n`` latents ``[4, 4, 4]`` stored in float16 (a ``LatentItems``), one class pattern each plus noise."""
    from movq.diffusion.data import LatentItems

    g = torch.Generator().manual_seed(seed)
    patterns = torch.randn(classes, 4, 4, 4, generator=g)
    labels = torch.arange(n) % classes
    latents = 0.5 * patterns[labels] + 0.1 * torch.randn(n, 4, 4, 4, generator=g)
    return LatentItems(latents.half(), labels, [f"class{i}" for i in range(classes)])


def diffusion_train_config(tmp_path: Path, name: str = "run", **overrides: Any) -> Any:
    """A ``DiffusionTrainConfig`` of a few CPU steps of :data:`DIFFUSION_TINY_UNET` writing to ``tmp_path / name``."""
    from movq.diffusion.train import DiffusionTrainConfig

    values = {"out": str(tmp_path / name), "preset": "unet-tiny", "model": DIFFUSION_TINY_UNET, "batch_size": 8,
              "max_steps": 4, "save_every": 100, "log_every": 2, "num_workers": 0, "progress": False, "lr": 1e-3,
              "warmup_steps": 1}
    return DiffusionTrainConfig(**{**values, **overrides})


def tiny_unet(seed: int = 0, **overrides: Any) -> Any:
    """A tiny eval-mode ``UNet`` for 4x4 latents (``overrides``: ``UNetConfig`` fields) whose zero-initialised
    output layers are randomised after ``torch.manual_seed(seed)``, so outputs depend on inputs."""
    from movq.diffusion import UNet, UNetConfig

    torch.manual_seed(seed)
    values = {
        "channels": 32,
        "channel_mult": (1,),
        "num_res_blocks": 1,
        "sample_size": 4,
        "attention_resolutions": (4,),
        "head_channels": 32,
    }
    model = UNet(UNetConfig(**{**values, **overrides}))
    with torch.no_grad():  # randomise the zero-initialised output layers
        for param in model.parameters():
            if not param.any():
                param.normal_(0.0, 0.05)
    return model.eval()


def tiny_t2i(seed: int = 0, **overrides: Any) -> Any:
    """The ``t2i-tiny`` preset (``overrides``: ``T2IConfig`` fields) in eval mode, with a large init so that
    text and image tokens visibly change the logits."""
    from movq.t2i import T2ITransformer, get_t2i_preset

    torch.manual_seed(seed)
    return T2ITransformer(get_t2i_preset("t2i-tiny", init_std=0.3, **overrides)).eval()


def t2i_captions(model: Any, batch: int = 3) -> torch.Tensor:
    """``batch`` (<= 3) padded random captions of 0, 5 and 40 ids for ``model`` (a ``T2ITransformer``)."""
    from movq.t2i import pad_text

    config = model.config
    g = torch.Generator().manual_seed(3)
    rows = [torch.randint(0, config.text_vocab_size, (n,), generator=g).tolist() for n in (0, 5, 40)[:batch]]
    return pad_text(rows, config.text_len, config.text_vocab_size)
