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
  step, raised at the next log or checkpoint step before anything is saved.
"""

from __future__ import annotations

import contextlib
import json
import signal
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, Protocol

import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset

from movq.atomic import atomic_write_text
from movq.distributed import DistContext, any_flag, barrier, gather_objects, setup
from movq.train import checkpoint as ckpt
from movq.train.config import RunConfig
from movq.train.data import ResumableSampler
from movq.train.logs import CSVLog, TensorBoardLog
from movq.train.optim import OptimizerStep

LOADER_SEED_OFFSET = 7
"""Keeps the DataLoader generator's seed apart from the model-initialisation and runtime seeds."""


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
    ``export()`` writes the release weights (rank 0, after each checkpoint).
    """

    def train_step(self, batches: Iterator[Any], step: int) -> dict[str, Tensor]: ...

    def state_dict(self) -> dict[str, Any]: ...

    def load_state_dict(self, state: dict[str, Any]) -> None: ...

    def check_resume(self, state: dict[str, Any]) -> None: ...

    def log_row(self) -> dict[str, float | int]: ...

    def export(self) -> None: ...


class TaskBase:
    """The half of a :class:`TrainTask` that every movq trainer shares.

    A subclass sets ``self.loop`` (its :class:`TrainLoop`) and ``self.optimizer_step`` (the model
    it trains with its optimizer, schedule and EMA: :class:`~movq.train.optim.OptimizerStep`) and
    adds ``train_step``, ``check_resume`` and ``export``. Given here: ``step``, ``opt`` / ``sched`` /
    ``ema`` (the optimizer step's), ``state_dict`` / ``load_state_dict`` (those of the optimizer
    step: extend them with more), ``log_row`` (the learning rate), ``after_step`` (nothing) and ``run``.
    """

    loop: TrainLoop
    optimizer_step: OptimizerStep

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
        torch.manual_seed(cfg.seed)  # identical initialisation on every replica
        if self.dist.is_main:  # the run's config, before any work: `--out OUT --resume` finds it even without a checkpoint
            atomic_write_text(self.out / ckpt.RUN_CONFIG_FILE, json.dumps(cfg.to_dict(), indent=2) + "\n")

    # ------------------------------------------------------------------ set-up

    def wrap(self, module: nn.Module) -> nn.Module:
        """``module`` in DistributedDataParallel under torchrun, else itself."""
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
        return {
            **task.state_dict(), "step": self.step, "epoch": self.epoch, "position": self.position,
            "rng": rngs, "skipped": sorted(self.skipped), "config": self.cfg.to_dict(),
        }

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
                log_now = self.step % cfg.log_every == 0 or self.step == cfg.max_steps
                if log_now:
                    self._check_loss(first_bad)
                    rate = n_window / max(time.perf_counter() - t0, 1e-9)
                    means = self._log(logs, task, window, n_window, rate)
                    if bar is not None:
                        bar.set_postfix({k: f"{v:.4f}" for k, v in list(means.items())[:2]})
                    window, n_window, t0 = {}, 0, time.perf_counter()
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
        """Write one row (rank 0) with the window's mean terms; returns those means (one device read)."""
        names = list(window)
        values = (torch.stack([window[k].float() for k in names]) / n).tolist() if names else []
        means = dict(zip(names, values))
        extra = task.log_row()
        csv_log, tb = logs
        if csv_log is None:
            return means
        row: dict[str, float | int] = {"step": self.step, "epoch": self.epoch, **means, **extra,
                                       "steps_per_s": rate, "skipped_files": len(self.skipped)}
        csv_log.write(row)
        if tb is not None:
            tb.write(row)
        return means
