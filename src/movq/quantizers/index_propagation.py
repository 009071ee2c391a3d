"""Index backpropagation quantization (IBQ, Shi et al. 2024, TencentARC/SEED-Voken ``src/IBQ``).

The code of a position is the one with the largest dot product with the latent, ``argmax(z . e)``
(not the nearest one), and training passes the gradient through the whole categorical
distribution ``softmax(z . E)``, so every code moves at every step and the codebook does not
collapse even with 262144 codes.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import Tensor, nn

from movq.strict import NonNegativeFloat, PositiveFloat, PositiveInt

from .base import Quantizer, QuantizerConfigBase, QuantizerOutput
from .codes import DEFAULT_CHUNK_SIZE, SCORE_ELEMENTS, code_statistics

ENTROPY_EPS = 1e-5
"""IBQ's ``eps`` inside its entropy loss (added to the logits of ``log_softmax`` and under the log of the batch average)."""


@dataclass
class IBQConfig(QuantizerConfigBase):
    """Index backpropagation quantizer (:class:`IndexPropagationQuantizer`); defaults are IBQ's
    published training settings (``beta`` 0.25, entropy loss weight 0.05 at temperature 0.01)."""

    codebook_size: PositiveInt = 16384
    beta: NonNegativeFloat = 0.25
    entropy_weight: NonNegativeFloat = 0.05
    entropy_temperature: PositiveFloat = 0.01
    sample_entropy_weight: NonNegativeFloat = 1.0
    batch_entropy_weight: NonNegativeFloat = 1.0
    kind: Literal["ibq"] = "ibq"

    def build(self, dim: int) -> IndexPropagationQuantizer:
        return IndexPropagationQuantizer(dim=dim, **self.options())


def dot_product_code(z: Tensor, codebook: Tensor, chunk_size: int = DEFAULT_CHUNK_SIZE) -> Tensor:
    """Index of the codebook row with the largest dot product for every row of ``z``.

    ``z`` ``[N, D]``, ``codebook`` ``[K, D]``; returns ``LongTensor [N]``. In float32, in chunks of at
    most ``chunk_size`` rows and ``SCORE_ELEMENTS`` scores (memory ``O(min(chunk_size x K, SCORE_ELEMENTS))``).
    """
    z, codebook_t = z.float(), codebook.float().t()
    rows = max(1, min(chunk_size, SCORE_ELEMENTS // max(1, codebook.shape[0])))
    return torch.cat([(z[start:start + rows] @ codebook_t).argmax(dim=1) for start in range(0, z.shape[0], rows)])


def entropy_loss(logits: Tensor, temperature: float, sample_weight: float, batch_weight: float) -> Tensor:
    """IBQ's (MAGVIT-v2's) entropy loss of ``logits`` ``[N, K]`` (codes on the last axis):
    ``sample_weight * mean_n H(p_n) - batch_weight * H(mean_n p_n)`` with ``p = softmax(logits / temperature)``:
    each position confident, the batch spread over the codebook."""
    scaled = logits.float() / temperature
    probs = F.softmax(scaled, dim=-1)
    log_probs = F.log_softmax(scaled + ENTROPY_EPS, dim=-1)
    average = probs.mean(dim=0)
    batch_entropy = -(average * torch.log(average + ENTROPY_EPS)).sum()
    sample_entropy = -(probs * log_probs).sum(dim=-1).mean()
    return sample_weight * sample_entropy - batch_weight * batch_entropy


class IndexPropagationQuantizer(Quantizer):
    """Codebook of ``codebook_size`` vectors; every position takes the code of largest dot product.

    Input ``z`` ``[B, dim, H, W]``, any float dtype. Output :class:`QuantizerOutput` with ``z_q``
    ``[B, dim, H, W]`` (in ``z``'s dtype) equal to the chosen codes, indices ``[B, H, W]``.

    Training (``forward``): with ``p = softmax(z . E)`` over the codes and ``h`` the one-hot of the
    argmax, ``z_q = (h - sg[p] + p) E`` (computed as ``h E + (p - sg[p]) E``): its value is the
    chosen code, its gradient flows through ``p`` to ``z`` and to *every* code. ``loss = mean((z_q - z)^2) + mean((sg[h E] - z)^2) +
    beta * mean((h E - sg[z])^2) + entropy_weight * entropy`` (:func:`entropy_loss`), IBQ's quantizer
    loss with its entropy term weighted as in its published training (``quant_loss_weight`` 1).
    The scores are ``B x K x H x W``: memory grows with the codebook. ``indices`` (inference) searches
    in chunks instead. State-dict key: ``embedding.weight`` ``[codebook_size, dim]``.
    """

    def __init__(
        self,
        codebook_size: int,
        dim: int,
        beta: float = 0.25,
        entropy_weight: float = 0.05,
        entropy_temperature: float = 0.01,
        sample_entropy_weight: float = 1.0,
        batch_entropy_weight: float = 1.0,
        chunk_size: int = DEFAULT_CHUNK_SIZE,
    ) -> None:
        super().__init__()
        config = IBQConfig(  # checks every field (ConfigError naming a bad one)
            codebook_size=codebook_size, beta=beta, entropy_weight=entropy_weight,
            entropy_temperature=entropy_temperature, sample_entropy_weight=sample_entropy_weight,
            batch_entropy_weight=batch_entropy_weight,
        )
        self.codebook_size = config.codebook_size
        self.dim = self.check_positive_int(dim, "dim")
        self.chunk_size = self.check_positive_int(chunk_size, "chunk_size")
        self.beta = config.beta
        self.entropy_weight = config.entropy_weight
        self.entropy_temperature = config.entropy_temperature
        self.sample_entropy_weight = config.sample_entropy_weight
        self.batch_entropy_weight = config.batch_entropy_weight
        self.embedding = nn.Embedding(codebook_size, dim)  # IBQ keeps nn.Embedding's N(0, 1) initialisation

    def indices(self, z: Tensor) -> Tensor:
        """Token ids ``[B, H, W]`` of ``z`` ``[B, dim, H, W]``, without the losses (chunked search)."""
        self.check_latent(z)
        b, _, h, w = z.shape
        flat = rearrange(z, "b d h w -> (b h w) d")
        found = dot_product_code(flat.detach(), self.embedding.weight.detach(), self.chunk_size)
        return rearrange(found, "(b h w) -> b h w", b=b, h=h, w=w)

    def forward(self, z: Tensor) -> QuantizerOutput:
        self.check_latent(z)
        x = rearrange(z, "b d h w -> b h w d").float()
        codebook = self.embedding.weight.float()
        logits = x @ codebook.t()  # [B, H, W, K]
        soft = F.softmax(logits, dim=-1)
        indices = logits.argmax(dim=-1)
        q_hard = F.embedding(indices, codebook)
        # (onehot - sg[p] + p) E without the one-hot: the chosen code in value, gradient through p
        q_soft = q_hard + (soft - soft.detach()) @ codebook
        loss = (
            F.mse_loss(q_soft, x)
            + F.mse_loss(x, q_hard.detach())
            + self.beta * F.mse_loss(q_hard, x.detach())
        )
        if self.entropy_weight > 0:
            loss = loss + self.entropy_weight * entropy_loss(
                logits.reshape(-1, self.codebook_size), self.entropy_temperature,
                self.sample_entropy_weight, self.batch_entropy_weight,
            )
        z_q = rearrange(q_soft, "b h w d -> b d h w").to(z.dtype)
        perplexity, usage = code_statistics(indices, self.codebook_size)
        return QuantizerOutput(z_q=z_q, indices=indices, loss=loss, perplexity=perplexity, usage=usage)

    def embed(self, indices: Tensor) -> Tensor:
        """``indices`` ``[B, H, W]`` -> the codes ``[B, dim, H, W]``."""
        self.check_indices(indices, 3, "[B, H, W]")
        return rearrange(self.embedding(indices.long()), "b h w d -> b d h w")
