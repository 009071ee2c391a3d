"""Configuration of the text-to-image transformer: one dataclass that serialises to JSON, and presets.

Sequence layout (what the sizes below mean)::

    [BOS, t_0 .. t_{text_len-1}, i_0 .. i_{N-1}]        N = h * w * image_depth

Text ids come from a tokenizer with ``text_vocab_size`` ids; a missing text token at position ``j``
is the per-position padding id ``text_vocab_size + j`` (DALL·E, ruDALL-E), so the text embedding
has ``text_vocab_size + text_len`` rows. Image ids are codec token ids in
``[0, image_vocab_size)`` in raster order; a codec with ``image_depth`` tokens per latent position
(residual / grouped quantizers) contributes its ``image_depth`` tokens of one position one after
the other (coarse to fine) before moving on to the next position. A multi-scale codec (VAR's,
``image_scales``) contributes its token maps coarse to fine, each in raster order:
``N = sum(s * s for s in image_scales)``, VAR's order.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path
from typing import Annotated, Any

from movq.strict import (
    MinLength,
    NonNegativeFloat,
    PositiveFloat,
    PositiveInt,
    Probability,
    Range,
    StrictConfig,
    dataclass_from_dict,
)

MAX_LAYERS = 1024
"""Most transformer blocks a T2I config may have (published GPTs: up to 96); the bound refuses a
hostile config before its network is built."""


@dataclass
class T2IConfig(StrictConfig):
    """Architecture and loss weighting of :class:`movq.t2i.T2ITransformer`.

    Text: ``text_vocab_size`` ids from the tokenizer named by ``tokenizer`` (``"byte"``: UTF-8
    bytes, 256 ids; otherwise a Hugging Face ``tokenizers`` name or ``tokenizer.json`` file),
    ``text_len`` positions. Image: ``image_vocab_size`` codec ids on an ``image_grid`` of
    ``(h, w)`` latent positions with ``image_depth`` tokens each. Transformer: ``n_layer`` pre-norm
    blocks, ``n_head`` heads, width ``n_embd``. Training: the loss is
    ``text_loss_weight * text_ce + image_loss_weight * image_ce`` (DALL·E: 1/8 and 7/8) and a
    caption is replaced by the empty caption with probability ``caption_dropout`` (for
    classifier-free guidance at sampling).

    The defaults are the seed-004 toy: byte text of 128 positions, a 16x16 VQGAN grid with 1024
    codes, 8 layers, 8 heads, 512 wide.

    ``image_scales`` (empty for grid codecs) are the sides of a multi-scale codec's token maps, coarse
    to fine (VAR's; ``image_grid`` is then ``(S, S)`` for the last side ``S`` and ``image_depth`` 1):
    the image sequence is the maps concatenated, a token of map ``k`` at ``(r, c)`` positioned by a
    scale embedding of ``k`` plus the row / column embeddings of the grid cell under its centre.
    """

    text_vocab_size: PositiveInt = 256
    text_len: PositiveInt = 128
    image_vocab_size: PositiveInt = 1024
    image_grid: tuple[PositiveInt, PositiveInt] = (16, 16)
    image_depth: PositiveInt = 1
    n_layer: Annotated[int, Range(1, MAX_LAYERS)] = 8
    n_head: PositiveInt = 8
    n_embd: PositiveInt = 512
    mlp_ratio: PositiveFloat = 4.0
    dropout: Probability = 0.0
    bias: bool = True
    init_std: NonNegativeFloat = 0.02
    text_loss_weight: NonNegativeFloat = 0.125
    image_loss_weight: NonNegativeFloat = 0.875
    caption_dropout: Probability = 0.1
    tokenizer: Annotated[str, MinLength(1)] = "byte"
    image_scales: tuple[PositiveInt, ...] = ()

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.image_scales:
            side = self.image_scales[-1]
            if any(b <= a for a, b in zip(self.image_scales, self.image_scales[1:])):
                raise ValueError(f"T2IConfig.image_scales must be strictly increasing, got {list(self.image_scales)}")
            if tuple(self.image_grid) != (side, side) or self.image_depth != 1:
                raise ValueError(
                    f"T2IConfig.image_scales {list(self.image_scales)} need image_grid ({side}, {side}) and image_depth 1, "
                    f"got {list(self.image_grid)} and {self.image_depth}"
                )
        if self.n_embd % self.n_head:
            raise ValueError(f"T2IConfig.n_embd ({self.n_embd}) must be divisible by n_head ({self.n_head})")
        if round(self.mlp_ratio * self.n_embd) < 1:
            raise ValueError(f"T2IConfig.mlp_ratio * n_embd must round to >= 1 hidden unit, got {self.mlp_ratio!r}")
        if self.text_loss_weight + self.image_loss_weight <= 0:
            raise ValueError("T2IConfig.text_loss_weight and image_loss_weight cannot both be 0")

    # ----------------------------------------------------------------------------- derived sizes

    @property
    def image_len(self) -> int:
        """Image tokens per sample: ``h * w * image_depth`` (``sum(s * s)`` over ``image_scales``)."""
        if self.image_scales:
            return sum(s * s for s in self.image_scales)
        return self.image_grid[0] * self.image_grid[1] * self.image_depth

    @property
    def row_len(self) -> int:
        """Image tokens per grid row: ``w * image_depth`` (a whole-row prefix is a multiple of it)."""
        return self.image_grid[1] * self.image_depth

    @property
    def text_vocab_with_pads(self) -> int:
        """Rows of the text embedding: tokenizer ids plus one padding id per text position."""
        return self.text_vocab_size + self.text_len

    @property
    def block_size(self) -> int:
        """Longest sequence the transformer sees: BOS + text + all image tokens but the last."""
        return self.text_len + self.image_len

    # ----------------------------------------------------------------------------- JSON

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-serialisable dict (the grid becomes a list)."""
        data = asdict(self)
        data["image_grid"] = list(self.image_grid)
        data["image_scales"] = list(self.image_scales)
        return data

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> T2IConfig:
        """Inverse of :meth:`to_dict`; unknown keys are an error naming them."""
        return dataclass_from_dict(cls, data)

    @classmethod
    def from_json(cls, text: str) -> T2IConfig:
        return cls.from_dict(json.loads(text))

    @classmethod
    def load(cls, path: str | Path) -> T2IConfig:
        return cls.from_json(Path(path).read_text(encoding="utf-8"))

    # ----------------------------------------------------------------------------- codecs

    @classmethod
    def for_codec(
        cls,
        codec: Any,
        image_size: int | tuple[int, int] = 256,
        *,
        preset: str | None = None,
        **overrides: Any,
    ) -> T2IConfig:
        """A config whose image side fits ``codec`` (a :class:`movq.Codec`) at ``image_size`` pixels.

        ``image_vocab_size`` is the codec's ``codebook_size``; ``image_grid`` and ``image_depth``
        come from ``codec.tokens_shape(H, W)`` (``(h, w)`` or ``(depth, h, w)``). The other fields
        come from ``preset`` (a name in ``T2I_PRESETS``; the defaults if ``None``) and ``overrides``.
        """
        derived = ("image_vocab_size", "image_grid", "image_depth", "image_scales")
        clashing = sorted(set(overrides) & set(derived))
        if clashing:
            raise ValueError(f"for_codec derives {clashing} from the codec; do not pass them")
        height, width = (image_size, image_size) if isinstance(image_size, int) else image_size
        shape = tuple(codec.tokens_shape(height, width))
        if getattr(codec, "multiscale", False):  # VAR's tokens: the maps coarse to fine
            scales = tuple(codec.quantize.scales)
            image = {"image_vocab_size": int(codec.codebook_size), "image_grid": (scales[-1], scales[-1]),
                     "image_depth": 1, "image_scales": scales}
            return cls(**image, **overrides) if preset is None else get_t2i_preset(preset, **image, **overrides)
        if len(shape) == 2:
            depth, h, w = 1, *shape
        elif len(shape) == 3:
            depth, h, w = shape
        else:
            raise ValueError(f"unsupported codec token layout {shape}; expected (h, w) or (depth, h, w)")
        image = {"image_vocab_size": int(codec.codebook_size), "image_grid": (h, w), "image_depth": depth}
        if preset is None:
            return cls(**image, **overrides)
        return get_t2i_preset(preset, **image, **overrides)


# ---------------------------------------------------------------------------------------------
# Presets: architecture sizes only (no weights are shipped). Override any field by keyword.

T2I_PRESETS: dict[str, T2IConfig] = {
    # Tests and CPU smoke runs.
    "t2i-tiny": T2IConfig(
        text_len=16, image_vocab_size=64, image_grid=(4, 4), n_layer=2, n_head=2, n_embd=32
    ),
    # Seed 004's toy: char-level text (here UTF-8 bytes) of 128, VQGAN 16x16 with 1024 codes, GPT 8x8x512.
    "t2i-toy": T2IConfig(),
    # DALL·E sequence sizes (256 text + 32x32 image tokens) at a CPU/one-GPU width, for a movq f8
    # codec on 256x256 images with 16384 codes (SBER-MoVQGAN 67M).
    "t2i-base": T2IConfig(
        text_len=256, image_vocab_size=16384, image_grid=(32, 32), n_layer=12, n_head=12, n_embd=768
    ),
}


def get_t2i_preset(name: str, **overrides: Any) -> T2IConfig:
    """A copy of preset ``name`` (see ``T2I_PRESETS``) with ``overrides`` applied."""
    if name not in T2I_PRESETS:
        raise KeyError(f"unknown t2i preset {name!r}; available: {sorted(T2I_PRESETS)}")
    known = {f.name for f in fields(T2IConfig)}
    unknown = sorted(set(overrides) - known)
    if unknown:
        raise ValueError(f"unknown T2IConfig fields {unknown}; known fields: {sorted(known)}")
    return replace(T2I_PRESETS[name], **overrides)
