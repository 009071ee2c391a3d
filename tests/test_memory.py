"""movq.memory: the memory estimate grows with batch and size, and an impossible run is refused up front."""

from __future__ import annotations

import pytest
import torch

import movq
from movq.memory import check_memory_budget, estimate_codec_bytes, format_bytes


def test_memory_estimate_and_budget():
    config = movq.get_preset("movqgan-67m")
    small = estimate_codec_bytes(config, 1, 256, 256, torch.float32)
    assert 2 * small > estimate_codec_bytes(config, 2, 256, 256, torch.float32) > small
    assert estimate_codec_bytes(config, 1, 256, 256, torch.bfloat16) < small
    assert estimate_codec_bytes(movq.load("movqgan-tiny-photos"), 8, 64, 64, torch.float32) < small
    with pytest.raises(ValueError, match=r"needs about .* TiB but only .* of RAM is available"):
        check_memory_budget(estimate_codec_bytes(config, 1, 100_000, 100_000, torch.float32), "cpu", "this run")


def test_format_bytes():
    assert format_bytes(512) == "512 B" and format_bytes(1536) == "1.5 KiB" and format_bytes(3 * 2**40) == "3.0 TiB"
