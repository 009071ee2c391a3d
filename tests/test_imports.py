"""`import movq` stays light: optional parts and heavy dependencies load only when used."""

from __future__ import annotations

import subprocess
import sys

OPTIONAL = ("movq.metrics", "movq.bench", "movq.train", "movq.perceptual", "movq.tokenize", "movq.data", "scipy",
            "lpips", "torchvision", "diffusers", "matplotlib", "vector_quantize_pytorch")


def run_python(code: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)


def test_import_movq_does_not_load_optional_parts():
    result = run_python(
        "import sys, movq\n"
        f"loaded = [m for m in {OPTIONAL!r} if m in sys.modules]\n"
        "print(loaded)"
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


def test_core_runs_without_torchvision():
    # Block torchvision (and the packages that need it) as if they were not installed.
    result = run_python(
        "import sys\n"
        "for name in ('torchvision', 'lpips', 'diffusers'):\n"
        "    sys.modules[name] = None\n"
        "import torch, movq\n"
        "torch.manual_seed(0)\n"
        "codec = movq.load('movqgan-tiny', pretrained=False)\n"
        "tokens = codec.encode(torch.zeros(1, 3, 32, 32))\n"
        "print(tuple(codec.decode(tokens).shape))"
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "(1, 3, 32, 32)"
