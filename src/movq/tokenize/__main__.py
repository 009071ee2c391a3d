"""``python -m movq.tokenize`` == ``movq-tokenize`` (so ``torchrun -m movq.tokenize`` works)."""

from movq.tokenize.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
