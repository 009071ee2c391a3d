"""Shared test set-up: subprocesses (CLIs, torchrun, examples) import the movq of this checkout."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

SRC = str(Path(__file__).resolve().parents[1] / "src")

# pytest's ``pythonpath`` setting covers this process only; child processes read PYTHONPATH, so an
# editable install of another checkout can never be what a subprocess test exercises.
os.environ["PYTHONPATH"] = os.pathsep.join([SRC, *filter(None, [os.environ.get("PYTHONPATH")])])


@pytest.fixture
def one_thread():
    """Torch on one CPU thread for the test (tiny models run fastest so, and do not fight a shared CPU).

    Use with ``pytestmark = pytest.mark.usefixtures("one_thread")``."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
