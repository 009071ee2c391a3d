"""The settings of a Gaussian diffusion process, as one strict, JSON-serialisable dataclass."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from movq.diffusion.schedules import SCHEDULES, check_kept_timesteps
from movq.strict import NonNegativeFloat, PositiveFloat, StrictConfig, dataclass_from_dict

MEAN_TYPES = ("eps", "x0", "v")
VAR_TYPES = ("learned_range", "fixed_small", "fixed_large")
LOSSES = ("mse", "hybrid")


def _choice(name: str, value: Any, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        raise ValueError(f"unknown {name} {value!r}; expected one of {list(allowed)}")


@dataclass
class DiffusionConfig(StrictConfig):
    """What :class:`~movq.diffusion.GaussianDiffusion` is built from (saved as ``diffusion.json``).

    ``steps`` and ``schedule`` give the base process; ``timesteps`` (ascending indices into it),
    when set, keeps only those steps (respacing). ``mean_type`` is what the model predicts (noise
    ``eps``, the clean ``x0`` or ``v = sqrt(abar) eps - sqrt(1 - abar) x0``); ``var_type`` is the
    reverse-step variance (``learned_range`` needs a model with twice the channels out and the
    ``hybrid`` loss). ``loss=None`` picks ``hybrid`` for a learned variance and ``mse`` otherwise.
    ``vlb_weight`` is the lambda of ``L_simple + lambda * L_vlb``; ``bin_width`` is the decoder bin of
    the discretized likelihood at ``t = 0`` (see :class:`~movq.diffusion.GaussianDiffusion`).
    """

    steps: int = 1000
    schedule: str = "cosine"
    mean_type: str = "eps"
    var_type: str = "learned_range"
    loss: str | None = None
    vlb_weight: NonNegativeFloat = 1e-3
    bin_width: PositiveFloat = 2.0 / 255.0
    timesteps: list[int] | None = None

    def __post_init__(self) -> None:
        super().__post_init__()
        # steps and the names keep their own messages (``unknown schedule 'x'; expected one of [...]``)
        if isinstance(self.steps, bool) or not isinstance(self.steps, int) or self.steps < 2:
            raise ValueError(f"steps must be an int >= 2, got {self.steps!r}")
        _choice("schedule", self.schedule, SCHEDULES)
        _choice("mean_type", self.mean_type, MEAN_TYPES)
        _choice("var_type", self.var_type, VAR_TYPES)
        if self.loss is None:
            self.loss = "hybrid" if self.learned_variance else "mse"
        _choice("loss", self.loss, LOSSES)
        if self.learned_variance and self.loss == "mse":
            raise ValueError(
                "var_type='learned_range' is trained only by the VLB term: use loss='hybrid' "
                "(or a fixed var_type with loss='mse')"
            )
        if not self.learned_variance and self.loss == "hybrid":
            raise ValueError(
                f"loss='hybrid' trains the variance through the VLB term, but var_type={self.var_type!r} is fixed: "
                "use var_type='learned_range' or loss='mse'"
            )
        if self.timesteps is not None:
            self.timesteps = check_kept_timesteps(self.steps, self.timesteps)

    @property
    def learned_variance(self) -> bool:
        return self.var_type == "learned_range"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> DiffusionConfig:
        """Inverse of :meth:`to_dict`; unknown keys are an error naming them."""
        return dataclass_from_dict(cls, data)
