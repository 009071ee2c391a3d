"""Lookup-free quantization (Yu et al. 2023, MAGVIT-v2): every channel becomes one bit."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import Tensor

from movq.strict import NonNegativeFloat

from .base import Quantizer, QuantizerConfigBase, QuantizerOutput
from .codes import LOG_EPS, code_statistics


@dataclass
class LFQConfig(QuantizerConfigBase):
    """Lookup-free quantization (:class:`LFQ`); ``codebook_size == 2 ** dim``. ``bit_order`` says
    which channel is the token id's most significant bit: ``"msb_first"`` (channel 0, movq's and
    vector-quantize-pytorch's order) or ``"lsb_first"`` (channel 0 is bit 0: Open-MAGVIT2's order)."""

    architecture_fields = ()

    entropy_weight: NonNegativeFloat = 0.1
    commitment_weight: NonNegativeFloat = 0.25
    bit_order: Literal["msb_first", "lsb_first"] = "msb_first"
    kind: Literal["lfq"] = "lfq"

    def build(self, dim: int) -> LFQ:
        return LFQ(dim=dim, **self.options())

    def codebook_size_for(self, dim: int) -> int:
        return 2**dim


def _binary_entropy(p: Tensor) -> Tensor:
    """Entropy (nats) of Bernoulli(``p``), elementwise."""
    return -(p * torch.log(p.clamp(min=LOG_EPS)) + (1 - p) * torch.log((1 - p).clamp(min=LOG_EPS)))


class LFQ(Quantizer):
    """Sign quantization: channel ``i`` of ``z`` becomes ``+1`` if ``z_i > 0`` else ``-1``.

    Give ``dim`` or ``codebook_size`` (``codebook_size == 2 ** dim``), or both if they agree.
    Input: ``z`` ``[B, dim, H, W]``. Output :class:`QuantizerOutput`: ``z_q`` ``[B, dim, H, W]`` with
    values in ``{-1, +1}``, in ``z``'s dtype (straight-through), indices ``[B, H, W]`` in
    ``[0, 2 ** dim)`` whose bit ``dim - 1 - i`` is 1 where channel ``i`` is positive (channel 0 is the
    most significant bit); with ``bit_order="lsb_first"`` bit ``i`` is channel ``i`` (Open-MAGVIT2's ids).

    ``loss = entropy_weight * (H_sample - H_codebook) + commitment_weight * mean((z - sg[z_q])^2)``.
    The code distribution of a position is ``softmax(2 * inv_temperature * <z, c>)`` over all codes
    ``c``; it factorises over channels into Bernoulli(``sigmoid(4 * inv_temperature * z_i)``), so
    ``H_sample`` (mean per-position entropy) is exact and costs ``O(dim)``, not ``O(2 ** dim)``. The
    batch (codebook) entropy is the sum of the entropies of the batch-averaged bit marginals, an upper
    bound of the entropy of the averaged code distribution that is exact when bits are independent.
    No parameters.
    """

    def __init__(
        self,
        codebook_size: int | None = None,
        dim: int | None = None,
        entropy_weight: float = 0.1,
        commitment_weight: float = 0.25,
        inv_temperature: float = 100.0,
        bit_order: str = "msb_first",
    ) -> None:
        super().__init__()
        if dim is None and codebook_size is None:
            raise ValueError("LFQ needs dim or codebook_size (a power of two, codebook_size == 2 ** dim)")
        if codebook_size is not None:
            is_int = isinstance(codebook_size, int) and not isinstance(codebook_size, bool)
            if not is_int or codebook_size < 2 or codebook_size & (codebook_size - 1):
                raise ValueError(f"codebook_size must be a power of two >= 2, got {codebook_size!r}")
            bits = codebook_size.bit_length() - 1
            if dim is not None and dim != bits:
                raise ValueError(
                    f"LFQ needs codebook_size == 2 ** dim; got codebook_size={codebook_size}, dim={dim}"
                )
            dim = bits
        if isinstance(dim, bool) or not isinstance(dim, int) or not 1 <= dim <= 62:
            raise ValueError(f"dim must be an int in [1, 62] (bits per code), got {dim!r}")
        config = LFQConfig(entropy_weight=entropy_weight, commitment_weight=commitment_weight,
                           bit_order=bit_order)  # type: ignore[arg-type]  # checks them
        if not inv_temperature > 0:
            raise ValueError(f"inv_temperature must be > 0, got {inv_temperature}")
        self.dim = dim
        self.codebook_size = 2**dim
        self.entropy_weight = config.entropy_weight
        self.commitment_weight = config.commitment_weight
        self.inv_temperature = float(inv_temperature)
        self.bit_order = config.bit_order
        powers = 2 ** torch.arange(dim, dtype=torch.long)  # lsb_first: channel i is bit i
        bits = powers.flip(0) if config.bit_order == "msb_first" else powers
        self.register_buffer("_bits", bits, persistent=False)

    def forward(self, z: Tensor) -> QuantizerOutput:
        self.check_latent(z)
        x = rearrange(z, "b d h w -> (b h w) d").float()
        q = torch.where(x > 0, 1.0, -1.0)
        indices = ((x > 0).long() * self._bits).sum(dim=-1)

        loss = self.commitment_weight * F.mse_loss(x, q)
        if self.entropy_weight > 0:
            p = torch.sigmoid(4 * self.inv_temperature * x)
            sample_entropy = _binary_entropy(p).sum(dim=-1).mean()
            codebook_entropy = _binary_entropy(p.mean(dim=0)).sum()
            loss = loss + self.entropy_weight * (sample_entropy - codebook_entropy)

        b, _, h, w = z.shape
        q = rearrange(q, "(b h w) d -> b d h w", b=b, h=h, w=w).to(z.dtype)
        z_q = z + (q - z).detach()
        indices = rearrange(indices, "(b h w) -> b h w", b=b, h=h, w=w)
        perplexity, usage = code_statistics(indices, self.codebook_size)
        return QuantizerOutput(z_q=z_q, indices=indices, loss=loss, perplexity=perplexity, usage=usage)

    def codes_to_indices(self, codes: Tensor) -> Tensor:
        """Inverse of :meth:`embed`: codes ``[B, dim, H, W]`` (only the sign counts) -> ``[B, H, W]``."""
        self.check_latent(codes)
        return ((rearrange(codes, "b d h w -> b h w d") > 0).long() * self._bits).sum(dim=-1)

    def embed(self, indices: Tensor) -> Tensor:
        """``indices`` ``[B, H, W]`` -> ``+-1`` codes ``[B, dim, H, W]`` (float32)."""
        self.check_indices(indices, 3, "[B, H, W]")
        bits = (indices.long().unsqueeze(-1) & self._bits) != 0
        return rearrange(torch.where(bits, 1.0, -1.0), "b h w d -> b d h w")

