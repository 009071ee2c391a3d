"""SimVQ (Zhu et al. 2024, "Addressing Representation Collapse in Vector Quantized Models with One
Linear Layer", youngsheen/SimVQ ``taming/modules/vqvae/quantize.py``).

The codebook ``C`` is frozen at its random initialisation; a trainable linear layer ``W`` maps it
into the latent space and every position takes the nearest row of ``W(C)``. Training moves the
whole codebook through ``W`` at once, so no code is left behind (the paper's 100% usage).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from einops import rearrange
from torch import Tensor, nn

from movq.strict import NonNegativeFloat, PositiveInt

from .base import Quantizer, QuantizerConfigBase, QuantizerOutput
from .codes import DEFAULT_CHUNK_SIZE
from .projected import nearest_projected_code, quantize_to_projected_codes


@dataclass
class SimVQConfig(QuantizerConfigBase):
    """SimVQ (:class:`SimVQ`); defaults are SimVQ's published ImageNet config
    (``configs/imagenet_simvq_128_B.yaml``: 1024 codes, ``beta`` 0.25, ``legacy: false``).
    ``projection_bias``: whether the linear map has a bias (SimVQ's ``embedding_proj`` has one;
    vector-quantize-pytorch's default ``code_transform`` has none)."""

    architecture_fields = ("codebook_size", "projection_bias")
    codebook_size: PositiveInt = 1024
    beta: NonNegativeFloat = 0.25
    projection_bias: bool = True
    kind: Literal["simvq"] = "simvq"

    def build(self, dim: int) -> SimVQ:
        return SimVQ(dim=dim, **self.options())


class SimVQ(Quantizer):
    """A frozen codebook ``embedding.weight`` ``[codebook_size, dim]`` (``N(0, 1 / dim)``, never
    trained) and a trainable ``embedding_proj`` (``nn.Linear(dim, dim)``); every position takes the
    nearest row of ``E = embedding_proj(embedding.weight)`` (squared L2, float32, in chunks:
    :func:`~movq.quantizers.nearest_code`).

    Input ``z`` ``[B, dim, H, W]``, any float dtype. Output :class:`QuantizerOutput` with ``z_q``
    ``[B, dim, H, W]`` in ``z``'s dtype (straight-through ``z + sg[q - z]``, ``q`` the chosen rows of
    ``E``), indices ``[B, H, W]``. ``loss = beta * mean((sg[q] - z)^2) + mean((q - sg[z])^2)``
    (SimVQ's ``legacy=False``, as published): the second term trains the projection.
    :meth:`embed` returns the projected codes, what :meth:`forward` hands the decoder (SimVQ's own
    ``get_codebook_entry`` returns the unprojected rows). State-dict keys are SimVQ's:
    ``embedding.weight``, ``embedding_proj.weight``, ``embedding_proj.bias``.
    """

    def __init__(
        self,
        codebook_size: int,
        dim: int,
        beta: float = 0.25,
        projection_bias: bool = True,
        chunk_size: int = DEFAULT_CHUNK_SIZE,
    ) -> None:
        super().__init__()
        config = SimVQConfig(codebook_size=codebook_size, beta=beta, projection_bias=projection_bias)  # checks them
        self.codebook_size = config.codebook_size
        self.dim = self.check_positive_int(dim, "dim")
        self.chunk_size = self.check_positive_int(chunk_size, "chunk_size")
        self.beta = config.beta
        self.embedding = nn.Embedding(config.codebook_size, dim)
        nn.init.normal_(self.embedding.weight, mean=0.0, std=dim**-0.5)  # SimVQ's initialisation
        self.embedding.weight.requires_grad_(False)  # frozen: only the projection learns
        self.embedding_proj = nn.Linear(dim, dim, bias=config.projection_bias)

    def projected_codebook(self) -> Tensor:
        """``embedding_proj(embedding.weight)``: the codes in the latent space, ``[codebook_size, dim]``."""
        return self.embedding_proj(self.embedding.weight.to(self.embedding_proj.weight.dtype))

    def indices(self, z: Tensor) -> Tensor:
        """Token ids ``[B, H, W]`` of ``z`` ``[B, dim, H, W]``, without the losses."""
        self.check_latent(z)
        return nearest_projected_code(z, self.projected_codebook, self.chunk_size)

    def forward(self, z: Tensor) -> QuantizerOutput:
        self.check_latent(z)
        return quantize_to_projected_codes(z, self.projected_codebook(), self.chunk_size, self.codebook_size,
                                           commitment_weight=self.beta, codebook_weight=1.0)

    def embed(self, indices: Tensor) -> Tensor:
        """``indices`` ``[B, H, W]`` -> the projected codes ``[B, dim, H, W]`` (only the rows used are projected)."""
        self.check_indices(indices, 3, "[B, H, W]")
        rows = self.embedding.weight[indices.long()].to(self.embedding_proj.weight.dtype)
        return rearrange(self.embedding_proj(rows), "b h w d -> b d h w")
