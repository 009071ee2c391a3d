"""The codec round trip of two source trees of movq, timed interleaved: before and after a change.

Each tree runs in its own worker process (``PYTHONPATH=TREE/src``) holding the same seeded random
``movqgan-67m`` (or ``--preset``) in fp32 and bf16. For every row (resolution x batch x precision)
the workers take turns, one round trip ``decode(encode(x))`` each, for ``--repeats`` rounds after a
warm-up, so load from elsewhere hits both alike; the table gives the median seconds per image of
each tree, their ratio, and whether both trees produced the same tokens and pixels.

    git worktree add /tmp/before <rev>
    python benchmarks/compare_revisions.py --before /tmp/before --after . --photos ../shared/images/val
    python benchmarks/compare_revisions.py --before /tmp/before --photos ../shared/images/val \
        --preset movqgan-tiny --sizes 1024 --batches 1 --tiling 2     # tiled round trips
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

WORKER = r"""
import json, sys, time
import numpy as np, torch
from PIL import Image
import movq
from movq import Codec, get_preset

preset, photos, threads, out_dir, tiling = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4], int(sys.argv[5])
torch.set_num_threads(threads)
torch.manual_seed(0)
base = Codec(get_preset(preset)).eval()
with torch.no_grad():  # spread like trained weights: norm scales around 1, codebook like the latents
    for name, p in base.named_parameters():
        if "norm" in name and name.endswith("weight"):
            p.copy_(1 + 0.1 * torch.randn_like(p))
        elif name.endswith("bias"):
            p.copy_(0.05 * torch.randn_like(p))
codecs = {"fp32": base, "bf16": Codec(get_preset(preset)).eval()}
codecs["bf16"].load_state_dict(base.state_dict())
codecs["bf16"] = codecs["bf16"].to(torch.bfloat16)
if tiling >= 0:  # 512 px tiles, the default overlap, ``tiling`` image-wide statistics passes
    for codec in codecs.values():
        codec.enable_tiling(stat_passes=tiling)
files = sorted(p for p in __import__("pathlib").Path(photos).iterdir() if p.suffix.lower() in (".jpg", ".png"))

def images(res, batch):
    out = []
    for f in (files * batch)[:batch]:
        im = Image.open(f).convert("RGB")
        s = min(im.size)
        im = im.crop(((im.width - s) // 2, (im.height - s) // 2, (im.width + s) // 2, (im.height + s) // 2))
        out.append(np.asarray(im.resize((res, res), Image.BICUBIC)))
    x = torch.from_numpy(np.stack(out)).permute(0, 3, 1, 2).float() / 127.5 - 1
    return x

for line in sys.stdin:
    res, batch, precision, save = line.split()
    codec = codecs[precision]
    x = images(int(res), int(batch)).to(codec.dtype)
    start = time.perf_counter()
    tokens = codec.encode(x)
    pixels = codec.decode(tokens)
    seconds = time.perf_counter() - start
    if save == "1":
        torch.save({"tokens": tokens, "pixels": pixels.float()}, f"{out_dir}/{res}-{batch}-{precision}.pt")
    print(json.dumps({"seconds": seconds}), flush=True)
"""


class Worker:
    """One tree's worker process: ``run(res, batch, precision)`` -> seconds of one round trip."""

    def __init__(self, tree: Path, args: argparse.Namespace, out_dir: Path) -> None:
        env = {**os.environ, "PYTHONPATH": str(tree / "src")}
        self.out_dir = out_dir
        self.proc = subprocess.Popen(
            [sys.executable, "-c", WORKER, args.preset, args.photos, str(args.threads), str(out_dir),
             str(-1 if args.tiling is None else args.tiling)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env,
        )

    def run(self, res: int, batch: int, precision: str, save: bool = False) -> float:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write(f"{res} {batch} {precision} {int(save)}\n")
        self.proc.stdin.flush()
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError("worker died")
        return json.loads(line)["seconds"]

    def close(self) -> None:
        if self.proc.stdin:
            self.proc.stdin.close()
        self.proc.wait()


def compare_outputs(before: Path, after: Path, name: str) -> str:
    import torch

    a, b = torch.load(before / name), torch.load(after / name)
    same_tokens = (a["tokens"] == b["tokens"]).float().mean().item()
    diff = (a["pixels"] - b["pixels"]).abs().max().item()
    return f"{same_tokens:.2%} / {diff:.1e}"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--before", type=Path, required=True, help="source tree before the change (has src/movq)")
    p.add_argument("--after", type=Path, default=Path("."), help="source tree after the change")
    p.add_argument("--photos", required=True, help="folder of photos (centre-cropped, resized)")
    p.add_argument("--preset", default="movqgan-67m")
    p.add_argument("--sizes", default="256,512")
    p.add_argument("--batches", default="1,8")
    p.add_argument("--precisions", default="fp32,bf16")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    p.add_argument("--tiling", type=int, metavar="STAT_PASSES",
                   help="round trips with enable_tiling(stat_passes=STAT_PASSES) (512 px tiles), e.g. at 1024 px")
    args = p.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        dirs = {k: Path(tmp) / k for k in ("before", "after")}
        for d in dirs.values():
            d.mkdir()
        workers = {k: Worker(getattr(args, k).resolve(), args, dirs[k]) for k in ("before", "after")}
        print("| res | batch | precision | before s/img | after s/img | after / before speed | tokens equal / max pixel diff |")
        print("|---|---|---|---|---|---|---|")
        for precision in args.precisions.split(","):
            for res in map(int, args.sizes.split(",")):
                for batch in map(int, args.batches.split(",")):
                    for key in ("before", "after"):  # warm-up (prepacking, allocator), outputs saved
                        workers[key].run(res, batch, precision, save=True)
                    times: dict[str, list[float]] = {"before": [], "after": []}
                    for _ in range(args.repeats):
                        for key in ("before", "after"):
                            times[key].append(workers[key].run(res, batch, precision) / batch)
                    before, after = statistics.median(times["before"]), statistics.median(times["after"])
                    same = compare_outputs(dirs["before"], dirs["after"], f"{res}-{batch}-{precision}.pt")
                    print(f"| {res} | {batch} | {precision} | {before:.3f} | {after:.3f} | {before / after:.3f}x | {same} |",
                          flush=True)
        for worker in workers.values():
            worker.close()


if __name__ == "__main__":
    main()
