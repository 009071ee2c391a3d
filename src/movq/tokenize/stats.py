"""Whole-dataset statistics of a finished run: code usage, perplexity, dead codes, a PNG histogram
(token runs), per-channel mean / std (latent runs)."""

from __future__ import annotations

import math
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import torch
from PIL import Image, ImageDraw

from movq.atomic import atomic_write

MAX_BINCOUNT = 2**24
"""Larger (implicit FSQ / LFQ) codebooks are counted with ``unique`` instead of a dense histogram."""


def code_counts(token_shards: Iterable[torch.Tensor], codebook_size: int) -> torch.Tensor:
    """int64 ``[codebook_size]`` counts of every id over all tensors (dense codebooks), or the counts of
    the ids that occur (huge codebooks, > ``MAX_BINCOUNT``)."""
    if codebook_size <= MAX_BINCOUNT:
        counts = torch.zeros(codebook_size, dtype=torch.int64)
        for tokens in token_shards:
            counts += torch.bincount(tokens.reshape(-1).long(), minlength=codebook_size)
        return counts
    seen: dict[int, int] = {}
    for tokens in token_shards:
        ids, n = torch.unique(tokens.reshape(-1).long(), return_counts=True)
        for i, c in zip(ids.tolist(), n.tolist()):
            seen[i] = seen.get(i, 0) + c
    return torch.tensor([seen[i] for i in sorted(seen)], dtype=torch.int64)


def code_summary(counts: torch.Tensor, codebook_size: int) -> dict[str, Any]:
    """Usage (fraction of codes used), perplexity ``exp(H)`` of the code distribution, dead codes."""
    total = int(counts.sum())
    used = int((counts > 0).sum())
    probs = counts[counts > 0].double() / max(total, 1)
    perplexity = math.exp(float(-(probs * probs.log()).sum())) if total else 0.0
    return {"tokens": total, "codebook_size": codebook_size, "used_codes": used, "usage": used / codebook_size,
            "perplexity": perplexity, "dead_codes": codebook_size - used}


def latent_summary(latent_shards: Iterable[torch.Tensor]) -> dict[str, Any]:
    """Per-channel mean and std (float64) of stored latents ``[n, C, h, w]`` over all positions."""
    total, s1, s2 = 0, None, None
    for z in latent_shards:
        if z.shape[0] == 0:
            continue
        x = z.double().transpose(0, 1).reshape(z.shape[1], -1)
        s1 = x.sum(1) if s1 is None else s1 + x.sum(1)
        s2 = (x * x).sum(1) if s2 is None else s2 + (x * x).sum(1)
        total += x.shape[1]
    if s1 is None or s2 is None:
        return {"positions": 0}
    mean = s1 / total
    std = (s2 / total - mean**2).clamp(min=0).sqrt()
    return {"positions": total, "mean": mean.tolist(), "std": std.tolist(), "overall_std": float(std.pow(2).mean().sqrt())}


def draw_histogram(counts: torch.Tensor, path: str | Path, title: str, width: int = 900, height: int = 520) -> None:
    """PNG with two panels: counts by code id (bins of ids when the codebook is wider than the plot)
    and the rank-frequency curve on a log scale (the flat tail at the bottom is the dead codes)."""
    image = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(image)
    draw.text((10, 6), title, fill="black")
    margin, panel_h = 50, (height - 60) // 2 - 20
    plot_w = width - margin - 10
    c = counts.double()
    # panel 1: counts by id, max over bins of ids
    bins = min(plot_w, c.numel())
    edges = torch.linspace(0, c.numel(), bins + 1).long()
    binned = torch.stack([c[edges[i]:max(edges[i + 1], edges[i] + 1)].max() for i in range(bins)])
    _bars(draw, binned / max(float(binned.max()), 1.0), margin, 30, plot_w, panel_h)
    draw.text((margin, 30 + panel_h + 2), f"code id 0 .. {c.numel() - 1} (max per bin)", fill="black")
    # panel 2: sorted frequencies, log scale
    top = 30 + panel_h + 30
    ranked = torch.sort(c, descending=True).values
    ranked = ranked[torch.linspace(0, ranked.numel() - 1, min(plot_w, ranked.numel())).long()]
    peak = max(float(ranked.max()), 1.0)
    _bars(draw, torch.log10(ranked + 1) / math.log10(peak + 1), margin, top, plot_w, panel_h)
    draw.text((margin, top + panel_h + 2), "codes sorted by frequency (log count); zero = dead", fill="black")
    draw.text((4, 30), f"{int(peak)}", fill="black")
    atomic_write(path, lambda tmp: image.save(tmp, format="PNG"))


def _bars(draw: ImageDraw.ImageDraw, values: torch.Tensor, left: int, top: int, w: int, h: int) -> None:
    draw.rectangle([left - 1, top - 1, left + w, top + h], outline="gray")
    step = w / max(values.numel(), 1)
    for i, v in enumerate(values.clamp(0, 1).tolist()):
        if v > 0:
            x0 = left + int(i * step)
            draw.rectangle([x0, top + h - max(1, int(v * h)), max(x0, left + int((i + 1) * step) - 1), top + h],
                           fill=(60, 110, 200))
