"""Progress bars for long loops (sampling steps, generated tokens): tqdm when it is installed, else nothing.

``progress`` arguments take ``False`` (no bar), ``True`` (a bar) or a dict of ``tqdm`` keyword arguments
(``{"desc": "sampling", "leave": False}``; ``{"disable": True}`` is no bar). The pipelines keep a dict
set with ``set_progress_bar_config(**kwargs)``, as diffusers' pipelines do.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, TypeVar

T = TypeVar("T")

Progress = bool | dict[str, Any]


def progress_bar(iterable: Iterable[T], progress: Progress, **defaults: Any) -> Iterable[T]:
    """``iterable`` wrapped in a ``tqdm.auto`` bar when ``progress`` asks for one (``defaults`` first,
    then a ``progress`` dict's own keywords); ``iterable`` itself when it does not or tqdm is missing."""
    options = {**defaults, **(progress if isinstance(progress, dict) else {})}
    if not progress or options.get("disable"):
        return iterable
    try:
        from tqdm.auto import tqdm
    except ImportError:
        return iterable
    return tqdm(iterable, **options)


class ProgressBarConfig:
    """Mixin of the pipelines: :meth:`set_progress_bar_config` and the bar setting a call resolves to."""

    _progress_bar_config: dict[str, Any]

    def set_progress_bar_config(self, **kwargs: Any) -> None:
        """Keyword arguments for the ``tqdm`` bars of later calls (``disable=True``: no bar)."""
        self._progress_bar_config = dict(kwargs)

    def _progress(self, progress: bool | None) -> Progress:
        """``progress`` of a call (``None``: the configured bar, shown unless disabled) as a :data:`Progress`."""
        config = getattr(self, "_progress_bar_config", {})
        if progress is None:
            return False if config.get("disable") else (config or True)
        return ({k: v for k, v in config.items() if k != "disable"} or True) if progress else False
