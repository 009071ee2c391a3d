"""``movq-t2i-train``: train the text-to-image transformer on codec tokens (plain PyTorch; ``torchrun``
for several processes).

    movq-t2i-train --data TOKENS --out runs/t2i --preset t2i-toy --batch-size 32 --max-steps 20000
    movq-t2i-train --data photos/ --codec movqgan-tiny-photos --resolution 128 --out runs/t2i   # tokenized once
    movq-t2i-train --data captions.jsonl --codec sber-movqgan-67m --out runs/t2i --preset t2i-base
    movq-t2i-train --out runs/t2i --resume                 # continue exactly where it stopped
    torchrun --nproc_per_node 2 -m movq.t2i.train --data TOKENS --out runs/t2i ...

``--data`` is a ``movq-tokenize`` output folder, or an image collection that ``movq-tokenize``
understands (an image folder with same-name ``.txt`` captions, a ``.jsonl`` / ``.csv`` manifest of
``image`` and ``caption``, ``.tar`` shards): it is tokenized once with the frozen ``--codec`` into
``OUT/tokens`` and reused on ``--resume``. The model's image side (codebook size, token grid,
depth) comes from the tokens; its text side from ``--tokenizer`` (default: the preset's, UTF-8
bytes). ``OUT`` gets the EMA release weights (``T2ITransformer.from_pretrained(OUT)``),
``codec.json`` (which codec's tokens they are), ``log.csv`` and ``checkpoints/``; the checkpoint,
exact-resume, DDP, EMA, log and progress conventions are those of ``movq-train``
(:class:`movq.train.loop.TrainLoop`).
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from movq.atomic import atomic_write_text
from movq.strict import NonNegativeFloat, NonNegativeInt, PositiveFloat, PositiveInt, Probability
from movq.t2i.config import T2I_PRESETS, T2IConfig, get_t2i_preset
from movq.t2i.model import T2ITransformer, tokens_to_sequence
from movq.t2i.text import TextTokenizer, encode_prompts, load_tokenizer
from movq.tokenize.training_data import check_same_codec, codec_identity, open_token_folder
from movq.train.checkpoint import check_same_run
from movq.train.cli import run_training_cli
from movq.train.config import OptimConfig
from movq.train.data import Unseeded
from movq.train.loop import TaskBase, TrainLoop, require_state_keys
from movq.train.optim import OptimizerStep, autocast, autocast_dtype, no_sync_unless

PROG = "movq-t2i-train"
LOG_FIELDS = ("step", "epoch", "lr", "loss", "text", "image", "grad_norm", "steps_per_s", "skipped_files")
"""Columns of the run's ``log.csv`` (``text`` / ``image``: cross-entropies in nats per token)."""
TOKENS_DIR = "tokens"
CODEC_INFO = "codec.json"
DERIVED = ("text_vocab_size", "tokenizer", "image_vocab_size", "image_grid", "image_depth", "image_scales")
"""Model fields that come from the data and the tokenizer, never from ``--model``."""


@dataclass
class T2ITrainConfig(OptimConfig):
    """Everything a text-to-image training run needs (bookkeeping and optimisation fields from
    :class:`~movq.train.config.OptimConfig`, with GPT-style defaults here).

    ``data``: a ``movq-tokenize`` folder or an image collection tokenized with ``codec`` at
    ``resolution`` (default 256; a token folder fixes its own and a different value is an error).
    ``preset`` (``movq.t2i.T2I_PRESETS``) with ``model`` overrides (e.g. ``{"n_layer": 4}``) gives the
    architecture; caption dropout is the model's ``caption_dropout``. AdamW (weight decay on linear
    weights only), linear warm-up then cosine to ``min_lr_ratio * lr``, gradient clipping, autocast
    (``amp``), EMA of the weights (the release weights).
    """

    out: str = "runs/t2i"
    batch_size: PositiveInt = 32
    data: str = ""
    codec: str | None = None
    resolution: PositiveInt | None = None
    preset: str = "t2i-toy"
    model: dict[str, Any] = field(default_factory=dict)
    tokenizer: str | None = None
    # optimisation (the other fields and their checks: OptimConfig)
    lr: PositiveFloat = 3e-4
    warmup_steps: NonNegativeInt = 200
    betas: tuple[float, float] = (0.9, 0.95)
    weight_decay: NonNegativeFloat = 0.1
    ema_decay: Probability = 0.999
    # tokenizing an image collection
    tokenize_batch_size: PositiveInt = 32

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.preset not in T2I_PRESETS:
            raise ValueError(f"unknown --preset {self.preset!r}; available: {', '.join(sorted(T2I_PRESETS))}")
        derived = sorted(set(self.model) & set(DERIVED))
        if derived:
            raise ValueError(
                f"--model cannot set {derived}: the image side comes from the tokens, the text side from --tokenizer"
            )


HELP = {
    "data": "movq-tokenize output folder, or an image folder (same-name .txt captions) / .jsonl / .csv / .tar "
    "collection tokenized once with --codec into OUT/tokens",
    "out": "output folder: release weights (EMA), codec.json, log.csv, checkpoints/, last, tokens/",
    "codec": "frozen codec (name or folder, as movq.load) to tokenize an image collection; with a token "
    "folder, checked against the codec that wrote it",
    "resolution": "image side when tokenizing (default 256); a token folder has its own",
    "preset": f"model preset: {', '.join(T2I_PRESETS)}",
    "model": 'JSON dict overriding preset fields, e.g. \'{"n_layer": 4, "caption_dropout": 0.2}\'',
    "tokenizer": "text tokenizer: byte, byte-lower, a tokenizer.json file or a Hugging Face name (default: the preset's)",
    "amp": "autocast: auto (bf16 where supported), bf16, fp16, none",
    "weight_decay": "AdamW weight decay of linear weights (biases, norms, embeddings: none)",
}


# ---------------------------------------------------------------------------------------------
# Data


def open_tokens(cfg: T2ITrainConfig, loop: TrainLoop) -> Any:
    """A :class:`movq.data.TokenDataset` over the run's tokens (``cfg.data`` itself, or ``OUT/tokens``
    after tokenizing ``cfg.data`` once with ``cfg.codec``), checked against ``cfg`` (codec,
    resolution) and required to carry captions."""
    dataset = open_token_folder(
        cfg.data, Path(cfg.out) / TOKENS_DIR, kind="tokens", codec=cfg.codec, resolution=cfg.resolution,
        loop=loop, batch_size=cfg.tokenize_batch_size, num_workers=cfg.num_workers,
    )
    if all(c is None for c in dataset.captions):
        raise ValueError(
            f"no item of {dataset.root} has a caption: a text-to-image model needs captions "
            "(same-name .txt files, or a caption column in the manifest)"
        )
    return dataset


def _load_tokenizer(name: str) -> TextTokenizer:
    try:
        return load_tokenizer(name)
    except Exception as error:  # noqa: BLE001 - missing package, unknown name, offline Hub: one line
        raise ValueError(
            f"cannot load --tokenizer {name!r}: {str(error).splitlines()[0] if str(error) else error!r}"
        ) from None


def model_config(cfg: T2ITrainConfig, meta: dict[str, Any], tokenizer: TextTokenizer) -> T2IConfig:
    """The preset with ``cfg.model`` overrides, its image side from the token ``meta`` (``codebook_size``,
    ``item_shape`` ``[h, w]`` or ``[depth, h, w]``) and its text side from ``tokenizer``."""
    shape = [int(v) for v in meta["item_shape"]]
    quantizer = (meta.get("config") or {}).get("quantizer") or {}
    scales: tuple[int, ...] = ()
    if len(shape) == 1 and quantizer.get("kind") == "multiscale":  # a multi-scale codec's maps, coarse to fine
        scales = tuple(int(s) for s in quantizer["scales"])
        depth, h, w = 1, scales[-1], scales[-1]
    elif len(shape) not in (2, 3):
        raise ValueError(f"tokens of shape {shape} per item: expected [h, w] or [depth, h, w] (or a multi-scale codec's [L])")
    else:
        depth, h, w = shape if len(shape) == 3 else (1, *shape)
    return get_t2i_preset(
        cfg.preset,
        **cfg.model,
        image_vocab_size=int(meta["codebook_size"]),
        image_grid=(h, w),
        image_depth=depth,
        image_scales=scales,
        text_vocab_size=tokenizer.vocab_size,
        tokenizer=tokenizer.name,
    )


class CaptionCollate:
    """Batch items ``{"tokens", "caption"}`` into ``{"text": [B, text_len], "image": [B, N]}``: captions
    through the model's tokenizer (:func:`movq.t2i.encode_prompts`; a missing caption is the empty
    one), tokens through :func:`movq.t2i.tokens_to_sequence`."""

    def __init__(self, tokenizer: TextTokenizer, text_len: int) -> None:
        self.tokenizer, self.text_len = tokenizer, text_len

    def __call__(self, items: list[dict[str, Any]]) -> dict[str, Tensor]:
        captions = [it.get("caption") or "" for it in items]
        return {
            "text": encode_prompts(self.tokenizer, captions, self.text_len),
            "image": tokens_to_sequence(torch.stack([it["tokens"] for it in items]).long()),
        }


# ---------------------------------------------------------------------------------------------
# Memory


def activation_bytes(config: T2IConfig, batch: int) -> int:
    """A lower estimate of one training step's activations: per block about ``(8 + 2 * mlp_ratio)``
    saved ``[B, T, C]`` tensors plus the attention weights, and the float image / text logits
    (logits, their float copy and the softmax gradient)."""
    t, c = config.text_len + config.image_len, config.n_embd
    blocks = config.n_layer * batch * t * (c * (8 + 2 * config.mlp_ratio) + config.n_head * t) * 4
    logits = (
        3
        * batch
        * (config.image_len * config.image_vocab_size + config.text_len * config.text_vocab_with_pads)
        * 4
    )
    return int(blocks + logits)


# ---------------------------------------------------------------------------------------------
# The trainer


class _Loss(nn.Module):
    """``model.loss`` as a ``forward`` (what DistributedDataParallel wraps): ``(total, text, image)``."""

    def __init__(self, model: T2ITransformer) -> None:
        super().__init__()
        self.model = model

    def forward(self, text: Tensor, image: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        loss = self.model.loss(text, image)
        return loss.total, loss.text, loss.image


class T2ITrainer(TaskBase):
    """Trains a :class:`~movq.t2i.T2ITransformer` as described by a :class:`T2ITrainConfig`.

    The :class:`~movq.train.loop.TrainLoop`'s task: the loop (``self.loop``) owns data order,
    checkpoints, exact resume, logs and signals. ``dataset`` replaces ``cfg.data`` (tests, scripts):
    any dataset of ``{"tokens": LongTensor [h, w] or [depth, h, w], "caption": str | None}`` with a
    ``meta`` dict holding ``codebook_size`` and ``item_shape``, as :class:`movq.data.TokenDataset`.
    """

    def __init__(self, cfg: T2ITrainConfig, dataset: Any = None) -> None:
        self.cfg = cfg
        self.loop = TrainLoop(cfg, PROG, LOG_FIELDS)
        self.dist, self.device, self.out = self.loop.dist, self.loop.device, self.loop.out
        self.tokenizer = _load_tokenizer(cfg.tokenizer or T2I_PRESETS[cfg.preset].tokenizer)
        # loading a codec draws random numbers: fork the RNG so the model's initialisation stays fixed
        with torch.random.fork_rng(devices=[]):
            self.dataset = open_tokens(cfg, self.loop) if dataset is None else dataset
        self.meta: dict[str, Any] = dict(self.dataset.meta)
        self.config = model_config(cfg, self.meta, self.tokenizer)
        self._check_memory()
        self.model = T2ITransformer(self.config).to(self.device).train()
        self.optimizer_step = OptimizerStep.adamw(self.model, cfg)
        self.amp = autocast_dtype(cfg, self.device)
        self.loss = self.loop.wrap(_Loss(self.model))
        self.loop.set_data(Unseeded(self.dataset), CaptionCollate(self.tokenizer, self.config.text_len))
        self.loop.begin(self)  # a refused resume leaves the run's codec.json as it was
        if self.dist.is_main:
            self.out.mkdir(parents=True, exist_ok=True)
            atomic_write_text(self.out / CODEC_INFO, json.dumps(self.codec_info(), indent=2) + "\n")

    def codec_info(self) -> dict[str, Any]:
        """What ``OUT/codec.json`` records: the codec whose tokens the model was trained on."""
        keys = (
            "model",
            "model_name",
            "config_hash",
            "weights_hash",
            "resolution",
            "codebook_size",
            "item_shape",
        )
        return {"tokens": str(getattr(self.dataset, "root", "")), **{k: self.meta.get(k) for k in keys}}

    def _check_memory(self) -> None:
        from movq.memory_budget import check_memory_budget

        cfg = self.cfg
        check_memory_budget(
            activation_bytes(self.config, cfg.batch_size),
            self.device,
            f"training {cfg.preset} ({self.config.text_len} text + {self.config.image_len} image tokens) x --batch-size "
            f"{cfg.batch_size}",
            "lower --batch-size (use --grad-accum for a larger effective batch) or the model size",
        )

    # ------------------------------------------------------------------ TrainTask: state

    def state_dict(self) -> dict[str, Any]:
        """Model, EMA, optimizer and scheduler (tensors and plain values), and the model config."""
        return {**super().state_dict(), "t2i_config": self.config.to_dict(), "codec": codec_identity(self.meta)}

    def check_resume(self, state: dict[str, Any]) -> None:
        """Refuse a saved run of another trainer or model (architecture, tokens or tokenizer), naming the fields."""
        require_state_keys(state, ("model", "ema", "opt", "sched"), self.out, PROG)
        check_same_run(state.get("t2i_config", {}), self.config.to_dict(), self.out, "model")
        check_same_codec(state.get("codec"), self.meta, self.out)

    def export(self) -> None:
        """The EMA release weights: ``OUT/config.json`` + ``OUT/model.safetensors``."""
        self.ema.module.save_pretrained(self.out)

    # ------------------------------------------------------------------ TrainTask: the step

    def train_step(self, batches: Iterator[dict[str, Tensor]], step: int) -> dict[str, Tensor]:
        """One AdamW step over ``grad_accum`` micro-batches; returns the averaged loss terms (on the device)."""
        cfg = self.cfg
        sums = torch.zeros(3, device=self.device)
        for micro in range(cfg.grad_accum):
            batch = next(batches)
            text = batch["text"].to(self.device, non_blocking=True)
            image = batch["image"].to(self.device, non_blocking=True)
            with no_sync_unless(self.loss, micro == cfg.grad_accum - 1):
                with autocast(self.amp, self.device):
                    total, text_loss, image_loss = self.loss(text, image)
                (total / cfg.grad_accum).backward()
            sums += torch.stack([total, text_loss, image_loss]).detach().float() / cfg.grad_accum
        grad_norm = self.optimizer_step()
        return {"loss": sums[0], "text": sums[1], "image": sums[2], "grad_norm": grad_norm}


def train(cfg: T2ITrainConfig, dataset: Any = None) -> T2ITrainer:
    """Build a :class:`T2ITrainer`, run it and return it (scripts and tests)."""
    trainer = T2ITrainer(cfg, dataset)
    trainer.run()
    return trainer


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``movq-t2i-train`` / ``python -m movq.t2i.train``; returns the exit status (0 done, 2 user error)."""
    return run_training_cli(argv, T2ITrainConfig, T2ITrainer, PROG, __doc__, HELP)


if __name__ == "__main__":
    sys.exit(main())
