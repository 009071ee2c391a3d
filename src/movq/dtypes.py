"""The dtype names that every command line and config accepts, in one table.

>>> DTYPES["bf16"]
torch.bfloat16
>>> sorted(dtype_names(torch.float16, torch.bfloat16))   # the latent-store choices of movq-tokenize
['bf16', 'bfloat16', 'float16', 'fp16']
"""

from __future__ import annotations

from typing import Literal

import torch

DTYPES: dict[str, torch.dtype] = {
    "float32": torch.float32, "fp32": torch.float32,
    "bfloat16": torch.bfloat16, "bf16": torch.bfloat16,
    "float16": torch.float16, "fp16": torch.float16,
}
"""Name -> torch dtype: the long (``"float32"``) and the short (``"fp32"``) spelling of each."""
DTypeName = Literal[tuple(DTYPES)]  # type: ignore[valid-type]
"""A name of :data:`DTYPES` (the hint of a config's dtype field)."""

SHORT_NAMES = ("fp32", "bf16", "fp16")


def dtype_names(*dtypes: torch.dtype, short: bool = False) -> dict[str, torch.dtype]:
    """The part of :data:`DTYPES` naming ``dtypes`` (all when none are given); ``short=True`` keeps only
    the short spellings (``"fp32"``, ``"bf16"``, ``"fp16"``). Use it for a flag's ``choices``."""
    return {name: dtype for name, dtype in DTYPES.items()
            if (not dtypes or dtype in dtypes) and (not short or name in SHORT_NAMES)}
