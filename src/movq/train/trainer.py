"""The training loop: codec + EMA + PatchGAN, AdamW with warm-up + cosine, DDP, exact resume."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import fields
from pathlib import Path
from typing import Any, get_args

import torch
from torch import Tensor, nn

from movq.atomic import atomic_write_text
from movq.codec import Codec
from movq.config import CodecConfig, get_preset
from movq.quantizers import QuantizerConfig, histogram_perplexity
from movq.quantizers.multiscale import default_scales
from movq.strict import merge_dicts
from movq.train.checkpoint import check_same_run
from movq.train.config import CodecTrainConfig
from movq.train.data import ImageFolder, collate
from movq.train.logs import dead_codes, save_grid
from movq.train.loop import TaskBase, TrainLoop, require_state_keys
from movq.train.losses import CodecLoss, NLayerDiscriminator, hinge_d_loss
from movq.train.optim import OptimizerStep, autocast, autocast_dtype, no_sync_unless

LOG_FIELDS = (
    "step", "epoch", "lr", "loss", "vq", "l2", "l1", "perc", "nll", "adv", "adv_weight", "d_loss",
    "logits_real", "logits_fake", "grad_norm", "perplexity", "usage", "dead_codes", "steps_per_s",
    "skipped_files",
)
"""Columns of the codec run's ``log.csv``."""
HISTOGRAM_CAP = 2**20
"""Largest codebook whose per-code usage is counted for the logs (larger ones count the first codes)."""


def build_codec(cfg: CodecTrainConfig) -> Codec:
    """The codec to train: ``cfg.init`` weights (``movq.load``) or the preset with ``cfg.codec``'s
    overrides, its quantizer replaced by one of kind ``cfg.quantizer`` when given (:func:`quantizer_options`);
    a multi-scale codec must train at its resolution (:func:`check_multiscale_resolution`)."""
    if cfg.init:
        from movq.loader import load

        codec = load(cfg.init)
        if cfg.codec or cfg.quantizer:
            raise ValueError("codec overrides (--codec, --quantizer) cannot be combined with --init (the weights fix "
                             "the architecture)")
        return check_multiscale_resolution(codec.float().train(), cfg)
    base = get_preset(cfg.preset).to_dict()
    overrides = dict(cfg.codec)
    if cfg.quantizer is not None:
        given = overrides.pop("quantizer", None) or {}
        if not isinstance(given, dict):
            raise ValueError(f"--codec: 'quantizer' must be a JSON object of the quantizer's options, got {given!r}")
        base["quantizer"] = quantizer_options(cfg.quantizer, merge_dicts(base, overrides), given)
    config = CodecConfig.from_dict(merge_dicts(base, overrides))
    return check_multiscale_resolution(Codec(config).train(), cfg)


def quantizer_options(kind: str, codec: dict[str, Any], given: dict[str, Any]) -> dict[str, Any]:
    """The quantizer dict of ``--quantizer kind`` for the codec config dict ``codec``: ``given`` (the
    options of ``--codec``'s ``quantizer``), the codec's ``codebook_size`` when the kind has one, and for
    ``multiscale`` the :func:`default_scales` of the codec's latent side."""
    member = next(m for m in get_args(QuantizerConfig) if m().kind == kind)
    names = {f.name for f in fields(member)}
    options: dict[str, Any] = {"kind": kind}
    size = (codec.get("quantizer") or {}).get("codebook_size")
    if "codebook_size" in names and size is not None:
        options["codebook_size"] = size
    if kind == "multiscale":
        side = int(codec.get("resolution", 256)) // 2 ** (len(codec.get("ch_mult", (1, 2, 2, 4))) - 1)
        options["scales"] = list(default_scales(max(side, 1)))
    return {**options, **given}


def check_multiscale_resolution(codec: Codec, cfg: CodecTrainConfig) -> Codec:
    """``codec``, after checking that a multi-scale codec trains at its resolution (its quantizer takes
    latents of exactly its last scale); ``ValueError`` naming ``--resolution`` otherwise."""
    if codec.multiscale and cfg.resolution != codec.quantize.side * codec.downsample_factor:
        side = codec.quantize.side * codec.downsample_factor
        raise ValueError(
            f"--resolution {cfg.resolution}: a multi-scale codec (scales {list(codec.quantize.scales)}) quantizes a "
            f"{codec.quantize.side}x{codec.quantize.side} latent, so it trains on {side} px crops: use --resolution {side}"
        )
    return codec


class Trainer(TaskBase):
    """Trains one codec as described by a :class:`CodecTrainConfig` (see ``movq-train --help``).

    Build it, then call :meth:`run`; it returns the final step. Under ``torchrun`` every process
    builds one; rank 0 alone writes files. ``codec`` / ``ema.module`` / ``disc`` are the unwrapped
    modules (identical on every replica). The run's bookkeeping (data order, checkpoints, exact
    resume, logs, signals) is the shared :class:`~movq.train.loop.TrainLoop` (``self.loop``);
    this class is the :class:`~movq.train.loop.TrainTask` with the codec recipe.
    """

    def __init__(self, cfg: CodecTrainConfig) -> None:
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
        self.disc = NLayerDiscriminator(3, cfg.disc_ndf, cfg.disc_layers, cfg.disc_norm).to(self.device)
        self.perceptual = self._perceptual()
        self.loss = CodecLoss(cfg.loss, cfg.adaptive_weight)
        # AdamW with weight decay on every codec weight (the recipe); the discriminator: no EMA, no
        # clipping, its schedule counted in codec steps (also before disc_start)
        self.optimizer_step = OptimizerStep.adamw(self.codec, cfg, params=self.codec.parameters())
        self.d_optimizer_step = OptimizerStep.adamw(self.disc, cfg, self.disc.parameters(), cfg.disc_lr, ema=False, clip=False)
        self.d_opt, self.d_sched = self.d_optimizer_step.opt, self.d_optimizer_step.sched
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
            atomic_write_text(self.out / "perceptual.txt", describe(model) + "\n")
        return model

    def _check_memory(self) -> None:
        """Refuse (before any step) a resolution x batch whose activations cannot fit on the device."""
        from movq.memory_budget import check_memory_budget

        cfg = self.cfg
        needed = self.codec.activation_bytes(cfg.batch_size, cfg.resolution, cfg.resolution, training=True)
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
            **super().state_dict(), "disc": self.disc.state_dict(), "d_opt": self.d_opt.state_dict(),
            "d_sched": self.d_sched.state_dict(), "codec_config": self.codec.config.to_dict(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        self.disc.load_state_dict(state["disc"])
        self.d_opt.load_state_dict(state["d_opt"])
        self.d_sched.load_state_dict(state["d_sched"])

    def check_resume(self, state: dict[str, Any]) -> None:
        """Refuse a saved run of another trainer or architecture, naming the keys or fields that differ."""
        require_state_keys(state, ("model", "ema", "disc", "opt", "d_opt", "sched", "d_sched"), self.out, "movq-train")
        saved = state.get("codec_config", {})
        check_same_run(saved, self.codec.config.to_dict(), self.out, f"architecture {saved.get('name')!r}", ignore=("name",))

    def state(self) -> dict[str, Any]:
        """The whole checkpoint (this state plus the loop's step, data position and RNG streams)."""
        return self.loop.checkpoint_state(self)

    def export(self, directory: Path | None = None) -> None:
        """The EMA release weights as ``config.json`` + ``model.safetensors`` in ``directory`` (default ``OUT``;
        ``movq.load(OUT)``)."""
        self.ema.module.save_pretrained(self.out if directory is None else directory)

    def save(self) -> None:
        """Checkpoint now (all ranks) and export the release weights."""
        self.loop.save(self)

    def log_row(self) -> dict[str, float | int]:
        """Learning rate and the codebook statistics of the log window (then reset)."""
        counts = self.counts.to("cpu", copy=True)  # .cpu() of a CPU tensor is the tensor itself, zeroed next
        self.counts.zero_()
        dead, usage = dead_codes(counts)
        perplexity = float(histogram_perplexity(counts))
        return {**super().log_row(), "usage": usage, "dead_codes": dead, "perplexity": perplexity}

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
        sums["grad_norm"] = self.optimizer_step()
        self.d_optimizer_step(apply=gan)
        return sums

    def after_step(self, step: int) -> None:
        """The image grid of the last batch every ``image_every`` steps (rank 0)."""
        if self.dist.is_main and step % self.cfg.image_every == 0 and self._last_batch is not None:
            save_grid(self.out / "images" / f"step-{step:08d}.png", *self._last_batch)


def train(cfg: CodecTrainConfig) -> Trainer:
    """Build a :class:`Trainer` for ``cfg``, run it, and return it (for scripts and tests)."""
    trainer = Trainer(cfg)
    trainer.run()
    return trainer
