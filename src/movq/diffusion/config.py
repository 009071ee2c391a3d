"""The settings of a Gaussian diffusion process, as one strict, JSON-serialisable dataclass."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Annotated, Any, Literal, get_args

from movq.diffusion.schedules import Schedule, check_kept_timesteps
from movq.strict import NonNegativeFloat, PositiveFloat, Range, StrictConfig, dataclass_from_dict

MAX_STEPS = 100_000
"""Most timesteps a diffusion process may have (published models: 1000 to 4000); the bound refuses
a hostile ``steps`` before its schedule is computed."""

# The hints of the diffusion settings (shared by DiffusionConfig and the trainer's flags)
Steps = Annotated[int, Range(2, MAX_STEPS)]
MeanType = Literal["eps", "x0", "v"]
VarType = Literal["learned_range", "fixed_small", "fixed_large"]
Loss = Literal["mse", "hybrid", "kl"]
MEAN_TYPES: tuple[str, ...] = get_args(MeanType)
VAR_TYPES: tuple[str, ...] = get_args(VarType)
LOSSES: tuple[str, ...] = get_args(Loss)
DEFAULT_VLB_WEIGHT = 1e-3
"""The hybrid loss's lambda (improved DDPM; improved-diffusion's ``RESCALED_MSE`` is ``T / 1000``)."""


@dataclass
class DiffusionConfig(StrictConfig):
    """What :class:`~movq.diffusion.GaussianDiffusion` is built from (saved as ``diffusion.json``).

    ``steps`` and ``schedule`` give the base process; ``timesteps`` (ascending indices into it),
    when set, keeps only those steps (respacing). ``mean_type`` is what the model predicts (noise
    ``eps``, the clean ``x0`` or ``v = sqrt(abar) eps - sqrt(1 - abar) x0``); ``var_type`` is the
    reverse-step variance (``learned_range`` needs a model with twice the channels out and the
    ``hybrid`` loss). ``loss=None`` picks ``hybrid`` for a learned variance and ``mse`` otherwise;
    ``loss="kl"`` is the VLB alone (improved-diffusion's ``use_kl``: its ``RESCALED_KL``, ``T`` times
    one uniformly drawn term in bits/dim, with any ``var_type``). ``vlb_weight`` is the lambda of the
    hybrid's ``L_simple + lambda * L_vlb`` (left at its default with ``kl``); ``bin_width`` is the decoder bin of
    the discretized likelihood at ``t = 0`` (see :class:`~movq.diffusion.GaussianDiffusion`).
    ``bounds`` is the data's range when it is bounded: ``(-1, 1)`` for pixels (8-bit images scaled to
    ``[-1, 1]``, ``movq-diffusion-train --pixels``), where the decoder's first and last bins are open
    (improved DDPM's pixel-space likelihood); ``None`` for unbounded latents.
    """

    steps: Steps = 1000
    schedule: Schedule = "cosine"
    mean_type: MeanType = "eps"
    var_type: VarType = "learned_range"
    loss: Loss | None = None
    vlb_weight: NonNegativeFloat = DEFAULT_VLB_WEIGHT
    bin_width: PositiveFloat = 2.0 / 255.0
    bounds: tuple[float, float] | None = None
    timesteps: list[int] | None = None

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.loss is None:
            self.loss = "hybrid" if self.learned_variance else "mse"
        if self.learned_variance and self.loss == "mse":
            raise ValueError(
                "var_type='learned_range' is trained only by the VLB term: use loss='hybrid' or 'kl' "
                "(or a fixed var_type with loss='mse')"
            )
        if not self.learned_variance and self.loss == "hybrid":
            raise ValueError(
                f"loss='hybrid' trains the variance through the VLB term, but var_type={self.var_type!r} is fixed: "
                "use var_type='learned_range' or loss='mse'"
            )
        if self.loss == "kl" and self.vlb_weight != DEFAULT_VLB_WEIGHT:
            raise ValueError(
                f"vlb_weight={self.vlb_weight!r} weighs the VLB term of the hybrid loss, but loss='kl' is the VLB "
                f"alone (T x one term, as improved-diffusion's use_kl): leave vlb_weight at {DEFAULT_VLB_WEIGHT} or use loss='hybrid'"
            )
        if self.bounds is not None and not self.bounds[0] < self.bounds[1]:
            raise ValueError(f"bounds must be (low, high) with low < high, got {self.bounds}")
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
