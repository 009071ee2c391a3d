"""A compact ADM-style UNet for latent diffusion: config, model, save / load (with EMA weights)."""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Annotated, Any

import torch
from torch import Tensor, nn

from movq.diffusion.blocks import (
    NORM_GROUPS,
    AttentionBlock,
    EmbedSequential,
    ResBlock,
    timestep_embedding,
    zero_module,
)
from movq.memory_budget import check_parameters_fit
from movq.model_folder import (
    MODEL_WEIGHTS_FILE,
    load_strict,
    read_model_folder,
    save_model_folder,
    save_weights,
)
from movq.modules.blocks import Downsample, Upsample
from movq.strict import (
    MAX_BLOCKS,
    MAX_LEVELS,
    MaxLength,
    MinLength,
    PositiveInt,
    Probability,
    Range,
    StrictConfig,
    dataclass_from_dict,
    state_dict_mismatches,
)

EMA_WEIGHTS_FILE = "ema.safetensors"
WEIGHT_CHOICES = ("auto", "ema", "model")


@dataclass
class UNetConfig(StrictConfig):
    """Size and conditioning of a :class:`UNet`.

    ``sample_size`` is the latent side the model is built for: a level whose side at that size is
    in ``attention_resolutions`` gets self-attention (the model runs on any side divisible by
    ``2 ** (len(channel_mult) - 1)``). Level ``i`` has ``channels * channel_mult[i]`` channels and
    ``num_res_blocks`` residual blocks; attention uses heads of ``head_channels``.
    ``learn_sigma`` doubles the output channels for a learned variance. ``num_classes`` adds a label
    embedding (label ``num_classes`` is the null label); ``cond_dim`` adds a conditioning vector
    (e.g. a CLIP text / image embedding) with a learned null vector. Both null conditions serve
    classifier-free guidance.
    """

    in_channels: PositiveInt = 4
    sample_size: PositiveInt = 32
    channels: PositiveInt = 128
    channel_mult: Annotated[tuple[PositiveInt, ...], MinLength(1), MaxLength(MAX_LEVELS)] = (1, 2, 3, 4)
    num_res_blocks: Annotated[int, Range(1, MAX_BLOCKS)] = 2
    attention_resolutions: Annotated[tuple[int, ...], MaxLength(MAX_LEVELS)] = (16, 8)
    head_channels: PositiveInt = 64
    dropout: Probability = 0.0
    learn_sigma: bool = True
    num_classes: PositiveInt | None = None
    cond_dim: PositiveInt | None = None

    def __post_init__(self) -> None:
        super().__post_init__()
        if any(self.channels * m % NORM_GROUPS for m in self.channel_mult):
            raise ValueError(
                f"channels * channel_mult must be multiples of {NORM_GROUPS} (GroupNorm), got {self.level_channels}"
            )
        if self.sample_size % self.downsample_factor:
            raise ValueError(
                f"sample_size must be a multiple of {self.downsample_factor}, got {self.sample_size}"
            )
        levels = [self.sample_size // 2**i for i in range(len(self.channel_mult))]
        unknown = sorted(set(self.attention_resolutions) - set(levels))
        if unknown:
            raise ValueError(
                f"attention_resolutions {unknown} match no level; level sides at sample_size: {levels}"
            )
        for side, ch in zip(levels, self.level_channels):
            if side in self.attention_resolutions and ch % self.head_channels:
                raise ValueError(
                    f"head_channels {self.head_channels} must divide the {ch} channels attended at side {side}"
                )

    @property
    def level_channels(self) -> list[int]:
        return [self.channels * m for m in self.channel_mult]

    @property
    def downsample_factor(self) -> int:
        """The input's sides must be multiples of this."""
        return 2 ** (len(self.channel_mult) - 1)

    @property
    def out_channels(self) -> int:
        return self.in_channels * (2 if self.learn_sigma else 1)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> UNetConfig:
        """Inverse of :meth:`to_dict`; unknown keys are an error naming them."""
        return dataclass_from_dict(cls, data)


class UNet(nn.Module):
    """ADM-style UNet that predicts noise (and variance) on codec latents.

    ``forward(x, t, y=None, cond=None, uncond_mask=None)``: ``x`` float ``[B, in_channels, h, w]``
    (sides multiples of ``config.downsample_factor``), ``t`` timesteps ``[B]`` (ints or floats of the
    base diffusion process); ``y`` long ``[B]`` labels in ``[0, num_classes]`` (``num_classes`` =
    null), ``cond`` float ``[B, cond_dim]``; ``uncond_mask`` bool ``[B]`` replaces the condition of
    the marked rows by the null one (missing ``y`` / ``cond`` = all null). Returns float
    ``[B, out_channels, h, w]`` (``2 * in_channels`` with ``learn_sigma``).
    """

    def __init__(self, config: UNetConfig) -> None:
        super().__init__()
        check_parameters_fit(
            lambda: UNet(config),
            f"a UNet with channels={config.channels}, channel_mult={config.channel_mult}, "
            f"num_res_blocks={config.num_res_blocks}",
            "the config asks for far more parameters than such a model has; check channels and channel_mult",
        )
        self.config = config
        ch, emb_ch = config.channels, 4 * config.channels
        self.time_embed = nn.Sequential(nn.Linear(ch, emb_ch), nn.SiLU(), nn.Linear(emb_ch, emb_ch))
        self.label_embed = nn.Embedding(config.num_classes + 1, emb_ch) if config.num_classes else None
        self.cond_embed = nn.Linear(config.cond_dim, emb_ch) if config.cond_dim else None
        self.null_cond = nn.Parameter(torch.zeros(config.cond_dim)) if config.cond_dim else None

        self.input_conv = nn.Conv2d(config.in_channels, ch, kernel_size=3, padding=1)
        skips, side, current = [ch], config.sample_size, ch
        self.down = nn.ModuleList()
        for level, width in enumerate(config.level_channels):
            for _ in range(config.num_res_blocks):
                layers = [ResBlock(current, width, emb_ch, config.dropout)]
                current = width
                if side in config.attention_resolutions:
                    layers.append(AttentionBlock(current, config.head_channels))
                self.down.append(EmbedSequential(*layers))
                skips.append(current)
            if level < len(config.channel_mult) - 1:
                self.down.append(EmbedSequential(Downsample(current)))
                skips.append(current)
                side //= 2
        middle_head_channels = config.head_channels if current % config.head_channels == 0 else current
        self.middle = EmbedSequential(
            ResBlock(current, current, emb_ch, config.dropout),
            AttentionBlock(current, middle_head_channels),
            ResBlock(current, current, emb_ch, config.dropout),
        )
        self.up = nn.ModuleList()
        for level, width in reversed(list(enumerate(config.level_channels))):
            for i in range(config.num_res_blocks + 1):
                layers = [ResBlock(current + skips.pop(), width, emb_ch, config.dropout)]
                current = width
                if side in config.attention_resolutions:
                    layers.append(AttentionBlock(current, config.head_channels))
                if level > 0 and i == config.num_res_blocks:
                    layers.append(Upsample(current))
                    side *= 2
                self.up.append(EmbedSequential(*layers))
        self.out = nn.Sequential(
            nn.GroupNorm(NORM_GROUPS, current),
            nn.SiLU(),
            zero_module(nn.Conv2d(current, config.out_channels, kernel_size=3, padding=1)),
        )

    @property
    def conditional(self) -> bool:
        """Whether the model takes labels or conditioning vectors (and so can be guided)."""
        return self.label_embed is not None or self.cond_embed is not None

    @property
    def null_label(self) -> int | None:
        """The label id that means "no label" (``num_classes``), or None without labels."""
        return self.config.num_classes

    # ----------------------------------------------------------------------------- forward

    def forward(
        self,
        x: Tensor,
        t: Tensor,
        y: Tensor | None = None,
        cond: Tensor | None = None,
        uncond_mask: Tensor | None = None,
    ) -> Tensor:
        t = self._check_inputs(x, t, y, cond, uncond_mask)
        emb = self.time_embed(timestep_embedding(t, self.config.channels).to(x.dtype))
        condition = self._condition_embedding(x, y, cond, uncond_mask)
        if condition is not None:
            emb = emb + condition.to(emb.dtype)
        h = self.input_conv(x)
        skips = [h]
        for block in self.down:
            h = block(h, emb)
            skips.append(h)
        h = self.middle(h, emb)
        for block in self.up:
            h = block(torch.cat([h, skips.pop()], dim=1), emb)
        return self.out(h)

    def _condition_embedding(
        self, x: Tensor, y: Tensor | None, cond: Tensor | None, uncond_mask: Tensor | None
    ) -> Tensor | None:
        """Sum of the label and vector embeddings ``[B, 4 * channels]`` (null where masked or missing)."""
        batch = x.shape[0]
        drop = (
            torch.zeros(batch, dtype=torch.bool, device=x.device)
            if uncond_mask is None
            else uncond_mask.to(x.device)
        )
        emb = None
        if self.label_embed is not None:
            labels = torch.full((batch,), self.config.num_classes, dtype=torch.long, device=x.device)
            if y is not None:
                labels = torch.where(drop, labels, y.to(x.device, torch.long))
            emb = self.label_embed(labels)
        if self.cond_embed is not None:
            null = self.null_cond.to(x.dtype).expand(batch, -1)
            vectors = null if cond is None else torch.where(drop[:, None], null, cond.to(x.dtype))
            emb = self.cond_embed(vectors) if emb is None else emb + self.cond_embed(vectors)
        return emb

    def _check_inputs(
        self, x: Tensor, t: Tensor | float, y: Tensor | None, cond: Tensor | None, uncond_mask: Tensor | None
    ) -> Tensor:
        """Validate the inputs before any work; returns ``t`` as a ``[B]`` tensor."""
        c, f = self.config, self.config.downsample_factor
        if not isinstance(x, Tensor) or not x.is_floating_point() or x.ndim != 4:
            raise ValueError(f"x must be a float tensor [B, {c.in_channels}, h, w], got {_describe(x)}")
        if x.shape[1] != c.in_channels or x.shape[0] == 0:
            raise ValueError(f"x must have {c.in_channels} latent channels, got shape {tuple(x.shape)}")
        if x.shape[2] % f or x.shape[3] % f:
            raise ValueError(f"latent sides must be multiples of {f}, got {tuple(x.shape[2:])}")
        batch = x.shape[0]
        t = torch.as_tensor(t, device=x.device)
        if t.dtype == torch.bool or t.is_complex() or not bool(torch.isfinite(t).all()):
            raise ValueError(f"t must hold finite real timesteps, got {_describe(t)} with values {t.flatten()[:8].tolist()}")
        if t.ndim == 0:
            t = t.expand(batch)
        if tuple(t.shape) != (batch,):
            raise ValueError(f"t must be a scalar or have shape [{batch}], got {tuple(t.shape)}")
        if y is not None:
            if self.label_embed is None:
                raise ValueError("this UNet has no class labels (num_classes=None) but y was given")
            if (not isinstance(y, Tensor) or y.is_floating_point() or y.is_complex() or y.dtype == torch.bool
                    or tuple(y.shape) != (batch,)):
                raise ValueError(f"y must be an integer tensor [{batch}] of labels, got {_describe(y)}")
            low, high = int(y.min()), int(y.max())
            if low < 0 or high > c.num_classes:
                raise ValueError(
                    f"labels must be in [0, {c.num_classes}) (or {c.num_classes} = null), got [{low}, {high}]"
                )
        if cond is not None:
            if self.cond_embed is None:
                raise ValueError("this UNet takes no conditioning vector (cond_dim=None) but cond was given")
            if (
                not isinstance(cond, Tensor)
                or not cond.is_floating_point()
                or tuple(cond.shape) != (batch, c.cond_dim)
            ):
                raise ValueError(
                    f"cond must be a float tensor [{batch}, {c.cond_dim}], got {_describe(cond)}"
                )
        if uncond_mask is not None and (
            not isinstance(uncond_mask, Tensor)
            or uncond_mask.dtype != torch.bool
            or tuple(uncond_mask.shape) != (batch,)
        ):
            raise ValueError(f"uncond_mask must be a bool tensor [{batch}], got {_describe(uncond_mask)}")
        return t

    # ----------------------------------------------------------------------------- persistence

    def save_pretrained(self, directory: str | os.PathLike, *, ema: nn.Module | None = None) -> Path:
        """Write ``config.json`` and ``model.safetensors`` (these weights) into ``directory``, plus
        ``ema.safetensors`` from ``ema`` (a UNet of the same config, or a ``ModelEMA`` wrapping one);
        without ``ema`` a stale ``ema.safetensors`` is removed. Every file is written atomically."""
        ema_model = getattr(ema, "module", ema)
        if ema_model is not None:
            problems = state_dict_mismatches(self.state_dict(), ema_model.state_dict())
            if problems:
                raise ValueError("ema weights do not match this UNet: " + "; ".join(problems))
        directory = save_model_folder(directory, self, self.config)
        if ema_model is not None:
            save_weights(directory / EMA_WEIGHTS_FILE, ema_model)
        else:
            (directory / EMA_WEIGHTS_FILE).unlink(missing_ok=True)
        return directory

    @classmethod
    def from_pretrained(
        cls,
        directory: str | os.PathLike,
        *,
        weights: str = "auto",
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> UNet:
        """Load a folder written by :meth:`save_pretrained`, strictly, in eval mode.

        ``weights="ema"`` loads ``ema.safetensors``, ``"model"`` loads ``model.safetensors``, and
        ``"auto"`` the EMA weights when the folder has them (the ones to sample with).
        """
        if weights not in WEIGHT_CHOICES:
            raise ValueError(f"weights must be one of {list(WEIGHT_CHOICES)}, got {weights!r}")
        directory = Path(directory)
        if weights == "auto":
            weights = "ema" if (directory / EMA_WEIGHTS_FILE).exists() else "model"  # a FIFO is refused, not skipped
        name = EMA_WEIGHTS_FILE if weights == "ema" else MODEL_WEIGHTS_FILE
        config, state = read_model_folder(directory, UNetConfig, "a UNet folder", weights_name=name)
        model = cls(config)
        load_strict(model, state, f"{directory / name} does not match its config.json")
        return model.to(device=device, dtype=dtype).eval()


def _describe(value: Any) -> str:
    if isinstance(value, Tensor):
        return f"{value.dtype} tensor of shape {tuple(value.shape)}"
    return type(value).__name__
