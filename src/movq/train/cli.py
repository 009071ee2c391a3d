"""``movq-train``: train or fine-tune a codec (plain PyTorch; ``torchrun`` for several processes).

    movq-train --data DIR --out DIR --preset movqgan-tiny --resolution 64 --batch-size 16 --max-steps 2000
    movq-train --out DIR --resume                        # continue exactly where DIR stopped
    movq-train --config run.toml --lr 3e-5               # flags override the config file
    movq-train --data DIR --out DIR --init movqgan-tiny-photos --lr 1.5e-6 --warmup-steps 500
    movq-train --data DIR --out DIR --preset var-f16-4096 --resolution 256      # VAR's multi-scale VQVAE
    movq-train --data DIR --out DIR --preset movqgan-tiny --quantizer multiscale --resolution 64
    torchrun --nproc_per_node 2 -m movq.train.cli --data DIR --out DIR ...
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from dataclasses import MISSING, fields, is_dataclass
from pathlib import Path
from typing import Any, get_type_hints

from movq.atomic import DiskFullError, check_regular_file, check_writable_dir
from movq.strict import error_line, merge_dicts
from movq.train.config import CodecTrainConfig, read_config_file

EXIT_ERROR = 2
INT_OR_NONE = ("int | None", "typing.Optional[int]", "typing.Union[int, NoneType]")

RUN_HELP = {
    "resume": "continue from OUT's latest checkpoint (its saved config; given flags override it)",
    "max_minutes": "stop with a checkpoint after this many minutes of training (0 = no limit)",
    "device": "auto, cpu, cuda, cuda:N or mps",
    "batch_size": "samples per process and micro-batch",
    "threads": "torch CPU threads of each process (default: torch's)",
}
"""Help for the :class:`~movq.train.config.RunConfig` fields every training command has."""

_HELP = {
    "data": "image folder (searched recursively)",
    "out": "output folder: checkpoints/, last -> newest checkpoint, log.csv, images/, EMA weights",
    "preset": "codec preset to train from scratch (movq.config.PRESETS)",
    "init": "fine-tune from these weights: anything movq.load accepts (name or folder)",
    "codec": "JSON dict overriding preset fields, e.g. '{\"norm\": \"group\"}'",
    "quantizer": "quantizer kind replacing the preset's (vq, ema, residual, fsq, lfq, simvq, multiscale, ...); "
                 "its options in --codec '{\"quantizer\": {...}}'",
    "perceptual_net": "LPIPS backbone for the perceptual loss: vgg, alex or none",
    "perceptual_weights": "local LPIPS weights file (default: stlpips-pytorch's files, see movq.metrics.lpips)",
    "amp": "autocast: auto (bf16 where supported), bf16, fp16, none",
    "disc_start": "optimizer step at which the PatchGAN loss starts",
    "adaptive_weight": "taming's adaptive GAN weight (off in the SBER-MoVQGAN recipe)",
    "loss.vq": "weight of the quantizer loss L_VQ",
    "loss.adv": "weight of the PatchGAN generator loss L_adv",
    "loss.perc": "weight of the perceptual loss L_perc",
    "loss.l2": "weight of the squared error L_2",
    "loss.nll": "weight of L_NLL = mean(nll_perc L_perc + nll_l2 L_2)",
    "loss.l1": "weight of the absolute error L_1",
    "loss.nll_perc": "weight of L_perc inside L_NLL",
    "loss.nll_l2": "weight of L_2 inside L_NLL",
}


def build_parser(config_cls: type = CodecTrainConfig, prog: str = "movq-train", description: str | None = __doc__,
                 help_texts: dict[str, str] | None = None) -> argparse.ArgumentParser:
    """One ``--flag`` per field of the dataclass ``config_cls`` (any movq training config), plus ``--config``."""
    parser = argparse.ArgumentParser(prog=prog, description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", help="JSON or TOML file with the config's fields")
    hints = get_type_hints(config_cls)
    texts = {**RUN_HELP, **(_HELP if help_texts is None else help_texts)}
    flags = _flag_names(config_cls)
    for f in fields(config_cls):
        if is_dataclass(hints[f.name]):  # one flag per nested field: --w-adv (a flat name) or --loss-adv
            sub_hints = get_type_hints(hints[f.name])
            for sub in fields(hints[f.name]):
                dotted = f"{f.name}.{sub.name}"
                name = flags.get(dotted, f"{f.name}_{sub.name}")
                _add_flag(parser, name, dotted, sub_hints[sub.name], sub, texts.get(dotted, ""))
        else:
            _add_flag(parser, f.name, f.name, hints[f.name], f, texts.get(f.name, ""))
    return parser


def _flag_names(config_cls: type) -> dict[str, str]:
    """``{"loss.adv": "w_adv"}``: the nested fields whose flag is a flat name (``--w-adv``); the other
    nested fields' flags join the names (``--loss-adv``)."""
    return {dotted: flat for flat, dotted in getattr(config_cls, "flat_names", {}).items()}


def _add_flag(parser: argparse.ArgumentParser, name: str, dest: str, hint: Any, f: Any, text: str) -> None:
    """``--name`` (underscores as dashes) setting ``dest``, typed after the field ``f``'s ``hint``."""
    flag = "--" + name.replace("_", "-")
    default = f.default if f.default is not MISSING else f.default_factory()
    help_text = text + f" (default: {default})"
    shown: dict[str, Any] = {"metavar": name.upper()} if hint is not bool else {}
    if hint is bool:
        parser.add_argument(flag, dest=dest, action=argparse.BooleanOptionalAction, default=None, help=help_text)
    elif str(hint).startswith(("dict", "typing.Dict")):
        parser.add_argument(flag, dest=dest, type=json.loads, default=None, help=help_text + " (JSON)", **shown)
    elif str(hint).startswith("tuple"):
        parser.add_argument(flag, dest=dest, type=float, nargs=2, default=None, help=help_text, **shown)
    else:
        kind: Any = float if "float" in str(hint) else int if hint is int or str(hint) in INT_OR_NONE else str
        parser.add_argument(flag, dest=dest, type=kind, default=None, help=help_text, **shown)


def config_from_args(argv: list[str] | None = None, config_cls: type = CodecTrainConfig, prog: str = "movq-train",
                     description: str | None = __doc__, help_texts: dict[str, str] | None = None) -> Any:
    """Defaults <- config file (or, with --resume, the run's saved config) <- explicit flags."""
    args = vars(build_parser(config_cls, prog, description, help_texts).parse_args(argv))
    nest = getattr(config_cls, "nest_flat_names", dict)
    hints = get_type_hints(config_cls)
    nested = {f.name for f in fields(config_cls) if is_dataclass(hints[f.name])}
    values: dict[str, Any] = {}
    if args["config"]:
        values.update(nest(read_config_file(args.pop("config"))))
    else:
        args.pop("config")
    given: dict[str, Any] = {}
    for key, value in args.items():
        if value is not None:  # a nested field's flag sets "parent.child"
            parent, _, child = key.partition(".")
            given = merge_dicts(given, {parent: {child: value}} if child else {key: value}, nested)
    saved = None
    if given.get("resume") or values.get("resume"):
        out = given.get("out") or values.get("out")
        saved = _saved_config(Path(out)) if out else None
        if saved is not None:  # the run's own config, older spellings (flat loss weights) read too
            values = merge_dicts(nest(saved), values, nested)
    cfg = config_cls.from_dict(merge_dicts(values, given, nested))
    if hasattr(cfg, "data") and not cfg.data:
        if cfg.resume and not Path(cfg.out).exists():
            raise ValueError(
                f"--resume: the run folder {cfg.out} does not exist; check --out, or start the run with --data"
            )
        if cfg.resume and saved is None:
            raise ValueError(
                f"--resume: the run folder {cfg.out} has no saved run config (train_config.json in it or in a checkpoint); "
                "pass --data and the other flags the run was started with"
            )
        raise ValueError("--data is required (or a config / resumed run that names it)")
    return cfg


def _saved_config(out: Path) -> dict[str, Any] | None:
    """The training config of the newest checkpoint of ``out`` whose ``train_config.json`` reads as a JSON object,
    else ``out/train_config.json`` (written when the run started), else None."""
    from movq.train.checkpoint import RUN_CONFIG_FILE, checkpoint_candidates

    for folder in [*checkpoint_candidates(out), out]:  # the run folder's own copy: a run killed before its first checkpoint
        path = folder / RUN_CONFIG_FILE
        check_regular_file(path, "remove it to --resume")
        try:
            data = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        if isinstance(data, dict):
            return data
    return None


def run_training_cli(argv: list[str] | None, config_cls: type, make_trainer: Callable[[Any], Any], prog: str,
                     description: str | None = __doc__, help_texts: dict[str, str] | None = None) -> int:
    """Parse flags into ``config_cls``, check ``--out``, build the trainer and run it; returns the exit status.

    ``description`` and ``help_texts`` (field name -> help) make the command's ``--help``.

    Every user error (bad flags, unwritable ``--out``, missing data, unknown device, a resumed run
    that does not match, too little memory, disk full, a loss that became NaN) is one ``PROG: error: ...`` line, exit code 2.
    The trainer must have ``run() -> int`` and ``dist``; shared by every movq training command.
    """
    from movq.distributed import teardown
    from movq.train.checkpoint import CheckpointError
    from movq.train.loop import NonFiniteLossError

    try:
        cfg = config_from_args(argv, config_cls, prog, description, help_texts)
        check_writable_dir(cfg.out)
        trainer = make_trainer(cfg)
        step = trainer.run()
    except (ValueError, FileNotFoundError, NotADirectoryError, CheckpointError, NonFiniteLossError,
            DiskFullError) as error:
        print(error_line(prog, error, config_cls, _flag_names(config_cls)), file=sys.stderr)
        return EXIT_ERROR
    if trainer.dist.is_main:
        print(f"[{prog}] done at step {step}; release weights in {cfg.out}", flush=True)
    teardown(trainer.dist)
    return 0


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``movq-train`` console script; returns the exit status (0 done, 2 user error)."""

    def make_trainer(cfg: CodecTrainConfig) -> Any:
        from movq.train.trainer import Trainer

        return Trainer(cfg)

    return run_training_cli(argv, CodecTrainConfig, make_trainer, "movq-train")


if __name__ == "__main__":
    sys.exit(main())
