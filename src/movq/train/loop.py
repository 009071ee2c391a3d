"""The training skeleton every movq trainer shares: codec training today, the text-to-image and
diffusion trainers on top of it.

A trainer owns its models, losses and optimizers (each trained model with an
:class:`~movq.train.optim.OptimizerStep`) and hands the loop a :class:`TrainTask` (its shared half:
:class:`TaskBase`); the :class:`TrainLoop` owns everything else, the same way for every model:

- distributed set-up (``torchrun``), seeds (identical initialisation on every replica, then a
  per-rank runtime stream), the device;
- data order: a :class:`~movq.train.data.ResumableSampler` and a DataLoader with its own
  generator (so creating an iterator never touches the global RNG), epochs and the position
  inside the epoch;
- ``OUT/train_config.json`` (the run's config, written first, for ``--out OUT --resume``) and
  checkpoints in ``OUT/checkpoints/step-N`` written atomically (``OUT/last`` -> newest, keep the
  last N), read back with ``weights_only=True``; exact resume (task state, data position, every
  RNG stream of every rank), falling back past damaged checkpoints;
- logs: one CSV row (and TensorBoard scalars) every ``log_every`` steps with the window's mean
  of every term the task returns, read back from the device once per row; a tqdm bar;
- SIGTERM / SIGINT, or ``max_minutes`` of training: finish the step, save, return;
- a loss term (named ``...loss``) that becomes NaN or inf: :class:`NonFiniteLossError` naming the
  step, raised at the next log or checkpoint step before anything is saved;
- the generator trainers' options (:class:`~movq.train.config.GeneratorConfig`): a validation set
  (:meth:`TrainLoop.hold_out` / :meth:`TrainLoop.set_validation`) whose ``eval_loss`` is logged every
  ``eval_every`` steps, the best release kept in ``OUT/best/`` (:data:`BEST_DIR`), sample grids in
  ``OUT/samples/`` every ``sample_every`` steps, ``torch.compile`` (:meth:`TrainLoop.wrap`), and the
  model FLOPs utilisation (``tflops`` / ``mfu`` columns) of tasks that state their FLOPs per step;
- ``threads``: ``torch.set_num_threads`` in every process.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import time
import zlib
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, Protocol

import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset, Subset

from movq.atomic import atomic_write_text
from movq.distributed import DistContext, any_flag, barrier, gather_objects, setup
from movq.train import checkpoint as ckpt
from movq.train.config import RunConfig
from movq.train.data import ResumableSampler, split_items
from movq.train.logs import CSVLog, TensorBoardLog, save_image_grid
from movq.train.optim import OptimizerStep

LOADER_SEED_OFFSET = 7
"""Keeps the DataLoader generator's seed apart from the model-initialisation and runtime seeds."""


EVAL_SEED_OFFSET = 23
"""Seeds the generator of the evaluation's noise / timesteps (the same at every evaluation)."""
SAMPLE_SEED_OFFSET = 29
"""Seeds the generator of the sample grids (the same samples' noise at every grid)."""
BEST_DIR = "best"
"""``OUT/best/``: the release (the same files as ``OUT``'s own) of the step with the lowest ``eval_loss``."""
BEST_INFO = "best.json"
"""In ``OUT/best/``: ``{"step": N, "eval_loss": value}``."""
SAMPLES_DIR = "samples"
"""``OUT/samples/step_NNNNNN.png``: the sample grids."""

RESUME_ADVICE = "use a new --out, or remove that checkpoint folder to resume from the one before"


class NonFiniteLossError(RuntimeError):
    """A loss term of the training run became NaN or inf (raised before anything of that step is saved)."""


def require_state_keys(state: dict[str, Any], keys: Sequence[str], out: Path, name: str) -> None:
    """For a task's ``check_resume``: refuse a saved ``state`` that lacks any of ``keys`` (another trainer's
    checkpoint, or a damaged one) with a one-line ``ValueError``."""
    missing = [key for key in keys if key not in state]
    if missing:
        raise ValueError(
            f"the newest readable checkpoint of {out} lacks {missing}: it is not a {name} checkpoint; {RESUME_ADVICE}"
        )


class TrainTask(Protocol):
    """What a trainer gives :class:`TrainLoop`.

    ``train_step(batches, step)`` runs one optimizer step, pulling as many batches from the
    iterator as it needs (gradient accumulation), and returns 0-d tensors (kept on the device).
    ``state_dict`` / ``load_state_dict`` hold models, EMA, optimizers and schedulers (tensors and
    plain values only). ``check_resume(state)`` raises ``ValueError`` when a saved run does not fit
    (another trainer: :func:`require_state_keys`; another architecture or settings:
    :func:`movq.train.checkpoint.check_same_run`); a state that
    ``load_state_dict`` still cannot take is refused by the loop with a one-line ``ValueError``. ``log_row()`` adds values to a log row (learning rate, codebook usage).
    ``export(directory=None)`` writes the release weights (rank 0, after each checkpoint) into
    ``directory`` (default: the run folder; ``OUT/best`` for the best step).

    With a validation set the task also has ``eval_losses(batch, generator) -> Tensor [B]``: the loss
    of each item of a validation ``batch`` under the release (EMA) weights, any noise drawn from
    ``generator`` (a CPU generator the loop seeds the same way at every evaluation); with
    ``sample_every`` it has ``sample_images() -> (images [N, 3, H, W] in [-1, 1], columns)``, drawn from
    its own seeded generator. See :class:`TaskBase`.
    """

    def train_step(self, batches: Iterator[Any], step: int) -> dict[str, Tensor]: ...

    def state_dict(self) -> dict[str, Any]: ...

    def load_state_dict(self, state: dict[str, Any]) -> None: ...

    def check_resume(self, state: dict[str, Any]) -> None: ...

    def log_row(self) -> dict[str, float | int]: ...

    def export(self, directory: Path | None = None) -> None: ...


class TaskBase:
    """The half of a :class:`TrainTask` that every movq trainer shares.

    A subclass sets ``self.loop`` (its :class:`TrainLoop`) and ``self.optimizer_step`` (the model
    it trains with its optimizer, schedule and EMA: :class:`~movq.train.optim.OptimizerStep`) and
    adds ``train_step``, ``check_resume`` and ``export``. Given here: ``step``, ``opt`` / ``sched`` /
    ``ema`` (the optimizer step's), ``state_dict`` / ``load_state_dict`` (those of the optimizer
    step: extend them with more), ``log_row`` (the learning rate), ``after_step`` (nothing) and ``run``.

    Optional: ``eval_losses`` (a validation set), ``sample_images`` (sample grids), and
    ``model_flops_per_step`` (model FLOPs of one optimizer step of one process) with ``peak_tflops``
    (the device's assumed peak, TFLOP/s): the loop then logs ``tflops`` (achieved per process) and
    ``mfu`` (``tflops / peak_tflops``), as nanoGPT's ``estimate_mfu``.
    """

    loop: TrainLoop
    optimizer_step: OptimizerStep
    model_flops_per_step: float | None = None
    peak_tflops: float | None = None

    @property
    def step(self) -> int:
        """Optimizer steps done so far."""
        return self.loop.step

    @property
    def opt(self) -> torch.optim.Optimizer:
        """The trained model's optimizer."""
        return self.optimizer_step.opt

    @property
    def sched(self) -> torch.optim.lr_scheduler.LRScheduler:
        """Its learning-rate schedule."""
        return self.optimizer_step.sched

    @property
    def ema(self) -> Any:
        """Its :class:`~movq.train.ema.ModelEMA` (the release weights)."""
        return self.optimizer_step.ema

    def state_dict(self) -> dict[str, Any]:
        """Model, EMA, optimizer and schedule (tensors and plain values)."""
        return self.optimizer_step.state_dict()

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.optimizer_step.load_state_dict(state)

    def log_row(self) -> dict[str, float | int]:
        """The learning rate of the step just taken."""
        return {"lr": self.optimizer_step.sched.get_last_lr()[0]}

    def after_step(self, step: int) -> None:
        """Runs after every optimizer step (e.g. image grids); nothing by default."""

    def eval_losses(self, batch: Any, generator: torch.Generator) -> Tensor:
        """The loss ``[B]`` of each item of a validation ``batch`` (a trainer with a validation set defines it)."""
        raise NotImplementedError(f"{type(self).__name__} has no validation loss")

    def sample_images(self) -> tuple[Tensor, int] | None:
        """A few samples ``[N, 3, H, W]`` in ``[-1, 1]`` and the grid's number of columns, or None (no grids)."""
        return None

    def run(self) -> int:
        """Train until ``max_steps`` (or a signal / ``max_minutes``: save and return). Returns the last step."""
        self.optimizer_step.model.train()
        return self.loop.run(self, after_step=self.after_step)


class TrainLoop:
    """Runs a :class:`TrainTask` for ``cfg.max_steps`` optimizer steps (see the module docstring).

    Use: ``loop = TrainLoop(cfg, "movq-train", log_fields)`` (joins the process group, seeds the
    initialisation), build the models on ``loop.device`` (``loop.wrap`` for DDP), then
    ``loop.set_data(dataset, collate)``, ``loop.begin(task)`` (runtime seed, resume) and
    ``loop.run(task)``, which returns the last step.
    """

    def __init__(self, cfg: RunConfig, name: str, log_fields: Sequence[str]) -> None:
        self.cfg, self.name, self.log_fields = cfg, name, tuple(log_fields)
        self.dist: DistContext = setup(cfg.device)
        self.device = self.dist.device
        self.out = Path(cfg.out)
        self.step, self.epoch, self.position = 0, 0, 0
        self.skipped: set[str] = set()
        self.stop_requested = False
        self.loader: DataLoader | None = None
        self.loader_rng = torch.Generator().manual_seed(cfg.seed * 1_000_003 + LOADER_SEED_OFFSET + self.dist.rank)
        self.val_loader: DataLoader | None = None
        self.validation: dict[str, Any] = {"val_items": 0}
        self.best: dict[str, Any] | None = None  # {"step", "eval_loss"} of the lowest eval loss so far
        self.eval_every = int(getattr(cfg, "eval_every", 0) or 0)
        self.sample_every = int(getattr(cfg, "sample_every", 0) or 0)
        self._eval_value: float | None = None
        if cfg.threads:
            torch.set_num_threads(cfg.threads)
        torch.manual_seed(cfg.seed)  # identical initialisation on every replica
        if self.dist.is_main:  # the run's config, before any work: `--out OUT --resume` finds it even without a checkpoint
            atomic_write_text(self.out / ckpt.RUN_CONFIG_FILE, json.dumps(cfg.to_dict(), indent=2) + "\n")

    # ------------------------------------------------------------------ set-up

    def wrap(self, module: nn.Module, compile: bool = False) -> nn.Module:
        """``module`` in DistributedDataParallel under torchrun, else itself; with ``compile``, first
        ``torch.compile(module)`` (the parameters stay ``module``'s: optimizer, EMA and checkpoints
        use the plain module)."""
        if compile:
            module = torch.compile(module)  # type: ignore[assignment]
        if not self.dist.enabled:
            return module
        from torch.nn.parallel import DistributedDataParallel

        ids = [self.device.index] if self.device.type == "cuda" else None
        return DistributedDataParallel(module, device_ids=ids)

    def set_data(self, dataset: Dataset, collate_fn: Callable[[list[Any]], Any]) -> None:
        """Shard ``dataset`` over the processes with a resumable order; batches of ``cfg.batch_size``."""
        cfg = self.cfg
        self.sampler = ResumableSampler(len(dataset), cfg.seed, self.dist.rank, self.dist.world_size)  # type: ignore[arg-type]
        if self.sampler.per_rank < cfg.batch_size:
            raise ValueError(
                f"{len(dataset)} samples over {self.dist.world_size} process(es) give fewer than "  # type: ignore[arg-type]
                f"batch_size={cfg.batch_size} per epoch"
            )
        # The loader draws its workers' base seed from its own generator, never from the global RNG,
        # so a resumed run (which creates one more iterator) keeps the same global random stream.
        self.loader = DataLoader(
            dataset, cfg.batch_size, sampler=self.sampler, num_workers=cfg.num_workers, collate_fn=collate_fn,
            drop_last=True, persistent_workers=cfg.num_workers > 0, generator=self.loader_rng,
        )

    def hold_out(self, dataset: Dataset) -> tuple[Dataset, Dataset | None]:
        """``(train, val)``: with ``cfg.val_fraction > 0`` the two :class:`~torch.utils.data.Subset` of
        :func:`~movq.train.data.split_items` (chosen by ``cfg.seed``), else ``(dataset, None)``."""
        fraction = float(getattr(self.cfg, "val_fraction", 0.0) or 0.0)
        if fraction == 0:
            return dataset, None
        train, val = split_items(len(dataset), fraction, self.cfg.seed)  # type: ignore[arg-type]
        self.print(f"validation: {len(val)} of {len(dataset)} items held out (--val-fraction {fraction:g}, "  # type: ignore[arg-type]
                   f"--seed {self.cfg.seed})")
        return Subset(dataset, train), Subset(dataset, val)

    def set_validation(self, dataset: Dataset, collate_fn: Callable[[list[Any]], Any], train_items: int) -> None:
        """Evaluate on ``dataset`` (int-indexed) in batches of ``cfg.batch_size``, in its order, every
        ``cfg.eval_every`` steps; ``train_items`` (the training set's size) is recorded with the split so
        that ``--resume`` refuses another split."""
        indices = dataset.indices if isinstance(dataset, Subset) else range(len(dataset))  # type: ignore[arg-type]
        self.validation = {
            "val_items": len(indices), "train_items": train_items,
            "val_indices_crc32": zlib.crc32(json.dumps(list(indices)).encode()),
            "val_data": getattr(self.cfg, "val_data", None) or "",
        }
        if self.dist.is_main:  # rank 0 evaluates (the EMA weights are identical on every replica)
            self.val_loader = DataLoader(dataset, self.cfg.batch_size, shuffle=False, num_workers=0,
                                         collate_fn=collate_fn)

    def begin(self, task: TrainTask) -> None:
        """Seed the runtime randomness (per rank) and, with ``cfg.resume``, restore the latest run state."""
        torch.manual_seed(self.cfg.seed + 1 + self.dist.rank)
        if self.cfg.resume:
            self.resume(task)

    def print(self, msg: str) -> None:
        """Print ``[name] msg`` on rank 0."""
        if self.dist.is_main:
            print(f"[{self.name}] {msg}", flush=True)

    # ------------------------------------------------------------------ data

    def batches(self) -> Iterator[Any]:
        """Endless batches, epoch after epoch, starting at the saved position; records skipped files."""
        if self.loader is None:
            raise RuntimeError("set_data() must be called before batches()")
        while True:
            self.sampler.set_position(self.epoch, self.position)
            for batch in self.loader:
                self.position += self.cfg.batch_size
                if isinstance(batch, dict) and batch.get("skipped"):
                    self.skipped.update(batch["skipped"])
                yield batch
            self.epoch, self.position = self.epoch + 1, 0

    # ------------------------------------------------------------------ checkpoints

    def checkpoint_state(self, task: TrainTask) -> dict[str, Any]:
        """The task's state plus the loop's (step, data position, RNG streams of every rank, config)."""
        rngs = gather_objects({**ckpt.rng_state(), "loader": self.loader_rng.get_state()}, self.dist)
        state = {
            **task.state_dict(), "step": self.step, "epoch": self.epoch, "position": self.position,
            "rng": rngs, "skipped": sorted(self.skipped), "config": self.cfg.to_dict(),
            "validation": dict(self.validation),
        }
        if self.best is not None:
            state["best"] = dict(self.best)
        return state

    def save(self, task: TrainTask) -> None:
        """Checkpoint (all ranks gather RNG states; rank 0 writes) and export the release weights."""
        state = self.checkpoint_state(task)
        if self.dist.is_main:
            ckpt.save_checkpoint(self.out, self.step, state, self.cfg.to_dict(), self.cfg.keep_last)
            task.export()
        barrier(self.dist)

    def resume(self, task: TrainTask) -> None:
        """Restore the newest readable checkpoint of ``cfg.out`` (none: start from scratch, said so)."""
        found = ckpt.load_latest_readable(self.out)
        if found is None:
            self.print(f"--resume: no checkpoint under {self.out}, starting from scratch")
            return
        path, state = found
        if isinstance(state.get("validation"), dict):  # older checkpoints did not record it
            ckpt.check_same_run(state["validation"], self.validation, self.out, "validation split")
        task.check_resume(state)
        if state["step"] > self.cfg.max_steps:
            raise ValueError(
                f"the run in {self.out} is already at step {state['step']}, past --max-steps {self.cfg.max_steps}; "
                f"pass --max-steps above {state['step']} to continue it"
            )
        try:
            task.load_state_dict(state)
        except (RuntimeError, KeyError, ValueError, TypeError, AttributeError) as error:  # a damaged or foreign state
            reason = " ".join(str(error).split())[:300]
            raise ValueError(
                f"the newest readable checkpoint of {self.out} does not fit this run ({type(error).__name__}: {reason}); "
                f"{RESUME_ADVICE}"
            ) from None
        self.step, self.epoch, self.position = state["step"], state["epoch"], state["position"]
        self.skipped = set(state.get("skipped", []))
        best = state.get("best")
        self.best = {"step": int(best["step"]), "eval_loss": float(best["eval_loss"])} if isinstance(best, dict) else None
        rngs = state["rng"]
        if len(rngs) != self.dist.world_size:
            self.print(f"resuming with {self.dist.world_size} processes from a {len(rngs)}-process run: not bit-exact")
        mine = rngs[self.dist.rank % len(rngs)]
        ckpt.set_rng_state(mine)
        if "loader" in mine:
            self.loader_rng.set_state(mine["loader"])
        self.print(f"resumed from {path} at step {self.step}")

    # ------------------------------------------------------------------ the loop

    def run(self, task: TrainTask, after_step: Callable[[int], None] | None = None) -> int:
        """Train until ``max_steps`` (or a SIGTERM/SIGINT: save and return); returns the last step.

        ``after_step(step)`` runs after every step (e.g. image grids).
        """
        cfg = self.cfg
        logs = self._open_logs()
        previous = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGINT)}

        def request_stop(signum: int, frame: Any) -> None:
            self.stop_requested = True

        for s in previous:
            with contextlib.suppress(ValueError):  # not the main thread
                signal.signal(s, request_stop)
        bar = self._bar()
        window: dict[str, Tensor] = {}
        n_window, t0 = 0, time.perf_counter()
        deadline = t0 + cfg.max_minutes * 60 if cfg.max_minutes > 0 else None
        out_of_time = False
        batches = self.batches()
        first_bad = torch.full((), -1, dtype=torch.long, device=self.device)  # first step with a non-finite loss
        try:
            while self.step < cfg.max_steps:
                terms = task.train_step(batches, self.step)
                self.step += 1
                n_window += 1
                losses = [value.detach().float() for key, value in terms.items() if key.endswith("loss")]
                if losses:  # tracked on the device: read back only where the loop reads anyway (log, save)
                    bad = ~torch.stack(losses).isfinite().all()
                    first_bad = torch.where(bad & (first_bad < 0), self.step, first_bad)
                for key, value in terms.items():
                    window[key] = window[key] + value if key in window else value
                if bar is not None:
                    bar.update(1)
                # at multiples of eval_every only (not at max_steps): a run stopped and resumed evaluates as one
                eval_now = self.validation["val_items"] > 0 and self.step % self.eval_every == 0
                if eval_now:  # before the log row (its eval_loss) and the checkpoint (the best so far)
                    self._check_loss(first_bad)
                    paused = time.perf_counter()
                    self._evaluate(task)
                    t0 += time.perf_counter() - paused  # steps_per_s (and MFU) count training time only
                log_now = self.step % cfg.log_every == 0 or self.step == cfg.max_steps or eval_now
                if log_now:
                    self._check_loss(first_bad)
                    rate = n_window / max(time.perf_counter() - t0, 1e-9)
                    means = self._log(logs, task, window, n_window, rate)
                    if bar is not None:
                        bar.set_postfix({k: f"{v:.4f}" for k, v in means.items()})
                    window, n_window, t0 = {}, 0, time.perf_counter()
                if self.sample_every and self.step % self.sample_every == 0 and self.dist.is_main:
                    paused = time.perf_counter()
                    self._save_samples(task)
                    t0 += time.perf_counter() - paused
                if after_step is not None:
                    after_step(self.step)
                if deadline is not None and not out_of_time and time.perf_counter() > deadline:
                    out_of_time = self.stop_requested = True
                # without distribution the flag is local (no sync); with it, ranks agree at log steps
                stop = any_flag(self.stop_requested, self.dist) if log_now or not self.dist.enabled else False
                if stop or self.step % cfg.save_every == 0 or self.step == cfg.max_steps:
                    if not log_now:  # (checked above at log steps)
                        self._check_loss(first_bad)
                    self.save(task)
                if stop:
                    why = f"--max-minutes {cfg.max_minutes:g}" if out_of_time else "signal"
                    self.print(f"stopped by {why} at step {self.step}; checkpoint saved, continue with --resume")
                    break
        finally:
            if bar is not None:
                bar.close()
            for s, handler in previous.items():
                with contextlib.suppress(ValueError, TypeError):
                    signal.signal(s, handler)
        if self.skipped:
            self.print(f"skipped {len(self.skipped)} unreadable file(s), e.g. {sorted(self.skipped)[:3]}")
        return self.step

    # ------------------------------------------------------------------ validation, best release, samples

    @torch.no_grad()
    def evaluate(self, task: TrainTask) -> float:
        """The mean of ``task.eval_losses`` over every validation item (rank 0; NaN elsewhere).

        The batches come in the validation set's fixed order; their noise and timesteps come from a
        CPU generator seeded with ``cfg.seed * 1_000_003 + EVAL_SEED_OFFSET`` at the start of every
        evaluation, so item ``i`` gets the same noise and timestep each time and values are
        comparable across evaluations (and equal to a direct computation with that generator).
        The global random streams are left as they were (exact resume).
        """
        if self.val_loader is None:
            return float("nan")
        generator = torch.Generator().manual_seed(self.cfg.seed * 1_000_003 + EVAL_SEED_OFFSET)
        total = torch.zeros((), dtype=torch.float64, device=self.device)
        count = 0
        with torch.random.fork_rng(devices=[self.device] if self.device.type == "cuda" else []):
            for batch in self.val_loader:
                losses = task.eval_losses(batch, generator).detach()  # type: ignore[attr-defined]
                total += losses.double().sum()
                count += losses.numel()
        return float(total) / max(count, 1)

    def _evaluate(self, task: TrainTask) -> None:
        """Evaluate (rank 0), keep the value for the log row, and export ``OUT/best/`` on a new lowest value."""
        if not self.dist.is_main:
            return
        value = self.evaluate(task)
        self._eval_value = value
        if value == value and (self.best is None or value < self.best["eval_loss"]):  # NaN is never the best
            self.best = {"step": self.step, "eval_loss": value}
            self._export_best(task)

    def _export_best(self, task: TrainTask) -> None:
        """``task.export`` into a temporary folder with ``best.json``, then swapped in for ``OUT/best``."""
        final = self.out / BEST_DIR
        tmp = self.out / f".{BEST_DIR}.tmp-{os.getpid()}"
        old = self.out / f".{BEST_DIR}.old-{os.getpid()}"
        for leftover in (tmp, old):
            shutil.rmtree(leftover, ignore_errors=True)
        tmp.mkdir(parents=True)
        try:
            task.export(tmp)
            atomic_write_text(tmp / BEST_INFO, json.dumps(self.best, indent=2) + "\n")
            if final.exists():
                os.rename(final, old)
            os.rename(tmp, final)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
            shutil.rmtree(old, ignore_errors=True)

    def _save_samples(self, task: TrainTask) -> None:
        """``OUT/samples/step_NNNNNN.png`` from ``task.sample_images()`` (the global random streams untouched)."""
        with torch.random.fork_rng(devices=[self.device] if self.device.type == "cuda" else []):
            drawn = task.sample_images()  # type: ignore[attr-defined]
        if drawn is not None:
            images, columns = drawn
            save_image_grid(self.out / SAMPLES_DIR / f"step_{self.step:06d}.png", images, columns)

    def sample_generator(self, device: torch.device | None = None) -> torch.Generator:
        """The sample grids' generator on ``device`` (default: the run's), seeded the same for every grid."""
        device = self.device if device is None else device
        return torch.Generator(device).manual_seed(self.cfg.seed * 1_000_003 + SAMPLE_SEED_OFFSET)

    def _check_loss(self, first_bad: Tensor) -> None:
        """Raise :class:`NonFiniteLossError` (on every rank) when a loss term (a term whose name ends in
        ``loss``) of some step was NaN or inf; ``first_bad`` holds that step, or -1."""
        step = int(first_bad)
        if any_flag(step >= 0, self.dist):
            where = f"at step {step}" if step >= 0 else "on another process"
            raise NonFiniteLossError(
                f"training stopped: the loss became NaN or inf {where}; nothing of that step was saved (the last "
                f"checkpoint and the release weights in {self.out} are from before it). Lower --lr, raise "
                "--warmup-steps, or check the data, then --resume"
            )

    def _open_logs(self) -> tuple[CSVLog | None, TensorBoardLog | None]:
        if not self.dist.is_main:
            return None, None
        self.out.mkdir(parents=True, exist_ok=True)
        csv_log = CSVLog(self.out / "log.csv", self.log_fields)
        if self.cfg.resume:
            csv_log.truncate_after(self.step)
        tb = TensorBoardLog(self.out / "tensorboard") if self.cfg.tensorboard else None
        return csv_log, tb

    def _bar(self) -> Any:
        if not (self.cfg.progress and self.dist.is_main):
            return None
        try:
            from tqdm.auto import tqdm
        except ImportError:
            return None
        return tqdm(total=self.cfg.max_steps, initial=self.step, desc=self.name, dynamic_ncols=True)

    def _log(self, logs: tuple[CSVLog | None, TensorBoardLog | None], task: TrainTask,
             window: dict[str, Tensor], n: int, rate: float) -> dict[str, float]:
        """Write one row (rank 0) with the window's mean terms; returns what the progress bar shows: the first
        two means, and ``eval_loss`` / ``mfu`` (in percent) when the row has them (one device read)."""
        names = list(window)
        values = (torch.stack([window[k].float() for k in names]) / n).tolist() if names else []
        means = dict(zip(names, values))
        extra = task.log_row()
        csv_log, tb = logs
        if csv_log is None:
            return means
        row: dict[str, float | int] = {"step": self.step, "epoch": self.epoch, **means, **extra,
                                       "steps_per_s": rate, "skipped_files": len(self.skipped)}
        if self._eval_value is not None:
            row["eval_loss"], self._eval_value = self._eval_value, None
        flops = getattr(task, "model_flops_per_step", None)
        if flops:  # nanoGPT's estimate_mfu: model FLOPs x steps/s of this process over the device's peak
            row["tflops"] = flops * rate / 1e12
            peak = getattr(task, "peak_tflops", None)
            if peak:
                row["mfu"] = row["tflops"] / peak
        csv_log.write(row)
        if tb is not None:
            tb.write(row)
        shown = dict(list(means.items())[:2])
        if "eval_loss" in row:
            shown["eval_loss"] = float(row["eval_loss"])
        if "mfu" in row:
            shown["mfu_%"] = 100 * float(row["mfu"])
        return shown
