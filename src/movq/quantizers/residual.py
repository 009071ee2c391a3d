"""Residual vector quantization (RQ-VAE): a stack of codebooks, each quantizing what is left."""

from __future__ import annotations

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
class ResidualConfig(QuantizerConfigBase):
    """Residual quantization, RQ-VAE (:class:`ResidualVectorQuantizer`)."""

    architecture_fields = ("codebook_size", "depth", "shared_codebook")

    codebook_size: PositiveInt = 16384
    depth: PositiveInt = 4
    shared_codebook: bool = True
    beta: NonNegativeFloat = 0.25
    quantize_dropout: bool = False
    kind: Literal["residual"] = "residual"

    def build(self, dim: int) -> ResidualVectorQuantizer:
        return ResidualVectorQuantizer(dim=dim, **self.options())


class ResidualVectorQuantizer(Quantizer):
    """``depth`` levels of nearest-code quantization; level ``d`` quantizes ``z - sum(codes < d)``.

    Input: ``z`` ``[B, dim, H, W]``. Output :class:`QuantizerOutput` with ``z_q`` ``[B, dim, H, W]`` =
    the sum of the codes of all levels, in ``z``'s dtype (straight-through), indices
    ``[B, depth, H, W]`` in ``[0, codebook_size)``.

    ``loss = mean_d mean((e_d - sg[r_d])^2) + beta * mean_d mean((z - sg[sum_{k<=d} e_k])^2)``: a
    codebook term pulling each level's code to its residual ``r_d`` and the RQ-VAE commitment term on
    the cumulative sum at every level. Perplexity and usage are the means over levels.

    ``quantize_dropout`` (training only): a random number ``n`` in ``[1, depth]`` of levels is kept for
    the whole batch (drawn from torch's global RNG, so seed replicas alike); the remaining levels are
    not quantized, contribute nothing to ``z_q`` or the loss, and get index ``-1``. :meth:`embed` treats
    ``-1`` as "no code" (a zero contribution) and also accepts only the first ``d <= depth`` levels.

    State-dict keys: ``embedding.weight`` ``[codebook_size, dim]`` with ``shared_codebook=True``,
    otherwise ``embeddings.{0..depth-1}.weight``.
    """

    def __init__(
        self,
        codebook_size: int,
        dim: int,
        depth: int,
        shared_codebook: bool = True,
        beta: float = 0.25,
        quantize_dropout: bool = False,
        chunk_size: int = DEFAULT_CHUNK_SIZE,
    ) -> None:
        super().__init__()
        config = ResidualConfig(  # checks every field (ConfigError naming a bad one)
            codebook_size=codebook_size, depth=depth, shared_codebook=shared_codebook, beta=beta,
            quantize_dropout=quantize_dropout,
        )
        self.codebook_size = config.codebook_size
        self.dim = self.check_positive_int(dim, "dim")
        self.depth = config.depth
        self.chunk_size = self.check_positive_int(chunk_size, "chunk_size")
        self.beta = config.beta
        self.shared_codebook = config.shared_codebook
        self.quantize_dropout = config.quantize_dropout
        count = 1 if shared_codebook else depth
        books = [nn.Embedding(codebook_size, dim) for _ in range(count)]
        for book in books:
            nn.init.uniform_(book.weight, -1.0 / codebook_size, 1.0 / codebook_size)
        if shared_codebook:
            self.embedding = books[0]
            self.embeddings = None
        else:
            self.embedding = None
            self.embeddings = nn.ModuleList(books)

    def indices_shape(self, height: int, width: int) -> tuple[int, ...]:
        return (self.depth, height, width)

    def codebook(self, level: int) -> Tensor:
        """Codebook weight ``[codebook_size, dim]`` of ``level`` (one tensor for all levels if shared)."""
        return self.embedding.weight if self.embeddings is None else self.embeddings[level].weight

    def forward(self, z: Tensor) -> QuantizerOutput:
        self.check_latent(z)
        b, _, h, w = z.shape
        x = rearrange(z, "b d h w -> (b h w) d").float()
        kept = self.depth
        if self.training and self.quantize_dropout:
            kept = int(torch.randint(1, self.depth + 1, ()).item())

        residual = x.detach()
        total = torch.zeros_like(residual)
        codebook_terms, commit_terms, level_indices = [], [], []
        for level in range(kept):
            weight = self.codebook(level)
            idx = nearest_code(residual, weight.detach(), self.chunk_size)
            code = F.embedding(idx, weight).float()
            codebook_terms.append(F.mse_loss(code, residual))
            residual = residual - code.detach()
            total = total + code.detach()
            commit_terms.append(F.mse_loss(x, total))
            level_indices.append(idx)
        loss = torch.stack(codebook_terms).mean() + self.beta * torch.stack(commit_terms).mean()

        q = rearrange(total, "(b h w) d -> b d h w", b=b, h=h, w=w).to(z.dtype)
        z_q = z + (q - z).detach()
        indices = torch.full((self.depth, b * h * w), -1, dtype=torch.long, device=z.device)
        indices[:kept] = torch.stack(level_indices)
        indices = rearrange(indices, "l (b h w) -> b l h w", b=b, h=h, w=w)
        stats = [code_statistics(indices[:, level], self.codebook_size) for level in range(kept)]
        perplexity = torch.stack([s[0] for s in stats]).mean()
        usage = torch.stack([s[1] for s in stats]).mean()
        return QuantizerOutput(z_q=z_q, indices=indices, loss=loss, perplexity=perplexity, usage=usage)

    def embed(self, indices: Tensor) -> Tensor:
        """``indices`` ``[B, d, H, W]`` (first ``d <= depth`` levels, ``-1`` = none) -> ``[B, dim, H, W]``."""
        name = type(self).__name__
        self.check_indices(indices, 4, f"[B, d, H, W] with 1 <= d <= {self.depth}", allow_minus_one=True)
        if not 1 <= indices.shape[1] <= self.depth:
            raise ValueError(f"{name}.embed expects 1..{self.depth} levels on axis 1, got {indices.shape[1]}")
        out = None
        for level in range(indices.shape[1]):
            idx = indices[:, level].long()
            code = F.embedding(idx.clamp(min=0), self.codebook(level)) * (idx >= 0).unsqueeze(-1)
            out = code if out is None else out + code
        return rearrange(out, "b h w d -> b d h w")
