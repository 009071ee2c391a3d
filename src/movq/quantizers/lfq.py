"""Lookup-free quantization (Yu et al. 2023, MAGVIT-v2): every channel becomes one bit."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import Tensor

from movq.strict import NonNegativeFloat, PositiveInt

from .base import Quantizer, QuantizerConfigBase, QuantizerOutput
from .codes import LOG_EPS, code_statistics


@dataclass
class LFQConfig(QuantizerConfigBase):
    """Lookup-free quantization (:class:`LFQ`); ``codebook_size == 2 ** (dim // num_codebooks)``.
    ``bit_order`` says which channel of each codebook's part is its token id's most significant bit:
    ``"msb_first"`` (its first channel, movq's and vector-quantize-pytorch's order) or
    ``"lsb_first"`` (its first channel is bit 0: Open-MAGVIT2's order)."""

    architecture_fields = ("num_codebooks",)

    entropy_weight: NonNegativeFloat = 0.1
    commitment_weight: NonNegativeFloat = 0.25
    num_codebooks: PositiveInt = 1
    spherical: bool = False
    bit_order: Literal["msb_first", "lsb_first"] = "msb_first"
    kind: Literal["lfq"] = "lfq"

    def build(self, dim: int) -> LFQ:
        return LFQ(dim=dim, **self.options())

    def codebook_size_for(self, dim: int) -> int:
        return 2 ** (dim // self.num_codebooks)


def _binary_entropy(p: Tensor) -> Tensor:
    """Entropy (nats) of Bernoulli(``p``), elementwise."""
    return -(p * torch.log(p.clamp(min=LOG_EPS)) + (1 - p) * torch.log((1 - p).clamp(min=LOG_EPS)))


class LFQ(Quantizer):
    """Sign quantization: channel ``i`` of ``z`` becomes ``+1`` if ``z_i > 0`` else ``-1``.

    Give ``dim`` or ``codebook_size`` (``codebook_size == 2 ** (dim // num_codebooks)``), or both if
    they agree. Input: ``z`` ``[B, dim, H, W]`` (or a sequence ``[B, N, dim]``). Output
    :class:`QuantizerOutput`: ``z_q`` ``[B, dim, H, W]`` with values in ``{-scale, +scale}``, in ``z``'s
    dtype (straight-through), indices ``[B, H, W]`` in ``[0, codebook_size)`` whose bit
    ``bits - 1 - i`` is 1 where channel ``i`` is positive (channel 0 is the most significant bit); with
    ``bit_order="lsb_first"`` bit ``i`` is channel ``i`` (Open-MAGVIT2's ids). With several codebooks
    the order applies to each codebook's ``bits`` channels and its own id.

    ``loss = entropy_weight * (H_sample - H_codebook) + commitment_weight * mean((x - sg[q])^2)``.
    The code distribution of a position is ``softmax(2 * inv_temperature * <x, c>)`` over all codes
    ``c``; it factorises over channels into Bernoulli(``sigmoid(4 * inv_temperature * a * x_i)``) for
    codes ``+-a``, so ``H_sample`` (mean per-position entropy) is exact and costs ``O(dim)``, not
    ``O(2 ** dim)``. The batch (codebook) entropy is the sum of the entropies of the batch-averaged bit
    marginals, an upper bound of the entropy of the averaged code distribution that is exact when
    bits are independent (and for one bit per codebook). No parameters.

    - ``num_codebooks`` (vector-quantize-pytorch's ``num_codebooks``): the channels are
      ``num_codebooks`` contiguous groups, each its own code of ``dim // num_codebooks`` bits; indices
      are then ``[B, num_codebooks, H, W]`` and both entropies are averaged over the codebooks.
    - ``spherical`` (BSQ, Zhao et al. 2024, "Image and Video Tokenization with Binary Spherical
      Quantization"; vector-quantize-pytorch's ``spherical=True``): each codebook's part ``x`` of the
      latent is L2-normalised (times ``scale``) and the codes are ``+-scale / sqrt(bits)``, on the same
      sphere; the loss and the gradient act on the normalised ``x``.
    - ``scale`` (vector-quantize-pytorch's ``codebook_scale``; residual LFQ halves it per level): the
      codes are ``+-scale`` (``+-scale / sqrt(bits)`` when spherical).
    """

    def __init__(
        self,
        codebook_size: int | None = None,
        dim: int | None = None,
        entropy_weight: float = 0.1,
        commitment_weight: float = 0.25,
        inv_temperature: float = 100.0,
        num_codebooks: int = 1,
        spherical: bool = False,
        scale: float = 1.0,
        bit_order: str = "msb_first",
    ) -> None:
        super().__init__()
        config = LFQConfig(  # checks them
            entropy_weight=entropy_weight, commitment_weight=commitment_weight, num_codebooks=num_codebooks,
            spherical=spherical, bit_order=bit_order,  # type: ignore[arg-type]
        )
        books = config.num_codebooks
        if dim is None and codebook_size is None:
            raise ValueError("LFQ needs dim or codebook_size (a power of two, codebook_size == 2 ** dim)")
        if codebook_size is not None:
            is_int = isinstance(codebook_size, int) and not isinstance(codebook_size, bool)
            if not is_int or codebook_size < 2 or codebook_size & (codebook_size - 1):
                raise ValueError(f"codebook_size must be a power of two >= 2, got {codebook_size!r}")
            bits = codebook_size.bit_length() - 1
            if dim is not None and dim != bits * books:
                raise ValueError(
                    f"LFQ needs codebook_size == 2 ** dim (per codebook: dim == num_codebooks * bits); got "
                    f"codebook_size={codebook_size}, dim={dim}, num_codebooks={books}"
                )
            dim = bits * books
        if isinstance(dim, bool) or not isinstance(dim, int) or dim % books or not 1 <= dim // books <= 62:
            raise ValueError(
                f"dim must be an int, num_codebooks ({books}) times the bits per code in [1, 62], got {dim!r}"
            )
        if not inv_temperature > 0:
            raise ValueError(f"inv_temperature must be > 0, got {inv_temperature}")
        if not scale > 0:
            raise ValueError(f"scale must be > 0, got {scale}")
        self.dim = dim
        self.num_codebooks = books
        self.bits = dim // books
        self.codebook_size = 2**self.bits
        self.entropy_weight = config.entropy_weight
        self.commitment_weight = config.commitment_weight
        self.spherical = config.spherical
        self.inv_temperature = float(inv_temperature)
        self.scale = float(scale)
        self.code_value = self.scale / math.sqrt(self.bits) if self.spherical else self.scale
        """Magnitude of every channel of a code."""
        self.bit_order = config.bit_order
        powers = 2 ** torch.arange(self.bits, dtype=torch.long)  # lsb_first: channel i of a codebook is bit i
        self.register_buffer("_bits", powers.flip(0) if config.bit_order == "msb_first" else powers, persistent=False)

    def indices_shape(self, height: int, width: int) -> tuple[int, ...]:
        return (height, width) if self.num_codebooks == 1 else (self.num_codebooks, height, width)

    def _layout(self, indices: Tensor) -> Tensor:
        """``[B, H, W, num_codebooks]`` -> the layout of :meth:`indices_shape`."""
        return indices[..., 0] if self.num_codebooks == 1 else rearrange(indices, "b h w c -> b c h w")

    def forward(self, z: Tensor) -> QuantizerOutput:
        self.check_latent(z)
        x = rearrange(z, "b (c d) h w -> b h w c d", c=self.num_codebooks)
        if self.spherical:
            x = F.normalize(x, dim=-1) * self.scale
        xf = x.float()
        q = torch.where(xf > 0, self.code_value, -self.code_value)
        indices = self._layout(((xf > 0).long() * self._bits).sum(dim=-1))

        loss = self.commitment_weight * F.mse_loss(xf, q)
        if self.entropy_weight > 0:
            p = torch.sigmoid(4 * self.inv_temperature * self.code_value * xf).flatten(0, 2)  # [positions, C, bits]
            sample_entropy = _binary_entropy(p).sum(dim=-1).mean()
            codebook_entropy = _binary_entropy(p.mean(dim=0)).sum(dim=-1).mean()
            loss = loss + self.entropy_weight * (sample_entropy - codebook_entropy)

        z_q = x + (q.to(x.dtype) - x).detach()
        z_q = rearrange(z_q, "b h w c d -> b (c d) h w")
        perplexity, usage = code_statistics(indices, self.codebook_size)
        return QuantizerOutput(z_q=z_q, indices=indices, loss=loss, perplexity=perplexity, usage=usage)

    def codes_to_indices(self, codes: Tensor) -> Tensor:
        """Inverse of :meth:`embed`: codes ``[B, dim, H, W]`` (only the sign counts) -> indices
        (layout of ``indices_shape``)."""
        self.check_latent(codes)
        x = rearrange(codes, "b (c d) h w -> b h w c d", c=self.num_codebooks)
        return self._layout(((x > 0).long() * self._bits).sum(dim=-1))

    def embed(self, indices: Tensor) -> Tensor:
        """``indices`` ``[B, H, W]`` (``[B, num_codebooks, H, W]``) -> codes ``[B, dim, H, W]`` (float32)."""
        indices = self.per_codebook_indices(indices, self.num_codebooks)
        bits = (indices.long().unsqueeze(-1) & self._bits) != 0
        return rearrange(torch.where(bits, self.code_value, -self.code_value), "b c h w d -> b (c d) h w")
