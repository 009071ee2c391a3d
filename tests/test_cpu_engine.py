"""The CPU inference engine computes what the plain modules compute, steps aside outside eager CPU
inference, and is the only code of ``movq`` that calls private ``torch.ops``."""

from __future__ import annotations

import re
from contextlib import nullcontext
from pathlib import Path

import pytest
import torch

import movq
from movq import Codec, CodecConfig
from movq.metrics.image import psnr, to_unit_range
from movq.modules import cpu_engine

SRC = Path(__file__).resolve().parents[1] / "src"


@pytest.fixture(scope="module")
def codec() -> Codec:
    """A 3-level MoVQ (SpatialNorm, attention at the latent level, two upsamplings), weights moved
    off their initial values so that every norm and convolution matters."""
    torch.manual_seed(0)
    config = CodecConfig(name="micro", ch=32, ch_mult=(1, 2, 2), num_res_blocks=1, attn_resolutions=(8,),
                         resolution=32, quantizer=movq.config.VQConfig(codebook_size=64))
    codec = Codec(config).eval()
    with torch.no_grad():
        for name, p in codec.named_parameters():
            scale_of_norm = p.ndim == 1 and "norm" in name and name.endswith("weight")
            p.add_(torch.randn_like(p) * (0.3 if scale_of_norm else 0.02))
    return codec


def close(fast: torch.Tensor, plain: torch.Tensor, dtype: torch.dtype, image: bool) -> None:
    assert fast.dtype == plain.dtype == dtype and fast.shape == plain.shape
    if dtype == torch.float32:
        torch.testing.assert_close(fast, plain, atol=2e-5, rtol=1e-5)
    elif image:  # the bf16 quality bar of the codec (tests/test_fast_paths.py)
        assert psnr(to_unit_range(fast.float().clamp(-1, 1)), to_unit_range(plain.float().clamp(-1, 1))).min() >= 40.0
    else:
        torch.testing.assert_close(fast, plain, atol=0.05, rtol=0.02)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])  # in this order: bf16 rebuilds the memo
def test_engine_equals_the_plain_modules(codec, dtype):
    codec.to(dtype)
    x = (torch.rand(2, 3, 32, 48, generator=torch.Generator().manual_seed(1)) * 2 - 1).to(dtype)
    block = codec.decoder.mid.block_1
    with torch.no_grad():
        plain_z = codec.quant_conv(codec.encoder(x))  # the plain modules (not engaged)
        with cpu_engine.engaged(codec, x):
            assert "forward" in block.__dict__  # the engine's forward is swapped in
            fast_z = codec.quant_conv(codec.encoder(x))
        assert "forward" not in block.__dict__ and "local_stage" not in codec.encoder.__dict__  # and out again
        close(fast_z, plain_z, dtype, image=False)
        z_q = plain_z
        plain = codec.decoder(codec.post_quant_conv(z_q), z_q)
        fast = codec.decode_from_quantized(z_q)  # the codec engages the engine itself
        assert "_derived_weights" in codec.decoder.conv_in.__dict__  # (its packed weight is memoised)
        close(fast, plain, dtype, image=True)
        # tiled, with image-wide GroupNorm statistics in the plain norms and in the engine's fused ones
        codec.enable_tiling(tile_size=32, overlap=8)
        try:
            z = torch.randn(1, 4, 12, 14, generator=torch.Generator().manual_seed(2)).to(dtype)
            plan = codec._plan(z, 1)
            assert plan.tile == 8  # 2 x 2 tiles
            plain_tiled = codec._decode_tiled(z, plan)  # not engaged
            fast_tiled = codec._decode_bounded(z)
        finally:
            codec.tiling = Codec.tiling
        close(fast_tiled, plain_tiled, dtype, image=True)
    codec.float()


def test_decoder_blocks_free_their_input_before_tiles_wait(codec):
    """Tiles in lockstep wait in a block's second norm: in the engine's decoder levels, a block whose
    shortcut changes the width has dropped its (wider) input by then, so waiting tiles hold two maps
    of the output width, not the input and the normalised map (cpu_engine.LOCKSTEP_MAPS)."""
    import weakref

    first = codec.decoder.up[0].block[0]  # full resolution, 64 -> 32 channels
    assert first.nin_shortcut is not None
    inputs: list[weakref.ref] = []
    alive_at_wait: list[bool] = []

    class Waiting:  # the stats source tiles consult at a norm: records whether the input still lives
        def lookup(self, norm, f):
            alive_at_wait.append(inputs[-1]() is not None)

    handle = codec.decoder.up[1].upsample.register_forward_hook(lambda m, args, out: inputs.append(weakref.ref(out)))
    first.norm2.shared_stats = Waiting()
    try:
        z_q = torch.randn(1, 4, 8, 8)
        with torch.inference_mode():
            engine = codec.decode_from_quantized(z_q)  # engaged: the input is freed before the wait
        plain = codec.decoder(codec.post_quant_conv(z_q), z_q)  # autograd on: the plain modules keep it
    finally:
        handle.remove()
        del first.norm2.shared_stats
    assert alive_at_wait == [False, True]
    torch.testing.assert_close(engine, plain.detach(), atol=2e-5, rtol=1e-5)


def test_engine_steps_aside_outside_eager_cpu_inference(codec):
    x = torch.rand(1, 3, 16, 16)
    assert cpu_engine.eager_cpu_inference(x) is False  # autograd on
    assert isinstance(cpu_engine.engaged(codec, x), nullcontext)
    with torch.no_grad():
        assert cpu_engine.eager_cpu_inference(x)
        assert not isinstance(cpu_engine.engaged(codec, x), nullcontext)
        for other in (x.double(), x.half(), torch.empty(1, 3, 16, 16, device="meta")):
            assert isinstance(cpu_engine.engaged(codec, other), nullcontext)
        with cpu_engine.engaged(codec, x), cpu_engine.engaged(codec, x):  # nested: the inner one adds nothing
            pass
        assert not any("forward" in m.__dict__ for m in codec.modules())


def test_only_the_engine_calls_private_torch_ops():
    touching = sorted(
        str(path.relative_to(SRC)) for path in SRC.rglob("*.py") if re.search(r"torch\.ops|mkldnn", path.read_text())
    )
    assert touching == ["movq/modules/cpu_engine.py"]
