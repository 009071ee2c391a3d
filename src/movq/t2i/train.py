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

Validation and samples (:class:`movq.train.config.GeneratorConfig`), as nanoGPT users expect:

    movq-t2i-train --data TOKENS --out runs/t2i --val-fraction 0.05 --eval-every 500 --sample-every 1000

holds out 5% of the items (chosen by ``--seed``; ``--val-data DIR`` reads a separate folder instead),
logs ``eval_loss`` (the loss of the EMA weights over every held-out item, captions kept) and keeps the
release with the lowest one in ``OUT/best/`` (``T2ITransformer.from_pretrained("runs/t2i/best")``;
``best.json`` says its step), and writes ``OUT/samples/step_NNNNNN.png``: 4 samples (columns) for each
of the first 4 distinct captions of the validation set (else the training set; listed in
``OUT/samples/prompts.txt``), EMA weights, the same seed every time, decoded by the codec.
``log.csv`` also has nanoGPT's model FLOPs utilisation: ``tflops`` (model FLOPs per step of one
process, ``(6 N + 12 L C T) T B``, times steps/s) and ``mfu`` (over ``--peak-tflops``; on CUDA the
default assumes nanoGPT's A100 bf16 peak of 312 TFLOP/s per device; elsewhere no peak is assumed and
``mfu`` stays empty unless ``--peak-tflops`` is given).
"""

from __future__ import annotations

import json
import sys
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from movq.atomic import atomic_write_text
from movq.images import to_tensor
from movq.strict import NonNegativeFloat, NonNegativeInt, PositiveFloat, PositiveInt, Probability
from movq.t2i.config import T2I_PRESETS, T2IConfig, get_t2i_preset
from movq.t2i.model import T2ITransformer, tokens_to_sequence
from movq.t2i.pipeline import CODEC_INFO
from movq.t2i.text import TextTokenizer, encode_prompts, load_tokenizer, text_warnings
from movq.tokenize.training_data import check_same_codec, codec_identity, data_codec, open_token_folder
from movq.train.checkpoint import check_same_run
from movq.train.cli import run_training_cli
from movq.train.config import GENERATOR_HELP, GeneratorConfig
from movq.train.data import Unseeded
from movq.train.loop import TaskBase, TrainLoop, require_state_keys
from movq.train.optim import OptimizerStep, autocast, autocast_dtype, no_sync_unless

PROG = "movq-t2i-train"
LOG_FIELDS = ("step", "epoch", "lr", "loss", "text", "image", "grad_norm", "eval_loss", "steps_per_s", "tflops", "mfu",
              "skipped_files")
"""Columns of the run's ``log.csv`` (``text`` / ``image``: cross-entropies in nats per token; ``eval_loss``: the
validation loss, at evaluation steps; ``tflops`` / ``mfu``: model FLOPs utilisation, see the module docstring)."""
TOKENS_DIR = "tokens"
VAL_TOKENS_DIR = "val_tokens"
"""``OUT/val_tokens``: a ``--val-data`` image collection, tokenized once like ``--data``."""
GRID_PROMPTS, GRID_PER_PROMPT = 4, 4
"""Sample grids: distinct captions (rows) and samples per caption (columns)."""
CUDA_PEAK_TFLOPS = 312.0
"""The peak assumed on CUDA without ``--peak-tflops``: an A100's bf16 dense peak, nanoGPT's ``estimate_mfu``."""
DERIVED = ("text_vocab_size", "tokenizer", "image_vocab_size", "image_grid", "image_depth", "image_scales")
"""Model fields that come from the data and the tokenizer, never from ``--model``."""


@dataclass
class T2ITrainConfig(GeneratorConfig):
    """Everything a text-to-image training run needs (bookkeeping and optimisation fields from
    :class:`~movq.train.config.OptimConfig`, with GPT-style defaults here).

    ``data``: a ``movq-tokenize`` folder or an image collection tokenized with ``codec`` at
    ``resolution`` (default 256; a token folder fixes its own and a different value is an error).
    ``preset`` (``movq.t2i.T2I_PRESETS``) with ``model`` overrides (e.g. ``{"n_layer": 4}``) gives the
    architecture; caption dropout is the model's ``caption_dropout``. AdamW (weight decay on linear
    weights only), linear warm-up then cosine to ``min_lr_ratio * lr``, gradient clipping, autocast
    (``amp``), EMA of the weights (the release weights). Validation, best release, sample grids,
    ``compile``: :class:`~movq.train.config.GeneratorConfig`; ``peak_tflops``: the device peak the
    ``mfu`` column divides by (``None``: :data:`CUDA_PEAK_TFLOPS` on CUDA, no ``mfu`` elsewhere).
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
    peak_tflops: PositiveFloat | None = None  # None: 312 (A100 bf16) on CUDA, no MFU elsewhere
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
    **GENERATOR_HELP,
    "peak_tflops": "peak TFLOP/s of one device for the mfu column (default: 312, an A100's bf16, on CUDA; none elsewhere)",
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


def open_tokens(cfg: T2ITrainConfig, loop: TrainLoop, data: str | None = None, folder: str = TOKENS_DIR,
                resolution: int | None = None) -> Any:
    """A :class:`movq.data.TokenDataset` over the run's tokens (``cfg.data`` itself, or ``OUT/tokens``
    after tokenizing ``cfg.data`` once with ``cfg.codec``), checked against ``cfg`` (codec,
    resolution) and required to carry captions. ``data`` / ``folder`` / ``resolution``: another
    collection (``--val-data`` into ``OUT/val_tokens``)."""
    dataset = open_token_folder(
        data or cfg.data, Path(cfg.out) / folder, kind="tokens", codec=cfg.codec,
        resolution=resolution or cfg.resolution, loop=loop, batch_size=cfg.tokenize_batch_size,
        num_workers=cfg.num_workers,
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
    ``val_dataset`` replaces ``cfg.val_data`` the same way; ``codec`` (a codec or a name / folder for
    ``movq.load``) decodes the sample grids (default: ``cfg.codec``, else the codec the tokens record).
    """

    def __init__(self, cfg: T2ITrainConfig, dataset: Any = None, *, val_dataset: Any = None, codec: Any = None) -> None:
        self.cfg = cfg
        self.loop = TrainLoop(cfg, PROG, LOG_FIELDS)
        self.dist, self.device, self.out = self.loop.dist, self.loop.device, self.loop.out
        self.tokenizer = _load_tokenizer(cfg.tokenizer or T2I_PRESETS[cfg.preset].tokenizer)
        # loading a codec draws random numbers: fork the RNG so the model's initialisation stays fixed
        with torch.random.fork_rng(devices=[]):
            self.dataset = open_tokens(cfg, self.loop) if dataset is None else dataset
        self.meta: dict[str, Any] = dict(self.dataset.meta)
        self.train_set, self.val_set = self.loop.hold_out(self.dataset)
        if cfg.val_data or val_dataset is not None:
            with torch.random.fork_rng(devices=[]):
                self.val_set = val_dataset if val_dataset is not None else open_tokens(
                    cfg, self.loop, cfg.val_data, VAL_TOKENS_DIR, self.meta.get("resolution"))
            self._check_val_data(self.val_set)
        self.config = model_config(cfg, self.meta, self.tokenizer)
        captions = getattr(self.dataset, "captions", None)  # a TokenDataset's, without reading the shards
        if captions is not None and self.dist.is_main:  # one warning per kind and run
            for message in text_warnings(self.tokenizer, captions, self.config.text_len, "captions").values():
                warnings.warn(message, stacklevel=2)
        self._check_memory()
        self.model = T2ITransformer(self.config).to(self.device).train()
        self.optimizer_step = OptimizerStep.adamw(self.model, cfg)
        self.amp = autocast_dtype(cfg, self.device)
        self.loss = self.loop.wrap(_Loss(self.model), cfg.compile)
        collate = CaptionCollate(self.tokenizer, self.config.text_len)
        self.loop.set_data(Unseeded(self.train_set), collate)
        if self.val_set is not None:
            self.loop.set_validation(self.val_set, collate, len(self.train_set))
        self.grid_codec, self.grid_prompts = None, []
        if cfg.sample_every and self.dist.is_main:
            with torch.random.fork_rng(devices=[]):
                self.grid_codec = self._sample_codec(codec)
            self.grid_prompts = grid_prompts(self.val_set if self.val_set is not None else self.train_set)
            atomic_write_text(self.out / "samples" / "prompts.txt", "".join(f"{p}\n" for p in self.grid_prompts))
        self._set_mfu()
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

    def _check_val_data(self, val: Any) -> None:
        """The validation items must be tokens of the training data's codec and shape."""
        meta = getattr(val, "meta", {})
        for key in ("codebook_size", "item_shape"):
            if meta.get(key) != self.meta.get(key):
                raise ValueError(f"--val-data has {key} {meta.get(key)}, the training tokens {self.meta.get(key)}")
        if codec_identity(meta) != codec_identity(self.meta):
            raise ValueError(f"--val-data was tokenized by the codec {meta.get('model')!r}, --data by "
                             f"{self.meta.get('model')!r}: validate on tokens of the same codec")

    def _sample_codec(self, codec: Any) -> Any:
        """The codec that decodes the sample grids: ``codec``, else ``--codec``, else the one the tokens record."""
        return data_codec(codec, self.cfg.codec, self.meta, "--sample-every").to(self.device).eval()

    def _set_mfu(self) -> None:
        """``model_flops_per_step`` and ``peak_tflops`` for the loop's ``tflops`` / ``mfu`` columns, said once."""
        config, cfg = self.config, self.cfg
        flops_per_token = model_flops_per_token(self.model)
        tokens = cfg.batch_size * cfg.grad_accum * config.block_size
        self.model_flops_per_step = flops_per_token * tokens
        self.peak_tflops = cfg.peak_tflops or (CUDA_PEAK_TFLOPS if self.device.type == "cuda" else None)
        peak = (f"peak assumed {self.peak_tflops:g} TFLOP/s per device" + ("" if cfg.peak_tflops else
                " (an A100's bf16, as nanoGPT; --peak-tflops to change)")) if self.peak_tflops else \
            f"no peak assumed on {self.device.type} (--peak-tflops N for the mfu column)"
        self.loop.print(f"MFU: {flops_per_token / 1e6:.3g} MFLOPs per token (6N + 12LCT) x {tokens} tokens per step "
                        f"per process; {peak}")

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

    def export(self, directory: Path | None = None) -> None:
        """The EMA release weights: ``config.json`` + ``model.safetensors`` in ``directory`` (default ``OUT``;
        another folder also gets ``codec.json``)."""
        if directory is None:
            self.ema.module.save_pretrained(self.out)
            return
        self.ema.module.save_pretrained(directory)
        atomic_write_text(Path(directory) / CODEC_INFO, json.dumps(self.codec_info(), indent=2) + "\n")

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


    # ------------------------------------------------------------------ validation and samples

    @torch.no_grad()
    def eval_losses(self, batch: dict[str, Tensor], generator: torch.Generator) -> Tensor:
        """The loss of the EMA weights (eval mode: no caption dropout) for each item of a validation batch,
        ``[B]``. Every item has the same number of text and image tokens, so each item's share of the
        batch's mean loss is that mean: the loop's sum over items divided by their count is the per-item
        mean. Nothing random is drawn (``generator`` is unused)."""
        text = batch["text"].to(self.device)
        image = batch["image"].to(self.device)
        with autocast(self.amp, self.device):
            total = self.ema.module.loss(text, image).total
        return total.float().expand(text.shape[0])

    @torch.no_grad()
    def sample_images(self) -> tuple[Tensor, int] | None:
        """:data:`GRID_PER_PROMPT` samples (columns) for each grid prompt (rows) through :class:`~movq.t2i.T2IPipeline`
        with the EMA weights and the loop's fixed seed."""
        if self.grid_codec is None or not self.grid_prompts:
            return None
        from movq.t2i.pipeline import T2IPipeline

        pipe = T2IPipeline(self.ema.module, self.grid_codec, self.tokenizer)
        out = pipe(self.grid_prompts, num_candidates=GRID_PER_PROMPT, generator=self.loop.sample_generator())
        images = [image for row in out.candidates for image in row]
        return to_tensor(images)[0], GRID_PER_PROMPT


def grid_prompts(dataset: Any, count: int = GRID_PROMPTS) -> list[str]:
    """The first ``count`` distinct non-empty captions of ``dataset`` (items ``{"caption": ...}``), in item order."""
    prompts: list[str] = []
    for i in range(len(dataset)):
        caption = dataset[i].get("caption")
        if caption and caption not in prompts:
            prompts.append(caption)
            if len(prompts) == count:
                break
    return prompts


def model_flops_per_token(model: T2ITransformer) -> float:
    """nanoGPT's ``estimate_mfu`` count for one token of a training step (forward and backward):
    ``6 N + 12 L C T``, with ``N`` the parameters outside the embedding tables (lookups, no
    multiplications), ``L`` layers, ``C = n_embd`` (heads x head size) and ``T = block_size``."""
    config = model.config
    embedded = sum(p.numel() for m in model.modules() if isinstance(m, nn.Embedding) for p in m.parameters())
    n = sum(p.numel() for p in model.parameters()) - embedded
    return 6.0 * n + 12.0 * config.n_layer * config.n_embd * config.block_size


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
