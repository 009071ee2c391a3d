"""Finite scalar quantization (Mentzer et al. 2023, "Finite Scalar Quantization: VQ-VAE Made Simple")."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Annotated, Literal

import torch
from einops import rearrange
from torch import Tensor

from movq.strict import MinLength, Range

from .base import Quantizer, QuantizerConfigBase, QuantizerOutput
from .codes import code_statistics


@dataclass
class FSQConfig(QuantizerConfigBase):
    """Finite scalar quantization (:class:`FSQ`); ``dim == len(levels)``."""

    architecture_fields = ("levels",)

    levels: Annotated[tuple[Annotated[int, Range(min=2)], ...], MinLength(1)] = (8, 5, 5, 5)
    kind: Literal["fsq"] = "fsq"

    def build(self, dim: int) -> FSQ:
        return FSQ(self.levels, dim)

    def codebook_size_for(self, dim: int) -> int:
        return math.prod(self.levels)


def round_ste(x: Tensor) -> Tensor:
    """Round to the nearest integer with an identity (straight-through) gradient."""
    return x + (x.round() - x).detach()


class FSQ(Quantizer):
    """Each channel ``i`` is bounded and rounded to one of ``levels[i]`` values in ``[-1, 1]``.

    Input: ``z`` ``[B, len(levels), H, W]``. Channel ``i`` becomes
    ``round(tanh(z + shift) * half_i - offset_i) / (levels[i] // 2)``, so odd levels give the grid
    ``{-1, ..., 1}`` and even levels ``{-1, ..., 1 - 2/levels[i]}``. Output :class:`QuantizerOutput`:
    ``z_q`` ``[B, len(levels), H, W]`` in ``z``'s dtype (gradient through tanh, straight-through
    rounding), indices ``[B, H, W]`` = mixed-radix ``sum_i digit_i * prod(levels[:i])`` in
    ``[0, prod(levels))``, loss 0. No parameters (state dict empty apart from non-persistent buffers).
    """

    def __init__(self, levels: Sequence[int], dim: int | None = None, eps: float = 1e-3) -> None:
        super().__init__()
        levels = FSQConfig(levels=tuple(levels)).levels  # checked: ConfigError naming a bad level
        if dim is not None and dim != len(levels):
            raise ValueError(
                f"FSQ needs dim == len(levels) (one channel per level); got dim={dim}, levels={levels}"
            )
        self.levels = levels
        self.dim = len(levels)
        self.codebook_size = math.prod(levels)
        self.eps = float(eps)
        basis = [math.prod(levels[:i]) for i in range(len(levels))]
        self.register_buffer("_levels", torch.tensor(levels, dtype=torch.float32), persistent=False)
        self.register_buffer("_basis", torch.tensor(basis, dtype=torch.long), persistent=False)

    def _bound(self, x: Tensor) -> Tensor:
        """Squash ``x`` (channels last, float32) so that rounding yields exactly ``levels[i]`` values."""
        half = (self._levels - 1) * (1 + self.eps) / 2
        offset = torch.where(self._levels % 2 == 0, 0.5, 0.0)
        shift = torch.atanh(offset / half)
        return torch.tanh(x + shift) * half - offset

    def forward(self, z: Tensor) -> QuantizerOutput:
        self.check_latent(z)
        x = rearrange(z, "b d h w -> b h w d").float()
        rounded = round_ste(self._bound(x))
        half_width = torch.div(self._levels, 2, rounding_mode="floor")
        q = rounded / half_width
        indices = self._grid_to_indices(rounded.detach())
        z_q = rearrange(q, "b h w d -> b d h w").to(z.dtype)
        perplexity, usage = code_statistics(indices, self.codebook_size)
        loss = torch.zeros((), device=z.device)
        return QuantizerOutput(z_q=z_q, indices=indices, loss=loss, perplexity=perplexity, usage=usage)

    def _grid_to_indices(self, rounded: Tensor) -> Tensor:
        half_width = torch.div(self._levels, 2, rounding_mode="floor")
        digits = (rounded + half_width).round().long()
        return (digits * self._basis).sum(dim=-1)

    def codes_to_indices(self, codes: Tensor) -> Tensor:
        """Inverse of :meth:`embed`: grid values ``[B, len(levels), H, W]`` -> indices ``[B, H, W]``."""
        self.check_latent(codes)
        x = rearrange(codes, "b d h w -> b h w d").float()
        return self._grid_to_indices(x * torch.div(self._levels, 2, rounding_mode="floor"))

    def embed(self, indices: Tensor) -> Tensor:
        """``indices`` ``[B, H, W]`` -> grid values ``[B, len(levels), H, W]`` (float32)."""
        self.check_indices(indices, 3, "[B, H, W]")
        digits = (indices.long().unsqueeze(-1) // self._basis) % self._levels.long()
        half_width = torch.div(self._levels, 2, rounding_mode="floor")
        q = (digits.float() - half_width) / half_width
        return rearrange(q, "b h w d -> b d h w")
