"""The training loop: codec + EMA + PatchGAN, AdamW with warm-up + cosine, DDP, exact resume."""

from __future__ import annotations

import contextlib
import math
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn
from torch.nn.parallel import DistributedDataParallel as DDP
from torch.utils.data import DataLoader

from movq.codec import Codec
from movq.config import CodecConfig, get_preset
from movq.train import checkpoint as ckpt
from movq.train.config import TrainConfig
from movq.train.data import ImageFolder, ResumableSampler, collate
from movq.train.distributed import DistInfo, any_flag, gather_objects, setup
from movq.train.ema import ModelEMA
from movq.train.logs import CSVLog, TensorBoardLog, dead_codes, save_grid
from movq.train.losses import (
    LossWeights,
    NLayerDiscriminator,
    adaptive_weight,
    generator_adv_loss,
    hinge_d_loss,
    reconstruction_terms,
)


def _merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in over.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict) and value.get("kind", out[key].get("kind")) != out[key].get("kind"):
            out[key] = value  # another quantizer kind: replace, do not merge
            continue
        out[key] = _merge(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


def build_codec(cfg: TrainConfig) -> Codec:
    """The codec to train: ``cfg.init`` weights (``movq.load``) or the preset with ``cfg.codec`` overrides."""
    if cfg.init:
        from movq.loader import load

        codec = load(cfg.init)
        if cfg.codec:
            raise ValueError("codec overrides cannot be combined with --init (the weights fix the architecture)")
        return codec.float().train()
    config = CodecConfig.from_dict(_merge(get_preset(cfg.preset).to_dict(), cfg.codec))
    return Codec(config).train()


def lr_lambda(cfg: TrainConfig) -> Any:
    """Linear warm-up over ``warmup_steps``, then cosine from 1 to ``min_lr_ratio`` at ``max_steps``."""

    def factor(step: int) -> float:
        if step < cfg.warmup_steps:
            return (step + 1) / cfg.warmup_steps
        span = max(cfg.max_steps - cfg.warmup_steps, 1)
        progress = min((step - cfg.warmup_steps) / span, 1.0)
        return cfg.min_lr_ratio + (1 - cfg.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress))

    return factor


def autocast_dtype(cfg: TrainConfig, device: torch.device) -> torch.dtype | None:
    """bf16 on CPU and on CUDA devices that support it (``amp="auto"``), fp16 only when asked."""
    if cfg.amp == "none" or device.type not in ("cpu", "cuda"):
        return None
    if cfg.amp == "fp16":
        return torch.float16
    if device.type == "cuda" and not torch.cuda.is_bf16_supported():
        return None if cfg.amp == "auto" else torch.bfloat16
    return torch.bfloat16


class Trainer:
    """Runs one training job described by a :class:`TrainConfig` (see ``movq-train --help``).

    Build it, then call :meth:`run`; it returns the final step. Under ``torchrun`` every process
    builds one; rank 0 alone writes files. ``codec`` / ``ema.module`` / ``disc`` are the unwrapped
    modules (identical on every replica).
    """

    def __init__(self, cfg: TrainConfig) -> None:
        self.cfg = cfg
        self.dist: DistInfo = setup(cfg.device)
        self.device = self.dist.device
        self.out = Path(cfg.out)
        torch.manual_seed(cfg.seed)  # identical initialisation on every replica
        self.codec = build_codec(cfg).to(self.device)
        self.ema = ModelEMA(self.codec, cfg.ema_decay, cfg.ema_warmup)
        self.disc = NLayerDiscriminator(3, cfg.disc_ndf, cfg.disc_layers, cfg.disc_norm).to(self.device)
        self.perceptual = self._perceptual()
        self.weights = LossWeights(cfg.w_vq, cfg.w_adv, cfg.w_perc, cfg.w_l2, cfg.w_nll, cfg.w_l1, cfg.nll_perc, cfg.nll_l2)
        self.opt = torch.optim.AdamW(self.codec.parameters(), cfg.lr, betas=cfg.betas, weight_decay=cfg.weight_decay)
        self.d_opt = torch.optim.AdamW(
            self.disc.parameters(), cfg.disc_lr or cfg.lr, betas=cfg.betas, weight_decay=cfg.weight_decay
        )
        self.sched = torch.optim.lr_scheduler.LambdaLR(self.opt, lr_lambda(cfg))
        self.lr_factor = lr_lambda(cfg)
        self.amp = autocast_dtype(cfg, self.device)
        if self.dist.enabled:
            ids = [self.device.index] if self.device.type == "cuda" else None
            self.model: nn.Module = DDP(self.codec, device_ids=ids)
            self.disc_ddp: nn.Module = DDP(self.disc, device_ids=ids)
        else:
            self.model, self.disc_ddp = self.codec, self.disc
        self._check_memory()
        self.dataset = ImageFolder(cfg.data, cfg.resolution, cfg.crop_scale, cfg.crop_ratio, cfg.flip)
        self.sampler = ResumableSampler(len(self.dataset), cfg.seed, self.dist.rank, self.dist.world_size)
        if self.sampler.per_rank < cfg.batch_size:
            raise ValueError(
                f"{len(self.dataset)} images over {self.dist.world_size} process(es) give fewer than "
                f"batch_size={cfg.batch_size} per epoch"
            )
        # The loader draws its workers' base seed from its own generator, never from the global RNG,
        # so a resumed run (which creates one more iterator) keeps the same global random stream.
        self.loader_rng = torch.Generator().manual_seed(cfg.seed * 1_000_003 + 7 + self.dist.rank)
        self.loader = DataLoader(
            self.dataset, cfg.batch_size, sampler=self.sampler, num_workers=cfg.num_workers,
            collate_fn=collate, drop_last=True, persistent_workers=cfg.num_workers > 0, generator=self.loader_rng,
        )
        self.step, self.epoch, self.position = 0, 0, 0
        self.skipped: set[str] = set()
        self.stop_requested = False
        torch.manual_seed(cfg.seed + 1 + self.dist.rank)  # runtime randomness (dead-code restarts)
        if cfg.resume:
            self._resume()

    # ------------------------------------------------------------------ setup helpers

    def _perceptual(self) -> nn.Module | None:
        if self.cfg.perceptual_net == "none" or (self.cfg.w_perc == 0 and self.cfg.nll_perc * self.cfg.w_nll == 0):
            return None
        from movq.perceptual import describe, load_lpips

        model = load_lpips(self.cfg.perceptual_net, self.cfg.perceptual_weights, device=self.device)  # type: ignore[arg-type]
        self.perceptual_name = describe(model)
        return model

    def _check_memory(self) -> None:
        """Refuse (before any step) a resolution x batch whose activations cannot fit on the device."""
        from movq.memory import check_memory_budget, codec_activation_bytes

        cfg = self.cfg
        needed = codec_activation_bytes(self.codec.config, cfg.batch_size, cfg.resolution, cfg.resolution, training=True)
        check_memory_budget(
            needed, self.device, f"training at --resolution {cfg.resolution} x --batch-size {cfg.batch_size}",
            "lower --resolution or --batch-size (use --grad-accum for a larger effective batch)",
        )

    def _resume(self) -> None:
        found = ckpt.load_latest_readable(self.out)
        if found is None:
            self._print(f"--resume: no checkpoint under {self.out}, starting from scratch")
            return
        path, state = found
        saved_arch = {k: v for k, v in state.get("codec_config", {}).items() if k != "name"}
        arch = {k: v for k, v in self.codec.config.to_dict().items() if k != "name"}
        if saved_arch and saved_arch != arch:
            changed = sorted(k for k in set(saved_arch) | set(arch) if saved_arch.get(k) != arch.get(k))
            raise ValueError(
                f"this run ({path}) was trained with architecture {state['codec_config'].get('name')!r} "
                f"({', '.join(f'{k}={saved_arch.get(k)!r}' for k in changed)}), but --preset/--codec/--init now give "
                f"({', '.join(f'{k}={arch.get(k)!r}' for k in changed)}); drop those flags to resume, or use a new --out"
            )
        if state["step"] > self.cfg.max_steps:
            raise ValueError(
                f"the run in {self.out} is already at step {state['step']}, past --max-steps {self.cfg.max_steps}; "
                f"pass --max-steps above {state['step']} to continue it"
            )
        self.codec.load_state_dict(state["model"])
        self.ema.load_state_dict(state["ema"])
        self.disc.load_state_dict(state["disc"])
        self.opt.load_state_dict(state["opt"])
        self.d_opt.load_state_dict(state["d_opt"])
        self.sched.load_state_dict(state["sched"])
        self.step, self.epoch, self.position = state["step"], state["epoch"], state["position"]
        self.skipped = set(state.get("skipped", []))
        rngs = state["rng"]
        if len(rngs) != self.dist.world_size:
            self._print(f"resuming with {self.dist.world_size} processes from a {len(rngs)}-process run: not bit-exact")
        mine = rngs[self.dist.rank % len(rngs)]
        ckpt.set_rng_state(mine)
        if "loader" in mine:
            self.loader_rng.set_state(mine["loader"])
        self._print(f"resumed from {path} at step {self.step}")

    def _print(self, msg: str) -> None:
        if self.dist.is_main:
            print(f"[movq-train] {msg}", flush=True)

    def _autocast(self) -> contextlib.AbstractContextManager[Any]:
        if self.amp is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.amp)

    def _batches(self) -> Iterator[dict[str, Any]]:
        while True:
            self.sampler.set_position(self.epoch, self.position)
            for batch in self.loader:
                self.position += self.cfg.batch_size
                yield batch
            self.epoch, self.position = self.epoch + 1, 0

    # ------------------------------------------------------------------ checkpoints

    def state(self) -> dict[str, Any]:
        rngs = gather_objects({**ckpt.rng_state(), "loader": self.loader_rng.get_state()}, self.dist)
        return {
            "model": self.codec.state_dict(), "ema": self.ema.state_dict(), "disc": self.disc.state_dict(),
            "opt": self.opt.state_dict(), "d_opt": self.d_opt.state_dict(),
            "sched": self.sched.state_dict(),
            "step": self.step, "epoch": self.epoch, "position": self.position,
            "rng": rngs, "skipped": sorted(self.skipped), "config": self.cfg.to_dict(),
            "codec_config": self.codec.config.to_dict(),
        }

    def save(self) -> None:
        """Checkpoint (all ranks gather RNG states; rank 0 writes) and export the EMA release weights."""
        state = self.state()
        if self.dist.is_main:
            ckpt.save_checkpoint(self.out, self.step, state, self.cfg.to_dict(), self.cfg.keep_last)
            self.ema.module.save_pretrained(self.out)
        if self.dist.enabled:
            torch.distributed.barrier()

    # ------------------------------------------------------------------ the step

    def _generator_pass(self, x: Tensor, gan: bool, sync: bool) -> tuple[dict[str, Tensor], Tensor, Tensor]:
        w, cfg = self.weights, self.cfg
        ctx = contextlib.nullcontext() if sync or not self.dist.enabled else self.model.no_sync()  # type: ignore[operator]
        with ctx:
            with self._autocast():
                out = self.model(x)
                x_hat = out.sample
                perc = self.perceptual(x_hat, x) if self.perceptual is not None else None
            terms = reconstruction_terms(x, x_hat, perc, w)
            terms["vq"] = out.quantizer.loss.float()
            terms["adv"] = torch.zeros((), device=x.device)
            terms["adv_weight"] = torch.zeros((), device=x.device)
            if gan:
                self.disc.requires_grad_(False)
                with self._autocast():
                    logits_fake = self.disc(x_hat)
                terms["adv"] = generator_adv_loss(logits_fake)
                terms["adv_weight"] = (
                    adaptive_weight(terms["nll"], terms["adv"], self.codec.decoder.conv_out.weight)
                    if cfg.adaptive_weight else torch.ones((), device=x.device)
                )
                self.disc.requires_grad_(True)
            total = (
                w.vq * terms["vq"] + w.adv * terms["adv_weight"] * terms["adv"] + w.perc * terms["perc"]
                + w.l2 * terms["l2"] + w.nll * terms["nll"] + w.l1 * terms["l1"]
            )
            (total / cfg.grad_accum).backward()
        terms["loss"] = total.detach()
        return terms, x_hat.detach(), out.quantizer.indices.detach()

    def _disc_pass(self, x: Tensor, x_hat: Tensor, sync: bool) -> dict[str, Tensor]:
        ctx = contextlib.nullcontext() if sync or not self.dist.enabled else self.disc_ddp.no_sync()  # type: ignore[operator]
        with ctx:
            with self._autocast():  # one forward over real and fake (one DDP forward per backward)
                logits = self.disc_ddp(torch.cat([x, x_hat]))
            real, fake = logits[: x.shape[0]], logits[x.shape[0]:]
            d_loss = hinge_d_loss(real, fake)
            (d_loss / self.cfg.grad_accum).backward()
        return {"d_loss": d_loss.detach(), "logits_real": real.float().mean().detach(), "logits_fake": fake.float().mean().detach()}

    def train_step(self, batches: Iterator[dict[str, Any]], counts: Tensor) -> dict[str, Tensor]:
        """One optimizer step over ``grad_accum`` micro-batches; returns the averaged loss terms.

        The terms stay 0-d tensors on the device and ``counts`` (the code histogram) is updated on
        the device: nothing here waits for the GPU, the loop reads values back only when it logs.
        """
        cfg = self.cfg
        gan = self.step >= cfg.disc_start and cfg.w_adv > 0
        sums: dict[str, Tensor] = {}
        last = (None, None)
        for micro in range(cfg.grad_accum):
            batch = next(batches)
            self.skipped.update(batch["skipped"])
            x = batch["image"].to(self.device, non_blocking=True)
            sync = micro == cfg.grad_accum - 1
            terms, x_hat, indices = self._generator_pass(x, gan, sync)
            if gan:
                terms.update(self._disc_pass(x, x_hat, sync))
            flat = indices.reshape(-1)
            counts += torch.bincount(flat, minlength=counts.numel())[: counts.numel()].to(counts.dtype)
            for key, value in terms.items():
                scaled = value.detach().float() / cfg.grad_accum
                sums[key] = sums[key] + scaled if key in sums else scaled
            last = (x, x_hat)
        grad_norm = nn.utils.clip_grad_norm_(self.codec.parameters(), cfg.grad_clip if cfg.grad_clip > 0 else float("inf"))
        self.opt.step()
        self.opt.zero_grad(set_to_none=True)
        self.sched.step()
        if gan:
            for group in self.d_opt.param_groups:  # same warm-up + cosine as the codec
                group["lr"] = (cfg.disc_lr or cfg.lr) * self.lr_factor(self.step)
            self.d_opt.step()
        self.d_opt.zero_grad(set_to_none=True)
        self.ema.update(self.codec)
        self.step += 1
        sums["grad_norm"] = grad_norm.detach().float()
        self._last_batch = last
        return sums

    # ------------------------------------------------------------------ the loop

    def run(self) -> int:
        """Train until ``max_steps`` (or a SIGTERM/SIGINT: save and return). Returns the last step."""
        cfg = self.cfg
        logs = self._open_logs()
        previous = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGINT)}

        def request_stop(signum: int, frame: Any) -> None:  # noqa: ARG001
            self.stop_requested = True

        for s in previous:
            with contextlib.suppress(ValueError):  # not the main thread
                signal.signal(s, request_stop)
        bar = self._bar()
        counts = torch.zeros(min(self.codec.codebook_size, 2**20), device=self.device)
        window: dict[str, Tensor] = {}
        n_window, t0 = 0, time.perf_counter()
        self.codec.train()
        batches = self._batches()
        try:
            while self.step < cfg.max_steps:
                terms = self.train_step(batches, counts)
                n_window += 1
                for key, value in terms.items():
                    window[key] = window[key] + value if key in window else value
                if bar is not None:
                    bar.update(1)
                log_now = self.step % cfg.log_every == 0 or self.step == cfg.max_steps
                if log_now:
                    rate = n_window / max(time.perf_counter() - t0, 1e-9)
                    means = self._log(logs, window, n_window, counts, rate)
                    if bar is not None:
                        bar.set_postfix(loss=f"{means['loss']:.4f}", l2=f"{means['l2']:.4f}")
                    window, n_window, t0 = {}, 0, time.perf_counter()
                    counts.zero_()
                if self.dist.is_main and self.step % cfg.image_every == 0:
                    x, x_hat = self._last_batch
                    save_grid(self.out / "images" / f"step-{self.step:08d}.png", x, x_hat)
                # without distribution the flag is local (no sync); with it, ranks agree at log steps
                stop = any_flag(self.stop_requested, self.dist) if log_now or not self.dist.enabled else False
                if stop or self.step % cfg.save_every == 0 or self.step == cfg.max_steps:
                    self.save()
                if stop:
                    self._print(f"stopped by signal at step {self.step}; checkpoint saved, continue with --resume")
                    break
        finally:
            if bar is not None:
                bar.close()
            for s, handler in previous.items():
                with contextlib.suppress(ValueError, TypeError):
                    signal.signal(s, handler)
        if self.skipped:
            self._print(f"skipped {len(self.skipped)} unreadable file(s), e.g. {sorted(self.skipped)[:3]}")
        return self.step

    def _open_logs(self) -> tuple[CSVLog | None, TensorBoardLog | None]:
        if not self.dist.is_main:
            return None, None
        self.out.mkdir(parents=True, exist_ok=True)
        csv_log = CSVLog(self.out / "log.csv")
        if self.cfg.resume:
            csv_log.truncate_after(self.step)
        if getattr(self, "perceptual_name", None):
            (self.out / "perceptual.txt").write_text(self.perceptual_name + "\n")
        tb = TensorBoardLog(self.out / "tensorboard") if self.cfg.tensorboard else None
        return csv_log, tb

    def _bar(self) -> Any:
        if not (self.cfg.progress and self.dist.is_main):
            return None
        try:
            from tqdm.auto import tqdm
        except ImportError:
            return None
        return tqdm(total=self.cfg.max_steps, initial=self.step, desc="movq-train", dynamic_ncols=True)

    def _log(self, logs: tuple[CSVLog | None, TensorBoardLog | None], window: dict[str, Tensor], n: int,
             counts: Tensor, rate: float) -> dict[str, float]:
        """Write one log row (rank 0) with the window's mean terms; returns those means (one device read)."""
        names = sorted(window)
        values = (torch.stack([window[k] for k in names]) / n).tolist() if names else []
        means = dict(zip(names, values))
        csv_log, tb = logs
        if csv_log is None:
            return means
        counts = counts.cpu()
        dead, usage = dead_codes(counts)
        row: dict[str, float | int] = {"step": self.step, "epoch": self.epoch, "lr": self.sched.get_last_lr()[0]}
        row.update(means)
        row.update({"usage": usage, "dead_codes": dead, "steps_per_s": rate, "skipped_files": len(self.skipped)})
        probs = counts / counts.sum().clamp(min=1)
        row["perplexity"] = float(torch.exp(-(probs * probs.clamp(min=1e-10).log()).sum()))
        csv_log.write(row)
        if tb is not None:
            tb.write(row)
        return means


def train(cfg: TrainConfig) -> Trainer:
    """Build a :class:`Trainer` for ``cfg``, run it, and return it (for scripts and tests)."""
    trainer = Trainer(cfg)
    trainer.run()
    return trainer
