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

import contextlib
import copy
import math
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from typing import Any, Literal

import torch
from torch import Tensor, nn

from movq.memory_budget import ACTIVATION_MAPS, device_activation_budget, release_freed_memory
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


StatisticsMode = Literal["auto", "exact", "bf16", "passes"]
"""How tiles get the image-wide GroupNorm statistics (:attr:`TilingPolicy.statistics`)."""
LockstepMode = Literal["exact", "bf16"]
"""The statistics modes that run the tiles in lockstep (:meth:`TilingPolicy.lockstep_modes`)."""

LOWERED_DTYPE = torch.bfloat16
"""The dtype of the statistics pass with ``statistics="bf16"`` (:func:`lowered_statistics`)."""


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
    - ``statistics``: how the tiles get the image-wide GroupNorm statistics. ``"exact"``: one pass
      with the tiles in lockstep (:class:`LockstepGroupStats`): the untiled statistics (tiled
      decode 66-81 dB from untiled on real photos) in about 1.15x the untiled time, holding about
      :data:`LOCKSTEP_MAPS` feature maps of the whole image (1.25 in the CPU engine); ``"bf16"``: the lockstep pass run on a
      bfloat16 copy of the network (half that memory, about half a float32 pass on hardware with
      bfloat16 arithmetic) gathers the statistics, then the output pass normalises float32 tiles
      with them (:func:`lowered_statistics`; for a float32 codec, else as ``"exact"``);
      ``"passes"``: ``stat_passes`` estimating passes, then the output pass (memory of one tile,
      but each pass costs about one untiled forward and the estimate can miss: 27 to 47 dB at
      1024 px with 2 passes); ``"auto"`` (default): the first of ``"exact"``, ``"bf16"`` whose
      memory fits the budget, else ``"passes"`` (:meth:`plan`).
    - ``stat_passes``: passes over the tiles that gather the statistics before the pass that produces
      the output, with ``statistics="passes"`` (0: every tile uses its own statistics, fastest, visibly
      less faithful).
    """

    mode: Literal["auto", "on", "off"] = "auto"
    tile: PositiveInt = 64
    overlap: NonNegativeInt = 4
    memory_budget: PositiveInt | None = None
    stat_passes: NonNegativeInt = 2
    statistics: StatisticsMode = "auto"

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
        budget: int | None = None, lowered: bool = False, lockstep_maps: float | None = None,
    ) -> TilePlan:
        """How a batch of latent grids ``height x width`` runs within the budget, given the activation
        bytes of one image per latent position (:class:`TilePlan`). ``"on"`` uses ``tile``; ``"auto"``
        tiles only a grid above the budget. The statistics mode is the first of :meth:`lockstep_modes`
        (``lowered``: a float32 network, which may gather them on a bfloat16 copy) whose lockstep
        state (:meth:`lockstep_state`, ``lockstep_maps`` maps, by default :data:`LOCKSTEP_MAPS`) and
        one tile fit; with ``"auto"`` the tiles are then the largest that do, at least
        ``4 * overlap`` positions. Else the statistics come from passes and the tiles take at most
        :data:`TILE_BUDGET_SHARE` of the budget. The images per forward fit the budget too;
        ``cache_bytes`` (CPU, :data:`CPU_SLICE_BYTES`) also caps them so that one forward's
        activations stay near the caches' size (at least one image). ``budget`` is the resolved
        budget of the call's device (:meth:`budget`; by default that of the CPU): a codec reads it
        once per call, so the tiles and the statistics mode agree."""
        if budget is None:
            budget = self.budget("cpu")
        maps = LOCKSTEP_MAPS if lockstep_maps is None else lockstep_maps
        whole = bytes_per_position * height * width

        def area(tile: int) -> int:
            return min(tile, height) * min(tile, width)

        def lockstep_plan(mode: LockstepMode, lockstep_tile: int, fixed: bool = False) -> TilePlan:
            # exact: the output comes from the lockstep pass; bf16: the float32 output pass runs after
            # the bfloat16 pass has freed its state, so (unless ``fixed``) its tiles may take the budget
            per_position = lockstep_bytes(mode, bytes_per_position)
            state = self.lockstep_state(height, width, lockstep_tile, per_position, maps)
            tile = lockstep_tile if mode == "exact" or fixed else max(math.isqrt(int(budget // bytes_per_position)), lockstep_tile)
            peak = max(state + per_position * area(lockstep_tile), bytes_per_position * area(tile))
            return TilePlan(1, tile, mode, lockstep_tile, state, peak)

        def passes_plan(tile: int) -> TilePlan:
            return TilePlan(1, tile, "passes", peak=bytes_per_position * area(tile))

        chosen: TilePlan | None = None
        if self.mode == "on":
            fitting = (lockstep_plan(mode, self.tile, fixed=True) for mode in self.lockstep_modes(lowered))
            chosen = next((c for c in fitting if self.statistics != "auto" or c.peak <= budget), passes_plan(self.tile))
        elif self.mode == "auto" and whole > budget:
            smallest = max(4 * self.overlap, 8) if self.statistics == "auto" else 2 * self.overlap + 1
            for mode in self.lockstep_modes(lowered):
                tile = math.isqrt(int(budget // lockstep_bytes(mode, bytes_per_position)))  # no room for a state
                while tile > smallest and lockstep_plan(mode, tile).peak > budget:
                    tile -= max(1, tile // 32)
                candidate = lockstep_plan(mode, max(tile, smallest))
                if self.statistics != "auto" or candidate.peak <= budget:
                    chosen = candidate
                    break
            else:
                tile = math.isqrt(int(budget * TILE_BUDGET_SHARE // bytes_per_position))
                chosen = passes_plan(max(tile, 2 * self.overlap + 1))
        if chosen is None or chosen.tile is None or (height <= chosen.tile and width <= chosen.tile):
            chosen = TilePlan(1, None, None, peak=whole)
        if chosen.statistics == "passes":
            budget = int(budget * TILE_BUDGET_SHARE)
        if cache_bytes is not None:
            budget = min(budget, int(cache_bytes + chosen.state))
        return replace(chosen, images=max(1, int(budget // max(chosen.peak, 1.0))))

    def lockstep_modes(self, lowered: bool) -> list[LockstepMode]:
        """The lockstep statistics modes to consider, in order of preference: ``statistics`` itself
        when it names one (``"bf16"`` only with ``lowered``, else ``"exact"``), none for ``"passes"``,
        ``"exact"`` then (with ``lowered``) ``"bf16"`` for ``"auto"``."""
        if self.statistics == "passes":
            return []
        if self.statistics == "auto":
            return ["exact", "bf16"] if lowered else ["exact"]
        return ["bf16" if self.statistics == "bf16" and lowered else "exact"]

    def lockstep_state(self, height: int, width: int, tile: int, bytes_per_position: float, maps: float) -> float:
        """Bytes a lockstep pass keeps for one image of ``height x width`` latent positions while its
        tiles of side ``tile`` wait at a norm layer: ``maps`` of the
        :data:`~movq.memory_budget.ACTIVATION_MAPS` feature maps that ``bytes_per_position`` (that
        pass's activation bytes per position) counts, over the area the tiles cover (the image and
        the overlaps every tile holds again)."""
        (tile_h, rows), (tile_w, cols) = tile_layout(height, tile, self.overlap), tile_layout(width, tile, self.overlap)
        return tile_h * len(rows) * tile_w * len(cols) * bytes_per_position * maps / ACTIVATION_MAPS


def lockstep_bytes(mode: LockstepMode, bytes_per_position: float) -> float:
    """Activation bytes per latent position of a lockstep pass of ``mode`` for a network whose own
    forward takes ``bytes_per_position``: half for a bfloat16 copy of a float32 network."""
    return bytes_per_position / 2 if mode == "bf16" else bytes_per_position


@dataclass(frozen=True)
class TilePlan:
    """How one call runs within its memory budget (:meth:`TilingPolicy.plan`).

    - ``images``: images per forward (the batch is run in slices of that many);
    - ``tile``: side of the output pass's tiles in latent positions, ``None`` when untiled;
    - ``statistics``: how the tiles get the image-wide GroupNorm statistics: ``"exact"`` (the tiles
      in lockstep), ``"bf16"`` (a lockstep pass on a bfloat16 copy, then the output pass), or
      ``"passes"`` (:attr:`TilingPolicy.stat_passes` estimating passes); ``None`` when untiled;
    - ``lockstep_tile``: side of the lockstep pass's tiles (with ``"bf16"`` it may be smaller than
      ``tile``: its state and the output pass's tiles never coexist);
    - ``state`` / ``peak``: estimated bytes of one image's lockstep state (0 without one) and of its
      peak activations (:meth:`TilingPolicy.lockstep_state`).
    """

    images: int
    tile: int | None
    statistics: LockstepMode | Literal["passes"] | None
    lockstep_tile: int | None = None
    state: float = field(default=0.0, compare=False)
    peak: float = field(default=0.0, compare=False)


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
        total = weight.sum().double()
        tile_mean, tile_m2 = (torch.cat(parts, dim=1) for parts in zip(*(
            _weighted_moments(chunk, weight, total) for chunk in f.detach().split(RECORD_CHANNELS, dim=1))))
        if key not in self._totals:
            self._totals[key] = (total, tile_mean, tile_m2)
            return
        count, run_mean, run_m2 = self._totals[key]
        delta = tile_mean - run_mean
        merged = count + total
        self._totals[key] = (merged, run_mean + delta * total / merged, run_m2 + tile_m2 + delta.square() * count * total / merged)

    def finish_pass(self) -> None:
        """Turn the recorded totals into group statistics for the next pass and start a new record."""
        self._stats = {key: group_stats(*totals) for key, totals in self._totals.items()}
        self._totals = {}


RECORD_CHANNELS = 32
"""Channels of a tile's feature map whose statistics are recorded at once (in float32): the copies
stay a fraction of the map, which matters in lockstep, where every other tile waits holding its own."""


def _weighted_moments(f: Tensor, weight: Tensor, total: Tensor) -> tuple[Tensor, Tensor]:
    """Per-channel float64 weighted mean and sum of squared deviations ``[B, C]`` of ``f``
    ``[B, C, H, W]`` under ``weight`` ``[H, W]`` (whose sum is ``total``), shifted by the unweighted
    mean for accuracy."""
    x = f.float()
    mean = x.mean(dim=(2, 3), keepdim=True)
    centred = x.sub_(mean) if x is not f else x - mean
    s1 = torch.einsum("bchw,hw->bc", centred, weight).double()
    s2 = torch.einsum("bchw,hw->bc", centred.square_(), weight).double()
    return mean.flatten(1).double() + s1 / total, s2 - s1.square() / total


def group_stats(count: Tensor, mean: Tensor, m2: Tensor) -> tuple[Tensor, Tensor]:
    """Per-channel ``(mean, rstd)`` float32 ``[B, C, 1, 1]`` of GroupNorm's 32 groups from per-channel
    running totals (float64 ``count``, ``mean`` ``[B, C]`` and sum of squared deviations ``m2``)."""
    batch, channels = mean.shape
    grouped_mean = mean.view(batch, NUM_GROUPS, -1)
    group_mean = grouped_mean.mean(dim=2, keepdim=True)
    spread = (m2.view(batch, NUM_GROUPS, -1) + count * (grouped_mean - group_mean).square()).sum(2, keepdim=True)
    group_var = spread / (count * grouped_mean.shape[2])
    per_channel = (t.expand(-1, -1, channels // NUM_GROUPS).reshape(batch, channels, 1, 1) for t in (group_mean, group_var))
    channel_mean, channel_var = per_channel
    return channel_mean.float(), (channel_var + EPS).rsqrt().float()


class LockstepGroupStats(SharedGroupStats):
    """The image's exact GroupNorm statistics in a single pass over the tiles (:func:`run_lockstep`).

    Every tile runs in its own thread, one thread at a time, in tile order. At each norm layer a
    tile records its statistics (blend-weighted, as :class:`SharedGroupStats`) and hands over to the
    next tile; when the last tile has recorded, the layer's statistics are final and the first tile
    goes on with them. So every tile is normalised with exactly the statistics the untiled pass
    computes (up to float64 summation order), and the only difference left is at tile borders,
    which see zero padding. The price is memory: all tiles' activations live at once (1.25 to 2.5
    feature maps of the whole image, :data:`LOCKSTEP_MAPS`), against four for an untiled pass.
    """

    def __init__(self, count: int = 1) -> None:
        super().__init__()
        self.count = count  # set by run_tiled to its number of tiles
        self.turn = 0
        self.failed = False
        self._baton = threading.Condition()
        self._tile = threading.local()

    def lookup(self, norm: nn.Module, f: Tensor) -> tuple[Tensor, Tensor] | None:
        index = self._tile.index
        self.weights = self._tile.weights
        self._record(id(norm), f)
        if index == self.count - 1:  # every tile has recorded this layer: its statistics are final
            self._stats[id(norm)] = group_stats(*self._totals.pop(id(norm)))
        self.hand_over(index, f.device)
        return self._stats[id(norm)]

    def start(self, index: int, weights: Callable[[int, int], Tensor]) -> None:
        """Called by tile ``index``'s thread first: wait for its turn."""
        self._tile.index, self._tile.weights = index, weights
        self.wait(index)

    def hand_over(self, index: int, device: torch.device | None = None) -> None:
        """Pass the turn from tile ``index`` to the next one and wait for ``index``'s next turn; on the
        CPU, what the tile freed goes back to the system first (:func:`release_freed_memory`)."""
        if device is not None and device.type == "cpu":
            release_freed_memory()
        with self._baton:
            self.turn = (index + 1) % self.count
            self._baton.notify_all()
        self.wait(index)

    def finish(self, index: int) -> None:
        """Tile ``index`` is done (its output blended): the next tile's turn."""
        with self._baton:
            self.turn = index + 1
            self._baton.notify_all()

    def wait(self, index: int) -> None:
        with self._baton:
            self._baton.wait_for(lambda: self.turn == index or self.failed)
        if self.failed:
            raise _Abandoned

    def fail(self) -> None:
        """A tile raised: release every waiting tile (each raises :class:`_Abandoned`)."""
        with self._baton:
            self.failed = True
            self._baton.notify_all()


class _Abandoned(Exception):
    """Raised in a tile's thread when another tile failed."""


LOCKSTEP_MAPS = 2.5
"""Feature maps of the widest full-resolution width (as :data:`movq.memory_budget.ACTIVATION_MAPS`)
that a lockstep pass of the plain modules keeps over the area its tiles cover: at a norm layer every
tile holds its block's input (the residual) and the normalised map, plus the blended output. The CPU
engine holds less (:data:`movq.modules.cpu_engine.LOCKSTEP_MAPS`)."""


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


def lowered_statistics(module: nn.Module, lockstep_pass: Callable[[nn.Module, LockstepGroupStats], object]) -> SharedGroupStats:
    """The image-wide GroupNorm statistics of ``module``'s norms, gathered in lockstep on a
    :data:`LOWERED_DTYPE` copy of ``module`` (``statistics="bf16"``): ``lockstep_pass(copy, stats)``
    runs the copy's tiles (:func:`run_tiled` with ``stats``, inputs cast to that dtype). Returns them
    as a :class:`SharedGroupStats` for ``module``'s own norms that no longer records, so the output
    pass (:func:`run_tiled` with ``stat_passes=0``) normalises every tile with them. The copy holds
    half the lockstep state of the full-precision pass and is dropped before the output pass."""
    memo: dict[int, Any] = {id(t): t.detach().to(LOWERED_DTYPE) for t in (*module.parameters(), *module.buffers())}
    memo.update({id(m.__dict__["_derived_weights"]): {} for m in module.modules() if "_derived_weights" in m.__dict__})
    lowered = copy.deepcopy(module, memo)  # weights cast on the way, derived (packed) weights not copied
    lockstep = LockstepGroupStats()
    with shared_norm_stats(lowered, lockstep):
        lockstep_pass(lowered, lockstep)
    frozen = SharedGroupStats()
    frozen.recording = False
    frozen._stats = {id(own): lockstep._stats[id(low)] for own, low in zip(shared_norms(module), shared_norms(lowered))
                     if id(low) in lockstep._stats}  # the norms the tiles ran
    return frozen


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
    with the previous pass's statistics), and the final pass normalises every tile with them. With a
    :class:`LockstepGroupStats`, one pass in lockstep gives every tile the exact statistics instead
    (``stat_passes`` is ignored).
    """
    h, w = grid
    (th, rows), (tw, cols) = tile_layout(h, tile, overlap), tile_layout(w, tile, overlap)
    row_ramps, col_ramps = {out_scale: ramps(rows, th, out_scale)}, {out_scale: ramps(cols, tw, out_scale)}
    windows = [(i, j, Window(y0, x0, th, tw)) for i, y0 in enumerate(rows) for j, x0 in enumerate(cols)]

    def weights_at(i: int, j: int, scale: int) -> Tensor:  # float32 on the CPU: callers move it
        if scale not in row_ramps:
            row_ramps[scale], col_ramps[scale] = ramps(rows, th, scale), ramps(cols, tw, scale)
        return row_ramps[scale][i][:, None] * col_ramps[scale][j][None, :]

    if isinstance(stats, LockstepGroupStats):
        return _run_lockstep(fn, windows, weights_at, th, (h, w), out_scale, row_ramps[out_scale], col_ramps[out_scale], stats)
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
    return _normalised(out, rows, cols, row_ramps[out_scale], col_ramps[out_scale], out_scale).to(piece.dtype)


def _normalised(out: Tensor, rows: list[int], cols: list[int], row_ramps: list[Tensor], col_ramps: list[Tensor],
                out_scale: int) -> Tensor:
    """``out`` (blended tiles) divided by the sum of the blend weights: the ramps sum to one unless
    non-neighbouring tiles overlap (tiny tiles), so normalise anyway."""
    row_total, col_total = torch.zeros(out.shape[-2]), torch.zeros(out.shape[-1])
    for start, weight in zip(rows, row_ramps):
        row_total[start * out_scale : start * out_scale + weight.numel()] += weight
    for start, weight in zip(cols, col_ramps):
        col_total[start * out_scale : start * out_scale + weight.numel()] += weight
    return out.div_((row_total[:, None] * col_total[None, :]).to(out.device))


def _run_lockstep(
    fn: Callable[[Window], Tensor], windows: list[tuple[int, int, Window]], weights_at: Callable[[int, int, int], Tensor],
    tile_rows: int, grid: tuple[int, int], out_scale: int, row_ramps: list[Tensor], col_ramps: list[Tensor],
    stats: LockstepGroupStats,
) -> Tensor:
    """:func:`run_tiled` with exact statistics: each tile in its own thread, in lockstep at every norm
    layer (:class:`LockstepGroupStats`); each tile blends its output when it finishes, in tile order."""
    stats.count = len(windows)
    enter_caller_modes = caller_modes()
    blended: dict[str, Any] = {}  # "out": the float32 sum of the weighted tiles, "dtype": the tiles' dtype
    errors: list[BaseException] = []

    def run(index: int, i: int, j: int, window: Window) -> None:
        try:
            with enter_caller_modes():
                stats.start(index, lambda fh, fw: weights_at(i, j, fh // tile_rows))
                piece = fn(window)
                if not blended:
                    blended["out"] = torch.zeros((*piece.shape[:2], grid[0] * out_scale, grid[1] * out_scale),
                                                 device=piece.device)
                    blended["dtype"] = piece.dtype
                window.crop(blended["out"], out_scale).addcmul_(piece, weights_at(i, j, out_scale).to(piece.device))
                del piece
            stats.finish(index)
        except _Abandoned:
            pass
        except BaseException as error:  # noqa: BLE001 -- re-raised in the caller's thread below
            errors.append(error)
            stats.fail()

    threads = [threading.Thread(target=run, args=(k, i, j, window), daemon=True, name=f"movq-tile-{k}")
               for k, (i, j, window) in enumerate(windows)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if errors:
        raise errors[0]
    rows = sorted({window.top for _, _, window in windows})
    cols = sorted({window.left for _, _, window in windows})
    return _normalised(blended["out"], rows, cols, row_ramps, col_ramps, out_scale).to(blended["dtype"])


def caller_modes() -> Callable[[], contextlib.AbstractContextManager]:
    """A context manager factory that re-enters, in another thread, the calling thread's thread-local
    torch modes: grad / inference mode, autocast, and on CUDA the current device and stream."""
    grad, inference = torch.is_grad_enabled(), torch.is_inference_mode_enabled()
    autocasts = [(device, torch.get_autocast_dtype(device)) for device in ("cpu", "cuda") if torch.is_autocast_enabled(device)]
    stream = torch.cuda.current_stream() if torch.cuda.is_available() and torch.cuda.is_initialized() else None

    @contextlib.contextmanager
    def enter() -> Iterator[None]:
        with contextlib.ExitStack() as stack:
            stack.enter_context(torch.inference_mode(inference))
            stack.enter_context(torch.set_grad_enabled(grad))
            for device, dtype in autocasts:
                stack.enter_context(torch.autocast(device, dtype=dtype))
            if stream is not None:
                stack.enter_context(torch.cuda.device(stream.device))
                stack.enter_context(torch.cuda.stream(stream))
            yield

    return enter


def run_sliced(fn: Callable[[Tensor], Tensor], x: Tensor, size: int) -> Tensor:
    """``fn`` over slices of at most ``size`` images of ``x`` (batch first), concatenated."""
    if x.shape[0] <= size:
        return fn(x)
    return torch.cat([fn(part) for part in x.split(size)])
