"""``movq-diffusion-nll``: bits per dimension of held-out images under a trained diffusion run.

    movq-diffusion-nll runs/food --data val/ [--out nll.json] [--batch-size 32] [--num-samples 1000]
    movq-diffusion-nll runs/food --data val/ --timestep-respacing 250     # or 'ddim50', '10,15,20'
    python -m movq.diffusion.nll runs/food --data val/

The number is the variational bound in bits per dimension, as improved-diffusion's ``image_nll.py``
reports it (``calc_bpd_loop``): for each image ``x0``, the prior term ``KL(q(x_T | x0) || N(0, I))``
plus, for every step ``t`` from ``T - 1`` down to ``0``, the term at one draw ``x_t ~ q(x_t | x0)``:
``KL(q(x_{t-1} | x_t, x0) || p(x_{t-1} | x_t))`` for ``t > 0`` and the decoder's discretized
``-log p(x0 | x_1)`` at ``t = 0`` (:meth:`GaussianDiffusion.vb_terms_bits`), each in bits per
dimension. A pixel model is measured on the images in ``[-1, 1]`` (8-bit bins, ``x0`` predictions
clipped to ``[-1, 1]`` as ``image_nll.py``'s default ``clip_denoised=True``; ``--no-clip`` turns it
off); a latent model on the latents of its run's codec times its latent scale (bits per latent
dimension: not comparable with pixel numbers). ``--timestep-respacing`` (alias ``--steps``) measures the
bound of the respaced process, read as every other diffusion command reads it
(:func:`movq.diffusion.schedules.space_timesteps`: ``N``, ``"ddimN"``, ``"a,b,c"``). The images of ``--data`` are read as the trainer reads
them (:class:`movq.diffusion.data.PixelImages`, at the run's resolution); a class-conditional model
gets each image's class from its class folder, matched to the run's class names.

Prints one line (``bits/dim``, the prior and decoder terms, images, steps) and with ``--out`` writes
JSON: those numbers and the mean of every term over the images (``vb_terms``, ``T`` values, index
``t``), also the per-step ``x0`` and eps mean squared errors (``xstart_mse``, ``eps_mse``).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from movq.diffusion.gaussian_diffusion import GaussianDiffusion, Model
from movq.diffusion.losses import mean_flat, normal_kl
from movq.strict import NonNegativeInt, PositiveInt, StrictConfig, error_line

PROG = "movq-diffusion-nll"
EXIT_ERROR = 2


def prior_bpd(diffusion: GaussianDiffusion, x0: Tensor) -> Tensor:
    """``KL(q(x_T | x0) || N(0, I))`` per sample ``[B]``, in bits per dimension (the bound's prior term;
    ``q(x_T | x0) = N(sqrt(abar_T) x0, 1 - abar_T)`` at the last step of ``diffusion``)."""
    abar = diffusion.alphas_cumprod[-1].item()
    mean = math.sqrt(abar) * x0
    log_variance = torch.full_like(x0, math.log(1.0 - abar))
    zeros = torch.zeros_like(x0)
    return mean_flat(normal_kl(mean, log_variance, zeros, zeros)) / math.log(2.0)


@torch.no_grad()
def calc_bpd_loop(
    diffusion: GaussianDiffusion,
    model: Model,
    x0: Tensor,
    model_kwargs: dict[str, Any] | None = None,
    *,
    clip_denoised: float | None = None,
    generator: torch.Generator | None = None,
    progress: Any = None,
) -> dict[str, Tensor]:
    """The whole variational bound of ``x0`` ``[B, C, ...]`` in bits per dimension (improved-diffusion's
    ``calc_bpd_loop``): one draw ``x_t ~ q(x_t | x0)`` per step ``t = T - 1 .. 0`` (noise from
    ``generator``), the term :meth:`GaussianDiffusion.vb_terms_bits` of each (``clip_denoised``: the
    ``x0`` clamp of ``p``) and the :func:`prior_bpd`.

    Returns ``total_bpd`` ``[B]`` (``prior_bpd + vb.sum(1)``), ``prior_bpd`` ``[B]``, ``vb`` ``[B, T]``
    (column ``t`` is step ``t``'s term), ``xstart_mse`` and ``mse`` ``[B, T]`` (squared errors of the
    ``x0`` and eps predictions). ``progress`` (a tqdm bar, optional) is advanced once per step.
    """
    batch, steps = x0.shape[0], diffusion.num_timesteps
    vb = x0.new_zeros(batch, steps)
    xstart_mse, mse = x0.new_zeros(batch, steps), x0.new_zeros(batch, steps)
    for step in range(steps - 1, -1, -1):
        t = torch.full((batch,), step, dtype=torch.long, device=x0.device)
        noise = torch.randn(x0.shape, generator=generator, device=x0.device, dtype=x0.dtype)
        x_t = diffusion.q_sample(x0, t, noise)
        output = diffusion.model_output(model, x_t, t, model_kwargs).to(x0.dtype)
        vb[:, step] = diffusion.vb_terms_bits(output, x0, x_t, t, clip_denoised)
        pred_x0 = diffusion.p_mean_variance(output, x_t, t, clip_denoised)["pred_x0"]
        xstart_mse[:, step] = mean_flat((pred_x0 - x0) ** 2)
        mse[:, step] = mean_flat((diffusion.predict_eps(x_t, t, pred_x0) - noise) ** 2)
        if progress is not None:
            progress.update(1)
    prior = prior_bpd(diffusion, x0)
    return {"total_bpd": prior + vb.sum(dim=1), "prior_bpd": prior, "vb": vb, "xstart_mse": xstart_mse, "mse": mse}


@dataclass
class NllConfig(StrictConfig):
    """What ``movq-diffusion-nll`` measures: the run folder ``run`` on the images of ``data`` (at most
    ``num_samples`` of them, ``0``: all), ``batch_size`` at a time, over the steps a respacing ``steps`` keeps
    (an int or improved-diffusion's ``"250"`` / ``"ddim50"`` / ``"10,15,20"``; ``None``: all of the run's),
    with ``clip`` (pixel models: ``x0`` clamped to ``[-1, 1]``), the ``weights`` of the run (``auto``: EMA), noise from ``seed``; JSON to ``out`` when given."""

    run: str
    data: str
    out: str | None = None
    batch_size: PositiveInt = 32
    num_samples: NonNegativeInt = 0
    steps: PositiveInt | str | None = None
    clip: bool = True
    weights: str = "auto"
    device: str = "auto"
    seed: int = 0
    num_workers: NonNegativeInt = 0
    progress: bool = True


def _labels(model_classes: int | None, run_labels: list[str] | None, images: Any, data: str) -> Tensor | None:
    """The run's class index of each image (by class name), ``None`` for an unconditional model."""
    from movq.diffusion.data import folder_labels

    if model_classes is None:
        return None
    names, labels = images.label_names, images.labels
    if (names is None or any(label is None for label in labels)) and Path(data).is_dir():
        found = folder_labels(images.sources)  # class folders, one class too (a tokenize source needs two)
        labels, names = found if found is not None else (labels, names)
    if names is None or any(label is None for label in labels):
        raise ValueError(f"the model is class-conditional ({model_classes} classes): the images of --data {data} "
                         "need class folders named as its classes (DATA/<class>/<image>)")
    run_labels = run_labels or [str(i) for i in range(model_classes)]
    unknown = sorted(set(names) - set(run_labels))
    if unknown:
        raise ValueError(f"--data {data} has class folders {unknown} that the model does not know; its classes: "
                         f"{run_labels}")
    return torch.tensor([run_labels.index(names[label]) for label in labels], dtype=torch.long)


def evaluate_nll(cfg: NllConfig) -> dict[str, Any]:
    """Bits per dimension of the images of ``cfg.data`` under the run ``cfg.run`` (see the module
    docstring); returns the summary that ``--out`` writes. Bad input is a one-line ``ValueError`` /
    ``FileNotFoundError`` before any image is decoded."""
    from movq.devices import resolve_device
    from movq.diffusion.data import PixelImages
    from movq.diffusion.pipeline import LatentDiffusionPipeline, read_release_info

    if not Path(cfg.run).is_dir():
        raise FileNotFoundError(f"the run folder {cfg.run} does not exist")
    info = read_release_info(cfg.run)
    if not Path(cfg.data).exists() and not any(ch in cfg.data for ch in "*?["):
        raise FileNotFoundError(f"--data {cfg.data} does not exist")
    if cfg.steps is not None:
        try:
            GaussianDiffusion.from_pretrained(cfg.run).respace(cfg.steps)
        except ValueError as error:
            raise ValueError(f"--timestep-respacing {cfg.steps!r}: {error}") from None
    device = resolve_device(cfg.device)
    pipe = LatentDiffusionPipeline.from_pretrained(cfg.run, weights=cfg.weights, device=device)
    model, diffusion = pipe.model.eval(), pipe.diffusion
    if model.config.cond_dim is not None:
        raise ValueError(f"{cfg.run} is conditioned on vectors (--cond): movq-diffusion-nll measures class-conditional "
                         "and unconditional models")
    if cfg.steps is not None:
        diffusion = diffusion.respace(cfg.steps)
    resolution = info["resolution"]
    if not resolution:
        raise ValueError(f"{cfg.run} records no image resolution (trained on a latent folder without one)")
    images = PixelImages.read(cfg.data, resolution, num_workers=cfg.num_workers)
    labels = _labels(model.config.num_classes, pipe.labels, images, cfg.data)
    count = len(images) if cfg.num_samples == 0 else min(cfg.num_samples, len(images))
    pixel = info["space"] == "pixel"
    clip = 1.0 if pixel and cfg.clip else None
    generator = torch.Generator(device).manual_seed(cfg.seed)
    totals: dict[str, list[Tensor]] = {"total_bpd": [], "prior_bpd": [], "vb": [], "xstart_mse": [], "mse": []}
    bar = _bar(-(-count // cfg.batch_size) * diffusion.num_timesteps, cfg.progress)
    for start in range(0, count, cfg.batch_size):
        x0 = torch.stack([images[i]["latents"] for i in range(start, min(start + cfg.batch_size, count))]).to(device)
        if not pixel:
            x0 = pipe.codec.encode_latents(x0).float() * pipe.latent_scale
        kwargs = {} if labels is None else {"y": labels[start:start + len(x0)].to(device)}
        terms = calc_bpd_loop(diffusion, model, x0, kwargs, clip_denoised=clip, generator=generator, progress=bar)
        for key, value in terms.items():
            totals[key].append(value.double().cpu())
    if bar is not None:
        bar.close()
    merged = {key: torch.cat(value) for key, value in totals.items()}
    return {
        "bits_per_dim": merged["total_bpd"].mean().item(),
        "prior_bpd": merged["prior_bpd"].mean().item(),
        "decoder_bpd": merged["vb"][:, 0].mean().item(),
        "images": count, "steps": diffusion.num_timesteps, "space": info["space"], "clip_denoised": clip,
        "run": str(cfg.run), "data": str(cfg.data), "resolution": resolution, "skipped": len(images.skipped),
        "settings": asdict(cfg),
        "vb_terms": merged["vb"].mean(dim=0).tolist(),
        "xstart_mse": merged["xstart_mse"].mean(dim=0).tolist(),
        "eps_mse": merged["mse"].mean(dim=0).tolist(),
    }


def _bar(total: int, enabled: bool) -> Any:
    if not enabled:
        return None
    try:
        from tqdm.auto import tqdm
    except ImportError:
        return None
    return tqdm(total=total, desc="bits/dim", unit="step")


def summary_line(result: dict[str, Any]) -> str:
    """The one line ``movq-diffusion-nll`` prints."""
    unit = "bits/dim" if result["space"] == "pixel" else "bits/latent dim"
    return (f"{PROG}: {result['bits_per_dim']:.4f} {unit} on {result['images']} images of {result['data']} "
            f"(prior {result['prior_bpd']:.4f}, decoder {result['decoder_bpd']:.4f}, {result['steps']} steps, "
            f"{result['space']} model)")


def respacing_arg(value: str) -> int | str:
    """``--timestep-respacing``: a digit string is the int it spells, anything else stays a string for
    :func:`~movq.diffusion.schedules.space_timesteps` to read (and refuse)."""
    return int(value) if value.strip().isdigit() else value


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=PROG, description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("run", help="a movq-diffusion-train output folder")
    p.add_argument("--data", required=True, help="held-out images (folder with class subfolders, manifest, tar shards)")
    p.add_argument("--out", help="write the result as JSON here")
    p.add_argument("--batch-size", type=int, default=32, help="images per batch (default 32)")
    p.add_argument("--num-samples", type=int, default=0, help="measure the first N images (default 0: all)")
    p.add_argument("--timestep-respacing", "--steps", dest="steps", type=respacing_arg,
                   help="measure the respaced process: an integer (evenly spaced steps) or improved-diffusion's '250', "
                        "'ddim50', '10,15,20' (default: all the run's steps)")
    p.add_argument("--no-clip", dest="clip", action="store_false",
                   help="do not clamp x0 predictions of a pixel model to [-1, 1] (image_nll.py's clip_denoised=False)")
    p.add_argument("--weights", default="auto", choices=["auto", "ema", "model"], help="auto: EMA weights when saved")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N, mps")
    p.add_argument("--seed", type=int, default=0, help="seed of the noise draws")
    p.add_argument("--num-workers", type=int, default=0, help="image decoding processes")
    p.add_argument("--no-progress", dest="progress", action="store_false")
    return p


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``movq-diffusion-nll`` / ``python -m movq.diffusion.nll``; returns the exit status
    (0 done, 2 user error, one line naming the flag)."""
    from movq.atomic import atomic_write_text, check_writable_file

    args = build_parser().parse_args(argv)
    try:
        cfg = NllConfig(**vars(args))
        if cfg.out:
            check_writable_file(cfg.out)
        result = evaluate_nll(cfg)
    except (ValueError, FileNotFoundError, NotADirectoryError) as error:
        print(error_line(PROG, error, NllConfig), file=sys.stderr)
        return EXIT_ERROR
    print(summary_line(result), flush=True)
    if cfg.out:
        atomic_write_text(cfg.out, json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
