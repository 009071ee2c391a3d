"""Deprecated alias of :mod:`movq.metrics.lpips` (``LPIPS``, ``load_lpips``, ``describe``,
``stlpips_weights_path``); it goes away in the next release: import from ``movq.metrics.lpips``."""

import warnings

from movq.metrics.lpips import LPIPS, WEIGHTS_ENV, describe, load_lpips, stlpips_weights_path

warnings.warn("movq.perceptual is deprecated: import LPIPS and load_lpips from movq.metrics.lpips",
              DeprecationWarning, stacklevel=2)

__all__ = ["LPIPS", "WEIGHTS_ENV", "describe", "load_lpips", "stlpips_weights_path"]
