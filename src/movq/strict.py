"""Strictness helpers shared by configs and weight loading: unknown fields and key mismatches
are errors that name what was wrong, never silently ignored."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import fields
from typing import Any, TypeVar

from torch import Tensor

T = TypeVar("T")


def dataclass_from_dict(cls: type[T], data: Mapping[str, Any]) -> T:
    """``cls(**data)`` for a dataclass ``cls``, refusing unknown keys with a message listing them."""
    known = {f.name for f in fields(cls)}  # type: ignore[arg-type]
    unknown = sorted(set(data) - known)
    if unknown:
        raise ValueError(f"unknown {cls.__name__} fields {unknown}; known fields: {sorted(known)}")
    return cls(**data)


def state_dict_mismatches(
    expected: Mapping[str, Tensor], given: Mapping[str, Tensor], optional: Iterable[str] = (), limit: int = 20
) -> list[str]:
    """Describe how ``given`` differs from ``expected``: missing keys (except ``optional`` ones),
    unexpected keys and wrong shapes, at most ``limit`` keys each; an empty list means they match."""
    missing = sorted(set(expected) - set(given) - set(optional))
    unexpected = sorted(set(given) - set(expected))
    wrong = sorted(k for k in set(expected) & set(given) if tuple(expected[k].shape) != tuple(given[k].shape))

    def listing(keys: list[str]) -> str:
        return f"{keys[:limit]}{' ...' if len(keys) > limit else ''}"

    problems = []
    if missing:
        problems.append(f"{len(missing)} missing keys {listing(missing)}")
    if unexpected:
        problems.append(f"{len(unexpected)} unexpected keys {listing(unexpected)}")
    if wrong:
        shapes = ", ".join(
            f"{k}: checkpoint {tuple(given[k].shape)} vs model {tuple(expected[k].shape)}" for k in wrong[:limit]
        )
        problems.append(f"wrong shapes {shapes}")
    return problems
