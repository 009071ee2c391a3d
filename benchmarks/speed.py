"""movq against diffusers' ``VQModel`` on the same weights: one table (see benchmarks/README.md).

Same as ``movq-bench speed`` without ``--model``; every option of that command works here.

    python benchmarks/speed.py --quick                                   # ~2 min: 256 px, batch 1
    python benchmarks/speed.py --photos ../shared/images/val --large 2048   # the full table (long on CPU)
"""

from __future__ import annotations

import sys

from movq.bench.cli import main

if __name__ == "__main__":
    raise SystemExit(main(["speed", *sys.argv[1:]]))
