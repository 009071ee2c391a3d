"""Nearest-neighbour vector quantizer trained by gradients (VQ-VAE / VQGAN / MoVQGAN)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import Tensor, nn

from movq.strict import NonNegativeFloat, PositiveInt

from .base import Quantizer, QuantizerConfigBase, QuantizerOutput
from .codes import DEFAULT_CHUNK_SIZE, code_statistics, gradient_estimator, nearest_code


@dataclass
class VQConfig(QuantizerConfigBase):
    """Nearest-neighbour codebook trained by gradients (:class:`VectorQuantizer`)."""

    architecture_fields = ("codebook_size", "groups", "code_dim", "separate_codebooks")

    codebook_size: PositiveInt = 16384
    beta: NonNegativeFloat = 0.25
    legacy: bool = True
    l2_normalize: bool = False
    code_dim: PositiveInt | None = None
    groups: PositiveInt = 1
    separate_codebooks: bool = False
    rotation_trick: bool = False
    kind: Literal["vq"] = "vq"

    def build(self, dim: int) -> VectorQuantizer:
        return VectorQuantizer(dim=dim, **self.options())


class VectorQuantizer(Quantizer):
    """Codebook of ``codebook_size`` vectors; every latent position takes its nearest code.

    Input: ``z`` ``[B, dim, H, W]`` (or a sequence ``[B, N, dim]``), any float dtype. Output
    :class:`QuantizerOutput` with ``z_q`` ``[B, dim, H, W]`` in ``z``'s dtype (straight-through
    gradient ``z + (q - z).detach()``, or the rotation trick), indices ``[B, H, W]`` in
    ``[0, codebook_size)`` (``[B, groups, H, W]`` when ``groups > 1``).

    - ``legacy=True`` places ``beta`` like taming / MoVQGAN ``VectorQuantizer2``:
      ``mean((sg[q] - z)^2) + beta * mean((q - sg[z])^2)``; ``legacy=False`` puts ``beta`` on the
      commitment term: ``mean((q - sg[z])^2) + beta * mean((sg[q] - z)^2)``.
    - ``code_dim`` (ViT-VQGAN factorised codes): the search runs in a ``code_dim`` space reached by a
      linear ``project_in`` (dim -> code_dim) and left by ``project_out`` (code_dim -> dim).
    - ``l2_normalize``: latent and codes are L2-normalised before the search (cosine similarity);
      the quantized vector is then the normalised code.
    - ``groups > 1`` (MoVQ multichannel quantization): the (projected) channels are split into
      ``groups`` contiguous parts of ``C / groups`` channels, each quantized with one shared codebook
      of dimension ``C / groups``. Perplexity and usage are computed over all groups together.
    - ``separate_codebooks`` (with ``groups > 1``; vector-quantize-pytorch's ``heads`` with
      ``separate_codebook_per_head=True``): group ``g`` searches its own codebook of
      ``codebook_size`` codes; ``embedding.weight`` is then ``[groups * codebook_size, C / groups]``,
      group ``g``'s codes in rows ``g * codebook_size ...``, and indices stay in ``[0, codebook_size)``.
    - ``rotation_trick`` (Fifty et al. 2024; vector-quantize-pytorch's default): the gradient reaches
      the latent through :func:`~movq.quantizers.codes.rotate_to` (in search space, after
      ``project_in`` and the normalisation) instead of straight through; the forward value is the same.

    The search is done in float32 in chunks of ``chunk_size`` positions (see ``nearest_code``).
    State-dict keys: ``embedding.weight`` (``[codebook_size, C / groups]``), plus
    ``project_in.{weight,bias}`` and ``project_out.{weight,bias}`` when ``code_dim`` is set.
    """

    def __init__(
        self,
        codebook_size: int,
        dim: int,
        beta: float = 0.25,
        legacy: bool = True,
        l2_normalize: bool = False,
        code_dim: int | None = None,
        groups: int = 1,
        chunk_size: int = DEFAULT_CHUNK_SIZE,
        separate_codebooks: bool = False,
        rotation_trick: bool = False,
    ) -> None:
        super().__init__()
        config = VQConfig(  # checks every field (ConfigError naming a bad one)
            codebook_size=codebook_size, beta=beta, legacy=legacy, l2_normalize=l2_normalize, code_dim=code_dim,
            groups=groups, separate_codebooks=separate_codebooks, rotation_trick=rotation_trick,
        )
        self.codebook_size = config.codebook_size
        self.dim = self.check_positive_int(dim, "dim")
        self.groups = config.groups
        self.chunk_size = self.check_positive_int(chunk_size, "chunk_size")
        search_dim = code_dim if code_dim is not None else dim
        if separate_codebooks and groups == 1:
            raise ValueError("separate_codebooks needs groups > 1 (one codebook per group)")
        if search_dim % groups:
            raise ValueError(
                f"groups must divide the quantized channel count ({'code_dim' if code_dim else 'dim'}="
                f"{search_dim}), got groups={groups}"
            )
        self.beta = config.beta
        self.legacy = config.legacy
        self.l2_normalize = config.l2_normalize
        self.separate_codebooks = config.separate_codebooks
        self.rotation_trick = config.rotation_trick
        self.code_dim = code_dim
        self.search_dim = search_dim
        self.books = groups if separate_codebooks else 1
        self.embedding = nn.Embedding(self.books * codebook_size, search_dim // groups)
        nn.init.uniform_(self.embedding.weight, -1.0 / codebook_size, 1.0 / codebook_size)
        if code_dim is not None:
            self.project_in = nn.Linear(dim, code_dim)
            self.project_out = nn.Linear(code_dim, dim)
        else:
            self.project_in = None
            self.project_out = None

    def indices_shape(self, height: int, width: int) -> tuple[int, ...]:
        return (height, width) if self.groups == 1 else (self.groups, height, width)

    def _codebook(self) -> Tensor:
        weight = self.embedding.weight
        return F.normalize(weight, dim=-1) if self.l2_normalize else weight

    def _offsets(self, b: int, h: int, w: int, device: torch.device) -> Tensor:
        """Row offset of every group's codebook in ``embedding.weight``, in ``(b g h w)`` order."""
        groups = torch.arange(self.groups, device=device) * self.codebook_size
        return groups.view(1, -1, 1, 1).expand(b, -1, h, w).reshape(-1)

    def _search(self, z: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """``(x, codebook, flat indices)``: the latent in search space ``[B, G, H, W, C]``, the codebook
        and the nearest code of every position (``(b g h w)`` order; with ``separate_codebooks``, the
        row of ``codebook``, i.e. the index plus ``g * codebook_size``)."""
        self.check_latent(z)
        x = rearrange(z, "b d h w -> b h w d")
        if self.project_in is not None:
            x = self.project_in(x)
        x = rearrange(x, "b h w (g c) -> b g h w c", g=self.groups)
        if self.l2_normalize:
            x = F.normalize(x, dim=-1)
        codebook = self._codebook()
        if not self.separate_codebooks:
            flat = rearrange(x, "b g h w c -> (b g h w) c")
            return x, codebook, nearest_code(flat.detach(), codebook.detach(), self.chunk_size)
        books = codebook.detach().split(self.codebook_size)
        found = [
            nearest_code(rearrange(x[:, g], "b h w c -> (b h w) c").detach(), books[g], self.chunk_size)
            for g in range(self.groups)
        ]
        b, _, h, w, _ = x.shape
        rows = rearrange(torch.stack(found), "g (b h w) -> (b g h w)", b=b, h=h, w=w)
        return x, codebook, rows + self._offsets(b, h, w, x.device)

    def _layout(self, flat: Tensor, z: Tensor) -> Tensor:
        b, _, h, w = z.shape
        if self.separate_codebooks:
            flat = flat - self._offsets(b, h, w, flat.device)
        indices = rearrange(flat, "(b g h w) -> b g h w", b=b, g=self.groups, h=h, w=w)
        return indices[:, 0] if self.groups == 1 else indices

    def indices(self, z: Tensor) -> Tensor:
        """Token ids of ``z`` ``[B, dim, H, W]`` (layout of ``indices_shape``), without the losses."""
        return self._layout(self._search(z)[2], z)

    def forward(self, z: Tensor) -> QuantizerOutput:
        x, codebook, indices = self._search(z)
        b, _, h, w = z.shape
        q = F.embedding(indices, codebook).to(x.dtype)
        q = rearrange(q, "(b g h w) c -> b g h w c", b=b, g=self.groups, h=h, w=w)

        codebook_term = F.mse_loss(q.float(), x.detach().float())
        commit_term = F.mse_loss(x.float(), q.detach().float())
        if self.legacy:
            loss = commit_term + self.beta * codebook_term
        else:
            loss = codebook_term + self.beta * commit_term

        x_q = gradient_estimator(x, q, self.rotation_trick)
        x_q = rearrange(x_q, "b g h w c -> b h w (g c)")
        if self.project_out is not None:
            x_q = self.project_out(x_q)
        z_q = rearrange(x_q, "b h w d -> b d h w").to(z.dtype)

        indices = self._layout(indices, z)
        perplexity, usage = code_statistics(indices, self.codebook_size)
        return QuantizerOutput(z_q=z_q, indices=indices, loss=loss, perplexity=perplexity, usage=usage)

    def embed(self, indices: Tensor) -> Tensor:
        """``indices`` ``[B, H, W]`` (or ``[B, groups, H, W]``) -> ``z_q`` ``[B, dim, H, W]``."""
        name = type(self).__name__
        if self.groups == 1:
            self.check_indices(indices, 3, "[B, H, W]")
            indices = indices[:, None]
        else:
            self.check_indices(indices, 4, f"[B, {self.groups}, H, W]")
            if indices.shape[1] != self.groups:
                raise ValueError(
                    f"{name}.embed expects {self.groups} groups on axis 1, got {indices.shape[1]}"
                )
        indices = indices.long()
        if self.separate_codebooks:
            b, _, h, w = indices.shape
            indices = indices + self._offsets(b, h, w, indices.device).view(b, self.groups, h, w)
        q = F.embedding(indices, self._codebook())
        x = rearrange(q, "b g h w c -> b h w (g c)")
        if self.project_out is not None:
            x = self.project_out(x)
        return rearrange(x, "b h w d -> b d h w")
