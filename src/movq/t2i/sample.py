"""``movq-t2i-sample``: draw images for a list of prompts from a ``movq-t2i-train`` run into a sample folder.

    movq-t2i-sample runs/t2i --prompts prompts.txt --num-samples 4 --top-k 200 --guidance 3 --out samples/
    movq-t2i-sample runs/t2i --prompt "a red square" --prompt "a blue circle" --out samples/shapes
    torchrun --nproc_per_node 4 -m movq.t2i.sample runs/t2i --prompts prompts.txt --out samples/

The run folder is loaded with :meth:`T2IPipeline.from_pretrained` (its EMA release weights and the
codec its ``codec.json`` records). ``--prompts FILE`` holds one prompt per line (blank lines are
skipped), ``--prompt TEXT`` adds one; each gets ``--num-samples`` images, prompt-major: sample ``i``
is prompt ``i // num_samples``. ``OUT`` becomes a sample folder (:mod:`movq.bench.samples`):
``000000.png`` ..., ``samples.jsonl`` (each sample's prompt) and ``samples.npz`` (``arr_0`` uint8
``[N, H, W, 3]``) for openai/guided-diffusion's evaluator and ``movq-bench generation``.

Sample ``i`` draws all its tokens with a generator seeded ``--seed + i``, so ``torchrun`` with any
number of processes writes the same files as one process (same ``--batch-size`` and device type),
and a killed run started again with the same command finishes with the same files.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated

from movq import distributed as dist
from movq.atomic import require_regular_file
from movq.bench.samples import (
    SampleConfig,
    SampleJob,
    add_sample_arguments,
    config_from_args,
    parse_config,
    run_sample_command,
)
from movq.seeding import sample_generators
from movq.strict import NonNegativeFloat, PositiveInt, Range
from movq.t2i.pipeline import T2IPipeline

PROG = "movq-t2i-sample"


@dataclass
class T2ISampleConfig(SampleConfig):
    """:class:`~movq.bench.samples.SampleConfig` (``num_samples`` per prompt) plus the prompts (``prompts``: a
    file of one per line; ``prompt``: given ones, after the file's) and the token sampling settings
    (``top_k``, ``top_p``, ``temperature``; see :mod:`movq.t2i.sampling`)."""

    prompts: str | None = None
    prompt: list[str] = field(default_factory=list)
    top_k: PositiveInt | None = None
    top_p: Annotated[float, Range(0, 1, min_open=True)] | None = None
    temperature: NonNegativeFloat = 1.0

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.prompts is None and not self.prompt:
            raise ValueError("give the prompts: --prompts FILE (one per line) and / or --prompt TEXT")

    def prompt_list(self) -> list[str]:
        """The prompts, in order: the file's non-blank lines (line ends removed), then ``--prompt``."""
        found: list[str] = []
        if self.prompts is not None:
            path = require_regular_file(self.prompts, "--prompts takes a text file with one prompt per line", ValueError)
            try:
                text = Path(path).read_text(encoding="utf-8")
            except (OSError, UnicodeDecodeError) as error:
                raise ValueError(f"--prompts {self.prompts}: cannot read it as UTF-8 text ({error})") from None
            found = [line.rstrip("\r") for line in text.split("\n") if line.strip()]
            if not found:
                raise ValueError(f"--prompts {self.prompts} holds no prompt (every line is blank)")
        return found + list(self.prompt)

    def settings(self) -> dict:
        return {k: v for k, v in super().settings().items() if k not in ("prompts", "prompt")}


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=PROG, description="Draw images for prompts from a movq-t2i-train run into a "
                                "sample folder (PNGs + an .npz for guided-diffusion's evaluator).")
    add_sample_arguments(p, "images per prompt (default 16)")
    p.add_argument("--prompts", help="text file, one prompt per line (blank lines skipped)")
    p.add_argument("--prompt", action="append", default=[], help="a prompt (repeat for several; after --prompts')")
    p.add_argument("--top-k", type=int, help="keep the k most likely tokens (seed 004: 200; default: all)")
    p.add_argument("--top-p", type=float, help="nucleus sampling: keep the smallest set reaching this probability")
    p.add_argument("--temperature", type=float, default=1.0, help="0 greedy (default 1)")
    return p


def prepare(cfg: T2ISampleConfig, ctx: dist.DistContext) -> SampleJob:
    """Load the run, check the prompts and return the job (nothing sampled yet)."""
    from movq.tokenize.meta import weights_hash

    prompts = cfg.prompt_list()
    pipe = T2IPipeline.from_pretrained(cfg.run, device=ctx.device)
    pipe.set_progress_bar_config(leave=False, desc="tokens", disable=not (cfg.progress and ctx.is_main))
    per = cfg.num_samples
    rows = [{"prompt": prompts[i // per], "prompt_index": i // per} for i in range(len(prompts) * per)]
    spec = {"settings": cfg.settings(), "model_weights": weights_hash(pipe.model),
            "codec_weights": weights_hash(pipe.codec), "device_type": ctx.device.type}

    def generate(indices: range) -> list:
        out = pipe([rows[i]["prompt"] for i in indices], top_k=cfg.top_k, top_p=cfg.top_p, temperature=cfg.temperature,
                   guidance_scale=cfg.guidance, generator=sample_generators(cfg.seed, indices, ctx.device),
                   batch_size=len(indices))
        return out.images

    return SampleJob(spec, rows, None, generate)


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``movq-t2i-sample`` / ``python -m movq.t2i.sample``; returns the exit status (0 done, 2 user
    error: one line naming the flag, before any sample is drawn)."""
    cfg = parse_config(PROG, build_parser(), argv, T2ISampleConfig, lambda args: config_from_args(T2ISampleConfig, args))
    if isinstance(cfg, int):
        return cfg
    return run_sample_command(PROG, cfg, prepare)


if __name__ == "__main__":
    sys.exit(main())
