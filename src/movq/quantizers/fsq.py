"""Finite scalar quantization (Mentzer et al. 2023, "Finite Scalar Quantization: VQ-VAE Made Simple")."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Annotated, Literal

import torch
from einops import rearrange
from torch import Tensor

from movq.strict import MinLength, PositiveInt, Range

from .base import Quantizer, QuantizerConfigBase, QuantizerOutput
from .codes import code_statistics


@dataclass
class FSQConfig(QuantizerConfigBase):
    """Finite scalar quantization (:class:`FSQ`); ``dim == len(levels) * num_codebooks``."""

    architecture_fields = ("levels", "num_codebooks")

    levels: Annotated[tuple[Annotated[int, Range(min=2)], ...], MinLength(1)] = (8, 5, 5, 5)
    num_codebooks: PositiveInt = 1
    symmetric: bool = False
    kind: Literal["fsq"] = "fsq"

    def build(self, dim: int) -> FSQ:
        return FSQ(self.levels, dim, num_codebooks=self.num_codebooks, symmetric=self.symmetric)

    def codebook_size_for(self, dim: int) -> int:
        return math.prod(self.levels)


def round_ste(x: Tensor) -> Tensor:
    """Round to the nearest integer with an identity (straight-through) gradient."""
    return x + (x.round() - x).detach()


def floor_ste(x: Tensor) -> Tensor:
    """Round down with an identity (straight-through) gradient."""
    return x + (x.floor() - x).detach()


class FSQ(Quantizer):
    """Each channel ``i`` is bounded and rounded to one of ``levels[i]`` values in ``[-1, 1]``.

    Input: ``z`` ``[B, len(levels) * num_codebooks, H, W]`` (or a sequence ``[B, N, dim]``). Channel
    ``i`` becomes ``round(tanh(z + shift) * half_i - offset_i) / (levels[i] // 2)``, so odd levels give
    the grid ``{-1, ..., 1}`` and even levels ``{-1, ..., 1 - 2/levels[i]}``. Output
    :class:`QuantizerOutput`: ``z_q`` in ``z``'s shape and dtype (gradient through tanh,
    straight-through rounding), indices ``[B, H, W]`` = mixed-radix ``sum_i digit_i * prod(levels[:i])``
    in ``[0, prod(levels))``, loss 0. No parameters (state dict empty apart from non-persistent buffers).

    - ``num_codebooks`` (vector-quantize-pytorch's ``num_codebooks``): the channels are
      ``num_codebooks`` contiguous groups of ``len(levels)``, each its own code; indices are then
      ``[B, num_codebooks, H, W]``, each in ``[0, prod(levels))``.
    - ``symmetric`` (vector-quantize-pytorch's ``preserve_symmetry``, arXiv 2411.19842 section 3.2):
      ``2 / (L - 1) * floor((L - 1) (tanh(z) + 1) / 2 + 1/2) - 1``, the grid of ``L`` values
      ``{-1, -1 + 2/(L-1), ..., 1}`` symmetric about 0 for every ``L``.
    - ``hard_clamp`` (vector-quantize-pytorch's ``bound_hard_clamp``, used by residual FSQ whose input
      is already soft-clamped): ``clamp(., -1, 1)`` in place of ``tanh``.
    """

    def __init__(
        self,
        levels: Sequence[int],
        dim: int | None = None,
        eps: float = 1e-3,
        num_codebooks: int = 1,
        symmetric: bool = False,
        hard_clamp: bool = False,
    ) -> None:
        super().__init__()
        config = FSQConfig(levels=tuple(levels), num_codebooks=num_codebooks, symmetric=symmetric)  # checked: ConfigError naming a bad field
        levels = config.levels
        channels = len(levels) * config.num_codebooks
        if dim is not None and dim != channels:
            raise ValueError(
                f"FSQ needs dim == len(levels) * num_codebooks (one channel per level and codebook); got dim={dim}, "
                f"levels={levels}, num_codebooks={config.num_codebooks}"
            )
        self.levels = levels
        self.num_codebooks = config.num_codebooks
        self.symmetric = config.symmetric
        self.hard_clamp = bool(hard_clamp)
        self.dim = channels
        self.codebook_size = math.prod(levels)
        self.eps = float(eps)
        basis = [math.prod(levels[:i]) for i in range(len(levels))]
        self.register_buffer("_levels", torch.tensor(levels, dtype=torch.float32), persistent=False)
        self.register_buffer("_basis", torch.tensor(basis, dtype=torch.long), persistent=False)

    def indices_shape(self, height: int, width: int) -> tuple[int, ...]:
        return (height, width) if self.num_codebooks == 1 else (self.num_codebooks, height, width)

    def _squash(self, x: Tensor) -> Tensor:
        return x.clamp(-1.0, 1.0) if self.hard_clamp else torch.tanh(x)

    def quantize(self, x: Tensor) -> Tensor:
        """Grid values of ``x`` ``[..., len(levels)]`` (float32), gradients straight through the rounding."""
        if self.symmetric:
            steps = self._levels - 1
            return 2.0 / steps * floor_ste(steps * (self._squash(x) + 1) / 2 + 0.5) - 1.0
        half = (self._levels - 1) * (1 + self.eps) / 2
        offset = torch.where(self._levels % 2 == 0, 0.5, 0.0)
        shift = offset / half if self.hard_clamp else torch.atanh(offset / half)
        return round_ste(self._squash(x + shift) * half - offset) / torch.div(self._levels, 2, rounding_mode="floor")

    def _digits(self, codes: Tensor) -> Tensor:
        """Grid values ``[..., len(levels)]`` -> digits in ``[0, levels[i])`` (long)."""
        if self.symmetric:
            return ((codes + 1) * (self._levels - 1) / 2).round().long()
        half_width = torch.div(self._levels, 2, rounding_mode="floor")
        return (codes * half_width + half_width).round().long()

    def _values(self, digits: Tensor) -> Tensor:
        """Inverse of :meth:`_digits`."""
        if self.symmetric:
            return digits.float() * 2 / (self._levels - 1) - 1
        half_width = torch.div(self._levels, 2, rounding_mode="floor")
        return (digits.float() - half_width) / half_width

    def _split(self, z: Tensor) -> Tensor:
        """``[B, dim, H, W]`` -> ``[B, H, W, num_codebooks, len(levels)]`` (float32)."""
        return rearrange(z, "b (c d) h w -> b h w c d", c=self.num_codebooks).float()

    def _layout(self, indices: Tensor) -> Tensor:
        """``[B, H, W, num_codebooks]`` -> the layout of :meth:`indices_shape`."""
        return indices[..., 0] if self.num_codebooks == 1 else rearrange(indices, "b h w c -> b c h w")

    def forward(self, z: Tensor) -> QuantizerOutput:
        self.check_latent(z)
        q = self.quantize(self._split(z))
        indices = self._layout((self._digits(q.detach()) * self._basis).sum(dim=-1))
        z_q = rearrange(q, "b h w c d -> b (c d) h w").to(z.dtype)
        perplexity, usage = code_statistics(indices, self.codebook_size)
        loss = torch.zeros((), device=z.device)
        return QuantizerOutput(z_q=z_q, indices=indices, loss=loss, perplexity=perplexity, usage=usage)

    def codes_to_indices(self, codes: Tensor) -> Tensor:
        """Inverse of :meth:`embed`: grid values ``[B, dim, H, W]`` -> indices (layout of ``indices_shape``)."""
        self.check_latent(codes)
        return self._layout((self._digits(self._split(codes)) * self._basis).sum(dim=-1))

    def embed(self, indices: Tensor) -> Tensor:
        """``indices`` ``[B, H, W]`` (``[B, num_codebooks, H, W]``) -> grid values ``[B, dim, H, W]`` (float32)."""
        indices = self.per_codebook_indices(indices, self.num_codebooks)
        digits = (indices.long().unsqueeze(-1) // self._basis) % self._levels.long()
        return rearrange(self._values(digits), "b c h w d -> b (c d) h w")
