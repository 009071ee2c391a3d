"""The contract every quantizer in :mod:`movq.quantizers` follows: its config base, its output and its checks."""

from __future__ import annotations

import dataclasses
import functools
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, fields
from typing import Any, ClassVar

import torch
from einops import rearrange
from torch import Tensor, nn

from movq.strict import StrictConfig


@dataclass
class QuantizerOutput:
    """What a quantizer returns.

    - ``z_q``: quantized latent ``[B, D, H, W]`` (``[B, N, D]`` for a sequence input) with gradients to
      the input (straight-through, or the quantizer's estimator, e.g. the rotation trick).
    - ``indices``: ``LongTensor`` in the quantizer's own layout (``indices_shape``), batch first; for a
      sequence input the ``H`` axis is dropped (``[B, N]``, ``[B, depth, N]``, ...).
    - ``loss``: scalar training loss of the quantizer (commitment / codebook / KL), 0 if none.
    - ``perplexity``: scalar, ``exp(entropy)`` of the code histogram of this batch.
    - ``usage``: scalar in ``[0, 1]``, fraction of the codebook used by this batch.
    """

    z_q: Tensor
    indices: Tensor
    loss: Tensor
    perplexity: Tensor
    usage: Tensor


@dataclass
class QuantizerConfigBase(StrictConfig):
    """Base of the quantizer configs: one dataclass per quantizer, defined next to it; the union
    :data:`movq.quantizers.QuantizerConfig` lists them all.

    A subclass's type hints (with ``Annotated`` bounds of :mod:`movq.strict`) say what each field
    accepts, checked on construction; its last field is ``kind: Literal["name"] = "name"``, its name
    in JSON (``{"kind": "name", ...}``). It builds its quantizer with :meth:`build`.
    """

    architecture_fields: ClassVar[tuple[str, ...]] = ("codebook_size",)
    """Fields that set the shapes of the quantizer's tensors (two configs with equal values load each
    other's weights)."""

    def build(self, dim: int) -> Quantizer:
        """The quantizer this config describes, for a latent of ``dim`` channels (``[B, dim, H, W]``)."""
        raise NotImplementedError

    def codebook_size_for(self, dim: int) -> int:
        """``codebook_size`` of ``build(dim)``, without building it."""
        return self.codebook_size  # type: ignore[attr-defined]

    def options(self) -> dict[str, Any]:
        """The fields other than ``kind``, as keyword arguments of the quantizer's constructor."""
        return {f.name: getattr(self, f.name) for f in fields(self) if f.name != "kind"}


def _forward_on_sequences(forward: Callable[..., QuantizerOutput]) -> Callable[..., QuantizerOutput]:
    """``forward`` of a quantizer, also taking a sequence ``[B, N, D]``: quantized as the map
    ``[B, D, 1, N]``, handed back as ``z_q`` ``[B, N, D]`` and indices without the ``H`` axis."""

    @functools.wraps(forward)
    def wrapper(self: Quantizer, z: Tensor, *args: Any, **kwargs: Any) -> QuantizerOutput:
        if not (isinstance(z, Tensor) and z.ndim == 3):
            return forward(self, z, *args, **kwargs)
        out = forward(self, rearrange(z, "b n d -> b d 1 n"), *args, **kwargs)
        return dataclasses.replace(out, z_q=rearrange(out.z_q, "b d 1 n -> b n d"), indices=out.indices[..., 0, :])

    return wrapper


def _indices_on_sequences(indices: Callable[..., Tensor]) -> Callable[..., Tensor]:
    """``indices`` of a quantizer, also taking a sequence ``[B, N, D]`` (ids without the ``H`` axis)."""

    @functools.wraps(indices)
    def wrapper(self: Quantizer, z: Tensor, *args: Any, **kwargs: Any) -> Tensor:
        if not (isinstance(z, Tensor) and z.ndim == 3):
            return indices(self, z, *args, **kwargs)
        return indices(self, rearrange(z, "b n d -> b d 1 n"), *args, **kwargs)[..., 0, :]

    return wrapper


def _embed_on_sequences(embed: Callable[..., Tensor]) -> Callable[..., Tensor]:
    """``embed`` of a quantizer, also taking the indices of a sequence (the layout of
    ``indices_shape`` without its ``H`` axis) and returning ``[B, N, D]``."""

    @functools.wraps(embed)
    def wrapper(self: Quantizer, indices: Tensor, *args: Any, **kwargs: Any) -> Tensor:
        if not (isinstance(indices, Tensor) and indices.ndim == len(self.indices_shape(1, 1))):
            return embed(self, indices, *args, **kwargs)
        return rearrange(embed(self, indices.unsqueeze(-2), *args, **kwargs), "b d 1 n -> b n d")

    return wrapper


class Quantizer(nn.Module, ABC):
    """Base class: maps a continuous latent ``[B, D, H, W]`` to codes and back.

    Subclasses set ``codebook_size`` (number of distinct ids per position and level) and ``dim``
    (channels ``D`` of the latent they accept) and implement ``forward`` and ``embed``; their config
    (a :class:`QuantizerConfigBase`) builds them from a codec config.

    Sequences (1D tokenizers): every quantizer's ``forward``, ``indices`` and ``embed`` also take a
    sequence ``z`` ``[B, N, D]`` (channels last, as vector-quantize-pytorch takes them). It is
    quantized as the image map ``[B, D, 1, N]``, so a sequence and the map of one row give the same
    codes; ``z_q`` comes back as ``[B, N, D]`` and the indices lose their ``H`` axis (``[B, N]``,
    ``[B, groups, N]``, ``[B, depth, N]``). Subclasses write only the image-map case: the base class
    wraps their ``forward``, ``indices`` and ``embed`` (:meth:`__init_subclass__`); a subclass
    whose inputs are not one map per call (e.g. several scales) sets ``sequence_inputs = False``.
    """

    codebook_size: int
    dim: int
    sequence_inputs: ClassVar[bool] = True
    """Whether ``forward`` / ``indices`` / ``embed`` also take sequences ``[B, N, D]`` (see above)."""

    def __init_subclass__(cls, **kwargs: Any) -> None:
        """Let the subclass's own ``forward``, ``indices`` and ``embed`` take sequences as well."""
        super().__init_subclass__(**kwargs)
        if not cls.sequence_inputs:
            return
        for name, wrap in (
            ("forward", _forward_on_sequences), ("indices", _indices_on_sequences), ("embed", _embed_on_sequences),
        ):
            if name in vars(cls):
                setattr(cls, name, wrap(vars(cls)[name]))

    @abstractmethod
    def forward(self, z: Tensor) -> QuantizerOutput:
        """Quantize ``z`` ``[B, D, H, W]`` (or a sequence ``[B, N, D]``, see the class docstring)."""

    @abstractmethod
    def embed(self, indices: Tensor) -> Tensor:
        """Turn ``indices`` (layout of ``indices_shape``) into ``z_q`` ``[B, D, H, W]``."""

    def indices_shape(self, height: int, width: int) -> tuple[int, ...]:
        """Shape of the indices of one image whose latent is ``height x width`` (no batch axis)."""
        return (height, width)

    def indices(self, z: Tensor) -> Tensor:
        """Only the token ids of ``z`` (``forward(z).indices``): the inference path, which
        quantizers may serve without computing losses and statistics."""
        return self.forward(z).indices

    @staticmethod
    def check_positive_int(value: object, name: str) -> int:
        """Return ``value`` if it is an int >= 1, else raise ``ValueError`` naming ``name`` (the
        constructor arguments that are not config fields: ``dim``, ``chunk_size``, ...)."""
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be a positive int, got {value!r}")
        return value

    def check_latent(self, z: Tensor, channels: int | None = None) -> None:
        """Raise ``ValueError`` unless ``z`` is a ``[B, channels, H, W]`` floating-point tensor
        (``channels``: ``dim`` unless given)."""
        who, channels = type(self).__name__, self.dim if channels is None else channels
        if not isinstance(z, Tensor) or z.ndim != 4:
            shape = tuple(z.shape) if isinstance(z, Tensor) else type(z).__name__
            raise ValueError(
                f"{who} expects a latent of shape [B, {channels}, H, W] or a sequence [B, N, {channels}], got {shape}"
            )
        if z.shape[1] != channels:
            raise ValueError(
                f"{who} expects {channels} channels (z of shape [B, {channels}, H, W] or a sequence "
                f"[B, N, {channels}]), got {z.shape[1]}"
            )
        if not z.is_floating_point():
            raise ValueError(f"{who} expects a floating-point latent, got dtype {z.dtype}")

    def check_indices(self, indices: Tensor, ndim: int, layout: str, allow_minus_one: bool = False) -> None:
        """Raise ``ValueError`` unless ``indices`` is an integer tensor with ``ndim`` axes (``layout``
        names them) whose ids lie in ``[0, codebook_size)`` (or are -1 when allowed).

        The range is not checked while ``torch.compile`` / ``torch.export`` trace (a data-dependent
        check cannot be part of a graph); the embedding lookup itself still fails on out-of-range ids.
        """
        who = type(self).__name__
        if not isinstance(indices, Tensor) or indices.ndim != ndim or indices.is_floating_point():
            if isinstance(indices, Tensor):
                got = f"{indices.dtype} tensor of shape {tuple(indices.shape)}"
            else:
                got = type(indices).__name__
            raise ValueError(f"{who}.embed expects integer indices of shape {layout}, got {got}")
        if indices.numel() == 0 or torch.compiler.is_compiling():
            return
        low = -1 if allow_minus_one else 0
        lo, hi = int(indices.min()), int(indices.max())
        if lo < low or hi >= self.codebook_size:
            accepted = f"[{low}, {self.codebook_size - 1}]"
            raise ValueError(f"{who}.embed got indices in [{lo}, {hi}], accepted range is {accepted}")

    def per_codebook_indices(self, indices: Tensor, num_codebooks: int) -> Tensor:
        """``indices`` of a quantizer with ``num_codebooks`` codebooks (``[B, H, W]`` for one,
        ``[B, num_codebooks, H, W]`` for several), checked, as ``[B, num_codebooks, H, W]``."""
        if num_codebooks == 1:
            self.check_indices(indices, 3, "[B, H, W]")
            return indices.unsqueeze(1)
        self.check_indices(indices, 4, f"[B, {num_codebooks}, H, W]")
        if indices.shape[1] != num_codebooks:
            raise ValueError(f"{type(self).__name__}.embed expects {num_codebooks} codebooks on axis 1, got {indices.shape[1]}")
        return indices
