"""The training loop: codec + EMA + PatchGAN, AdamW with warm-up + cosine, DDP, exact resume."""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from movq.codec import Codec
from movq.config import CodecConfig, get_preset
from movq.quantizers import histogram_perplexity
from movq.train.config import CodecTrainConfig as TrainConfig  # the codec recipe
from movq.train.data import ImageFolder, collate
from movq.train.ema import ModelEMA
from movq.train.logs import dead_codes, save_grid
from movq.train.loop import TrainLoop, require_state_keys
from movq.train.losses import CodecLoss, NLayerDiscriminator, hinge_d_loss
from movq.train.optim import autocast, autocast_dtype, lr_lambda, no_sync_unless

LOG_FIELDS = (
    "step", "epoch", "lr", "loss", "vq", "l2", "l1", "perc", "nll", "adv", "adv_weight", "d_loss",
    "logits_real", "logits_fake", "grad_norm", "perplexity", "usage", "dead_codes", "steps_per_s",
    "skipped_files",
)
"""Columns of the codec run's ``log.csv``."""
HISTOGRAM_CAP = 2**20
"""Largest codebook whose per-code usage is counted for the logs (larger ones count the first codes)."""


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


class Trainer:
    """Trains one codec as described by a :class:`TrainConfig` (see ``movq-train --help``).

    Build it, then call :meth:`run`; it returns the final step. Under ``torchrun`` every process
    builds one; rank 0 alone writes files. ``codec`` / ``ema.module`` / ``disc`` are the unwrapped
    modules (identical on every replica). The run's bookkeeping (data order, checkpoints, exact
    resume, logs, signals) is the shared :class:`~movq.train.loop.TrainLoop` (``self.loop``);
    this class is the :class:`~movq.train.loop.TrainTask` with the codec recipe.
    """

    def __init__(self, cfg: TrainConfig) -> None:
        self.cfg = cfg
        out, data = Path(cfg.out).resolve(), Path(cfg.data).resolve()
        if out == data or data in out.parents:
            raise ValueError(
                f"--out {cfg.out} is inside --data {cfg.data}: the run's image grids would become training data "
                "(and change the data order on --resume); put the run folder elsewhere"
            )
        self.loop = TrainLoop(cfg, "movq-train", LOG_FIELDS)
        self.dist, self.device, self.out = self.loop.dist, self.loop.device, self.loop.out
        self.codec = build_codec(cfg).to(self.device)
        factor = self.codec.downsample_factor
        if cfg.resolution < factor or cfg.resolution % factor:
            raise ValueError(
                f"--resolution {cfg.resolution} must be a positive multiple of the codec's downsample factor {factor}"
            )
        self.ema = ModelEMA(self.codec, cfg.ema_decay, cfg.ema_warmup)
        self.disc = NLayerDiscriminator(3, cfg.disc_ndf, cfg.disc_layers, cfg.disc_norm).to(self.device)
        self.perceptual = self._perceptual()
        self.loss = CodecLoss(cfg.loss, cfg.adaptive_weight)
        self.opt = torch.optim.AdamW(self.codec.parameters(), cfg.lr, betas=cfg.betas, weight_decay=cfg.weight_decay)
        self.d_opt = torch.optim.AdamW(
            self.disc.parameters(), cfg.disc_lr or cfg.lr, betas=cfg.betas, weight_decay=cfg.weight_decay
        )
        self.sched = torch.optim.lr_scheduler.LambdaLR(self.opt, lr_lambda(cfg))
        self.d_sched = torch.optim.lr_scheduler.LambdaLR(self.d_opt, lr_lambda(cfg))
        self.amp = autocast_dtype(cfg, self.device)
        self.model, self.disc_ddp = self.loop.wrap(self.codec), self.loop.wrap(self.disc)
        self._check_memory()
        self.dataset = ImageFolder(cfg.data, cfg.resolution, cfg.crop_scale, cfg.crop_ratio, cfg.flip)
        self.loop.set_data(self.dataset, collate)
        self.loader = self.loop.loader
        self.counts = torch.zeros(min(self.codec.codebook_size, HISTOGRAM_CAP), device=self.device)
        self._last_batch: tuple[Tensor, Tensor] | None = None
        self.loop.begin(self)

    @property
    def step(self) -> int:
        """Optimizer steps done so far."""
        return self.loop.step

    @property
    def skipped(self) -> set[str]:
        """Paths of unreadable files met so far (replaced by the next readable file)."""
        return self.loop.skipped

    # ------------------------------------------------------------------ setup helpers

    def _perceptual(self) -> nn.Module | None:
        w = self.cfg.loss
        if self.cfg.perceptual_net == "none" or (w.perc == 0 and w.nll_perc * w.nll == 0):
            return None
        from movq.metrics.lpips import describe, load_lpips

        model = load_lpips(self.cfg.perceptual_net, self.cfg.perceptual_weights, device=self.device)  # type: ignore[arg-type]
        if self.dist.is_main:
            self.out.mkdir(parents=True, exist_ok=True)
            (self.out / "perceptual.txt").write_text(describe(model) + "\n")
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

    def _autocast(self) -> contextlib.AbstractContextManager[Any]:
        return autocast(self.amp, self.device)

    # ------------------------------------------------------------------ TrainTask: state

    def state_dict(self) -> dict[str, Any]:
        """Codec, EMA, discriminator, optimizers and schedulers (tensors and plain values)."""
        return {
            "model": self.codec.state_dict(), "ema": self.ema.state_dict(), "disc": self.disc.state_dict(),
            "opt": self.opt.state_dict(), "d_opt": self.d_opt.state_dict(),
            "sched": self.sched.state_dict(), "d_sched": self.d_sched.state_dict(),
            "codec_config": self.codec.config.to_dict(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.codec.load_state_dict(state["model"])
        self.ema.load_state_dict(state["ema"])
        self.disc.load_state_dict(state["disc"])
        self.opt.load_state_dict(state["opt"])
        self.d_opt.load_state_dict(state["d_opt"])
        self.sched.load_state_dict(state["sched"])
        self.d_sched.load_state_dict(state["d_sched"])

    def check_resume(self, state: dict[str, Any]) -> None:
        """Refuse a saved run of another trainer or architecture, naming the keys or fields that differ."""
        require_state_keys(state, ("model", "ema", "disc", "opt", "d_opt", "sched", "d_sched"), self.out, "movq-train")
        saved_arch = {k: v for k, v in state.get("codec_config", {}).items() if k != "name"}
        arch = {k: v for k, v in self.codec.config.to_dict().items() if k != "name"}
        if saved_arch and saved_arch != arch:
            changed = sorted(k for k in set(saved_arch) | set(arch) if saved_arch.get(k) != arch.get(k))
            raise ValueError(
                f"this run ({self.out}) was trained with architecture {state['codec_config'].get('name')!r} "
                f"({', '.join(f'{k}={saved_arch.get(k)!r}' for k in changed)}), but --preset/--codec/--init now give "
                f"({', '.join(f'{k}={arch.get(k)!r}' for k in changed)}); drop those flags to resume, or use a new --out"
            )

    def state(self) -> dict[str, Any]:
        """The whole checkpoint (this state plus the loop's step, data position and RNG streams)."""
        return self.loop.checkpoint_state(self)

    def export(self) -> None:
        """The EMA release weights as ``OUT/config.json`` + ``OUT/model.safetensors`` (``movq.load(OUT)``)."""
        self.ema.module.save_pretrained(self.out)

    def save(self) -> None:
        """Checkpoint now (all ranks) and export the release weights."""
        self.loop.save(self)

    def log_row(self) -> dict[str, float | int]:
        """Learning rate and the codebook statistics of the log window (then reset)."""
        counts = self.counts.cpu()
        self.counts.zero_()
        dead, usage = dead_codes(counts)
        perplexity = float(histogram_perplexity(counts))
        return {"lr": self.sched.get_last_lr()[0], "usage": usage, "dead_codes": dead, "perplexity": perplexity}

    # ------------------------------------------------------------------ TrainTask: the step

    def _generator_pass(self, x: Tensor, gan: bool, sync: bool) -> tuple[dict[str, Tensor], Tensor, Tensor]:
        with no_sync_unless(self.model, sync):
            with self._autocast():
                out = self.model(x)
                x_hat = out.sample
                perc = self.perceptual(x_hat, x) if self.perceptual is not None else None
            logits_fake = None
            if gan:
                self.disc.requires_grad_(False)
                with self._autocast():
                    logits_fake = self.disc(x_hat)
                self.disc.requires_grad_(True)
            terms = self.loss(x, x_hat, out.quantizer.loss, perc, logits_fake, self.codec.decoder.conv_out.weight)
            (terms["loss"] / self.cfg.grad_accum).backward()
        terms = {k: v.detach() for k, v in terms.items()}
        return terms, x_hat.detach(), out.quantizer.indices.detach()

    def _disc_pass(self, x: Tensor, x_hat: Tensor, sync: bool) -> dict[str, Tensor]:
        with no_sync_unless(self.disc_ddp, sync):
            with self._autocast():  # one forward over real and fake (one DDP forward per backward)
                logits = self.disc_ddp(torch.cat([x, x_hat]))
            real, fake = logits[: x.shape[0]], logits[x.shape[0]:]
            d_loss = hinge_d_loss(real, fake)
            (d_loss / self.cfg.grad_accum).backward()
        return {"d_loss": d_loss.detach(), "logits_real": real.float().mean().detach(), "logits_fake": fake.float().mean().detach()}

    def train_step(self, batches: Iterator[dict[str, Any]], step: int) -> dict[str, Tensor]:
        """One optimizer step over ``grad_accum`` micro-batches; returns the averaged loss terms.

        The terms stay 0-d tensors on the device and the code histogram is updated on the device:
        nothing here waits for the GPU; the loop reads values back only when it logs.
        """
        cfg = self.cfg
        gan = step >= cfg.disc_start and cfg.loss.adv > 0
        sums: dict[str, Tensor] = {}
        for micro in range(cfg.grad_accum):
            x = next(batches)["image"].to(self.device, non_blocking=True)
            sync = micro == cfg.grad_accum - 1
            terms, x_hat, indices = self._generator_pass(x, gan, sync)
            if gan:
                terms.update(self._disc_pass(x, x_hat, sync))
            self.counts += torch.bincount(indices.reshape(-1), minlength=self.counts.numel())[: self.counts.numel()]
            for key, value in terms.items():
                scaled = value.detach().float() / cfg.grad_accum
                sums[key] = sums[key] + scaled if key in sums else scaled
            self._last_batch = (x, x_hat)
        grad_norm = nn.utils.clip_grad_norm_(self.codec.parameters(), cfg.grad_clip if cfg.grad_clip > 0 else float("inf"))
        self.opt.step()
        self.opt.zero_grad(set_to_none=True)
        self.sched.step()
        if gan:
            self.d_opt.step()
        self.d_opt.zero_grad(set_to_none=True)
        with warnings.catch_warnings():  # before disc_start d_opt has not stepped yet: expected
            warnings.filterwarnings("ignore", message=r"Detected call of `lr_scheduler.step\(\)` before")
            self.d_sched.step()  # same warm-up + cosine as the codec, counted in codec steps
        self.ema.update(self.codec)
        sums["grad_norm"] = grad_norm.detach().float()
        return sums

    def _save_images(self, step: int) -> None:
        if self.dist.is_main and step % self.cfg.image_every == 0 and self._last_batch is not None:
            save_grid(self.out / "images" / f"step-{step:08d}.png", *self._last_batch)

    def run(self) -> int:
        """Train until ``max_steps`` (or a SIGTERM/SIGINT: save and return). Returns the last step."""
        self.codec.train()
        return self.loop.run(self, after_step=self._save_images)


def train(cfg: TrainConfig) -> Trainer:
    """Build a :class:`Trainer` for ``cfg``, run it, and return it (for scripts and tests)."""
    trainer = Trainer(cfg)
    trainer.run()
    return trainer
