"""Checkpoints: ``OUT/checkpoints/step-NNNNNNNN/`` written atomically, ``OUT/last`` pointing at the newest.

A checkpoint folder holds ``state.pt`` (model, EMA, discriminator, optimizers, scheduler, step, data
position, RNG states of every rank) and ``train_config.json``. It is first written as a hidden
temporary folder and renamed into place only when complete; ``OUT/last`` is a symlink swapped by
``os.replace``. A write killed at any moment therefore leaves the previous checkpoint intact.
The EMA release weights go to ``OUT/config.json`` + ``OUT/model.safetensors`` so ``movq.load(OUT)`` works.

``state.pt`` holds only tensors and plain containers (RNG states included), and is read with
``torch.load(weights_only=True)``: a run folder from elsewhere can never run code on ``--resume``.
A write that fails for lack of space raises :class:`CheckpointError` naming the last good checkpoint.
:func:`check_same_run` refuses to resume a run with settings other than the ones it was trained with.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import warnings
from collections.abc import Collection, Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch

from movq.atomic import is_disk_full
from movq.strict import nonfinite_entries

STATE_NAME = "state.pt"
RUN_CONFIG_FILE = "train_config.json"
"""A checkpoint's training-run config (JSON): not a model folder's ``config.json``."""
LOOP_KEYS = ("step", "epoch", "position", "rng")
"""Keys every checkpoint's state holds (written by :meth:`movq.train.loop.TrainLoop.checkpoint_state`)."""


class CheckpointError(RuntimeError):
    """A checkpoint could not be written (disk full) or no readable checkpoint exists to resume from."""


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def save_checkpoint(out: str | os.PathLike, step: int, state: dict[str, Any], config: dict[str, Any], keep_last: int) -> Path:
    """Write ``state`` as ``OUT/checkpoints/step-{step}``, point ``OUT/last`` at it, prune to ``keep_last``.

    A ``state`` with NaN or inf weights or optimizer values is refused (:class:`CheckpointError` naming
    the step) before anything is written.
    """
    out = Path(out)
    root = out / "checkpoints"
    broken = _nonfinite_values(state)
    if broken:  # never replace a good checkpoint (or, after it, the release) with a diverged state
        previous = latest_checkpoint(out)
        kept = f"the last good checkpoint {previous} is kept" if previous else "no earlier checkpoint exists"
        raise CheckpointError(
            f"refusing to write checkpoint step {step} under {root}: NaN or inf values in {len(broken)} weight / "
            f"optimizer entries ({', '.join(broken[:5])}); {kept}, and the release weights are left as they were"
        )
    root.mkdir(parents=True, exist_ok=True)
    final = root / f"step-{step:08d}"
    tmp = root / f".tmp-step-{step:08d}-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    try:
        with open(tmp / STATE_NAME, "wb") as f:
            torch.save(state, f)
            f.flush()
            os.fsync(f.fileno())
        (tmp / RUN_CONFIG_FILE).write_text(json.dumps(config, indent=2) + "\n")
        if final.exists():
            shutil.rmtree(final)
        os.rename(tmp, final)
        _fsync_dir(root)
    except BaseException as error:
        shutil.rmtree(tmp, ignore_errors=True)
        if is_disk_full(error):
            previous = latest_checkpoint(out)
            kept = f"the last good checkpoint {previous} is intact" if previous else "no earlier checkpoint exists"
            raise CheckpointError(
                f"no space left on device while writing checkpoint step {step} under {root}; {kept}. "
                "Free space (each checkpoint needs about the size of state.pt x keep_last) and --resume."
            ) from error
        raise
    link_tmp = out / f".last.{os.getpid()}.tmp"
    link_tmp.unlink(missing_ok=True)
    try:
        os.symlink(Path("checkpoints") / final.name, link_tmp, target_is_directory=True)
        os.replace(link_tmp, out / "last")
    except OSError:  # no symlinks (some Windows setups): resume falls back to the newest folder
        link_tmp.unlink(missing_ok=True)
    _prune(root, keep_last, keep=final)
    return final


def _nonfinite_values(state: dict[str, Any]) -> list[str]:
    """The NaN / inf entries of a checkpoint state's weights, optimizer and schedule values (its RNG
    states and run config are not numbers to check)."""
    return nonfinite_entries({k: v for k, v in state.items() if k not in ("rng", "config")})


def _prune(root: Path, keep_last: int, keep: Path) -> None:
    steps = sorted(p for p in root.glob("step-*") if p.is_dir())
    for old in steps[:-keep_last]:
        if old != keep:
            shutil.rmtree(old, ignore_errors=True)
    for stale in root.glob(".tmp-step-*"):  # leftovers of killed writes
        shutil.rmtree(stale, ignore_errors=True)


def latest_checkpoint(out: str | os.PathLike) -> Path | None:
    """The newest complete ``step-*`` folder of ``out`` (see :func:`checkpoint_candidates`), else None."""
    candidates = checkpoint_candidates(out)
    return candidates[0] if candidates else None


def checkpoint_candidates(out: str | os.PathLike) -> list[Path]:
    """Complete checkpoint folders of ``out``, newest step first.

    A ``step-*`` folder is complete once renamed into place, which happens before ``OUT/last`` is
    swapped, so the newest folder is used even when a kill landed between the two. ``OUT/last``
    alone is used when there is no ``checkpoints`` folder.
    """
    out = Path(out)
    steps = sorted((p for p in (out / "checkpoints").glob("step-*") if (p / STATE_NAME).is_file()), reverse=True)
    last = out / "last"
    if not steps and (last / STATE_NAME).is_file():
        return [last.resolve()]
    return steps


def load_checkpoint(path: str | os.PathLike) -> dict[str, Any]:
    """The ``state`` dict saved by :func:`save_checkpoint` (on CPU), read with ``weights_only=True``.

    Raises :class:`CheckpointError` naming the file when it is truncated, garbage, or asks to run code.
    """
    file = Path(path) / STATE_NAME
    try:
        state = torch.load(file, map_location="cpu", weights_only=True)
    except MemoryError:
        raise
    except Exception as error:  # noqa: BLE001 - torch raises many types on garbage (struct.error, KeyError...)
        text = str(error).strip()
        if "Weights only load failed" in text:
            reason = "it asks to import or call code, and a movq checkpoint holds only tensors and plain values"
        else:
            reason = text.splitlines()[0] if text else type(error).__name__
        raise CheckpointError(f"{file} is not a readable movq training checkpoint (nothing in it was run): {reason}") from None
    if not isinstance(state, dict):
        raise CheckpointError(f"{file} is not a movq training checkpoint (it holds a {type(state).__name__}, not a dict)")
    return state


def check_state(state: dict[str, Any], file: str | os.PathLike) -> None:
    """Refuse a loaded checkpoint ``state`` (read from ``file``) whose values are damaged.

    Checked: the loop's keys (:data:`LOOP_KEYS`) are present; ``step``, ``epoch`` and ``position``
    are ints >= 0 and ``step`` is at most the ``max_steps`` of the run's saved ``config``; every
    floating-point tensor and float of the model, EMA, optimizer and schedule states is finite;
    ``rng`` is a non-empty list (one per process) of states shaped as :func:`rng_state` makes them
    that the generators accept. Raises :class:`CheckpointError` naming ``file`` and the problem.
    """
    problem = _state_problem(state)
    if problem:
        raise CheckpointError(f"{file} is a damaged movq training checkpoint: {problem}")


def _state_problem(state: dict[str, Any]) -> str | None:
    missing = [key for key in LOOP_KEYS if key not in state]
    if missing:
        return f"it lacks {missing}"
    for key in ("step", "epoch", "position"):
        value = state[key]
        if not isinstance(value, int) or isinstance(value, bool) or value < 0:
            return f"{key} is {value!r}, expected an int >= 0"
    config = state.get("config")
    max_steps = config.get("max_steps") if isinstance(config, dict) else None
    if isinstance(max_steps, int) and state["step"] > max_steps:
        return f"step {state['step']} is past the max_steps {max_steps} the run saved with it"
    broken = _nonfinite_values(state)
    if broken:
        shown = ", ".join(broken[:5]) + (f" and {len(broken) - 5} more" if len(broken) > 5 else "")
        return f"NaN or inf values in {len(broken)} weight / optimizer entries ({shown})"
    return _rng_problem(state["rng"])


def _rng_problem(rngs: Any) -> str | None:
    """What is wrong with a checkpoint's ``rng`` (one :func:`rng_state` + ``loader`` per process), or None."""
    if not isinstance(rngs, list) or not rngs:
        return f"rng is {type(rngs).__name__} {str(rngs)[:40]}, expected a non-empty list of RNG states (one per process)"
    reference = {k: v for k, v in rng_state().items() if k != "cuda"}
    loader = torch.Generator().get_state()
    for rank, entry in enumerate(rngs):
        name = f"rng[{rank}]"
        problem = _shape_problem(entry, reference, name)
        if problem is None and "loader" in entry:
            problem = _shape_problem(entry["loader"], loader, f"{name}.loader")
        cuda = entry.get("cuda", []) if isinstance(entry, dict) else []
        if problem is None and not (isinstance(cuda, list) and all(isinstance(t, torch.Tensor) for t in cuda)):
            problem = f"{name}.cuda is not a list of tensors"
        if problem is None:  # right shapes: the generators must also accept the values
            saved = rng_state()
            try:
                set_rng_state({k: v for k, v in entry.items() if k != "cuda"})
                if "loader" in entry:
                    torch.Generator().set_state(entry["loader"])
            except (ValueError, TypeError, RuntimeError, OverflowError, IndexError) as error:
                problem = f"{name} is refused by the random generators ({type(error).__name__}: {error})"
            finally:
                set_rng_state(saved)
        if problem:
            return problem
    return None


def _shape_problem(value: Any, reference: Any, name: str) -> str | None:
    """How ``value`` differs in structure from ``reference`` (dict keys, tensor dtypes and shapes, value kinds)."""
    if isinstance(reference, dict):
        if not isinstance(value, dict):
            return f"{name} is a {type(value).__name__}, expected a dict with {sorted(reference)}"
        for key, ref in reference.items():
            problem = _shape_problem(value.get(key), ref, f"{name}.{key}") if key in value else f"{name} lacks {key!r}"
            if problem:
                return problem
        return None
    if isinstance(reference, torch.Tensor):
        ok = isinstance(value, torch.Tensor) and value.dtype == reference.dtype and value.shape == reference.shape
        expected = f"a {reference.dtype} tensor of shape {tuple(reference.shape)}"
    elif isinstance(reference, str):
        ok, expected = value == reference, repr(reference)
    elif isinstance(reference, int):
        ok, expected = isinstance(value, int) and not isinstance(value, bool), "an int"
    else:  # a float or None (a cached Gaussian)
        ok, expected = value is None or (isinstance(value, (int, float)) and not isinstance(value, bool)), "a number or None"
    if ok:
        return None
    shown = f"a {value.dtype} tensor of shape {tuple(value.shape)}" if isinstance(value, torch.Tensor) else repr(value)[:40]
    return f"{name} is {shown}, expected {expected}"


def load_latest_readable(out: str | os.PathLike) -> tuple[Path, dict[str, Any]] | None:
    """The newest checkpoint of ``out`` that reads and passes :func:`check_state`, warning about each damaged one
    skipped (naming the file and the problem); None if there is none.

    Raises :class:`CheckpointError` listing the files when checkpoints exist but none can be read.
    """
    problems = []
    for path in checkpoint_candidates(out):
        try:
            state = load_checkpoint(path)
            check_state(state, path / STATE_NAME)
        except CheckpointError as error:
            problems.append(str(error))
            warnings.warn(f"skipping damaged checkpoint: {error}", stacklevel=2)
            continue
        return path, state
    if problems:
        raise CheckpointError("no readable checkpoint to resume from: " + "; ".join(problems))
    return None


def rng_state() -> dict[str, Any]:
    """Python, NumPy, torch CPU (and CUDA) generator states of this process, as tensors and plain values."""
    version, keys, gauss = random.getstate()
    kind, mt_keys, pos, has_gauss, cached = np.random.get_state()
    state: dict[str, Any] = {
        "python": {"version": version, "keys": torch.tensor(keys, dtype=torch.int64), "gauss": gauss},
        "numpy": {"kind": kind, "keys": torch.from_numpy(mt_keys.astype(np.int64)), "pos": int(pos),
                  "has_gauss": int(has_gauss), "cached_gaussian": float(cached)},
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore what :func:`rng_state` returned."""
    py = state["python"]
    random.setstate((py["version"], tuple(py["keys"].tolist()), py["gauss"]))
    npy = state["numpy"]
    np.random.set_state((npy["kind"], npy["keys"].numpy().astype(np.uint32), npy["pos"], npy["has_gauss"], npy["cached_gaussian"]))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def check_same_run(saved: Mapping[str, Any], given: Mapping[str, Any], run_dir: str | os.PathLike,
                   what: str = "settings", ignore: Collection[str] = ()) -> None:
    """Refuse to resume the run in ``run_dir`` when ``given`` (what the flags and data give now) differs
    from ``saved`` (what its checkpoint recorded, e.g. the model config); ``what`` names them in the message.

    Nested dicts compare field by field (``diffusion_config.loss``). Only the fields ``saved``
    records are compared (an older checkpoint that did not record one is not refused for it); a
    field ``given`` lacks counts as ``None``; top-level fields named in ``ignore`` are skipped.
    Raises ``ValueError`` listing every differing field with its saved and its given value, and how to go on.
    """
    now = dict(_leaves(given))
    changed = [(key, value, now.get(key)) for key, value in _leaves(saved)
               if key.split(".")[0] not in ignore and now.get(key) != value]
    if changed:
        before = ", ".join(f"{key}={value!r}" for key, value, _ in changed)
        after = ", ".join(f"{key}={value!r}" for key, _, value in changed)
        raise ValueError(
            f"this run ({run_dir}) was trained with {what} ({before}), but the flags and data now give ({after}); "
            "drop the flags that changed them to resume, or use a new --out"
        )


def _leaves(tree: Mapping[str, Any], prefix: str = "") -> Iterator[tuple[str, Any]]:
    """``(dotted name, value)`` of every non-dict value of ``tree`` (an empty dict is a value)."""
    for key, value in tree.items():
        if isinstance(value, Mapping) and value:
            yield from _leaves(value, f"{prefix}{key}.")
        else:
            yield f"{prefix}{key}", value
