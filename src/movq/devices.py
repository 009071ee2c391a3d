"""Turning a user's ``--device`` into a ``torch.device``, with a clear error for names that cannot work here."""

from __future__ import annotations

import torch

ACCEPTED_DEVICES = "auto, cpu, cuda, cuda:N or mps"


def resolve_device(name: str | torch.device | None = "auto", local_rank: int = 0) -> torch.device:
    """``"auto"`` / ``None``: this process's CUDA device (``local_rank``) if any, else MPS, else CPU.

    Any other name must be a valid ``torch.device`` that exists on this machine; otherwise
    ``ValueError`` says what was given and what is accepted (checked before any work).
    """
    if name is None or name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda", local_rank % torch.cuda.device_count())
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        device = torch.device(name)
    except (RuntimeError, TypeError, ValueError):
        raise ValueError(f"unknown device {str(name)!r}; expected {ACCEPTED_DEVICES}") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"device {str(name)!r} asked for, but no CUDA GPU is available here; use --device cpu")
        count = torch.cuda.device_count()
        if device.index is None:
            device = torch.device("cuda", local_rank % count)
        elif device.index >= count:
            raise ValueError(f"device {str(name)!r} does not exist: this machine has {count} CUDA device(s)")
    elif device.type == "mps":
        if getattr(torch.backends, "mps", None) is None or not torch.backends.mps.is_available():
            raise ValueError(f"device {str(name)!r} asked for, but MPS is not available here; use --device cpu")
    elif device.type != "cpu":
        raise ValueError(f"unsupported device {str(name)!r}; expected {ACCEPTED_DEVICES}")
    return device
