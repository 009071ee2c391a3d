"""Gumbel-softmax quantizer (taming-transformers ``GumbelQuantize``), deterministic in eval mode."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import Tensor, nn

from movq.strict import NonNegativeFloat, PositiveFloat, PositiveInt

from .base import Quantizer, QuantizerConfigBase, QuantizerOutput
from .codes import LOG_EPS, code_statistics


@dataclass
class GumbelConfig(QuantizerConfigBase):
    """Gumbel-softmax quantizer (:class:`GumbelQuantizer`)."""

    codebook_size: PositiveInt = 8192
    temperature: PositiveFloat = 1.0
    kl_weight: NonNegativeFloat = 5e-4
    hard: bool = True
    kind: Literal["gumbel"] = "gumbel"

    def build(self, dim: int) -> GumbelQuantizer:
        return GumbelQuantizer(dim=dim, in_channels=dim, **self.options())


class GumbelQuantizer(Quantizer):
    """Predicts a distribution over ``codebook_size`` codes per position and mixes the codebook.

    Input: ``z`` ``[B, in_channels, H, W]`` (``in_channels`` defaults to ``dim``). A 1x1 conv ``proj``
    gives logits ``[B, codebook_size, H, W]``.

    - Training: ``F.gumbel_softmax(logits, tau=temperature, hard=hard, dim=1)`` weights the codebook
      (``hard=True``: one-hot forward pass, soft straight-through gradients).
    - Eval: deterministic one-hot of ``argmax(logits)``, no noise (taming adds noise here; we don't).

    Output :class:`QuantizerOutput`: ``z_q`` ``[B, dim, H, W]`` in ``z``'s dtype, indices ``[B, H, W]``
    = argmax of the one-hot actually used (the sampled code in training, ``argmax(logits)`` in eval),
    ``loss = kl_weight * KL(softmax(logits) || uniform)`` averaged over positions.
    ``temperature`` is a plain attribute, so it can be annealed during training.
    State-dict keys (taming ``GumbelQuantize``): ``proj.weight``, ``proj.bias``, ``embed.weight``.
    The codebook submodule is registered as ``embed`` but read through :attr:`codebook`, because
    ``embed`` is the method of the quantizer contract.
    """

    def __init__(
        self,
        codebook_size: int,
        dim: int,
        in_channels: int | None = None,
        temperature: float = 1.0,
        kl_weight: float = 5e-4,
        hard: bool = True,
    ) -> None:
        super().__init__()
        config = GumbelConfig(  # checks every field (ConfigError naming a bad one)
            codebook_size=codebook_size, temperature=temperature, kl_weight=kl_weight, hard=hard
        )
        self.codebook_size = config.codebook_size
        self.dim = self.check_positive_int(dim, "dim")
        self.in_channels = self.check_positive_int(in_channels if in_channels is not None else dim, "in_channels")
        self.temperature = config.temperature
        self.kl_weight = config.kl_weight
        self.hard = config.hard
        self.proj = nn.Conv2d(self.in_channels, codebook_size, kernel_size=1)
        # Registered under the name "embed" for taming's state-dict keys; the method ``embed``
        # (the Quantizer contract) shadows the attribute, so the module is reached via ``codebook``.
        self._modules["embed"] = nn.Embedding(codebook_size, dim)

    @property
    def codebook(self) -> nn.Embedding:
        """The codebook module (state-dict prefix ``embed.``), ``weight`` ``[codebook_size, dim]``."""
        return self._modules["embed"]

    @property
    def temperature(self) -> float:
        return self._temperature

    @temperature.setter
    def temperature(self, value: float) -> None:
        if not value > 0:
            raise ValueError(f"temperature must be > 0, got {value}")
        self._temperature = float(value)

    def forward(self, z: Tensor) -> QuantizerOutput:
        self.check_latent(z, self.in_channels)
        logits = self.proj(z).float()
        if self.training:
            one_hot = F.gumbel_softmax(logits, tau=self.temperature, hard=self.hard, dim=1)
        else:
            one_hot = F.one_hot(logits.argmax(dim=1), self.codebook_size).float()
            one_hot = rearrange(one_hot, "b h w n -> b n h w")
        weight = self.codebook.weight
        z_q = torch.einsum("bnhw,nd->bdhw", one_hot.to(weight.dtype), weight).to(z.dtype)

        probs = F.softmax(logits, dim=1)
        kl = (probs * torch.log(probs * self.codebook_size + LOG_EPS)).sum(dim=1).mean()
        indices = one_hot.argmax(dim=1)
        perplexity, usage = code_statistics(indices, self.codebook_size)
        loss = self.kl_weight * kl
        return QuantizerOutput(z_q=z_q, indices=indices, loss=loss, perplexity=perplexity, usage=usage)

    def embed(self, indices: Tensor) -> Tensor:
        """``indices`` ``[B, H, W]`` -> ``z_q`` ``[B, dim, H, W]`` (codebook rows)."""
        self.check_indices(indices, 3, "[B, H, W]")
        return rearrange(F.embedding(indices.long(), self.codebook.weight), "b h w d -> b d h w")
