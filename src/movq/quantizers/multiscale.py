"""Multi-scale residual quantization (VAR's VQVAE, FoundationVision/VAR ``models/quant.py``): one
codebook quantizes the latent at a ladder of scales, coarse to fine, each scale the residual the
coarser ones left, every code map upsampled to the full grid through a "Phi" convolution."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from movq.strict import MinLength, NonNegativeFloat, PositiveInt, Range

from .base import Quantizer, QuantizerConfigBase, QuantizerOutput
from .codes import DEFAULT_CHUNK_SIZE, code_statistics, nearest_code

VAR_SCALES = (1, 2, 3, 4, 5, 6, 8, 10, 13, 16)
"""VAR's ``patch_nums``: the sides of the ten token maps of a 16 x 16 latent (256 px at f16)."""


def default_scales(side: int) -> tuple[int, ...]:
    """A ladder of scales for a ``side x side`` latent: VAR's sides below ``side``, then ``side``
    (VAR's own ten for 16; ``(1, 2, 3, 4, 5, 6, 8)`` for 8)."""
    return (*(s for s in VAR_SCALES if s < side), side)


@dataclass
class MultiScaleConfig(QuantizerConfigBase):
    """Multi-scale residual quantization, VAR's VQVAE (:class:`MultiScaleResidualVQ`).

    ``scales``: sides of the square token maps, coarse to fine, strictly increasing; the last one is
    the latent's side (the codec's ``resolution / downsample_factor``). ``phi_count``: how many Phi
    convolutions the scales share (VAR's ``share_quant_resi``: 4 in the published model; VAR's 0,
    "one per scale", is ``phi_count=len(scales)``). ``quant_resi``: the Phi mixing ratio ``r`` in
    ``(1 - r) h + r conv(h)`` (0: no Phi convolutions at all). ``beta``: weight of the commitment term.
    ``l2_normalize``: search by cosine similarity (VAR's ``using_znorm``; off in the published model).
    """

    architecture_fields = ("codebook_size", "scales", "phi_count", "quant_resi")

    codebook_size: PositiveInt = 4096
    scales: Annotated[tuple[PositiveInt, ...], MinLength(1)] = VAR_SCALES
    phi_count: PositiveInt = 4
    quant_resi: Annotated[float, Range(0.0, 1.0)] = 0.5
    beta: NonNegativeFloat = 0.25
    l2_normalize: bool = False
    kind: Literal["multiscale"] = "multiscale"

    def __post_init__(self) -> None:
        super().__post_init__()
        if any(b <= a for a, b in zip(self.scales, self.scales[1:])):
            raise ValueError(f"scales must be strictly increasing (coarse to fine), got {list(self.scales)}")

    def build(self, dim: int) -> MultiScaleResidualVQ:
        return MultiScaleResidualVQ(dim=dim, **self.options())


class Phi(nn.Module):
    """VAR's residual convolution on an upsampled code map: ``(1 - ratio) h + ratio conv3x3(h)``.
    In and out ``[B, dim, H, W]``; state-dict keys ``weight`` / ``bias`` (a plain ``Conv2d``'s)."""

    def __init__(self, dim: int, ratio: float) -> None:
        super().__init__()
        self.ratio = ratio
        self.weight = nn.Parameter(torch.empty(dim, dim, 3, 3))
        self.bias = nn.Parameter(torch.empty(dim))
        conv = nn.Conv2d(dim, dim, kernel_size=3, padding=1)  # PyTorch's default initialisation
        self.weight.data.copy_(conv.weight.data)
        self.bias.data.copy_(conv.bias.data)

    def forward(self, h: Tensor) -> Tensor:
        return h * (1.0 - self.ratio) + F.conv2d(h, self.weight, self.bias, padding=1) * self.ratio


def phi_for_scales(phi_count: int, scale_count: int) -> list[int]:
    """Which of ``phi_count`` Phi convolutions each of ``scale_count`` scales uses, as VAR picks it:
    scale ``k`` sits at ``k / (scale_count - 1)`` in ``[0, 1]`` and takes the nearest of
    ``phi_count`` evenly spread ticks (``linspace(1/(3K), 1 - 1/(3K), K)`` for ``K = 4``, else
    ``linspace(1/(2K), 1 - 1/(2K), K)``), the first on a tie. Computed in float64 with numpy, as VAR
    does, so that rounding breaks the ties VAR's published model breaks (scale 3 of 10 takes Phi 1)."""
    k = phi_count
    margin = 1 / 3 / k if k == 4 else 1 / 2 / k
    ticks = np.linspace(margin, 1 - margin, k)
    return [int(np.argmin(np.abs(ticks - s / max(scale_count - 1, 1)))) for s in range(scale_count)]


class MultiScaleResidualVQ(Quantizer):
    """VAR's multi-scale residual quantizer over a latent ``[B, dim, S, S]``, ``S = scales[-1]``.

    For each scale ``s`` (coarse to fine) the residual ``r = z - f_hat`` is area-downsampled to
    ``s x s``, each position takes its nearest code (squared L2, float32; cosine similarity with
    ``l2_normalize``), the code map is upsampled back to ``S x S`` (bicubic; not at the last scale)
    and passed through its Phi convolution (:func:`phi_for_scales`), and the result ``h_s`` is added
    to ``f_hat``. So ``f_hat = sum_s Phi_s(up(e[idx_s]))``.

    Output :class:`QuantizerOutput`: ``z_q`` = ``f_hat`` with a straight-through gradient to ``z``, in
    ``z``'s dtype; ``indices`` ``[B, L]``, the token maps flattened row-major and concatenated coarse
    to fine (``L = sum(s * s)``, VAR's training order; :meth:`split_scales` gives the per-scale maps);
    ``loss = mean_s [beta * mse(sg[f_hat_s], z) + mse(f_hat_s, sg[z])]`` over the running sums
    ``f_hat_s`` (VAR's training loss: commitment plus the codebook / Phi term); perplexity and usage
    of all scales' codes together.

    State-dict keys: ``embedding.weight`` ``[codebook_size, dim]`` and ``quant_resi.{k}.weight`` /
    ``.bias`` (``[dim, dim, 3, 3]`` / ``[dim]``) for the ``phi_count`` Phi convolutions (none when
    ``quant_resi == 0``).
    """

    sequence_inputs = False  # its inputs are one square map, its ids one flat list of scales

    def __init__(
        self,
        codebook_size: int,
        dim: int,
        scales: tuple[int, ...] = VAR_SCALES,
        phi_count: int = 4,
        quant_resi: float = 0.5,
        beta: float = 0.25,
        l2_normalize: bool = False,
        chunk_size: int = DEFAULT_CHUNK_SIZE,
    ) -> None:
        super().__init__()
        config = MultiScaleConfig(  # checks every field (ConfigError naming a bad one)
            codebook_size=codebook_size, scales=tuple(scales), phi_count=phi_count, quant_resi=quant_resi,
            beta=beta, l2_normalize=l2_normalize,
        )
        self.codebook_size = config.codebook_size
        self.dim = self.check_positive_int(dim, "dim")
        self.chunk_size = self.check_positive_int(chunk_size, "chunk_size")
        self.scales = config.scales
        self.beta = config.beta
        self.l2_normalize = config.l2_normalize
        self.embedding = nn.Embedding(codebook_size, dim)
        nn.init.uniform_(self.embedding.weight, -1.0 / codebook_size, 1.0 / codebook_size)
        if config.quant_resi > 0:
            self.quant_resi = nn.ModuleList(Phi(dim, config.quant_resi) for _ in range(config.phi_count))
            self.phi_index = phi_for_scales(config.phi_count, len(self.scales))
        else:
            self.quant_resi = nn.ModuleList()
            self.phi_index = []

    # ------------------------------------------------------------------ layout

    @property
    def side(self) -> int:
        """``S``, the side of the latent this quantizer takes (its last scale)."""
        return self.scales[-1]

    @property
    def token_count(self) -> int:
        """``L``: tokens of one image, all scales together."""
        return sum(s * s for s in self.scales)

    def indices_shape(self, height: int, width: int) -> tuple[int, ...]:
        if (height, width) != (self.side, self.side):
            raise ValueError(
                f"{type(self).__name__} quantizes a {self.side}x{self.side} latent (its last scale, scales="
                f"{list(self.scales)}), got {height}x{width}: encode images of side {self.side} x the "
                "downsample factor"
            )
        return (self.token_count,)

    def split_scales(self, indices: Tensor) -> list[Tensor]:
        """``[B, L]`` (coarse to fine, flattened) -> one ``[B, s, s]`` map per scale, coarse to fine."""
        self.check_indices(indices, 2, f"[B, {self.token_count}]")
        if indices.shape[1] != self.token_count:
            raise ValueError(
                f"{type(self).__name__} expects {self.token_count} tokens per image (scales {list(self.scales)}), "
                f"got {indices.shape[1]}"
            )
        parts = indices.split([s * s for s in self.scales], dim=1)
        return [part.reshape(-1, s, s) for part, s in zip(parts, self.scales)]

    def join_scales(self, maps: list[Tensor] | tuple[Tensor, ...]) -> Tensor:
        """One ``[B, s, s]`` (or VAR's ``[B, s * s]``) map per scale, coarse to fine -> ``[B, L]``;
        ``ValueError`` naming the scale whose map has the wrong shape."""
        if not isinstance(maps, (list, tuple)) or len(maps) != len(self.scales):
            got = len(maps) if isinstance(maps, (list, tuple)) else type(maps).__name__
            raise ValueError(
                f"{type(self).__name__} expects a list of {len(self.scales)} token maps (scales "
                f"{list(self.scales)}, coarse to fine), got {got}"
            )
        batch = maps[0].shape[0] if isinstance(maps[0], Tensor) and maps[0].ndim else None
        flat = []
        for k, (m, s) in enumerate(zip(maps, self.scales)):
            ok = isinstance(m, Tensor) and not m.is_floating_point() and m.shape[0] == batch
            ok = ok and tuple(m.shape[1:]) in ((s, s), (s * s,))
            if not ok:
                got = f"{m.dtype} tensor of shape {tuple(m.shape)}" if isinstance(m, Tensor) else type(m).__name__
                raise ValueError(f"token map {k} (scale {s}) must be an integer tensor [B, {s}, {s}], got {got}")
            flat.append(m.reshape(batch, s * s))
        return torch.cat(flat, dim=1)

    # ------------------------------------------------------------------ maths

    def phi(self, scale: int, h: Tensor) -> Tensor:
        """The Phi convolution of scale number ``scale`` applied to ``h`` (identity without any)."""
        return self.quant_resi[self.phi_index[scale]](h) if len(self.quant_resi) else h

    def upsample(self, scale: int, code_map: Tensor) -> Tensor:
        """Code map ``[B, dim, s, s]`` of scale number ``scale`` -> ``Phi(bicubic to S x S)``."""
        if scale != len(self.scales) - 1:
            code_map = F.interpolate(code_map, size=(self.side, self.side), mode="bicubic")
        return self.phi(scale, code_map)

    def search(self, rest: Tensor) -> Tensor:
        """Nearest code ids ``[N]`` of the rows of ``rest`` ``[N, dim]`` (float32)."""
        codebook = self.embedding.weight.detach().float()
        if self.l2_normalize:
            return (F.normalize(rest.float(), dim=1) @ F.normalize(codebook, dim=1).t()).argmax(dim=1)
        return nearest_code(rest, codebook, self.chunk_size)

    def forward(self, z: Tensor) -> QuantizerOutput:
        self.check_latent(z)
        self.indices_shape(z.shape[-2], z.shape[-1])
        b = z.shape[0]
        x = z.float()
        target = x.detach()
        rest = target.clone()
        f_hat = torch.zeros_like(target)
        codes, terms = [], []
        for k, s in enumerate(self.scales):
            down = F.interpolate(rest, size=(s, s), mode="area") if k != len(self.scales) - 1 else rest
            idx = self.search(down.permute(0, 2, 3, 1).reshape(-1, self.dim).detach())
            code_map = self.embedding(idx.view(b, s, s)).permute(0, 3, 1, 2).float()
            h = self.upsample(k, code_map)
            f_hat = f_hat + h
            rest = rest - h.detach()
            terms.append(self.beta * F.mse_loss(f_hat.detach(), x) + F.mse_loss(f_hat, target))
            codes.append(idx.view(b, s * s))
        indices = torch.cat(codes, dim=1)
        loss = torch.stack(terms).mean()
        z_q = (x + (f_hat - x).detach()).to(z.dtype)
        perplexity, usage = code_statistics(indices, self.codebook_size)
        return QuantizerOutput(z_q=z_q, indices=indices, loss=loss, perplexity=perplexity, usage=usage)

    @torch.no_grad()
    def indices(self, z: Tensor) -> Tensor:
        """Only the token ids ``[B, L]`` of ``z`` (no losses, no statistics)."""
        self.check_latent(z)
        self.indices_shape(z.shape[-2], z.shape[-1])
        b = z.shape[0]
        rest = z.float().clone()
        codes = []
        for k, s in enumerate(self.scales):
            down = F.interpolate(rest, size=(s, s), mode="area") if k != len(self.scales) - 1 else rest
            idx = self.search(down.permute(0, 2, 3, 1).reshape(-1, self.dim))
            rest -= self.upsample(k, self.embedding(idx.view(b, s, s)).permute(0, 3, 1, 2).float())
            codes.append(idx.view(b, s * s))
        return torch.cat(codes, dim=1)

    def embed_scales(self, maps: list[Tensor]) -> list[Tensor]:
        """The running sums ``f_hat_1 .. f_hat_K`` (each ``[B, dim, S, S]``) of the per-scale token maps
        ``maps`` (one ``[B, s, s]`` per scale, coarse to fine; fewer than all scales allowed): the
        latents VAR decodes to show an image coarse to fine."""
        f_hat, out = None, []
        for k, m in enumerate(maps):
            h = self.upsample(k, self.embedding(m.long()).permute(0, 3, 1, 2).float())
            f_hat = h if f_hat is None else f_hat + h
            out.append(f_hat)
        return out

    def embed(self, indices: Tensor) -> Tensor:
        """``indices`` ``[B, L]`` (coarse to fine, flattened) -> ``f_hat`` ``[B, dim, S, S]``."""
        return self.embed_scales(self.split_scales(indices))[-1]
