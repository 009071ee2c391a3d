"""Projected-codebook quantization (VQGAN-LC, Zhu et al. 2024, zh460045050/VQGAN-LC).

A large codebook ``C`` (VQGAN-LC: 100,000 cluster centres of CLIP image features, 768 dims) is
frozen; a trainable linear ``projection`` maps it into the latent space, and every latent position
takes the nearest row of ``projection(C)``. Only the projection learns, so all codes move together
and the whole codebook stays in use.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import Tensor, nn

from movq.strict import NonNegativeFloat, PositiveInt

from .base import Quantizer, QuantizerConfigBase, QuantizerOutput
from .codes import DEFAULT_CHUNK_SIZE, code_statistics, nearest_code


@dataclass
class ProjectedConfig(QuantizerConfigBase):
    """Projected frozen codebook (:class:`ProjectedQuantizer`); defaults are VQGAN-LC's published
    model (100,000 codes of 768 dims, ``beta`` 0.33 on the codebook term)."""

    architecture_fields = ("codebook_size", "codebook_dim")
    codebook_size: PositiveInt = 100000
    codebook_dim: PositiveInt = 768
    beta: NonNegativeFloat = 0.33
    kind: Literal["projected"] = "projected"

    def build(self, dim: int) -> ProjectedQuantizer:
        return ProjectedQuantizer(dim=dim, **self.options())


class ProjectedQuantizer(Quantizer):
    """A frozen codebook ``codebook`` ``[codebook_size, codebook_dim]`` (a buffer: never trained) and
    a trainable ``projection`` (``nn.Linear(codebook_dim, dim)``); every position takes the nearest
    row of ``E = projection(codebook)``.

    Input ``z`` ``[B, dim, H, W]``, any float dtype. Output :class:`QuantizerOutput` with ``z_q``
    ``[B, dim, H, W]`` in ``z``'s dtype (straight-through ``z + sg[q - z]``), indices ``[B, H, W]``.
    ``loss = mean((sg[q] - z)^2) + beta * mean((q - sg[z])^2)`` (VQGAN-LC's, ``beta`` 0.33): the
    second term trains the projection. The search runs in float32 in chunks (:func:`nearest_code`).
    State-dict keys: ``codebook``, ``projection.weight``, ``projection.bias``.
    """

    def __init__(
        self,
        codebook_size: int,
        dim: int,
        codebook_dim: int = 768,
        beta: float = 0.33,
        chunk_size: int = DEFAULT_CHUNK_SIZE,
    ) -> None:
        super().__init__()
        config = ProjectedConfig(codebook_size=codebook_size, codebook_dim=codebook_dim, beta=beta)  # checks the fields
        self.codebook_size = config.codebook_size
        self.dim = self.check_positive_int(dim, "dim")
        self.chunk_size = self.check_positive_int(chunk_size, "chunk_size")
        self.beta = config.beta
        self.register_buffer("codebook", torch.randn(config.codebook_size, config.codebook_dim))
        self.projection = nn.Linear(config.codebook_dim, dim)
        nn.init.normal_(self.projection.weight, std=dim**-0.5)  # VQGAN-LC's initialisation

    def projected_codebook(self) -> Tensor:
        """``projection(codebook)``: the codes in the latent space, ``[codebook_size, dim]``."""
        return self.projection(self.codebook.to(self.projection.weight.dtype))

    def indices(self, z: Tensor) -> Tensor:
        """Token ids ``[B, H, W]`` of ``z`` ``[B, dim, H, W]``, without the losses."""
        self.check_latent(z)
        return nearest_projected_code(z, self.projected_codebook, self.chunk_size)

    def forward(self, z: Tensor) -> QuantizerOutput:
        self.check_latent(z)
        return quantize_to_projected_codes(z, self.projected_codebook(), self.chunk_size, self.codebook_size,
                                           commitment_weight=1.0, codebook_weight=self.beta)

    def embed(self, indices: Tensor) -> Tensor:
        """``indices`` ``[B, H, W]`` -> the projected codes ``[B, dim, H, W]`` (only the rows used are projected)."""
        self.check_indices(indices, 3, "[B, H, W]")
        rows = self.codebook[indices.long()].to(self.projection.weight.dtype)
        return rearrange(self.projection(rows), "b h w d -> b d h w")


def nearest_projected_code(z: Tensor, projected_codebook: Callable[[], Tensor], chunk_size: int) -> Tensor:
    """Token ids ``[B, H, W]`` of ``z`` ``[B, dim, H, W]``: the nearest row of ``projected_codebook()``
    (computed without a graph), as VQGAN-LC and SimVQ search."""
    b, _, h, w = z.shape
    with torch.no_grad():
        codes = projected_codebook()
    found = nearest_code(rearrange(z, "b d h w -> (b h w) d").detach(), codes, chunk_size)
    return rearrange(found, "(b h w) -> b h w", b=b, h=h, w=w)


def quantize_to_projected_codes(z: Tensor, codes: Tensor, chunk_size: int, codebook_size: int, *,
                                commitment_weight: float, codebook_weight: float) -> QuantizerOutput:
    """Quantize ``z`` ``[B, dim, H, W]`` to the nearest of ``codes`` ``[codebook_size, dim]`` (a frozen
    codebook through a trained map): straight-through ``z_q``, and the loss
    ``commitment_weight * |sg(q) - z|^2 + codebook_weight * |q - sg(z)|^2`` (mean squares, float32),
    whose second term trains the map only. VQGAN-LC weighs the codebook term by beta, SimVQ the commitment."""
    b, _, h, w = z.shape
    x = rearrange(z, "b d h w -> (b h w) d").float()
    codes = codes.float()
    indices = nearest_code(x.detach(), codes.detach(), chunk_size)
    q = F.embedding(indices, codes)  # gradient to the projection only
    loss = commitment_weight * F.mse_loss(q.detach(), x) + codebook_weight * F.mse_loss(q, x.detach())
    z_q = rearrange(x + (q - x).detach(), "(b h w) d -> b d h w", b=b, h=h, w=w).to(z.dtype)
    indices = rearrange(indices, "(b h w) -> b h w", b=b, h=h, w=w)
    perplexity, usage = code_statistics(indices, codebook_size)
    return QuantizerOutput(z_q=z_q, indices=indices, loss=loss, perplexity=perplexity, usage=usage)
