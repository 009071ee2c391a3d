"""``python -m movq.bench`` == ``movq-bench``."""

from movq.bench.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
