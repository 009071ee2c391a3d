"""Next-token sampling: temperature, top-k, top-p (nucleus) filtering and classifier-free guidance.

Order per step (as in Hugging Face ``generate`` and LlamaGen): guided logits
``uncond + scale * (cond - uncond)`` -> divide by ``temperature`` -> keep the ``top_k`` largest ->
keep the smallest set whose probability reaches ``top_p`` -> softmax -> one multinomial draw.
``temperature=0`` is greedy decoding (argmax), which top-k / top-p cannot change.
"""

from __future__ import annotations

from typing import Annotated

import torch
import torch.nn.functional as F
from torch import Tensor

from movq.seeding import Generators, multinomial
from movq.strict import ConfigError, NonNegativeFloat, PositiveInt, Range, check_argument

MIN_TEMPERATURE = 1e-6
"""Smallest non-zero sampling temperature: logits divided by less overflow float32 (NaN probabilities)."""


def check_sampling_args(
    temperature: float = 1.0,
    top_k: int | None = None,
    top_p: float | None = None,
    guidance_scale: float = 1.0,
) -> None:
    """Raise a ``ValueError`` naming the first bad sampling argument and what is accepted (the words of
    :func:`movq.strict.check_argument`, as every public entry point)."""
    try:
        checked = check_argument(temperature, NonNegativeFloat, "temperature")
    except ConfigError:
        checked = None
    if checked is None or 0 < checked < MIN_TEMPERATURE:
        raise ConfigError(f"temperature must be a finite number >= 0: 0 (greedy) or at least {MIN_TEMPERATURE:g} "
                          f"(smaller ones overflow the float32 logits they divide), got {temperature!r}")
    check_argument(top_k, PositiveInt | None, "top_k")
    check_argument(top_p, Annotated[float, Range(0, 1, min_open=True)] | None, "top_p")
    check_argument(guidance_scale, float, "guidance_scale")


def filter_logits(logits: Tensor, top_k: int | None = None, top_p: float | None = None) -> Tensor:
    """Set the logits of excluded tokens to ``-inf``; ``logits`` ``[..., V]`` -> same shape (a copy).

    ``top_k``: keep exactly the ``k`` largest (all if ``k >= V``). ``top_p``: keep, in order of
    decreasing probability, every token whose preceding probability mass is below ``top_p`` (so at
    least the most likely token, and the smallest set whose mass reaches ``top_p``).
    """
    check_sampling_args(top_k=top_k, top_p=top_p)
    logits = logits.clone()
    vocab = logits.shape[-1]
    if top_k is not None and top_k < vocab:
        kept = torch.topk(logits, top_k, dim=-1).indices
        mask = torch.ones_like(logits, dtype=torch.bool).scatter_(-1, kept, False)
        logits = logits.masked_fill(mask, float("-inf"))
    if top_p is not None and top_p < 1.0:
        sorted_logits, order = torch.sort(logits, dim=-1, descending=True)
        probs = F.softmax(sorted_logits.float(), dim=-1)
        mass_before = probs.cumsum(dim=-1) - probs
        remove_sorted = mass_before >= top_p
        remove_sorted[..., 0] = False
        mask = torch.zeros_like(remove_sorted).scatter_(-1, order, remove_sorted)
        logits = logits.masked_fill(mask, float("-inf"))
    return logits


def apply_guidance(cond: Tensor, uncond: Tensor, scale: float) -> Tensor:
    """Classifier-free guidance ``uncond + scale * (cond - uncond)``; ``scale == 1`` returns ``cond``
    itself (exactly unguided), ``scale == 0`` the unconditional logits."""
    if scale == 1.0:
        return cond
    return uncond + scale * (cond - uncond)


def sample_logits(
    logits: Tensor,
    *,
    temperature: float = 1.0,
    top_k: int | None = None,
    top_p: float | None = None,
    generator: Generators = None,
) -> Tensor:
    """Draw one token per row: ``logits`` ``[B, V]`` (any float dtype) -> ``LongTensor [B]``.

    ``temperature == 0`` returns the argmax; otherwise one ``torch.multinomial`` draw per row from
    the filtered, temperature-scaled distribution (reproducible with ``generator``: one generator, or a
list of ``B``, row ``i`` drawn with ``generator[i]``, :mod:`movq.seeding`).
    """
    check_sampling_args(temperature, top_k, top_p)
    if logits.ndim != 2:
        raise ValueError(f"logits must be [B, V], got shape {tuple(logits.shape)}")
    logits = logits.float()
    if temperature == 0:
        return logits.argmax(dim=-1)
    logits = filter_logits(logits / temperature, top_k=top_k, top_p=top_p)
    probs = F.softmax(logits, dim=-1)
    return multinomial(probs, generator)
