"""``movq-diffusion-sample``: draw N images from a ``movq-diffusion-train`` run into a sample folder.

    movq-diffusion-sample runs/food --num-samples 50000 --batch-size 256 --timestep-respacing ddim50 \\
                          --guidance 1.5 --out samples/
    movq-diffusion-sample runs/food --num-samples 64 --class cat --class dog --out samples/cats-dogs
    torchrun --nproc_per_node 8 -m movq.diffusion.sample runs/food --num-samples 50000 --out samples/

The run folder is loaded with :meth:`LatentDiffusionPipeline.from_pretrained` (EMA weights and the
recorded codec; a pixel-space run, ``movq-diffusion-train --pixels``, has none: its samples are the
images, ``x0`` clipped to ``[-1, 1]``). ``OUT`` becomes a sample folder (:mod:`movq.bench.samples`): ``000000.png`` ...,
``samples.jsonl`` (each sample's label and class name) and ``samples.npz`` (``arr_0`` uint8
``[N, H, W, 3]``, ``arr_1`` the labels of a class-conditional model), which openai/guided-diffusion's
``evaluations/evaluator.py`` and ``movq-bench generation`` read. Labels are spread evenly over the
classes (sample ``i`` gets class ``i % K``), or over the ``--class`` names / ids given.

Sample ``i`` draws all its noise from a generator seeded ``--seed + i``, so ``torchrun`` with any
number of processes writes the same files as one process (same ``--batch-size`` and device type),
and a killed run started again with the same command finishes with the same files as an
uninterrupted one.

``--timestep-respacing`` (default: every step of the trained process) is given to the diffusion's
``respace`` as it is: an integer number of evenly spaced steps, or improved-diffusion's strings.
``--sampler auto`` (default) takes DDIM steps when the respacing starts with ``ddim``, ancestral
(DDPM) steps otherwise; ``--eta`` is DDIM's noise (0: deterministic).
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass, field
from typing import Literal

from movq import distributed as dist
from movq.bench.samples import (
    SampleConfig,
    SampleJob,
    add_sample_arguments,
    config_from_args,
    parse_config,
    run_sample_command,
    spread_labels,
)
from movq.diffusion.gaussian_diffusion import GaussianDiffusion
from movq.diffusion.pipeline import LatentDiffusionPipeline, read_release_info
from movq.seeding import sample_generators
from movq.strict import NonNegativeFloat

PROG = "movq-diffusion-sample"
SamplerName = Literal["auto", "ddpm", "ddim"]
WeightsName = Literal["auto", "ema", "model"]


@dataclass
class DiffusionSampleConfig(SampleConfig):
    """:class:`~movq.bench.samples.SampleConfig` plus the diffusion's settings: ``timestep_respacing``
    (``None``: all steps; a digit string is an int), ``sampler`` (``auto``: ``ddim`` for ``"ddim..."``
    respacings, else ``ddpm``), ``eta`` (DDIM noise), ``classes`` (names or ids to spread the labels
    over; empty: every class), ``weights`` (``auto``: EMA when saved)."""

    timestep_respacing: str | None = None
    sampler: SamplerName = "auto"
    eta: NonNegativeFloat = 0.0
    classes: list[str] = field(default_factory=list)
    weights: WeightsName = "auto"

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.timestep_respacing is not None and not self.timestep_respacing.strip():
            self.timestep_respacing = None  # improved-diffusion's "": no respacing
        if self.eta and self.resolved_sampler == "ddpm":
            raise ValueError(f"--eta is DDIM's noise: use --sampler ddim (or a ddim respacing), got --eta {self.eta:g} "
                             "with DDPM steps")

    @property
    def respacing(self) -> int | str | None:
        """What ``num_steps`` of the pipeline gets: an int for a digit string, else the string itself."""
        value = self.timestep_respacing
        return int(value) if value is not None and value.strip().isdigit() else value

    @property
    def resolved_sampler(self) -> str:
        if self.sampler != "auto":
            return self.sampler
        return "ddim" if str(self.timestep_respacing or "").startswith("ddim") else "ddpm"


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=PROG, description="Draw N images from a movq-diffusion-train run into a sample "
                                "folder (PNGs + an .npz for guided-diffusion's evaluator).")
    add_sample_arguments(p, "number of samples (default 16)")
    p.add_argument("--timestep-respacing", help="sampling steps: an integer (evenly spaced) or improved-diffusion's "
                   "'250', 'ddim50', '10,15,20' (default: every trained step)")
    p.add_argument("--sampler", default="auto", help="auto (ddim for a 'ddim...' respacing, else ddpm), ddpm or ddim")
    p.add_argument("--eta", type=float, default=0.0, help="DDIM noise: 0 deterministic, 1 about ancestral (default 0)")
    p.add_argument("--class", dest="classes", action="append", default=[], metavar="NAME_OR_ID",
                   help="sample only this class (repeat for several; labels are spread evenly over them; "
                        "default: every class)")
    p.add_argument("--weights", default="auto", help="auto (EMA when saved), ema or model")
    return p


def class_ids(pipe: LatentDiffusionPipeline, classes: list[str]) -> list[int]:
    """The class ids ``--class`` names (names of the release or ids), or every class; ``ValueError`` naming the flag."""
    count = pipe.model.config.num_classes
    if not count:
        if classes:
            raise ValueError(f"--class {classes[0]}: this model is unconditional (trained without labels)")
        return []
    if not classes:
        return list(range(count))
    ids = []
    for name in classes:
        if pipe.labels and name in pipe.labels:
            ids.append(pipe.labels.index(name))
        elif name.isdigit() and int(name) < count:
            ids.append(int(name))
        else:
            known = f"names {pipe.labels}" if pipe.labels else "no names"
            raise ValueError(f"--class {name!r} is not a class of this model ({count} classes: ids 0-{count - 1}, {known})")
    return ids


def prepare(cfg: DiffusionSampleConfig, ctx: dist.DistContext) -> SampleJob:
    """Load the run, check every setting against it and return the job (nothing sampled yet)."""
    from movq.tokenize.meta import weights_hash

    read_release_info(cfg.run)  # a clear error for a folder that is no release, before the weights load
    steps = cfg.respacing
    if steps is not None:
        try:
            GaussianDiffusion.from_pretrained(cfg.run).respace(steps)
        except ValueError as error:
            raise ValueError(f"--timestep-respacing {cfg.timestep_respacing!r}: {error}") from None
    pipe = LatentDiffusionPipeline.from_pretrained(cfg.run, weights=cfg.weights, device=ctx.device)
    if cfg.guidance != 1.0 and not (pipe.model.config.num_classes or getattr(pipe.model.config, "cond_dim", None)):
        raise ValueError(f"--guidance {cfg.guidance:g}: this model is unconditional, there is nothing to guide")
    ids = class_ids(pipe, cfg.classes)
    labels = spread_labels(cfg.num_samples, ids) if ids else None
    names = pipe.labels or []
    rows = ([{"label": y, **({"class": names[y]} if y < len(names) else {})} for y in labels] if labels is not None
            else [{} for _ in range(cfg.num_samples)])
    spec = {"settings": {**cfg.settings(), "sampler": cfg.resolved_sampler},
            "model_weights": weights_hash(pipe.model), "codec_weights": None if pipe.codec is None else weights_hash(pipe.codec),
            "diffusion": pipe.diffusion.to_dict(), "device_type": ctx.device.type}
    pipe.set_progress_bar_config(leave=False, desc="steps", disable=not (cfg.progress and ctx.is_main))

    def generate(indices: range) -> list:
        return pipe.generate(
            None if labels is None else [labels[i] for i in indices],
            num_samples=None if labels is not None else len(indices), num_steps=steps, sampler=cfg.resolved_sampler,
            eta=cfg.eta, guidance_scale=cfg.guidance,
            generator=sample_generators(cfg.seed, indices, ctx.device),
        )

    return SampleJob(spec, rows, labels, generate)


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``movq-diffusion-sample`` / ``python -m movq.diffusion.sample``; returns the exit status
    (0 done, 2 user error: one line naming the flag, before any sample is drawn)."""
    cfg = parse_config(PROG, build_parser(), argv, DiffusionSampleConfig,
                       lambda args: config_from_args(DiffusionSampleConfig, args), {"classes": "class"})
    if isinstance(cfg, int):
        return cfg
    return run_sample_command(PROG, cfg, prepare, {"classes": "class"})


if __name__ == "__main__":
    sys.exit(main())
