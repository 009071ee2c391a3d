"""Export a run's EMA release weights as a compact codec folder (optionally fp16 / bf16).

    python -m movq.train.export RUN_OUT DEST [--dtype fp16] [--name movqgan-tiny-photos]

``DEST`` gets ``config.json`` + ``model.safetensors`` (``Codec.save_pretrained``); load it with
``movq.load(DEST, dtype=torch.float32)`` to compute in float32.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from movq.codec import Codec
from movq.dtypes import dtype_names

DTYPES = dtype_names(short=True)  # fp32, bf16, fp16


def export_release(run_out: str | os.PathLike, dest: str | os.PathLike, dtype: str = "fp16", name: str | None = None) -> Path:
    """Copy ``run_out``'s EMA weights (written by the trainer) into ``dest`` in ``dtype``; returns ``dest``."""
    codec = Codec.from_pretrained(run_out)
    if name:
        codec.config.name = name
    return codec.to(DTYPES[dtype]).save_pretrained(dest)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run_out")
    parser.add_argument("dest")
    parser.add_argument("--dtype", choices=sorted(DTYPES), default="fp16")
    parser.add_argument("--name")
    args = parser.parse_args(argv)
    path = export_release(args.run_out, args.dest, args.dtype, args.name)
    size = (path / "model.safetensors").stat().st_size / 2**20
    print(f"wrote {path} ({size:.2f} MiB)")


if __name__ == "__main__":
    main()
