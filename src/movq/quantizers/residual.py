"""Residual quantization (RQ-VAE; residual FSQ / LFQ): a stack of quantizers, each quantizing what is left."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Annotated, Literal

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import Tensor, nn

from movq.strict import ConfigError, MinLength, NonNegativeFloat, NonNegativeInt, PositiveInt, Range

from .base import Quantizer, QuantizerConfigBase, QuantizerOutput
from .codes import DEFAULT_CHUNK_SIZE, code_statistics, gradient_estimator, nearest_code
from .fsq import FSQ
from .lfq import LFQ


@dataclass
class ResidualConfig(QuantizerConfigBase):
    """Residual quantization (:class:`ResidualVectorQuantizer`): RQ-VAE with ``stage="vq"``, residual
    FSQ with ``stage="fsq"`` (``levels``; ``dim == len(levels)``), residual LFQ with ``stage="lfq"``
    (``2 ** dim`` codes; ``beta`` is the commitment weight, ``entropy_weight`` the entropy weight).
    ``codebook_size`` and ``shared_codebook`` concern ``stage="vq"`` only, ``levels`` ``"fsq"`` only,
    ``entropy_weight`` ``"lfq"`` only; ``rotation_trick`` applies to ``"vq"`` (FSQ and LFQ levels
    keep their own estimators, as in vector-quantize-pytorch)."""

    architecture_fields = ("codebook_size", "depth", "shared_codebook", "stage", "levels")

    codebook_size: PositiveInt = 16384
    depth: PositiveInt = 4
    shared_codebook: bool = True
    beta: NonNegativeFloat = 0.25
    quantize_dropout: bool = False
    quantize_dropout_cutoff: NonNegativeInt = 0
    rotation_trick: bool = False
    stage: Literal["vq", "fsq", "lfq"] = "vq"
    levels: Annotated[tuple[Annotated[int, Range(min=2)], ...], MinLength(1)] = (8, 5, 5, 5)
    entropy_weight: NonNegativeFloat = 0.1
    kind: Literal["residual"] = "residual"

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.quantize_dropout_cutoff >= self.depth:
            raise ConfigError(
                f"invalid ResidualConfig field 'quantize_dropout_cutoff': must be < depth ({self.depth}: levels "
                f"0..cutoff are always kept), got {self.quantize_dropout_cutoff}",
                owner="ResidualConfig", field="quantize_dropout_cutoff", expected=f"an int in [0, {self.depth - 1}]",
                value=self.quantize_dropout_cutoff,
            )

    def build(self, dim: int) -> ResidualVectorQuantizer:
        return ResidualVectorQuantizer(dim=dim, **self.options())

    def codebook_size_for(self, dim: int) -> int:
        if self.stage == "fsq":
            return math.prod(self.levels)
        return 2**dim if self.stage == "lfq" else self.codebook_size


class ResidualVectorQuantizer(Quantizer):
    """``depth`` levels of quantization; level ``d`` quantizes ``z - sum(codes < d)``.

    Input: ``z`` ``[B, dim, H, W]`` (or a sequence ``[B, N, dim]``). Output :class:`QuantizerOutput`
    with ``z_q`` ``[B, dim, H, W]`` = the sum of the codes of all levels, in ``z``'s dtype, indices
    ``[B, depth, H, W]`` in ``[0, codebook_size)``. Perplexity and usage are the means over levels.

    ``stage="vq"`` (RQ-VAE, nearest codes): ``z_q`` has one straight-through gradient to ``z`` (or the
    rotation trick from ``z`` onto the sum, ``rotation_trick``), and
    ``loss = mean_d mean((e_d - sg[r_d])^2) + beta * mean_d mean((z - sg[sum_{k<=d} e_k])^2)``: a
    codebook term pulling each level's code to its residual ``r_d`` and the RQ-VAE commitment term on
    the cumulative sum at every level.

    ``stage="fsq"`` (vector-quantize-pytorch's ``ResidualFSQ``): ``z`` is soft-clamped to
    ``tanh(z / c) * c`` with ``c = 1 + 1 / (L - 1)`` per channel, level ``d`` is
    ``L^-d * FSQ(r_d * L^d)`` with the symmetric, hard-clamped grid (:class:`FSQ` ``symmetric=True,
    hard_clamp=True``), codebook ``prod(levels)``, loss 0. ``stage="lfq"`` (``ResidualLFQ``): level
    ``d`` is :class:`LFQ` with codes ``+-2^-d`` (commitment weight ``beta``, ``entropy_weight``), loss
    the mean of the levels' losses, codebook ``2 ** dim``. In both, as in vector-quantize-pytorch,
    ``z_q`` is the sum of the levels' outputs, each with its own gradient to its residual.

    ``quantize_dropout`` (training only): a random number ``n`` in ``[quantize_dropout_cutoff + 1,
    depth]`` of levels is kept for the whole batch (vector-quantize-pytorch's
    ``quantize_dropout_cutoff_index``), drawn from torch's global RNG: seeded by ``torch.manual_seed``
    and alike on replicas seeded alike. The remaining levels are not quantized, contribute nothing to
    ``z_q`` or the loss, and get index ``-1``. :meth:`embed` treats ``-1`` as "no code" (a zero
    contribution) and also accepts only the first ``d <= depth`` levels.

    State-dict keys: ``embedding.weight`` ``[codebook_size, dim]`` with ``shared_codebook=True``,
    otherwise ``embeddings.{0..depth-1}.weight`` (``stage="vq"``; FSQ and LFQ levels have no weights).
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
        quantize_dropout_cutoff: int = 0,
        rotation_trick: bool = False,
        stage: str = "vq",
        levels: tuple[int, ...] = (8, 5, 5, 5),
        entropy_weight: float = 0.1,
    ) -> None:
        super().__init__()
        config = ResidualConfig(  # checks every field (ConfigError naming a bad one)
            codebook_size=codebook_size, depth=depth, shared_codebook=shared_codebook, beta=beta,
            quantize_dropout=quantize_dropout, quantize_dropout_cutoff=quantize_dropout_cutoff,
            rotation_trick=rotation_trick, stage=stage, levels=tuple(levels), entropy_weight=entropy_weight,
        )
        self.dim = self.check_positive_int(dim, "dim")
        self.codebook_size = config.codebook_size_for(dim)
        self.depth = config.depth
        self.chunk_size = self.check_positive_int(chunk_size, "chunk_size")
        self.beta = config.beta
        self.shared_codebook = config.shared_codebook
        self.quantize_dropout = config.quantize_dropout
        self.quantize_dropout_cutoff = config.quantize_dropout_cutoff
        self.rotation_trick = config.rotation_trick
        self.stage = config.stage
        self.levels = config.levels
        self.entropy_weight = config.entropy_weight
        self.embedding = self.embeddings = self.stages = None
        if self.stage == "fsq":
            stage_fsq = FSQ(self.levels, dim, symmetric=True, hard_clamp=True)  # checks dim == len(levels)
            self.stages = nn.ModuleList([stage_fsq])
            levels_t = torch.tensor(self.levels, dtype=torch.float32)
            self.register_buffer("_scales", torch.stack([levels_t**-d for d in range(self.depth)]), persistent=False)
            self.register_buffer("_soft_clamp", 1 + 1 / (levels_t - 1), persistent=False)
        elif self.stage == "lfq":
            self.stages = nn.ModuleList(
                LFQ(dim=dim, entropy_weight=self.entropy_weight, commitment_weight=self.beta, scale=2.0**-d)
                for d in range(self.depth)
            )
        else:
            count = 1 if shared_codebook else depth
            books = [nn.Embedding(codebook_size, dim) for _ in range(count)]
            for book in books:
                nn.init.uniform_(book.weight, -1.0 / codebook_size, 1.0 / codebook_size)
            if shared_codebook:
                self.embedding = books[0]
            else:
                self.embeddings = nn.ModuleList(books)

    def indices_shape(self, height: int, width: int) -> tuple[int, ...]:
        return (self.depth, height, width)

    def codebook(self, level: int) -> Tensor:
        """Codebook weight ``[codebook_size, dim]`` of ``level`` (one tensor for all levels if shared; ``stage="vq"``)."""
        return self.embedding.weight if self.embeddings is None else self.embeddings[level].weight

    def _kept_levels(self) -> int:
        """Number of levels quantized in this call (all, unless quantize dropout draws fewer)."""
        if self.training and self.quantize_dropout:
            return int(torch.randint(self.quantize_dropout_cutoff + 1, self.depth + 1, ()).item())
        return self.depth

    def _stage_level(self, level: int, residual: Tensor) -> QuantizerOutput:
        """Level ``level`` of an FSQ / LFQ stack on ``residual`` ``[B, dim, H, W]`` (its ``z_q`` scaled)."""
        if self.stage == "lfq":
            return self.stages[level](residual)
        scale = self._scales[level].view(1, -1, 1, 1)
        out = self.stages[0](residual / scale)
        out.z_q = out.z_q * scale
        return out

    def forward(self, z: Tensor) -> QuantizerOutput:
        self.check_latent(z)
        if self.stage != "vq":
            return self._forward_stages(z)
        b, _, h, w = z.shape
        x = rearrange(z, "b d h w -> (b h w) d").float()
        kept = self._kept_levels()

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

        q = rearrange(total, "(b h w) d -> b h w d", b=b, h=h, w=w).to(z.dtype)
        z_q = rearrange(gradient_estimator(rearrange(z, "b d h w -> b h w d"), q, self.rotation_trick), "b h w d -> b d h w")
        indices = torch.full((self.depth, b * h * w), -1, dtype=torch.long, device=z.device)
        indices[:kept] = torch.stack(level_indices)
        indices = rearrange(indices, "l (b h w) -> b l h w", b=b, h=h, w=w)
        stats = [code_statistics(indices[:, level], self.codebook_size) for level in range(kept)]
        perplexity = torch.stack([s[0] for s in stats]).mean()
        usage = torch.stack([s[1] for s in stats]).mean()
        return QuantizerOutput(z_q=z_q, indices=indices, loss=loss, perplexity=perplexity, usage=usage)

    def _forward_stages(self, z: Tensor) -> QuantizerOutput:
        """Residual FSQ / LFQ (``stage`` ``"fsq"`` / ``"lfq"``), as vector-quantize-pytorch computes them."""
        b, _, h, w = z.shape
        x = z.float()
        if self.stage == "fsq":
            clamp = self._soft_clamp.view(1, -1, 1, 1)
            x = torch.tanh(x / clamp) * clamp
        kept = self._kept_levels()
        residual, total = x, torch.zeros_like(x)
        outs = []
        for level in range(kept):
            out = self._stage_level(level, residual)
            residual = residual - out.z_q.detach()
            total = total + out.z_q
            outs.append(out)
        indices = torch.full((b, self.depth, h, w), -1, dtype=torch.long, device=z.device)
        indices[:, :kept] = torch.stack([out.indices for out in outs], dim=1)
        loss = torch.stack([out.loss for out in outs]).mean()
        perplexity = torch.stack([out.perplexity for out in outs]).mean()
        usage = torch.stack([out.usage for out in outs]).mean()
        return QuantizerOutput(z_q=total.to(z.dtype), indices=indices, loss=loss, perplexity=perplexity, usage=usage)

    def embed(self, indices: Tensor) -> Tensor:
        """``indices`` ``[B, d, H, W]`` (first ``d <= depth`` levels, ``-1`` = none) -> ``[B, dim, H, W]``."""
        name = type(self).__name__
        self.check_indices(indices, 4, f"[B, d, H, W] with 1 <= d <= {self.depth}", allow_minus_one=True)
        if not 1 <= indices.shape[1] <= self.depth:
            raise ValueError(f"{name}.embed expects 1..{self.depth} levels on axis 1, got {indices.shape[1]}")
        out = None
        for level in range(indices.shape[1]):
            idx = indices[:, level].long()
            present = (idx >= 0).unsqueeze(1)
            if self.stage == "fsq":
                code = self.stages[0].embed(idx.clamp(min=0)) * self._scales[level].view(1, -1, 1, 1) * present
            elif self.stage == "lfq":
                code = self.stages[level].embed(idx.clamp(min=0)) * present
            else:
                code = F.embedding(idx.clamp(min=0), self.codebook(level)) * (idx >= 0).unsqueeze(-1)
                code = rearrange(code, "b h w d -> b d h w")
            out = code if out is None else out + code
        return out
