"""``movq-diffusion-train``: train a class- or vector-conditional latent diffusion UNet on codec latents
(plain PyTorch; ``torchrun`` for several processes).

    movq-diffusion-train --data LATENTS --out runs/diffusion --preset unet-small --max-steps 50000
    movq-diffusion-train --data photos/ --codec movqgan-tiny-photos --resolution 64 --out runs/diffusion
    movq-diffusion-train --data food/ --pixels --resolution 64 --out runs/food     # pixel space, no codec
    movq-diffusion-train --out runs/diffusion --resume                 # continue exactly where it stopped
    torchrun --nproc_per_node 2 -m movq.diffusion.train --data LATENTS --out runs/diffusion ...

``--data`` is a ``movq-tokenize --latents`` folder, or an image collection that ``movq-tokenize``
reads, encoded once with the frozen ``--codec`` into ``OUT/latents`` (and reused on ``--resume``).
Class labels are the top-level subfolders of an image folder (``DATA/<class>/<image>``; names in
``OUT/latent_diffusion.json``); ``--cond FILE.safetensors`` adds one conditioning vector per item.
Labels / vectors are dropped with probability ``--p-uncond`` so the model also learns the
unconditional prediction (classifier-free guidance).

Pixel space (``--pixels``, improved DDPM as published): the UNet works on the images themselves,
3 channels in ``[-1, 1]`` at ``--resolution``, no codec and no latent scale; the images of ``--data``
(any collection ``movq-tokenize`` reads; class folders give the labels) are decoded once with the
bench's preprocessing into memory (``--val-data`` the same way). The VLB's decoder at ``t = 0`` is the
discretized likelihood of 8-bit pixels (bins of ``2/255``, the first and last open), and samples clip
``x0`` to ``[-1, 1]``.

Objective (improved DDPM, Nichol & Dhariwal): cosine schedule, ``--loss hybrid`` (``L_simple +
vlb_weight * L_vlb`` with a learned variance), ``--loss mse`` (``L_simple``, fixed variance) or
``--use-kl`` (``L_vlb`` alone, improved-diffusion's ``use_kl``); ``t`` uniform, or importance-sampled
by ``--schedule-sampler loss-second-moment`` (:mod:`movq.diffusion.resample`). The default
prediction is ``v`` (``--mean-type v``), not the paper's ``eps``: on latents
the cosine schedule's clipped last beta multiplies an eps error by about 32 at the first of 1000
reverse steps and about 630 respaced to 50 (see :class:`~movq.diffusion.GaussianDiffusion`), while
``v`` is well conditioned at every step. Latents are multiplied by ``--latent-scale`` (default
``1 / std`` of the training latents, Rombach et al.'s scale factor) so they have unit spread.

``OUT`` gets the release (``LatentDiffusionPipeline.from_pretrained(OUT)``): the UNet's
``config.json`` + ``model.safetensors`` + ``ema.safetensors`` (EMA weights, used for sampling),
``diffusion.json``, ``latent_diffusion.json`` (pixel or latent space, codec, latent scale and shape, class names), plus
``log.csv`` and ``checkpoints/``. Checkpoints, exact resume, DDP, EMA, logs and the progress bar
are those of ``movq-train`` (:class:`movq.train.loop.TrainLoop`).

Validation and samples (:class:`movq.train.config.GeneratorConfig`), as nanoGPT / diffusers users expect:

    movq-diffusion-train --data LATENTS --out runs/d --val-fraction 0.05 --eval-every 500 --sample-every 1000

holds out 5% of the items (chosen by ``--seed``; ``--val-data DIR`` reads a separate folder instead),
logs ``eval_loss`` (the loss of the EMA weights over every held-out item, each item with the same
timestep and noise at every evaluation) and keeps the release with the lowest one in ``OUT/best/``
(``LatentDiffusionPipeline.from_pretrained("runs/d/best")``; ``best.json`` says its step), and writes
``OUT/samples/step_NNNNNN.png``: 4 samples per class (at most 8 classes; 16 samples without labels) of
the EMA weights, DDIM with 25 respaced steps, the same seed every time, decoded by the codec (with
``--pixels`` the samples are the images themselves, ``x0`` clipped to ``[-1, 1]``).
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Annotated, Any

import torch
from torch import Tensor

from movq.diffusion.config import DiffusionConfig, Loss, MeanType, Steps, VarType
from movq.diffusion.data import (
    LabelMode,
    LatentItems,
    PixelImages,
    check_label_layout,
    collate_latents,
    labelled_latents,
    labelled_pixels,
    latent_std,
)
from movq.diffusion.gaussian_diffusion import GaussianDiffusion
from movq.diffusion.guidance import drop_conditions
from movq.diffusion.pipeline import write_release_info
from movq.diffusion.presets import UNET_PRESETS, check_overrides, unet_config
from movq.diffusion.resample import ScheduleSamplerName, schedule_sampler
from movq.diffusion.sampling import generate
from movq.diffusion.schedules import Schedule
from movq.diffusion.unet import UNet
from movq.strict import NonNegativeFloat, NonNegativeInt, PositiveFloat, PositiveInt, Range
from movq.tokenize.training_data import (
    check_same_codec,
    codec_identity,
    data_codec,
    is_token_folder,
    open_token_folder,
)
from movq.train.checkpoint import check_same_run
from movq.train.cli import run_training_cli
from movq.train.config import GENERATOR_HELP, GeneratorConfig
from movq.train.data import Unseeded
from movq.train.loop import TaskBase, TrainLoop
from movq.train.optim import OptimizerStep, autocast, autocast_dtype, no_sync_unless

PROG = "movq-diffusion-train"
LOG_FIELDS = ("step", "epoch", "lr", "loss", "mse", "vb", "grad_norm", "eval_loss", "steps_per_s", "skipped_files")
"""Columns of the run's ``log.csv`` (``mse``: L_simple; ``vb``: the VLB term in bits/dim, hybrid only;
``eval_loss``: the validation loss, at evaluation steps)."""
LATENTS_DIR = "latents"
VAL_LATENTS_DIR = "val_latents"
"""``OUT/val_latents``: a ``--val-data`` image collection, encoded once like ``--data``."""
GRID_PER_CLASS, GRID_CLASSES, GRID_SAMPLES, GRID_STEPS = 4, 8, 16, 25
"""Sample grids: samples per class, classes shown, samples of a model without labels, DDIM steps."""
PIXEL_BOUNDS = (-1.0, 1.0)
"""The range of pixel data (8-bit images scaled to ``[-1, 1]``): the decoder's open edge bins, the samples' clip."""
DEFAULT_VAR_TYPE = {"hybrid": "learned_range", "mse": "fixed_large", "kl": "learned_range"}
"""The reverse-step variance each loss trains with unless ``--var-type`` says otherwise (improved-diffusion's defaults)."""


@dataclass
class DiffusionTrainConfig(GeneratorConfig):
    """Everything a latent-diffusion training run needs (bookkeeping from :class:`RunConfig`, optimisation
    from :class:`OptimConfig`; see the module docstring for the method).

    Data: ``data`` (a ``--latents`` folder or images + ``codec`` at ``resolution``, default 256; or with
    ``pixels`` the images themselves at ``resolution``, no codec),
    ``labels`` (``auto``: class folders when the data has them; ``folder``; ``none``), ``cond`` (a
    ``.safetensors`` file with ``cond`` ``[N, D]``). Model: ``preset`` (:data:`UNET_PRESETS`) with
    ``model`` overrides. Diffusion: ``diffusion_steps``, ``schedule``, ``mean_type``, ``loss``,
    ``var_type`` (default by loss: :data:`DEFAULT_VAR_TYPE`), ``vlb_weight``; ``latent_scale``
    (``None``: ``1 / std`` of the latents); ``p_uncond`` (label / vector dropout). Optimisation:
    AdamW, ``warmup_steps`` of linear warm-up, then constant (``min_lr_ratio=1``, as improved DDPM) or
    cosine to ``min_lr_ratio * lr``; EMA of the weights (the sampling weights). Validation, best release,
    sample grids, ``compile``: :class:`~movq.train.config.GeneratorConfig`.
    """

    out: str = "runs/diffusion"
    batch_size: PositiveInt = 64
    data: str = ""
    codec: str | None = None
    resolution: PositiveInt | None = None
    pixels: bool = False
    labels: LabelMode = "auto"
    cond: str | None = None
    preset: str = "unet-small"
    model: dict[str, Any] = field(default_factory=dict)
    # diffusion
    diffusion_steps: Steps = 1000
    schedule: Schedule = "cosine"
    mean_type: MeanType = "v"
    loss: Loss | None = None  # None: hybrid, or kl with use_kl
    use_kl: bool = False
    var_type: VarType | None = None
    vlb_weight: NonNegativeFloat = 1e-3
    schedule_sampler: ScheduleSamplerName = "uniform"
    latent_scale: PositiveFloat | None = None  # None: 1 / std of the latents
    p_uncond: Annotated[float, Range(0, 1)] = 0.1
    # OptimConfig's fields with improved-DDPM defaults (lr 1e-4 and EMA 0.9999 are OptimConfig's own)
    min_lr_ratio: float = 1.0
    warmup_steps: NonNegativeInt = 200
    betas: tuple[float, float] = (0.9, 0.999)
    # encoding an image collection
    tokenize_batch_size: PositiveInt = 32

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.preset not in UNET_PRESETS:
            raise ValueError(f"unknown preset {self.preset!r}; available: {', '.join(UNET_PRESETS)}")
        check_overrides(self.model)
        if self.pixels:
            if self.codec:
                raise ValueError("--pixels trains on the images themselves: drop --codec (a codec is for latent diffusion)")
            if self.latent_scale is not None:
                raise ValueError("--latent-scale applies to latents: --pixels trains on images in [-1, 1]")
            if self.resolution is None:
                raise ValueError("--pixels needs --resolution (the image side the UNet works at, e.g. 64)")
        self.diffusion_config()  # the diffusion settings must make a valid process

    def diffusion_config(self) -> DiffusionConfig:
        """The :class:`DiffusionConfig` of these settings (errors name the flags)."""
        loss = self.loss or ("kl" if self.use_kl else "hybrid")
        if self.use_kl and loss != "kl":
            raise ValueError(f"--use-kl trains the VLB alone (loss 'kl') but --loss is {loss!r}: give one of them")
        var_type = self.var_type or DEFAULT_VAR_TYPE.get(loss, "learned_range")
        try:
            return DiffusionConfig(steps=self.diffusion_steps, schedule=self.schedule, mean_type=self.mean_type,
                                   var_type=var_type, loss=loss, vlb_weight=self.vlb_weight,
                                   bounds=PIXEL_BOUNDS if self.pixels else None)
        except ValueError as error:
            raise ValueError(f"diffusion settings (--diffusion-steps/--schedule/--mean-type/--loss/--use-kl/--var-type/"
                             f"--vlb-weight): {error}") from None


HELP = {
    **GENERATOR_HELP,
    "data": "movq-tokenize --latents folder, or an image folder (class subfolders) / manifest / .tar collection "
            "encoded once with --codec into OUT/latents (with --pixels: decoded once into memory)",
    "out": "output folder: release (UNet config.json, model/ema.safetensors, diffusion.json, latent_diffusion.json), "
           "log.csv, checkpoints/, last, latents/",
    "codec": "frozen codec (name or folder, as movq.load) whose latents to learn; with a latent folder, checked "
             "against the codec that wrote it",
    "resolution": "image side when encoding an image collection (default 256); a latent folder has its own; "
                  "with --pixels the side the UNet works at (required)",
    "pixels": "pixel-space diffusion: train on the images of --data in [-1, 1] (3 channels), no codec",
    "labels": "class labels: auto (top-level subfolders when present), folder (required), none",
    "cond": ".safetensors file with a tensor 'cond' [N, D]: one conditioning vector per item, in the folder's order",
    "preset": f"UNet preset: {', '.join(UNET_PRESETS)}",
    "model": "JSON dict overriding UNet preset fields, e.g. '{\"channels\": 96, \"dropout\": 0.1}'",
    "diffusion_steps": "steps of the diffusion process (sampling can respace to fewer)",
    "schedule": "noise schedule: cosine or linear",
    "mean_type": "what the model predicts: v (default: well conditioned on latents), eps or x0",
    "loss": "hybrid (default: L_simple + vlb_weight * L_vlb, learned variance), mse (L_simple, fixed variance) "
            "or kl (= --use-kl)",
    "use_kl": "train on the VLB alone (improved-diffusion's --use_kl: T x one KL term in bits/dim; loss 'kl' "
              "in diffusion.json), learned variance unless --var-type says otherwise",
    "var_type": "reverse-step variance: learned_range (hybrid), fixed_large or fixed_small (mse); default by --loss",
    "vlb_weight": "lambda of the hybrid loss",
    "schedule_sampler": "timesteps: uniform, or loss-second-moment (importance sampling by each step's recent "
                        "loss, weights 1 / (T p_t); improved-diffusion's, for --use-kl)",
    "latent_scale": "multiply the latents by this (default: 1 / std of the training latents)",
    "p_uncond": "probability of dropping a sample's label / vector (classifier-free guidance)",
    "min_lr_ratio": "learning rate at max_steps relative to --lr after a cosine decay (1 = constant after warm-up)",
    "amp": "autocast: auto (bf16 where supported), bf16, fp16, none",
    "tokenize_batch_size": "batch size when encoding an image collection",
}


class DiffusionTrainer(TaskBase):
    """Trains a :class:`~movq.diffusion.UNet` on codec latents as a :class:`DiffusionTrainConfig` says.

    The :class:`~movq.train.loop.TrainLoop`'s task (``self.loop`` owns data order, checkpoints, exact
    resume, logs and signals). ``dataset`` replaces ``cfg.data`` (tests, scripts): a
    :class:`~movq.diffusion.data.LatentItems` (latents ``[C, h, w]`` with optional labels / vectors).
    Randomness of a step (``t``, the noise, the label dropout) comes from the global torch RNG of the
    device, which every checkpoint saves, so a resumed run continues bit-exactly. ``val_dataset``
    replaces ``cfg.val_data`` the same way; ``codec`` (a codec or a name / folder for ``movq.load``)
    decodes the sample grids (default: ``cfg.codec``, else the codec the latents record).
    """

    def __init__(self, cfg: DiffusionTrainConfig, dataset: LatentItems | None = None, *,
                 val_dataset: LatentItems | None = None, codec: Any = None) -> None:
        self.cfg = cfg
        self.loop = TrainLoop(cfg, PROG, LOG_FIELDS)
        self.dist, self.device, self.out = self.loop.dist, self.loop.device, self.loop.out
        with torch.random.fork_rng(devices=[]):  # encoding a collection draws random numbers: keep the init fixed
            self.dataset = self._open_data() if dataset is None else dataset
        if not isinstance(self.dataset, LatentItems):
            raise TypeError(f"dataset must be a movq.diffusion.data.LatentItems, got {type(self.dataset).__name__}")
        self.train_set, self.val_set = self.loop.hold_out(self.dataset)
        if cfg.val_data or val_dataset is not None:
            with torch.random.fork_rng(devices=[]):
                self.val_set = self._open_val_data() if val_dataset is None else val_dataset
            self._check_val_data(self.val_set)
        if cfg.pixels:
            self.latent_scale = 1.0
        else:
            self.latent_scale = float(cfg.latent_scale) if cfg.latent_scale else 1.0 / latent_std(self.train_set)
        self.diffusion = GaussianDiffusion(**asdict(cfg.diffusion_config()))
        self.schedule_sampler = schedule_sampler(cfg.schedule_sampler, self.diffusion.num_timesteps)
        channels, height, width = self.dataset.latent_shape
        if height != width:
            raise ValueError(f"latents of {height}x{width}: the UNet is built for square latents")
        self.config = unet_config(
            cfg.preset, cfg.model, in_channels=channels, sample_size=height, num_classes=self.dataset.num_classes,
            cond_dim=self.dataset.cond_dim, learn_sigma=self.diffusion.config.learned_variance,
        )
        if cfg.p_uncond > 0 and self.dataset.num_classes is None and self.dataset.cond_dim is None:
            self.loop.print("no class labels or vectors: training an unconditional model")
        self.model = UNet(self.config).to(self.device).train()
        self.optimizer_step = OptimizerStep.adamw(self.model, cfg)
        self.amp = autocast_dtype(cfg, self.device)
        self.net = self.loop.wrap(self.model, cfg.compile)
        self.loop.set_data(Unseeded(self.train_set), collate_latents)
        if self.val_set is not None:
            self.loop.set_validation(self.val_set, collate_latents, len(self.train_set))
        self.grid_codec = None  # decodes the sample grids of a latent run; a pixel run's samples are the images
        self.sample_grids = bool(cfg.sample_every and self.dist.is_main)
        if self.sample_grids and not cfg.pixels:
            with torch.random.fork_rng(devices=[]):
                self.grid_codec = self._sample_codec(codec)
        self.loop.begin(self)

    @property
    def space(self) -> str:
        """``"pixel"`` (``--pixels``: the UNet works on images) or ``"latent"`` (codec latents)."""
        return "pixel" if self.cfg.pixels else "latent"

    def _open_data(self) -> LatentItems:
        cfg = self.cfg
        if cfg.pixels:
            return labelled_pixels(self._read_pixels(cfg.data, "--data", cfg.labels), cfg.labels, cfg.cond)
        latents = open_token_folder(
            cfg.data, Path(cfg.out) / LATENTS_DIR, kind="latents", codec=cfg.codec, resolution=cfg.resolution,
            loop=self.loop, batch_size=cfg.tokenize_batch_size, num_workers=cfg.num_workers,
            check_sources=lambda sources: check_label_layout(sources, cfg.labels, cfg.data),  # before encoding
        )
        return labelled_latents(latents, cfg.labels, cfg.cond)

    def _read_pixels(self, data: str, flag: str, labels: str = "auto") -> PixelImages:
        """``--pixels``: the images of ``data`` (the ``flag`` that named it) decoded at ``--resolution``."""
        cfg = self.cfg
        if is_token_folder(data):
            raise ValueError(f"--pixels reads images, but {flag} {data} is a movq-tokenize folder (latents): "
                             "drop --pixels, or pass the image collection")
        if not Path(data).exists() and not any(ch in data for ch in "*?["):
            raise FileNotFoundError(f"{flag} {data} does not exist")
        images = PixelImages.read(data, cfg.resolution, num_workers=cfg.num_workers, exclude=cfg.out,  # type: ignore[arg-type]
                                  labels=labels)
        unreadable = f" ({len(images.skipped)} unreadable)" if images.skipped else ""
        self.loop.print(f"{len(images)} images of {data} at {cfg.resolution} px in memory{unreadable}")
        return images

    def _open_val_data(self) -> LatentItems:
        """``--val-data``: latents of the same codec (with ``--pixels``: images read as ``--data`` is), labels by
        the training class names."""
        cfg = self.cfg
        if cfg.cond:
            raise ValueError("--val-data cannot give the --cond vectors of its items: use --val-fraction with --cond")
        names = self.dataset.label_names
        if cfg.pixels:
            latents: Any = self._read_pixels(cfg.val_data, "--val-data", "folder" if names else "none")  # type: ignore[arg-type]
        else:
            latents = open_token_folder(
                cfg.val_data, Path(cfg.out) / VAL_LATENTS_DIR, kind="latents", codec=cfg.codec,  # type: ignore[arg-type]
                resolution=cfg.resolution or self.dataset.meta.get("resolution"), loop=self.loop,
                batch_size=cfg.tokenize_batch_size, num_workers=cfg.num_workers,
            )
        if names is None:
            return LatentItems(latents)
        val = labelled_pixels(latents, "folder") if cfg.pixels else labelled_latents(latents, "folder")
        unknown = sorted(set(val.label_names or []) - set(names))
        if unknown:
            raise ValueError(f"--val-data {cfg.val_data} has classes {unknown} that the training data lacks (classes: {names})")
        ids = torch.tensor([names.index(n) for n in val.label_names or []], dtype=torch.long)
        return LatentItems(latents, ids[val.labels], names)

    def _check_val_data(self, val: Any) -> None:
        """The validation items must be latents of the training data's codec, shape and conditioning."""
        if not isinstance(val, LatentItems):
            raise TypeError(f"val_dataset must be a movq.diffusion.data.LatentItems, got {type(val).__name__}")
        train = self.dataset
        spaces = val.meta.get("space", "latent"), train.meta.get("space", "latent")
        if spaces[0] != spaces[1]:
            raise ValueError(f"--val-data holds {spaces[0]} items but --data {spaces[1]} ones: validate in the same space")
        if val.latent_shape != train.latent_shape:
            raise ValueError(f"--val-data latents are {list(val.latent_shape)}, the training latents {list(train.latent_shape)}")
        if codec_identity(val.meta) != codec_identity(train.meta):
            raise ValueError(f"--val-data was encoded by the codec {val.meta.get('model')!r}, --data by "
                             f"{train.meta.get('model')!r}: validate on latents of the same codec")
        if (val.num_classes, val.cond_dim) != (train.num_classes, train.cond_dim):
            raise ValueError(f"--val-data has {val.num_classes} classes / cond_dim {val.cond_dim}, the training data "
                             f"{train.num_classes} / {train.cond_dim}")

    def _sample_codec(self, codec: Any) -> Any:
        """The codec that decodes the sample grids: ``codec``, else ``--codec``, else the one the latents record."""
        return data_codec(codec, self.cfg.codec, self.dataset.meta, "--sample-every").to(self.device).eval()

    def release_info(self) -> dict[str, Any]:
        """What ``OUT/latent_diffusion.json`` records (see :mod:`movq.diffusion.pipeline`)."""
        meta = self.dataset.meta
        return {
            "codec": meta.get("model"), "codec_name": meta.get("model_name"), "config_hash": meta.get("config_hash"),
            "weights_hash": meta.get("weights_hash"), "resolution": meta.get("resolution"),
            "latent_shape": list(self.dataset.latent_shape), "latent_scale": self.latent_scale,
            "labels": self.dataset.label_names, "space": self.space,
        }

    # ------------------------------------------------------------------ TrainTask: state

    def state_dict(self) -> dict[str, Any]:
        """UNet, EMA, optimizer, scheduler (tensors and plain values), the timestep sampler's state (its
        loss history), and what the model was built from."""
        sampler = self.schedule_sampler.state_dict()
        return {**super().state_dict(), **self._identity(), "codec": codec_identity(self.dataset.meta),
                **({"schedule_sampler_state": sampler} if sampler else {})}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        if self.schedule_sampler.state_dict():
            self.schedule_sampler.load_state_dict(state["schedule_sampler_state"])

    def _identity(self) -> dict[str, Any]:
        return {"unet_config": self.config.to_dict(), "diffusion_config": self.diffusion.to_dict(),
                "latent_scale": self.latent_scale, "labels": self.dataset.label_names,
                "schedule_sampler": self.cfg.schedule_sampler, "space": self.space}

    def check_resume(self, state: dict[str, Any]) -> None:
        """Refuse a saved run of another model, process, latent scale or class list, naming what differs."""
        now = self._identity()
        check_same_run({k: state[k] for k in now if k in state}, now, self.out)
        check_same_codec(state.get("codec"), self.dataset.meta, self.out)

    def export(self, directory: Path | None = None) -> None:
        """The release: UNet (+ EMA), ``diffusion.json`` and ``latent_diffusion.json`` in ``directory`` (default ``OUT``)."""
        directory = self.out if directory is None else Path(directory)
        self.model.save_pretrained(directory, ema=self.ema)
        self.diffusion.save_pretrained(directory)
        write_release_info(directory, self.release_info())

    # ------------------------------------------------------------------ TrainTask: the step

    def _forward(self, x: Tensor, t: Tensor, **kwargs: Any) -> Tensor:
        """The (DDP-wrapped) UNet under autocast, its output in float32 for the loss terms."""
        with autocast(self.amp, self.device):
            out = self.net(x, t, **kwargs)
        return out.float()

    def train_step(self, batches: Iterator[dict[str, Tensor]], step: int) -> dict[str, Tensor]:
        """One AdamW step over ``grad_accum`` micro-batches; returns the averaged terms (on the device)."""
        cfg = self.cfg
        sums = torch.zeros(3, device=self.device)
        for micro in range(cfg.grad_accum):
            batch = next(batches)
            x0 = batch["latents"].to(self.device, non_blocking=True) * self.latent_scale
            kwargs = {k: batch[k].to(self.device, non_blocking=True) for k in ("y", "cond") if k in batch}
            if kwargs and cfg.p_uncond > 0:
                kwargs = drop_conditions(kwargs, cfg.p_uncond)
            t, weights = self.schedule_sampler.sample(x0.shape[0], self.device)
            with no_sync_unless(self.net, micro == cfg.grad_accum - 1):
                terms = self.diffusion.training_losses(self._forward, x0, t, kwargs)
                self.schedule_sampler.update(t, terms["loss"].detach(), self.dist)  # unweighted, as improved-diffusion
                loss = (terms["loss"] * weights).mean()
                (loss / cfg.grad_accum).backward()
            vb = terms["vb"].mean() if "vb" in terms else torch.zeros((), device=self.device)
            sums += torch.stack([loss, terms["mse"].mean(), vb]).detach().float() / cfg.grad_accum
        grad_norm = self.optimizer_step()
        out = {"loss": sums[0], "mse": sums[1], "grad_norm": grad_norm}
        if self.diffusion.config.loss != "mse":
            out["vb"] = sums[2]
        return out


    # ------------------------------------------------------------------ validation and samples

    def _ema_forward(self, x: Tensor, t: Tensor, **kwargs: Any) -> Tensor:
        """The EMA UNet (the release weights) under autocast, its output in float32."""
        with autocast(self.amp, self.device):
            out = self.ema.module(x, t, **kwargs)
        return out.float()

    @torch.no_grad()
    def eval_losses(self, batch: dict[str, Tensor], generator: torch.Generator) -> Tensor:
        """The training loss ``[B]`` of the EMA weights on a validation batch: labels / vectors kept (no dropout),
        ``t`` uniform and the noise Gaussian, both drawn on the CPU from ``generator`` (``t`` first)."""
        x0 = batch["latents"].to(self.device) * self.latent_scale
        kwargs = {k: batch[k].to(self.device) for k in ("y", "cond") if k in batch}
        t = torch.randint(0, self.diffusion.num_timesteps, (x0.shape[0],), generator=generator)
        noise = torch.randn(x0.shape, generator=generator)
        terms = self.diffusion.training_losses(self._ema_forward, x0, t.to(self.device), kwargs,
                                               noise=noise.to(self.device))
        return terms["loss"]

    @torch.no_grad()
    def sample_images(self) -> tuple[Tensor, int] | None:
        """The grid's samples (EMA weights, DDIM with :data:`GRID_STEPS` steps, the loop's fixed seed):
        :data:`GRID_PER_CLASS` per class (rows: the first :data:`GRID_CLASSES` classes), the vectors of the
        first items with ``cond``, else :data:`GRID_SAMPLES` unconditional ones; decoded by :attr:`grid_codec`, or
        the images themselves for a pixel run (``codec=None``)."""
        if not self.sample_grids:
            return None
        labels = cond = num = None
        columns = GRID_PER_CLASS
        if self.dataset.num_classes:
            classes = min(self.dataset.num_classes, GRID_CLASSES)
            labels = torch.arange(classes).repeat_interleave(GRID_PER_CLASS)
        if self.dataset.cond is not None:
            count = len(labels) if labels is not None else min(GRID_SAMPLES, len(self.dataset))
            cond = self.dataset.cond[torch.arange(count) % len(self.dataset)]
        if labels is None and cond is None:
            num = GRID_SAMPLES
        images = generate(self.ema.module, self.diffusion, self.grid_codec, labels=labels, cond=cond, num_samples=num,
                          num_steps=min(GRID_STEPS, self.diffusion.num_timesteps), sampler="ddim",
                          generator=self.loop.sample_generator(), latent_scale=self.latent_scale)
        return images, columns


def train(cfg: DiffusionTrainConfig, dataset: LatentItems | None = None) -> DiffusionTrainer:
    """Build a :class:`DiffusionTrainer`, run it and return it (scripts and tests)."""
    trainer = DiffusionTrainer(cfg, dataset)
    trainer.run()
    return trainer


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``movq-diffusion-train`` / ``python -m movq.diffusion.train``; returns the exit status."""
    return run_training_cli(argv, DiffusionTrainConfig, DiffusionTrainer, PROG, __doc__, HELP)


if __name__ == "__main__":
    sys.exit(main())
