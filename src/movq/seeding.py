"""Random draws that a batch can take from one generator or from one generator per sample.

Samplers accept ``generator`` as diffusers does: ``None`` (the global RNG), one ``torch.Generator``
for the whole batch, or a list of ``B`` generators, one per batch item. With a list, item ``i``'s
draws come from ``generator[i]`` alone, so a sample does not depend on which other samples share its
batch or on how many processes split the work: :func:`sample_generators` seeds item ``index`` with
``seed + index``, which is what the sampling commands do.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

Generators = torch.Generator | Sequence[torch.Generator] | None
"""``None``, one generator for the batch, or one generator per batch item."""


def sample_generators(seed: int, indices: Sequence[int] | range, device: torch.device | str = "cpu") -> list[torch.Generator]:
    """One generator per sample: sample ``index`` gets ``torch.Generator(device).manual_seed(seed + index)``."""
    return [torch.Generator(device=device).manual_seed(int(seed) + int(i)) for i in indices]


def check_generators(generator: Generators, batch: int, device: torch.device | str | None = None) -> None:
    """``ValueError`` unless ``generator`` is ``None``, a ``torch.Generator`` or a list of exactly ``batch`` of
    them, each on ``device``'s type (when ``device`` is given)."""
    if generator is None:
        return
    items = [generator] if isinstance(generator, torch.Generator) else generator
    if not isinstance(items, Sequence) or not all(isinstance(g, torch.Generator) for g in items):
        raise ValueError(f"generator must be a torch.Generator or a list of them, got {type(generator).__name__}")
    if not isinstance(generator, torch.Generator) and len(items) != batch:
        raise ValueError(f"got a list of {len(items)} generators for a batch of {batch}; pass one per sample")
    if device is not None:
        kind = torch.device(device).type
        wrong = [g.device for g in items if g.device.type != kind]
        if wrong:
            raise ValueError(f"generator is on {wrong[0]} but the model is on {torch.device(device)}")


def batch_generators(generator: Generators, rows: slice) -> Generators:
    """The generators of batch rows ``rows``: the same single generator (or ``None``), or a slice of the list."""
    if generator is None or isinstance(generator, torch.Generator):
        return generator
    return list(generator)[rows]


def randn(shape: Sequence[int], generator: Generators = None, *, device: torch.device | str | None = None,
          dtype: torch.dtype | None = None) -> Tensor:
    """Standard normal noise of ``shape`` ``[B, ...]``; with a list of ``B`` generators, row ``i`` is drawn
    from ``generator[i]`` (as ``torch.randn(shape[1:])``)."""
    if generator is None or isinstance(generator, torch.Generator):
        return torch.randn(tuple(shape), generator=generator, device=device, dtype=dtype)
    check_generators(generator, shape[0])
    return torch.stack([torch.randn(tuple(shape[1:]), generator=g, device=device, dtype=dtype) for g in generator])


def multinomial(probs: Tensor, generator: Generators = None) -> Tensor:
    """One draw per row of ``probs`` ``[B, V]`` -> ``LongTensor [B]``; with a list of ``B`` generators,
    row ``i`` is drawn with ``generator[i]``."""
    if generator is None or isinstance(generator, torch.Generator):
        return torch.multinomial(probs, num_samples=1, generator=generator).squeeze(-1)
    check_generators(generator, probs.shape[0])
    return torch.cat([torch.multinomial(row, num_samples=1, generator=g) for row, g in zip(probs, generator)])
