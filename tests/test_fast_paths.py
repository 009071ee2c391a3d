"""Every fast path against the fp32 reference path: bf16, tiling, batch slicing, compile, export.

Correctness only (never timings); speed is measured in ``benchmarks/speed.py``.
"""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

import movq
from movq import Codec, CodecConfig
from movq.deploy import TokenDecoder, TokenEncoder, example_input, export_onnx, export_program
from movq.memory_budget import ACTIVATION_MAPS
from movq.metrics.image import psnr, to_unit_range
from movq.tiling import (
    LOCKSTEP_MAPS,
    LockstepGroupStats,
    SharedGroupStats,
    TilePlan,
    TilingPolicy,
    ramps,
    run_tiled,
    shared_norm_stats,
    tile_layout,
)

PHOTO = Path(__file__).resolve().parents[2] / "shared" / "images" / "val" / "080_palapeli-dat_cincinnati-bridge.jpg"


def photo(size: int) -> torch.Tensor:
    """A real photo (centre crop) if the shared images are there, else a smooth synthetic image."""
    if PHOTO.is_file():
        from movq.image_files import open_rgb, resize_center_crop
        from movq.images import to_tensor

        return to_tensor(resize_center_crop(open_rgb(PHOTO), size)[0])[0]
    ys, xs = torch.meshgrid(torch.linspace(-1, 1, size), torch.linspace(-1, 1, size), indexing="ij")
    return torch.stack([torch.sin(3 * xs + ys), torch.cos(2 * ys - xs), xs * ys]).clamp(-1, 1)[None]


def small_codec(seed: int = 0, **overrides) -> Codec:
    """A 2-level MoVQ (f=2) with attention at the latent level: graphs small enough to export fast."""
    torch.manual_seed(seed)
    config = CodecConfig(name="micro", ch=32, ch_mult=(1, 2), num_res_blocks=1, attn_resolutions=(8,),
                         resolution=16, quantizer=movq.config.VQConfig(codebook_size=64))
    for key, value in overrides.items():
        setattr(config, key, value)
    codec = Codec(config).eval()
    with torch.no_grad():  # spread the codebook like the latents so tokens are not all one code
        z = codec.encode_to_prequant(torch.rand(4, 3, 16, 16) * 2 - 1)
        codec.quantize.embedding.weight.copy_(z.permute(0, 2, 3, 1).reshape(-1, 4)[torch.randperm(256)[:64]])
    return codec


@pytest.fixture(scope="module")
def shipped() -> Codec:
    return movq.load("movqgan-tiny-photos")


# ------------------------------------------------------------------------------------------- bf16


def test_bf16_round_trip_matches_fp32_on_the_shipped_codec(shipped):
    x = photo(128)
    fast = movq.load("movqgan-tiny-photos", dtype=torch.bfloat16)
    tokens, fast_tokens = shipped.encode(x), fast.encode(x)
    assert (tokens == fast_tokens).float().mean() >= 0.9  # near-ties may flip
    reference, decoded = shipped.decode(tokens), fast.decode(tokens)
    assert decoded.dtype == torch.bfloat16
    assert psnr(to_unit_range(reference), to_unit_range(decoded)).item() >= 40.0
    moved = movq.load("movqgan-tiny-photos").to(torch.bfloat16)  # codec.to(bf16) is the same mode
    assert torch.equal(moved.decode(tokens), decoded)


# ------------------------------------------------------------------------------------------ tiling


def test_tile_layout_covers_the_grid_and_ramps_sum_to_one():
    for size, tile, overlap in [(128, 64, 16), (256, 128, 16), (100, 32, 8), (33, 32, 4), (20, 32, 8)]:
        side, starts = tile_layout(size, tile, overlap)
        assert side <= tile and starts[0] == 0 and starts[-1] + side == size
        assert all(b - a <= side - overlap for a, b in zip(starts, starts[1:]))
        total = torch.zeros(size * 2)
        for start, weight in zip(starts, ramps(starts, side, 2)):
            total[start * 2 : (start + side) * 2] += weight
        torch.testing.assert_close(total, torch.ones(size * 2))
    assert tile_layout(256, 128, 16) == (96, [0, 80, 160])  # 3 tiles of 96, not 3 of 128


def test_run_tiled_blends_agreeing_tiles_exactly():
    image = torch.randn(2, 3, 40, 56)
    out = run_tiled(lambda w: w.crop(image, 4) * 1.0, (10, 14), tile=6, overlap=2, out_scale=4)
    torch.testing.assert_close(out, image)


def test_policy_plans_slices_and_tiles_from_the_budget():
    policy = TilingPolicy(memory_budget=1000, overlap=4)
    assert policy.plan(8, 10, 10, 1.0) == TilePlan(10, None, None)  # 100 bytes per image: 10 per forward
    # too big alone, no room for a lockstep state: tiles of half the budget, 22x22, statistics by passes
    assert policy.plan(8, 100, 100, 1.0) == TilePlan(1, 22, "passes")
    assert TilingPolicy(mode="off", memory_budget=1000).plan(8, 100, 100, 1.0) == TilePlan(1, None, None)
    assert TilingPolicy(mode="on", tile=8, overlap=2).plan(1, 10, 10, 1.0).tile == 8  # larger than one tile
    assert policy.plan(8, 10, 10, 1.0, cache_bytes=250) == TilePlan(2, None, None)  # CPU: slices of the cache size
    assert policy.plan(8, 100, 100, 1.0, cache_bytes=250).images == 1  # at least one image per forward
    with pytest.raises(ValueError, match="overlap"):
        TilingPolicy(tile=8, overlap=4)


def test_default_budget_follows_the_free_memory_of_the_device(monkeypatch):
    """By default (memory_budget None) the activation budget is DEVICE_BUDGET_SHARE of the memory free on the
    codec's device when the call starts: a small device tiles and slices a 128x128 decode, a large one runs it
    whole; a fixed memory_budget ignores the device."""
    import movq.memory_budget as mb

    codec = small_codec()
    assert codec.tiling.memory_budget is None
    f = codec.downsample_factor
    z = torch.zeros(4, codec.config.embed_dim, 128 // f, 128 // f)
    per_image = codec.inference_bytes(1, 128, 128) - mb.image_bytes(1, 128, 128)
    monkeypatch.setattr(mb, "free_bytes", lambda device: 2**40)  # a large device: nothing sliced or tiled
    assert codec.tiling.budget("cpu") == int(mb.DEVICE_BUDGET_SHARE * 2**40)
    assert codec._plan(z, 1).tile is None
    monkeypatch.setattr(mb, "free_bytes", lambda device: per_image)  # half an image's activations: tiled
    assert codec.tiling.budget("cpu") == int(mb.DEVICE_BUDGET_SHARE * per_image)
    plan = codec._plan(z, 1)
    assert plan.images == 1 and plan.tile is not None and plan.tile < 128 // f
    assert codec.inference_bytes(4, 128, 128) == mb.image_bytes(4, 128, 128) + int(mb.DEVICE_BUDGET_SHARE * per_image)
    tokens = codec.encode(torch.rand(1, 3, 128, 128) * 2 - 1)  # runs tiled on the small device
    assert tokens.shape[-2:] == (128 // f, 128 // f)
    monkeypatch.setattr(mb, "free_bytes", lambda device: None)  # unreadable: the fixed fallback
    assert codec.tiling.budget("cpu") == mb.FALLBACK_BUDGET
    codec.enable_tiling(auto=True, memory_budget=2**40)  # fixed: the device is not asked
    monkeypatch.setattr(mb, "free_bytes", lambda device: 1)
    assert codec.tiling.budget("cpu") == 2**40 and codec._plan(z, 1).tile is None
    codec.disable_tiling()
    assert codec.inference_bytes(4, 128, 128) == codec.activation_bytes(4, 128, 128)  # untiled: every activation


def test_free_memory_of_cuda_and_cpu_devices(monkeypatch):
    """CUDA: the driver's free memory plus what the caching allocator holds unused; CPU: MemAvailable (or
    the cgroup's room), never above the machine's total."""
    import movq.memory_budget as mb

    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda device=None: (3 * 2**30, 80 * 2**30))
    monkeypatch.setattr(torch.cuda, "memory_reserved", lambda device=None: 2 * 2**30)
    monkeypatch.setattr(torch.cuda, "memory_allocated", lambda device=None: 2**30)
    assert mb.free_bytes(torch.device("cuda", 0)) == 4 * 2**30
    assert mb.device_activation_budget("cuda") == int(mb.DEVICE_BUDGET_SHARE * 4 * 2**30)
    free, total = mb.free_bytes("cpu"), mb.available_bytes("cpu")
    assert free is not None and 0 < free <= total
    assert mb.free_bytes("meta") is None and mb.device_activation_budget("meta") == mb.FALLBACK_BUDGET


def test_batch_slicing_equals_one_batch():
    codec = small_codec()
    x = torch.rand(5, 3, 16, 24) * 2 - 1
    tokens, image = codec.encode(x), codec.decode(codec.encode(x))
    codec.enable_tiling(auto=True, memory_budget=1)  # one image per forward, never tiled (too small)
    assert torch.equal(codec.encode(x), tokens)
    torch.testing.assert_close(codec.decode(tokens), image, atol=1e-5, rtol=0)


def test_tiles_with_exact_statistics_equal_the_untiled_decoder():
    """The tiling machinery is exact but for context: with the untiled image's GroupNorm statistics,
    tiles (each with its slice of z_q for SpatialNorm) reproduce the untiled decoder's local stage."""
    codec = small_codec()
    decoder = codec.decoder
    z_q = codec.quantize.embed(codec.encode(torch.rand(1, 3, 96, 128) * 2 - 1))
    with torch.no_grad():
        h = decoder.global_stage(codec.post_quant_conv(z_q), z_q)
        reference = decoder.local_stage(h, z_q)
        stats = SharedGroupStats()
        with shared_norm_stats(decoder, stats):
            run_tiled(lambda w: decoder.local_stage(w.crop(h), w.crop(z_q)), (48, 64), tile=100, overlap=0,
                      out_scale=2, stats=stats, stat_passes=1)  # one tile: the exact statistics
            stats.recording = False
            # 2 x 3 tiles; the zero-weight margin of the overlaps (4 positions) covers the receptive
            # field that reaches a tile's zero padding
            tiled = run_tiled(lambda w: decoder.local_stage(w.crop(h), w.crop(z_q)), (48, 64), tile=32, overlap=15,
                              out_scale=2)
    torch.testing.assert_close(tiled, reference, atol=1e-4, rtol=1e-4)


def test_tiles_in_lockstep_get_the_untiled_statistics_in_one_pass():
    """LockstepGroupStats: one pass, each tile normalised with the whole image's statistics, so with the
    same layout as above the tiles reproduce the untiled decoder (no statistics pass, no oracle)."""
    codec = small_codec()
    decoder = codec.decoder
    z_q = codec.quantize.embed(codec.encode(torch.rand(2, 3, 96, 128) * 2 - 1))
    calls = []

    def tile(w):
        calls.append(w)
        return decoder.local_stage(w.crop(h), w.crop(z_q))

    with torch.no_grad():
        h = decoder.global_stage(codec.post_quant_conv(z_q), z_q)
        reference = decoder.local_stage(h, z_q)
        stats = LockstepGroupStats()
        with shared_norm_stats(decoder, stats):
            tiled = run_tiled(tile, (48, 64), tile=32, overlap=15, out_scale=2, stats=stats)
    assert len(calls) == 6  # 2 x 3 tiles, each run once
    assert not tiled.requires_grad  # the caller's no_grad holds inside the tiles' threads
    torch.testing.assert_close(tiled, reference, atol=1e-4, rtol=1e-4)


def test_a_tile_that_fails_in_lockstep_raises_in_the_caller():
    codec = small_codec()
    decoder = codec.decoder
    z_q = codec.quantize.embed(codec.encode(torch.rand(1, 3, 64, 64) * 2 - 1))
    h = decoder.global_stage(codec.post_quant_conv(z_q), z_q)

    def tile(w):
        if w.top and w.left:
            raise RuntimeError("tile failed")
        return decoder.local_stage(w.crop(h), w.crop(z_q))

    stats = LockstepGroupStats()
    with torch.no_grad(), shared_norm_stats(decoder, stats), pytest.raises(RuntimeError, match="tile failed"):
        run_tiled(tile, (32, 32), tile=20, overlap=4, out_scale=2, stats=stats)
    assert stats.failed


def test_lockstep_tiles_give_freed_memory_back_at_every_hand_over(monkeypatch):
    """Each lockstep tile thread allocates from its own malloc arena: at every hand-over on the CPU the
    freed pages go back to the system (glibc's malloc_trim, where the C library has it)."""
    import platform

    import movq.memory_budget as mb
    import movq.tiling as tiling

    if platform.system() == "Linux" and platform.libc_ver()[0] == "glibc":
        assert mb._malloc_trim() is not None
    mb.release_freed_memory()  # never raises, whatever the C library
    calls = []
    monkeypatch.setattr(tiling, "release_freed_memory", lambda: calls.append(1))
    codec = small_codec()
    tokens = codec.encode(torch.rand(1, 3, 64, 64) * 2 - 1)
    codec.enable_tiling(tile_size=32, overlap=8, statistics="exact")
    codec.decode(tokens)
    assert len(calls) >= 4 * 3  # 2 x 2 tiles, each at every norm layer of the tiled levels (3 or more)


def test_exact_statistics_when_they_fit_the_budget():
    per_position = 1000.0
    policy = TilingPolicy(tile=16)
    # the lockstep state: LOCKSTEP_MAPS maps over the area the tiles cover, overlaps counted again
    covered = (3 * 24) ** 2  # 64 positions in tiles of 24 with 4 shared: 3 tiles of 24 a side
    assert tile_layout(64, 24, 4) == (24, [0, 20, 40])
    assert policy.lockstep_state(64, 64, 24, per_position, LOCKSTEP_MAPS) == covered * per_position * LOCKSTEP_MAPS / ACTIVATION_MAPS
    state = policy.lockstep_state(64, 64, 16, per_position, LOCKSTEP_MAPS)
    one_tile = 16 * 16 * per_position

    def statistics(budget: float, lowered: bool = False, policy: TilingPolicy = TilingPolicy(mode="on", tile=16)) -> str:
        return policy.plan(1, 64, 64, per_position, budget=int(budget), lowered=lowered).statistics

    # tiles of a fixed size: the first lockstep mode whose state and one tile fit
    assert statistics(state + one_tile) == "exact"
    assert statistics(state) == "passes"
    assert TilingPolicy(mode="on", tile=16).plan(2, 64, 64, per_position, budget=int(state + one_tile)).images == 1
    # a float32 network may gather them on a bfloat16 copy: half the state, half the tile
    assert statistics(state / 2 + one_tile / 2, lowered=True) == "bf16"
    assert statistics(state / 2, lowered=True) == "passes"
    assert statistics(state + one_tile, lowered=True) == "exact"
    assert statistics(1, policy=TilingPolicy(mode="on", tile=16, statistics="exact")) == "exact"
    assert statistics(1, True, TilingPolicy(mode="on", tile=16, statistics="bf16")) == "bf16"
    assert statistics(1, policy=TilingPolicy(mode="on", tile=16, statistics="bf16")) == "exact"  # not float32
    assert statistics(2**40, True, TilingPolicy(mode="on", tile=16, statistics="passes")) == "passes"
    # automatic tiling: the largest tiles whose lockstep state and one tile fit, when they are at least
    # 4 overlaps; below, the tiles take half the budget and the statistics come from passes
    need = 64 * 64 * per_position
    budget = int(0.96 * need)
    plan = policy.plan(1, 64, 64, per_position, budget=budget)
    assert plan.statistics == "exact" and plan.tile == plan.lockstep_tile >= 16
    assert plan.state == policy.lockstep_state(64, 64, plan.tile, per_position, LOCKSTEP_MAPS)
    assert plan.state + plan.tile**2 * per_position == plan.peak <= budget
    bigger = plan.tile + max(1, plan.tile // 32)
    assert policy.lockstep_state(64, 64, bigger, per_position, LOCKSTEP_MAPS) + bigger**2 * per_position > budget
    budget = int(0.66 * need)
    assert policy.plan(1, 64, 64, per_position, budget=budget) == TilePlan(1, math.isqrt(budget // 2 // 1000), "passes")
    # ... unless the bfloat16 state fits beside bfloat16 tiles of 4 overlaps: the lockstep pass then
    # runs those, and the float32 output pass, which runs after the state is freed, takes the budget
    plan = policy.plan(1, 64, 64, per_position, budget=budget, lowered=True)
    assert plan.statistics == "bf16" and plan.tile == math.isqrt(budget // 1000) and 16 <= plan.lockstep_tile < plan.tile
    assert plan.state + plan.lockstep_tile**2 * per_position / 2 <= plan.peak <= budget
    # a network that holds fewer maps in lockstep (the CPU engine) gets larger tiles
    fewer = policy.plan(1, 64, 64, per_position, budget=int(0.96 * need), lockstep_maps=LOCKSTEP_MAPS / 2)
    assert fewer.tile > policy.plan(1, 64, 64, per_position, budget=int(0.96 * need)).tile
    # the images of a batch run one at a time whenever one image's plan takes the budget
    assert policy.plan(4, 64, 64, per_position, budget=budget, lowered=True).images == 1
    codec = small_codec()
    codec.enable_tiling(tile_size=32, overlap=8, statistics="passes")
    assert codec.tiling.statistics == "passes" and codec.tiling.tile == 16


def test_the_codec_plans_with_the_lockstep_memory_of_the_path_that_runs():
    """The CPU engine's tiles in lockstep hold fewer maps than the plain modules': under eager CPU
    inference the plan counts cpu_engine.LOCKSTEP_MAPS (larger tiles for the same budget), with
    autograd on (the plain modules) tiling.LOCKSTEP_MAPS."""
    from movq.modules import cpu_engine

    codec = small_codec()
    z_q = torch.zeros(1, 4, 64, 64)
    codec.enable_tiling(auto=True, memory_budget=int(0.9 * codec._bytes_per_position() * 64 * 64),
                        statistics="exact")
    with torch.inference_mode():
        engine = codec._plan(z_q, 1)
    plain = codec._plan(z_q.requires_grad_(), 1)
    assert cpu_engine.LOCKSTEP_MAPS < LOCKSTEP_MAPS and engine.tile > plain.tile
    policy, per_position = codec.tiling, codec._bytes_per_position()
    assert engine.state == policy.lockstep_state(64, 64, engine.tile, per_position, cpu_engine.LOCKSTEP_MAPS)
    assert plain.state == policy.lockstep_state(64, 64, plain.tile, per_position, LOCKSTEP_MAPS)


def test_statistics_from_a_bfloat16_lockstep_pass():
    """statistics="bf16": a lockstep pass on a bfloat16 copy gathers the statistics, the float32 tiles
    are normalised with them: close to the exact (float32 lockstep) tiles, the codec's own weights,
    dtype and packed-weight caches untouched, and the tiles' output in float32."""
    codec = small_codec()
    x = torch.rand(1, 3, 96, 128) * 2 - 1
    tokens = codec.encode(x)
    untiled = codec.decode(tokens)
    weights = {name: t.clone() for name, t in codec.state_dict().items()}
    codec.enable_tiling(tile_size=32, overlap=8, statistics="exact")
    exact = codec.decode(tokens)
    codec.enable_tiling(tile_size=32, overlap=8, statistics="bf16")
    lowered = codec.decode(tokens)
    assert lowered.dtype == torch.float32 and codec.dtype == torch.float32
    assert all(torch.equal(t, weights[name]) for name, t in codec.state_dict().items())
    exact_db = psnr(to_unit_range(untiled), to_unit_range(exact)).item()
    lowered_db = psnr(to_unit_range(untiled), to_unit_range(lowered)).item()
    assert lowered_db >= 45.0 and lowered_db <= exact_db  # bfloat16 statistics: close, not exact
    assert (codec.encode(x) == tokens).float().mean() >= 0.9  # 95.2% (exact: the same)
    # a bfloat16 codec has nothing lower to gather them in: its lockstep pass is already bfloat16
    half = small_codec().to(torch.bfloat16)
    half.enable_tiling(tile_size=32, overlap=8, statistics="bf16")
    assert not half._lowered_statistics_possible()
    assert half.decode(tokens).dtype == torch.bfloat16


def test_tiled_decode_and_encode_on_the_shipped_codec(shipped):
    if not PHOTO.is_file():  # the thresholds are for a real photo, which the shipped codec was trained on
        pytest.skip(f"real photo not found: {PHOTO} (the shared image folder is absent)")
    x = photo(192)
    tokens = shipped.encode(x)
    untiled = shipped.decode(tokens)
    tiled_codec = movq.load("movqgan-tiny-photos")
    tiled_codec.enable_tiling(tile_size=128, overlap=32)
    assert tiled_codec.tiling.mode == "on" and tiled_codec.tiling.tile == 16
    decoded = tiled_codec.decode(tokens)  # 2 x 2 tiles of 112 px, exact statistics (they fit the budget)
    assert decoded.shape == untiled.shape
    assert psnr(to_unit_range(untiled), to_unit_range(decoded)).item() >= 55.0  # 62.3 dB when written
    assert (tiled_codec.encode(x) == tokens).float().mean() >= 0.98  # 99.5%
    tiled_codec.enable_tiling(tile_size=128, overlap=32, statistics="passes")
    decoded = tiled_codec.decode(tokens)  # 2 statistics passes, then the output pass
    assert psnr(to_unit_range(untiled), to_unit_range(decoded)).item() >= 36.0  # 41.7 dB when written
    assert (tiled_codec.encode(x) == tokens).float().mean() >= 0.8  # 90%
    tiled_codec.disable_tiling()
    assert torch.equal(tiled_codec.decode(tokens), untiled)
    with pytest.raises(ValueError, match="multiple of the downsample factor"):
        tiled_codec.enable_tiling(tile_size=100)


def test_automatic_tiling_switches_on_above_the_budget():
    codec = small_codec()
    x = torch.rand(1, 3, 64, 64) * 2 - 1
    tokens = codec.encode(x)
    untiled = codec.decode(tokens)
    codec.enable_tiling(tile_size=32, overlap=8, auto=True, memory_budget=2**20)  # 1 MiB: 64x64 is above
    assert codec._plan(tokens[:, None].float(), 1).tile is not None
    tiled = codec.decode(tokens)
    assert psnr(to_unit_range(untiled), to_unit_range(tiled)).item() >= 25.0


# ------------------------------------------------------------------------------- compile and export


def test_graphs_compile_without_graph_breaks():
    codec = small_codec(num_res_blocks=0)  # every kind of layer once: a quick trace
    x = torch.rand(2, 3, 16, 24) * 2 - 1
    tokens = codec.encode(x)
    with torch.no_grad():
        encoder = torch.compile(TokenEncoder(codec), backend="eager", fullgraph=True)  # fullgraph: no break
        decoder = torch.compile(TokenDecoder(codec), backend="eager", fullgraph=True)
        assert torch.equal(encoder(x), tokens)
        torch.testing.assert_close(decoder(tokens), codec.decode(tokens), atol=1e-5, rtol=0)
    training = torch.compile(codec, backend="eager", fullgraph=True)  # the differentiable forward
    out = training(x)
    out.sample.mean().backward()
    assert codec.encoder.conv_in.weight.grad is not None


@pytest.mark.parametrize("part", ["encoder", "decoder"])
def test_torch_export_equals_eager(part):
    codec = small_codec(num_res_blocks=0)
    program = export_program(codec, part, 16, 24, batch=2)
    x = example_input(codec, part, 16, 24, batch=2)
    with torch.no_grad():
        expected = (TokenEncoder if part == "encoder" else TokenDecoder)(codec)(x)
        out = program.module()(x)
    if part == "encoder":
        assert torch.equal(out, expected)
    else:
        torch.testing.assert_close(out, expected, atol=1e-5, rtol=0)


@pytest.mark.parametrize("part", ["encoder", "decoder"])
def test_onnxruntime_equals_pytorch(tmp_path, part):
    pytest.importorskip("onnxscript")
    ort = pytest.importorskip("onnxruntime")
    codec = small_codec(num_res_blocks=0)
    path = export_onnx(codec, tmp_path / f"{part}.onnx", part, 16, 24, batch=2, optimize=False)
    x = example_input(codec, part, 16, 24, batch=2)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    assert session.get_inputs()[0].name == ("images" if part == "encoder" else "tokens")
    out = torch.from_numpy(session.run(None, {session.get_inputs()[0].name: x.numpy()})[0])
    with torch.no_grad():
        expected = (TokenEncoder if part == "encoder" else TokenDecoder)(codec)(x)
    if part == "encoder":
        assert torch.equal(out, expected)
    else:
        torch.testing.assert_close(out, expected, atol=1e-4, rtol=0)


def test_cpu_batches_run_in_cache_sized_slices_with_the_same_tokens():
    codec = movq.load("movqgan-tiny-photos")
    f = codec.downsample_factor
    x = torch.rand(3, 3, 256, 256, generator=torch.Generator().manual_seed(0)) * 2 - 1
    assert codec._plan(x, f).images == 1  # 256 px maps outgrow the caches: one image per forward
    assert codec._plan(x[:, :, :32, :32], f).images >= 3  # small images still batch
    with torch.inference_mode():
        assert torch.equal(codec.encode(x), torch.cat([codec.encode(image[None]) for image in x]))
