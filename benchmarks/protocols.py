"""How much the evaluation protocol alone moves the numbers: one codec, one folder, ``movq-bench``
under each preprocessing protocol (and FID mode), side by side.

Rows: ``--protocol movq`` (short side bicubic, centre crop; the default), ``--protocol movq --resize
lanczos`` (VAR's filter), ``--protocol adm`` (ADM's ``center_crop_arr``: BOX halving while the short
side is >= 2x the resolution, then bicubic; LlamaGen / TiTok / IBQ / DiT), ``--protocol var`` (VAR's
1.125x Lanczos resize and centre crop), and ``adm`` with
``--fid-mode clean`` (clean-fid's resize into the Inception); each at every ``--resolution`` given.
``adm --fid-mode clean`` runs only when ``fid`` is among ``--metrics``. Also reports how many of the
cropped inputs differ from the default protocol's, pixel for pixel (each protocol's
:class:`movq.image_files.Preprocessing` applied to the same files), so an unchanged row is
explained, not guessed.

    python benchmarks/protocols.py                                   # shipped codec, ../shared/images/val
    python benchmarks/protocols.py --metrics psnr,ssim,ssim_skimage,l1,lpips_alex  # no FID: minutes on a CPU
    python benchmarks/protocols.py --model sber-movqgan-67m --data /data/imagenet/val --limit 5000 --device cuda

Writes the Markdown table to stdout (and ``--out`` as JSON). FID on a few dozen images is dominated by
small-sample bias and, offline, uses the labelled substitute Inception: compare rows only with each
other.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import sys
import tempfile
from pathlib import Path

from movq.bench.cli import main as bench

VARIANTS = {
    "movq": ("movq (bicubic, default)", ["--protocol", "movq"]),
    "lanczos": ("movq --resize lanczos", ["--protocol", "movq", "--resize", "lanczos"]),
    "adm": ("adm", ["--protocol", "adm"]),
    "var": ("var", ["--protocol", "var"]),
    "adm-clean": ("adm --fid-mode clean", ["--protocol", "adm", "--fid-mode", "clean"]),
}


def changed_inputs(data: str, resolution: int, flags: list[str], limit: int | None) -> int:
    """How many of the bench's cropped inputs this protocol changes against the default, pixel for pixel."""
    from movq.bench.data import discover
    from movq.image_files import Preprocessing

    protocol = flags[flags.index("--protocol") + 1]
    resize = flags[flags.index("--resize") + 1] if "--resize" in flags else "bicubic"
    changed = 0
    for record in discover(data).records[:limit]:
        try:
            ours = Preprocessing(protocol, resize).load(record.path, resolution)[0]
        except Exception:  # noqa: BLE001 - unreadable files are skipped by the bench as well
            continue
        changed += int(not (ours == Preprocessing().load(record.path, resolution)[0]).all())
    return changed


def run(args: argparse.Namespace) -> list[dict]:
    rows = []
    with_fid = "fid" in args.metrics.split(",")
    with tempfile.TemporaryDirectory() as tmp:
        for resolution in args.resolution:
            for name, flags in (VARIANTS[v] for v in args.variants.split(",")):
                if "--fid-mode" in flags and not with_fid:
                    continue
                out = Path(tmp) / f"{resolution}-{len(rows)}.json"
                argv = ["--model", args.model, "--data", args.data, "--resolution", str(resolution), "--metrics", args.metrics,
                        "--batch-size", str(args.batch_size), "--no-progress", "--out", str(out), *flags]
                argv += (["--limit", str(args.limit)] if args.limit else []) + (["--device", args.device] if args.device else [])
                argv += ["--threads", str(args.threads)] if args.threads else []
                with contextlib.redirect_stdout(io.StringIO()):  # the per-run report: the table below sums them up
                    code = bench(argv)
                if code != 0:
                    raise SystemExit(f"movq-bench failed for {name} at {resolution} px")
                result = json.loads(out.read_text())
                rows.append({"resolution": resolution, "variant": name,
                             "inputs_changed": changed_inputs(args.data, resolution, flags, args.limit),
                             "n_images": result["results"][0]["n_images"], "metrics": result["results"][0],
                             "preprocessing": result["protocol"]["preprocessing"],
                             "fid_preprocessing": result["protocol"].get("fid_preprocessing"),
                             "feature_extractor": result["protocol"].get("feature_extractor")})
    return rows


def table(rows: list[dict], metrics: list[str]) -> str:
    from movq.bench.metric_table import METRICS

    head = ["Resolution", "Protocol", "Images", "Inputs differing from the default"] + [METRICS[m].header for m in metrics]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        cells = [str(r["resolution"]), r["variant"], str(r["n_images"]), str(r["inputs_changed"])]
        cells += [f"{r['metrics'][m]:.{METRICS[m].digits}f}" if r["metrics"].get(m) is not None else "-" for m in metrics]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def main() -> None:
    here = Path(__file__).resolve().parent
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="movqgan-tiny-photos", help="registered name, folder or checkpoint")
    p.add_argument("--data", default=str(here.parent.parent / "shared" / "images" / "val"))
    p.add_argument("--resolution", type=int, nargs="+", default=[256, 128])
    p.add_argument("--metrics", default="fid,psnr,ssim,ssim_skimage,l1")
    p.add_argument("--variants", default=",".join(VARIANTS), help=f"comma list from {','.join(VARIANTS)}")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--limit", type=int)
    p.add_argument("--device")
    p.add_argument("--threads", type=int)
    p.add_argument("--out", help="also write the rows as JSON here")
    args = p.parse_args()
    rows = run(args)
    print(table(rows, [m for m in args.metrics.split(",") if m]), end="")
    if rows[0]["feature_extractor"]:
        print(f"\nFID features: {rows[0]['feature_extractor']}", file=sys.stderr)
    if args.out:
        Path(args.out).write_text(json.dumps(rows, indent=2) + "\n")


if __name__ == "__main__":
    main()
