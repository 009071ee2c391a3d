"""Deprecated alias of :mod:`movq.tokenize.dataset` (``TokenDataset``, ``collate_items``); it goes away
in the next release: import from ``movq.tokenize.dataset`` instead."""

import warnings

from movq.tokenize.dataset import TokenDataset, collate_items

warnings.warn("movq.data is deprecated: import TokenDataset and collate_items from movq.tokenize.dataset",
              DeprecationWarning, stacklevel=2)

__all__ = ["TokenDataset", "collate_items"]
