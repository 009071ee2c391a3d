"""Vector quantizer whose codebook follows exponential moving averages of its assigned latents."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import Tensor, nn

from movq.distributed import all_reduce_sum, broadcast
from movq.strict import NonNegativeFloat, PositiveFloat, PositiveInt, Probability

from .base import Quantizer, QuantizerConfigBase, QuantizerOutput
from .codes import DEFAULT_CHUNK_SIZE, code_statistics, gradient_estimator, nearest_code
from .index_propagation import dot_product_code


@dataclass
class EMAConfig(QuantizerConfigBase):
    """Codebook updated by exponential moving averages (:class:`EMAVectorQuantizer`)."""

    architecture_fields = ("codebook_size", "groups", "separate_codebooks")

    codebook_size: PositiveInt = 16384
    decay: Probability = 0.99  # in [0, 1): decay 1 would never update the codebook
    eps: PositiveFloat = 1e-5
    beta: NonNegativeFloat = 0.25
    dead_code_threshold: NonNegativeFloat = 1.0
    kmeans_init: bool = False
    use_cosine_sim: bool = False
    rotation_trick: bool = False
    groups: PositiveInt = 1
    separate_codebooks: bool = False
    kind: Literal["ema"] = "ema"

    def build(self, dim: int) -> EMAVectorQuantizer:
        return EMAVectorQuantizer(dim=dim, **self.options())


def _sample_rows(x: Tensor, n: int) -> Tensor:
    """``n`` random rows of ``x`` (without replacement when possible), identical on all replicas."""
    if x.shape[0] >= n:
        rows = torch.randperm(x.shape[0], device=x.device)[:n]
    else:
        rows = torch.randint(0, x.shape[0], (n,), device=x.device)
    return broadcast(x[rows].contiguous())


def kmeans(x: Tensor, num_clusters: int, iters: int, spherical: bool = False) -> Tensor:
    """Lloyd's k-means on ``x`` ``[N, D]`` (float32); returns centroids ``[num_clusters, D]``.

    ``spherical``: points are assigned by largest dot product and centroids are L2-normalised after
    every round (k-means on the unit sphere, for L2-normalised ``x``).
    Under ``torch.distributed`` the initial centroids come from rank 0 and the per-cluster sums and
    counts are all-reduced, so every replica gets the same centroids. Empty clusters keep their place.
    """
    centroids = _sample_rows(x, num_clusters)
    for _ in range(iters):
        assign = dot_product_code(x, centroids) if spherical else nearest_code(x, centroids)
        counts = all_reduce_sum(torch.bincount(assign, minlength=num_clusters).float())
        sums = all_reduce_sum(torch.zeros_like(centroids).index_add_(0, assign, x))
        filled = counts > 0
        centroids[filled] = sums[filled] / counts[filled, None]
        if spherical:
            centroids = F.normalize(centroids, dim=-1)
    return centroids


class EMACodebook(nn.Module):
    """Buffers of the EMA codebook: ``weight`` ``[K, D]``, ``cluster_size`` ``[K]``, ``embed_avg`` ``[K, D]``.

    Named like taming's ``EmbeddingEMA`` so the parent's keys read ``embedding.weight`` etc.
    """

    def __init__(self, codebook_size: int, dim: int) -> None:
        super().__init__()
        weight = torch.randn(codebook_size, dim)
        self.register_buffer("weight", weight)
        self.register_buffer("cluster_size", torch.zeros(codebook_size))
        self.register_buffer("embed_avg", weight.clone())


class EMAVectorQuantizer(Quantizer):
    """Nearest-code quantizer whose codebook is the EMA of the latents assigned to each code.

    Input: ``z`` ``[B, dim, H, W]`` (or a sequence ``[B, N, dim]``). Output :class:`QuantizerOutput`
    with ``z_q`` ``[B, dim, H, W]`` in ``z``'s dtype (straight-through, or the rotation trick with
    ``rotation_trick``), indices ``[B, H, W]`` in ``[0, codebook_size)`` and
    ``loss = beta * mean((z - sg[q])^2)`` (the commitment term only: the codebook gets no gradient).

    ``use_cosine_sim`` (vector-quantize-pytorch's ``use_cosine_sim=True``): every latent vector is
    L2-normalised, the codebook is kept on the unit sphere (re-normalised after every EMA update and
    restart), a position takes the code of largest dot product, and ``z_q`` is that unit code (the
    loss and the gradient estimator act on the normalised latent). k-means init is then spherical.

    ``groups > 1`` (vector-quantize-pytorch's ``heads``): the channels are split into ``groups``
    contiguous parts of ``dim / groups``, each quantized on its own; indices ``[B, groups, H, W]``.
    The groups share one codebook, or with ``separate_codebooks`` (``separate_codebook_per_head=True``)
    each has its own ``codebook_size`` codes, rows ``g * codebook_size ...`` of the buffers, updated,
    smoothed, restarted and k-means-initialised from its group's latents only.

    In training mode only, each forward call

    1. (``kmeans_init``, first call) sets the codebook to ``kmeans_iters`` rounds of k-means on the batch;
    2. updates ``cluster_size`` and ``embed_avg`` with decay ``decay`` and sets
       ``weight = embed_avg / cluster_size`` with Laplace smoothing (``eps``);
    3. restarts dead codes: every code whose EMA ``cluster_size`` (roughly its expected count per
       batch) is below ``dead_code_threshold`` becomes a random latent of the batch, with
       ``cluster_size = dead_code_threshold`` and ``embed_avg = code * dead_code_threshold``.
       ``dead_code_threshold=0`` disables restarts.

    Under ``torch.distributed`` the counts, sums and k-means statistics are all-reduced and the
    restart samples come from rank 0, so all replicas keep identical codebooks.
    State-dict keys: ``embedding.weight``, ``embedding.cluster_size``, ``embedding.embed_avg``
    (taming's ``EMAVectorQuantizer`` names) and ``initialized``. Statistics are kept in float32.
    """

    def __init__(
        self,
        codebook_size: int,
        dim: int,
        decay: float = 0.99,
        eps: float = 1e-5,
        beta: float = 0.25,
        dead_code_threshold: float = 1.0,
        kmeans_init: bool = False,
        kmeans_iters: int = 10,
        chunk_size: int = DEFAULT_CHUNK_SIZE,
        use_cosine_sim: bool = False,
        rotation_trick: bool = False,
        groups: int = 1,
        separate_codebooks: bool = False,
    ) -> None:
        super().__init__()
        config = EMAConfig(  # checks every field (ConfigError naming a bad one)
            codebook_size=codebook_size, decay=decay, eps=eps, beta=beta, dead_code_threshold=dead_code_threshold,
            kmeans_init=kmeans_init, use_cosine_sim=use_cosine_sim, rotation_trick=rotation_trick, groups=groups,
            separate_codebooks=separate_codebooks,
        )
        self.codebook_size = config.codebook_size
        self.dim = self.check_positive_int(dim, "dim")
        self.groups = config.groups
        self.separate_codebooks = config.separate_codebooks
        if self.separate_codebooks and self.groups == 1:
            raise ValueError("separate_codebooks needs groups > 1 (one codebook per group)")
        if self.dim % self.groups:
            raise ValueError(f"groups must divide dim ({self.dim}), got groups={self.groups}")
        self.books = self.groups if self.separate_codebooks else 1
        self.chunk_size = self.check_positive_int(chunk_size, "chunk_size")
        self.kmeans_iters = self.check_positive_int(kmeans_iters, "kmeans_iters")
        self.decay = config.decay
        self.eps = config.eps
        self.beta = config.beta
        self.dead_code_threshold = config.dead_code_threshold  # 0 disables restarts
        self.kmeans_init = config.kmeans_init
        self.use_cosine_sim = config.use_cosine_sim
        self.rotation_trick = config.rotation_trick
        self.embedding = EMACodebook(self.books * codebook_size, dim // self.groups)
        if self.use_cosine_sim:
            with torch.no_grad():
                self.embedding.weight.copy_(F.normalize(self.embedding.weight, dim=-1))
                self.embedding.embed_avg.copy_(self.embedding.weight)
        self.register_buffer("initialized", torch.tensor(not kmeans_init))

    def indices_shape(self, height: int, width: int) -> tuple[int, ...]:
        return (height, width) if self.groups == 1 else (self.groups, height, width)

    def _book_rows(self, flat: Tensor, book: int) -> Tensor:
        """The rows of ``flat`` (``(b h w g)`` order) that codebook ``book`` quantizes (all rows when shared)."""
        return flat if self.books == 1 else flat.view(-1, self.groups, flat.shape[-1])[:, book]

    def _offsets(self, positions: int, device: torch.device) -> Tensor:
        """Row offset of each group's codebook for ``positions`` positions, in ``(b h w g)`` order."""
        return (torch.arange(self.groups, device=device) * self.codebook_size).repeat(positions)

    def _search(self, flat: Tensor) -> Tensor:
        """Codebook row of every row of ``flat`` ``[(b h w g), dim / groups]`` (float32, normalised with
        ``use_cosine_sim``); with separate codebooks the row is the index plus ``g * codebook_size``."""
        search = dot_product_code if self.use_cosine_sim else nearest_code
        weight = self.embedding.weight
        if self.books == 1:
            return search(flat, weight, self.chunk_size)
        found = [search(self._book_rows(flat, g), weight[g * self.codebook_size:(g + 1) * self.codebook_size],
                        self.chunk_size) for g in range(self.groups)]
        return rearrange(torch.stack(found, dim=1), "n g -> (n g)") + self._offsets(found[0].shape[0], flat.device)

    def forward(self, z: Tensor) -> QuantizerOutput:
        self.check_latent(z)
        b, _, h, w = z.shape
        x = rearrange(z, "b (g d) h w -> (b h w g) d", g=self.groups)
        if self.use_cosine_sim:
            x = F.normalize(x, dim=-1)
        flat = x.detach().float()
        if self.training and not bool(self.initialized):
            self._init_kmeans(flat)
        rows = self._search(flat)
        q = F.embedding(rows, self.embedding.weight).to(z.dtype)
        if self.training:
            self._ema_update(flat, rows)

        loss = self.beta * F.mse_loss(x.float(), q.float())
        z_q = gradient_estimator(x, q, self.rotation_trick)
        z_q = rearrange(z_q, "(b h w g) d -> b (g d) h w", b=b, h=h, w=w, g=self.groups)
        if self.books > 1:
            rows = rows - self._offsets(b * h * w, z.device)
        indices = rearrange(rows, "(b h w g) -> b g h w", b=b, h=h, w=w, g=self.groups)
        indices = indices[:, 0] if self.groups == 1 else indices
        perplexity, usage = code_statistics(indices, self.codebook_size)
        return QuantizerOutput(z_q=z_q, indices=indices, loss=loss, perplexity=perplexity, usage=usage)

    @torch.no_grad()
    def _init_kmeans(self, flat: Tensor) -> None:
        centroids = torch.cat([
            kmeans(self._book_rows(flat, g), self.codebook_size, self.kmeans_iters, spherical=self.use_cosine_sim)
            for g in range(self.books)
        ])
        self.embedding.weight.copy_(centroids)
        self.embedding.embed_avg.copy_(centroids)
        self.embedding.cluster_size.fill_(1.0)
        self.initialized.fill_(True)

    @torch.no_grad()
    def _ema_update(self, flat: Tensor, rows: Tensor) -> None:
        book = self.embedding
        size = self.books * self.codebook_size
        counts = all_reduce_sum(torch.bincount(rows, minlength=size).float())
        sums = torch.zeros(size, flat.shape[-1], device=flat.device).index_add_(0, rows, flat)
        sums = all_reduce_sum(sums)
        cluster_size = book.cluster_size.float().mul(self.decay).add(counts, alpha=1.0 - self.decay)
        embed_avg = book.embed_avg.float().mul(self.decay).add(sums, alpha=1.0 - self.decay)
        per_book = cluster_size.view(self.books, self.codebook_size)  # Laplace smoothing within each codebook
        total = per_book.sum(dim=1, keepdim=True)
        smoothed = (per_book + self.eps) / (total + self.codebook_size * self.eps) * total
        weight = embed_avg / smoothed.reshape(-1, 1)
        if self.use_cosine_sim:
            weight = F.normalize(weight, dim=-1)

        for g in range(self.books):
            dead = torch.zeros_like(cluster_size, dtype=torch.bool)
            part = slice(g * self.codebook_size, (g + 1) * self.codebook_size)
            dead[part] = cluster_size[part] < self.dead_code_threshold
            n_dead = int(dead.sum())
            if n_dead:
                fresh = _sample_rows(self._book_rows(flat, g), n_dead)
                weight[dead] = fresh
                cluster_size[dead] = self.dead_code_threshold
                embed_avg[dead] = fresh * self.dead_code_threshold
        book.cluster_size.copy_(cluster_size)
        book.embed_avg.copy_(embed_avg)
        book.weight.copy_(weight.to(book.weight.dtype))

    def embed(self, indices: Tensor) -> Tensor:
        """``indices`` ``[B, H, W]`` (``[B, groups, H, W]``) -> ``z_q`` ``[B, dim, H, W]``."""
        if self.groups == 1:
            self.check_indices(indices, 3, "[B, H, W]")
            indices = indices.unsqueeze(1)
        else:
            self.check_indices(indices, 4, f"[B, {self.groups}, H, W]")
            if indices.shape[1] != self.groups:
                raise ValueError(f"{type(self).__name__}.embed expects {self.groups} groups on axis 1, got {indices.shape[1]}")
        rows = indices.long()
        if self.books > 1:
            rows = rows + (torch.arange(self.groups, device=rows.device) * self.codebook_size).view(1, -1, 1, 1)
        return rearrange(F.embedding(rows, self.embedding.weight), "b g h w d -> b (g d) h w")
