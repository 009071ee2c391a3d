"""Training configurations: :class:`RunConfig` (what every trainer shares) and the codec's
:class:`CodecTrainConfig` (the codec recipe); readable from JSON / TOML, overridable by CLI flags."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, is_dataclass
from pathlib import Path
from typing import Any, ClassVar, Literal, TypeVar, get_args

from movq.quantizers import QuantizerConfig
from movq.strict import (
    ConfigError,
    NonNegativeFloat,
    NonNegativeInt,
    PositiveFloat,
    PositiveInt,
    Probability,
    StrictConfig,
    dataclass_from_dict,
    read_json_object,
)
from movq.train.losses import LossWeights

C = TypeVar("C", bound="RunConfig")


@dataclass
class RunConfig(StrictConfig):
    """Bookkeeping fields every training config has (trainer configs inherit them).

    ``out`` is the run folder; ``batch_size`` is per process; ``save_every`` / ``log_every`` count
    optimizer steps; ``keep_last`` checkpoints are kept; ``resume`` continues ``out``'s run.
    ``max_minutes > 0`` stops the run (with a checkpoint) once this process has trained that long,
    as a SIGTERM would (job time limits, fixed-budget benchmarks); the schedule still counts to ``max_steps``.
    ``threads`` sets ``torch.set_num_threads`` in every process (``None``: torch's default).
    """

    out: str = "runs/movq"
    seed: int = 0
    device: str = "auto"
    batch_size: PositiveInt = 8
    num_workers: NonNegativeInt = 2
    max_steps: PositiveInt = 10000
    save_every: PositiveInt = 1000
    keep_last: PositiveInt = 2
    log_every: PositiveInt = 10
    tensorboard: bool = False
    progress: bool = True
    resume: bool = False
    max_minutes: NonNegativeFloat = 0.0  # 0: no limit
    threads: PositiveInt | None = None  # None: torch's default

    flat_names: ClassVar[dict[str, str]] = {}
    """Flat spellings of nested fields (``{"w_vq": "loss.vq"}``): the CLI flag names of those fields,
    and keys that :meth:`from_dict` still reads (config files and run folders of older versions)."""

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-serialisable dict of every field."""
        return asdict(self)

    @classmethod
    def from_dict(cls: type[C], data: dict[str, Any]) -> C:  # noqa: PYI019 (typing.Self needs 3.11)
        """The config from (a subset of) its fields, nested fields as objects (flat spellings of
        :attr:`flat_names` accepted); unknown keys are an error naming them."""
        return dataclass_from_dict(cls, cls.nest_flat_names(data))

    @classmethod
    def nest_flat_names(cls, data: Mapping[str, Any]) -> dict[str, Any]:
        """``data`` with the keys of :attr:`flat_names` moved into their nested objects
        (``{"w_vq": 2}`` -> ``{"loss": {"vq": 2}}``); giving both spellings of one field is an error."""
        out = {k: v for k, v in data.items() if k not in cls.flat_names}
        for flat, dotted in cls.flat_names.items():
            if flat not in data:
                continue
            parent, child = dotted.split(".")
            inner = out.get(parent, {})
            inner = asdict(inner) if is_dataclass(inner) and not isinstance(inner, type) else inner
            if not isinstance(inner, Mapping):
                continue  # the type check of ``parent`` reports it
            if child in inner:
                raise ConfigError(f"{flat} and {dotted} are the same field (older and current spelling); give one")
            out[parent] = {**inner, child: data[flat]}
        return out


Amp = Literal["auto", "bf16", "fp16", "none"]
"""Autocast of a training run: ``auto`` (bf16 where supported), ``bf16``, ``fp16`` (CUDA), ``none``."""
AMP_CHOICES: tuple[str, ...] = get_args(Amp)


@dataclass
class OptimConfig(RunConfig):
    """The optimisation fields every trainer shares (trainer configs inherit them and may change defaults):
    AdamW (``lr``, ``betas``, ``weight_decay``), ``warmup_steps`` of linear warm-up then cosine to
    ``min_lr_ratio * lr`` at ``max_steps`` (:func:`movq.train.optim.lr_lambda`), ``grad_accum``
    micro-batches per step, ``grad_clip`` (0 = off), autocast ``amp``, and the EMA of the weights
    (``ema_decay``, ``ema_warmup``: see :class:`movq.train.ema.ModelEMA`). Defaults: the codec recipe.
    """

    grad_accum: PositiveInt = 1
    lr: PositiveFloat = 1e-4
    min_lr_ratio: float = 0.1
    warmup_steps: NonNegativeInt = 500
    betas: tuple[float, float] = (0.5, 0.9)
    weight_decay: NonNegativeFloat = 0.0
    grad_clip: float = 1.0
    amp: Amp = "auto"
    ema_decay: Probability = 0.9999
    ema_warmup: bool = True


@dataclass
class GeneratorConfig(OptimConfig):
    """The fields the generator trainers (``movq-diffusion-train``, ``movq-t2i-train``) add to :class:`OptimConfig`.

    Validation (off by default): ``val_fraction`` holds out that fraction of the training items
    (:func:`movq.train.data.split_items`: chosen by ``seed``, so a resumed run, whose saved config holds both,
    has the same split), or ``val_data`` names a separate data folder read like ``data``. Every
    ``eval_every`` steps the loss of the EMA weights (the release weights) over
    the whole validation set is logged as ``eval_loss``, with the same noise / timesteps for every item
    at every evaluation, and the release with the lowest ``eval_loss`` is kept in ``OUT/best/``
    (``best.json`` there says its step and loss). ``sample_every > 0`` writes a grid of samples of the
    EMA weights to ``OUT/samples/step_NNNNNN.png`` every that many steps (fixed seed). ``compile``
    trains through ``torch.compile(model)`` (off by default: the first steps pay the compilation).
    """

    val_fraction: Probability = 0.0
    val_data: str | None = None
    eval_every: PositiveInt = 500
    sample_every: NonNegativeInt = 0  # 0: no sample grids
    compile: bool = False

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.val_fraction > 0 and self.val_data:
            raise ValueError("--val-fraction and --val-data both give a validation set: pass one of them")

    @property
    def validation(self) -> bool:
        """Whether the run has a validation set (``val_fraction > 0`` or ``val_data``)."""
        return self.val_fraction > 0 or bool(self.val_data)


GENERATOR_HELP = {
    "val_fraction": "hold out this fraction of the training items (chosen by --seed) as the validation set (0: none)",
    "val_data": "a separate validation data folder, read like --data (instead of --val-fraction)",
    "eval_every": "with a validation set: log eval_loss (EMA weights, fixed noise) every N steps; the best "
                  "release is kept in OUT/best/",
    "sample_every": "write a grid of samples (EMA weights, fixed seed) to OUT/samples/step_NNNNNN.png every N steps (0: never)",
    "compile": "train through torch.compile(model) (off by default: compiling costs time up front)",
}
"""Help of the :class:`GeneratorConfig` fields (the generator commands' ``--help``)."""


@dataclass
class CodecTrainConfig(OptimConfig):
    """Everything a codec training run needs (``movq-train``) (the bookkeeping fields come from
    :class:`RunConfig`). Saved into every checkpoint (``train_config.json``).

    ``loss`` holds the weights of the loss terms (:class:`~movq.train.losses.LossWeights`, a nested
    object in JSON / TOML: ``{"loss": {"adv": 0.2}}``; CLI flags ``--w-adv`` etc.; the flat keys
    ``w_vq, w_adv, w_perc, w_l2, w_nll, w_l1, nll_perc, nll_l2`` of older versions are still read).
    Loss (seed 001): ``vq L_VQ + adv L_adv + perc L_perc + l2 L_2 + nll L_NLL (+ l1 L_1)``
    with ``L_NLL = mean(nll_perc L_perc + nll_l2 L_2)``; defaults are 1.0 / 0.1 / 0.1 / 1.0 / 1.0
    and 0.1 / 1.0. Images are ``[-1, 1]``; L_2 is the mean squared error in that range.
    ``codec`` overrides fields of the preset (e.g. ``{"norm": "group", "quantizer": {"codebook_size": 512}}``).
    ``quantizer`` (``--quantizer KIND``, a ``kind`` of :data:`movq.quantizers.QuantizerConfig`) replaces the
    preset's quantizer by one of that kind, its options from ``codec["quantizer"]``, its ``codebook_size``
    the preset's unless given; ``multiscale`` (VAR's) gets the scales :func:`~movq.quantizers.multiscale.default_scales`
    of the codec's latent side (``resolution / downsample_factor``) unless given, and trains at that resolution.
    """

    data: str = ""
    preset: str = "movqgan-tiny"
    init: str | None = None
    codec: dict[str, Any] = field(default_factory=dict)
    quantizer: str | None = None
    # data
    resolution: int = 256
    crop_scale: tuple[float, float] = (0.25, 1.0)
    crop_ratio: tuple[float, float] = (3 / 4, 4 / 3)
    flip: bool = True
    # losses
    loss: LossWeights = field(default_factory=LossWeights)
    perceptual_net: Literal["vgg", "alex", "none"] = "vgg"
    perceptual_weights: str | None = None
    adaptive_weight: bool = False
    # discriminator
    disc_start: int = 10000
    disc_lr: PositiveFloat | None = None  # None: lr
    disc_ndf: int = 64
    disc_layers: PositiveInt = 3
    disc_norm: Literal["batch", "group"] = "batch"
    # bookkeeping
    image_every: PositiveInt = 500

    flat_names: ClassVar[dict[str, str]] = {
        "w_vq": "loss.vq", "w_adv": "loss.adv", "w_perc": "loss.perc", "w_l2": "loss.l2", "w_nll": "loss.nll",
        "w_l1": "loss.l1", "nll_perc": "loss.nll_perc", "nll_l2": "loss.nll_l2",
    }

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.quantizer is not None and self.quantizer not in quantizer_kinds():
            raise ValueError(f"unknown quantizer {self.quantizer!r}; expected one of {sorted(quantizer_kinds())}")
        low, high = self.crop_scale
        if not 0 < low <= high <= 1:
            raise ValueError(f"crop_scale must be two area fractions 0 < min <= max <= 1, got {self.crop_scale}")
        low, high = self.crop_ratio
        if not 0 < low <= high:
            raise ValueError(f"crop_ratio must be two aspect ratios 0 < min <= max, got {self.crop_ratio}")
        smallest = 3 * 2**self.disc_layers  # the PatchGAN's strided convolutions need at least this many pixels
        if self.loss.adv > 0 and self.disc_start < self.max_steps and self.resolution < smallest:
            raise ValueError(
                f"--resolution {self.resolution} is too small for the discriminator: --disc-layers {self.disc_layers} "
                f"needs at least {smallest} px; use fewer --disc-layers, or train without it (--w-adv 0, or "
                f"--disc-start >= --max-steps)"
            )


def quantizer_kinds() -> tuple[str, ...]:
    """The ``kind`` of every quantizer config (:data:`movq.quantizers.QuantizerConfig`)."""
    return tuple(member.kind for member in get_args(QuantizerConfig))


def read_config_file(path: str | Path) -> dict[str, Any]:
    """The dict in a JSON or TOML config file (TOML may also put the fields under ``[train]``)."""
    path = Path(path)
    if path.suffix == ".toml":
        try:
            import tomllib
        except ModuleNotFoundError:  # Python 3.10
            import tomli as tomllib  # type: ignore[no-redef]

        try:
            data = tomllib.loads(path.read_text(encoding="utf-8"))
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as error:
            raise ConfigError(f"{path} is not a valid TOML config file: {error}") from None
        return data.get("train", data)
    return read_json_object(path)


def __getattr__(name: str) -> Any:
    if name == "TrainConfig":  # deprecated in 0.2; removed in the next release
        import warnings

        warnings.warn("movq.train.config.TrainConfig is deprecated: it is CodecTrainConfig (the codec recipe)",
                      DeprecationWarning, stacklevel=2)
        return CodecTrainConfig
    raise AttributeError(f"module 'movq.train.config' has no attribute {name!r}")
