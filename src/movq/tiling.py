"""Bounded-memory inference: overlapping tiles blended without seams, and batch slicing.

A :class:`TilingPolicy` decides, from an estimate of the activation memory of one forward pass
(:func:`movq.memory_budget.feature_bytes_per_pixel`, the estimate the memory check uses), how many
images run at once and whether each image is cut into tiles. Tiles live on the latent grid (one
position = ``f x f`` pixels); neighbouring tiles share at least ``overlap`` positions, and the
outputs are blended there with ramps that sum to one, so there is no seam. Only the levels
without attention are tiled (the codec runs the attention levels on the whole image), a MoVQ
decoder tile receives the matching slice of ``z_q`` for its SpatialNorm layers, and all tiles are
normalised with the image's GroupNorm statistics, gathered by extra passes over the tiles
(:class:`SharedGroupStats`). The result is close to the untiled one, not equal: the statistics
are estimates, and a tile's border sees zero padding instead of its neighbour.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor, nn

from movq.memory_budget import device_activation_budget
from movq.modules.norm import EPS, NUM_GROUPS, GroupNorm, SpatialNorm
from movq.strict import NonNegativeInt, PositiveInt, StrictConfig

TILE_BUDGET_SHARE = 0.5
"""Share of the activation budget the tiles of an automatically tiled image may use: the rest holds
what a tiled run keeps besides the tile's activations (the full-size output and blend weights,
the statistics, the prepacked weights), so with a 4 GiB budget a 2048x2048 MoVQGAN-67M decode stays
under 4 GiB RSS while a 1024x1024 one still runs untiled."""

CPU_SLICE_BYTES = 64 * 2**20
"""On CPU a batch is run in slices whose activations stay within this many bytes: a convolution
gains nothing from a larger batch there (its matrices are already as large as the feature map),
while a batch whose maps outgrow the caches runs slower per image. Measured on the shipped tiny
codec at 256 px (fp32, 2 threads): 37 images/s one at a time, 18 in one batch of 32."""


@dataclass(frozen=True)
class TilingPolicy(StrictConfig):
    """How a codec bounds its memory at inference.

    - ``mode``: ``"auto"`` (default) tiles an image only when one image alone would exceed
      ``memory_budget`` (its tiles then use at most half of it); ``"on"``
      (:meth:`Codec.enable_tiling`) tiles every image larger than one tile; ``"off"``
      (:meth:`Codec.disable_tiling`) never tiles.
    - ``tile`` / ``overlap``: tile side and overlap between neighbouring tiles, in latent positions
      (``tile * f`` pixels); ``overlap`` must be below ``tile / 2``. The default overlap of 4 positions
      (32 px at f=8) decodes as faithfully as 16 (43.0 against 42.5 dB at 1024 px with 512 px tiles: the
      shared statistics, not the overlap, carry the context) and duplicates far less work (tiled decode
      1.95x the untiled time instead of 2.66x; ``benchmarks/README.md``).
    - ``memory_budget``: bytes of activations one forward pass may use; larger batches are sliced
      and, in ``"auto"`` mode, larger images tiled. ``None`` (default) follows the device: a share of
      the memory free on it when the call starts (:func:`movq.memory_budget.device_activation_budget`).
    - ``stat_passes``: passes over the tiles that gather the image-wide GroupNorm statistics before
      the pass that produces the output (0: every tile uses its own statistics, fastest, visibly
      less faithful); each pass costs about one untiled forward.
    """

    mode: Literal["auto", "on", "off"] = "auto"
    tile: PositiveInt = 64
    overlap: NonNegativeInt = 4
    memory_budget: PositiveInt | None = None
    stat_passes: NonNegativeInt = 2

    def __post_init__(self) -> None:
        super().__post_init__()
        if not 2 * self.overlap < self.tile:
            raise ValueError(f"overlap must be an int in [0, tile / 2) = [0, {self.tile / 2:g}), got {self.overlap!r}")

    def budget(self, device: torch.device | str) -> int:
        """The activation budget in bytes for a call on ``device``: ``memory_budget`` when set, else a
        share of the memory free on ``device`` now."""
        if self.memory_budget is not None:
            return self.memory_budget
        return device_activation_budget(device)

    def plan(
        self, batch: int, height: int, width: int, bytes_per_position: float, cache_bytes: float | None = None,
        budget: int | None = None,
    ) -> tuple[int, int | None]:
        """``(images per forward, tile side or None)`` for a batch of latent grids ``height x width``,
        given the activation bytes of one image per latent position. ``"on"`` uses ``tile``;
        ``"auto"`` tiles only a grid above the budget, with the largest tiles that take at most
        :data:`TILE_BUDGET_SHARE` of it; tiled images are batched within that share too.
        ``cache_bytes`` (CPU, :data:`CPU_SLICE_BYTES`) also caps the images per forward so that
        one forward's activations stay near the caches' size (at least one image). ``budget`` is the
        resolved budget of the call's device (:meth:`budget`; by default that of the CPU)."""
        if budget is None:
            budget = self.budget("cpu")
        tile: int | None = None
        tile_budget = budget * TILE_BUDGET_SHARE
        if self.mode == "on":
            tile = self.tile
        elif self.mode == "auto" and bytes_per_position * height * width > budget:
            tile = max(math.isqrt(int(tile_budget // bytes_per_position)), 2 * self.overlap + 1)
        if tile is not None and height <= tile and width <= tile:
            tile = None
        area = min(height, tile) * min(width, tile) if tile else height * width
        budget = tile_budget if tile else budget
        if cache_bytes is not None:
            budget = min(budget, cache_bytes)
        return max(1, int(budget // max(bytes_per_position * area, 1.0))), tile


def tile_layout(size: int, tile: int, overlap: int) -> tuple[int, list[int]]:
    """``(side, starts)``: the fewest tiles of side at most ``tile`` that cover ``[0, size)`` with at
    least ``overlap`` positions shared by neighbours, made as small as that count allows (less
    duplicated work) and spread evenly."""
    if size <= tile:
        return size, [0]
    count = math.ceil((size - overlap) / (tile - overlap))
    side = math.ceil((size + (count - 1) * overlap) / count)
    return side, [round(i * (size - side) / (count - 1)) for i in range(count)]


BLEND_MARGIN = 0.25
"""Fraction of an overlap, at each end, where a tile's weight is zero: the pixels next to a tile's
border see the tile's zero padding instead of the neighbouring content, so only the middle of the
overlap is blended."""


def ramp(shared: int) -> Tensor:
    """Rising weights across an overlap of ``shared`` positions: 0 in the outer ``BLEND_MARGIN``,
    linear in the middle, 1 in the inner ``BLEND_MARGIN``. ``ramp(n) + ramp(n).flip(0) == 1``."""
    margin = BLEND_MARGIN * shared
    position = torch.arange(shared, dtype=torch.float32) + 0.5
    return ((position - margin) / (shared - 2 * margin)).clamp(0.0, 1.0)


def ramps(starts: list[int], tile: int, scale: int) -> list[Tensor]:
    """Blend weights (float32, ``tile * scale`` long) of each tile (side ``tile``) along one axis, in
    output units: a :func:`ramp` across each overlap with a neighbour (complementary to the
    neighbour's, so the weights sum to one where only neighbours overlap), one elsewhere."""
    out = []
    for i, start in enumerate(starts):
        weight = torch.ones(tile * scale)
        if i > 0:
            shared = (starts[i - 1] + tile - start) * scale
            weight[:shared] = ramp(shared)
        if i + 1 < len(starts):
            shared = (start + tile - starts[i + 1]) * scale
            weight[tile * scale - shared :] = ramp(shared).flip(0)
        out.append(weight)
    return out


class SharedGroupStats:
    """GroupNorm statistics shared by all tiles of a batch of images (:class:`GroupStatsSource`).

    While ``recording``, every norm layer that sees a tile adds that tile's statistics, weighted by
    the tile's blend weights (so overlaps count once), to a per-layer, per-image running total
    (Chan's parallel mean / variance update in float64). ``lookup`` returns the statistics of the
    previous pass (``None`` before the first one), which the norm then uses instead of the tile's
    own: a tile normalised with the image's exact statistics computes what the untiled pass
    computes, except near its border. Each pass makes the statistics of one more layer exact and
    improves the deeper ones.
    """

    def __init__(self) -> None:
        self.recording = True
        self.weights: Callable[[int, int], Tensor] | None = None
        self._totals: dict[int, tuple[Tensor, Tensor, Tensor]] = {}
        self._stats: dict[int, tuple[Tensor, Tensor]] = {}

    def lookup(self, norm: nn.Module, f: Tensor) -> tuple[Tensor, Tensor] | None:
        if self.recording:
            self._record(id(norm), f)
        return self._stats.get(id(norm))

    def _record(self, key: int, f: Tensor) -> None:
        assert self.weights is not None, "SharedGroupStats.weights must be set for the current tile"
        weight = self.weights(f.shape[-2], f.shape[-1]).to(f.device)
        x = f.detach().float()
        mean = x.mean(dim=(2, 3), keepdim=True)
        centred = x - mean
        total = weight.sum().double()
        s1 = torch.einsum("bchw,hw->bc", centred, weight).double()
        s2 = torch.einsum("bchw,hw->bc", centred.square_(), weight).double()
        tile_mean = mean.flatten(1).double() + s1 / total
        tile_m2 = s2 - s1.square() / total
        if key not in self._totals:
            self._totals[key] = (total, tile_mean, tile_m2)
            return
        count, run_mean, run_m2 = self._totals[key]
        delta = tile_mean - run_mean
        merged = count + total
        self._totals[key] = (merged, run_mean + delta * total / merged, run_m2 + tile_m2 + delta.square() * count * total / merged)

    def finish_pass(self) -> None:
        """Turn the recorded totals into group statistics for the next pass and start a new record."""
        self._stats = {}
        for key, (count, mean, m2) in self._totals.items():
            batch, channels = mean.shape
            grouped_mean = mean.view(batch, NUM_GROUPS, -1)
            group_mean = grouped_mean.mean(dim=2, keepdim=True)
            spread = (m2.view(batch, NUM_GROUPS, -1) + count * (grouped_mean - group_mean).square()).sum(2, keepdim=True)
            group_var = spread / (count * grouped_mean.shape[2])
            per_channel = (t.expand(-1, -1, channels // NUM_GROUPS).reshape(batch, channels, 1, 1) for t in (group_mean, group_var))
            channel_mean, channel_var = per_channel
            self._stats[key] = (channel_mean.float(), (channel_var + EPS).rsqrt().float())
        self._totals = {}


def shared_norms(module: nn.Module) -> list[nn.Module]:
    """The GroupNorm / SpatialNorm layers inside ``module`` (none: its tiles need no shared statistics)."""
    return [m for m in module.modules() if isinstance(m, (GroupNorm, SpatialNorm))]


@contextmanager
def shared_norm_stats(module: nn.Module, stats: SharedGroupStats) -> Iterator[None]:
    """Make every GroupNorm / SpatialNorm inside ``module`` use ``stats`` for the duration."""
    norms = shared_norms(module)
    for norm in norms:
        norm.shared_stats = stats
    try:
        yield
    finally:
        for norm in norms:
            del norm.shared_stats


@dataclass(frozen=True)
class Window:
    """A tile: rows ``top .. top + height`` and columns ``left .. left + width`` of the latent grid."""

    top: int
    left: int
    height: int
    width: int

    def crop(self, x: Tensor, scale: int = 1) -> Tensor:
        """The part of ``x`` (``[..., h * scale, w * scale]``) under this tile."""
        return x[..., self.top * scale : (self.top + self.height) * scale, self.left * scale : (self.left + self.width) * scale]


def run_tiled(
    fn: Callable[[Window], Tensor],
    grid: tuple[int, int],
    *,
    tile: int,
    overlap: int,
    out_scale: int,
    stats: SharedGroupStats | None = None,
    stat_passes: int = 1,
) -> Tensor:
    """Run ``fn`` on overlapping tiles of a latent grid ``h x w`` and blend the results.

    ``fn(window)`` returns the output ``[B, C', t_h * out_scale, t_w * out_scale]`` of the tile
    (it crops its inputs with :meth:`Window.crop`); returns ``[B, C', h * out_scale, w * out_scale]``
    in the dtype of ``fn``'s output, blended in float32.

    With ``stats`` (installed in ``fn``'s norm layers by :func:`shared_norm_stats`), ``stat_passes``
    passes over all tiles first record the image-wide GroupNorm statistics (each pass normalised
    with the previous pass's statistics), and the final pass normalises every tile with them.
    """
    h, w = grid
    (th, rows), (tw, cols) = tile_layout(h, tile, overlap), tile_layout(w, tile, overlap)
    row_ramps, col_ramps = {out_scale: ramps(rows, th, out_scale)}, {out_scale: ramps(cols, tw, out_scale)}
    windows = [(i, j, Window(y0, x0, th, tw)) for i, y0 in enumerate(rows) for j, x0 in enumerate(cols)]

    def weights_at(i: int, j: int, scale: int) -> Tensor:  # float32 on the CPU: callers move it
        if scale not in row_ramps:
            row_ramps[scale], col_ramps[scale] = ramps(rows, th, scale), ramps(cols, tw, scale)
        return row_ramps[scale][i][:, None] * col_ramps[scale][j][None, :]

    if stats is not None:
        for _ in range(stat_passes):
            stats.recording = True
            for i, j, window in windows:
                stats.weights = lambda fh, fw, i=i, j=j: weights_at(i, j, fh // th)
                fn(window)
            stats.finish_pass()
        stats.recording = False
    out: Tensor | None = None
    for i, j, window in windows:
        piece = fn(window)
        if out is None:
            out = torch.zeros((*piece.shape[:2], h * out_scale, w * out_scale), device=piece.device)
        window.crop(out, out_scale).addcmul_(piece, weights_at(i, j, out_scale).to(piece.device))
    assert out is not None
    # the ramps sum to one unless non-neighbouring tiles overlap (tiny tiles): normalise anyway
    row_total, col_total = torch.zeros(h * out_scale), torch.zeros(w * out_scale)
    for start, weight in zip(rows, row_ramps[out_scale]):
        row_total[start * out_scale : start * out_scale + weight.numel()] += weight
    for start, weight in zip(cols, col_ramps[out_scale]):
        col_total[start * out_scale : start * out_scale + weight.numel()] += weight
    out /= (row_total[:, None] * col_total[None, :]).to(out.device)
    return out.to(piece.dtype)


def run_sliced(fn: Callable[[Tensor], Tensor], x: Tensor, size: int) -> Tensor:
    """``fn`` over slices of at most ``size`` images of ``x`` (batch first), concatenated."""
    if x.shape[0] <= size:
        return fn(x)
    return torch.cat([fn(part) for part in x.split(size)])
