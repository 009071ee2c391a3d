"""Every bad input is refused with a message that says what was wrong and what is accepted,
before any compute runs."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from movq import Codec, get_preset
from movq.config import CodecConfig, VQConfig
from movq.images import check_size, to_tensor
from movq.strict import ConfigError
from movq.t2i.config import T2IConfig
from movq.tiling import TilingPolicy


@pytest.fixture(scope="module")
def codec() -> Codec:
    torch.manual_seed(0)
    return Codec(get_preset("movqgan-tiny")).eval()


@pytest.fixture
def no_compute(codec, monkeypatch):
    """Fail the test if the encoder or decoder runs."""

    def boom(*args, **kwargs):
        raise AssertionError("compute ran before validation")

    monkeypatch.setattr(codec.encoder, "forward", boom)
    monkeypatch.setattr(codec.decoder, "forward", boom)
    return codec


@pytest.mark.parametrize(
    "images,error,message",
    [
        (torch.zeros(1, 4, 16, 16), ValueError, "expected 3 \\(RGB\\) channels"),
        (torch.zeros(16, 16), ValueError, "must be CHW or BCHW, got 2 dimensions"),
        (torch.zeros(1, 1, 3, 16, 16), ValueError, "must be CHW or BCHW, got 5 dimensions"),
        (torch.full((1, 3, 16, 16), float("nan")), ValueError, "NaN or inf"),
        (torch.full((3, 16, 16), float("inf")), ValueError, "NaN or inf"),
        (torch.full((3, 16, 16), 255.0), ValueError, "must be in \\[-1, 1\\], got values in \\[255, 255\\]"),
        (torch.zeros(0, 3, 16, 16), ValueError, "empty batch"),
        (torch.zeros(3, 16, 16, dtype=torch.int32), TypeError, "float in \\[-1, 1\\] or uint8"),
        (np.zeros((16, 16, 3), dtype=np.float32), TypeError, "numpy images must be uint8"),
        (np.zeros((16, 16), dtype=np.uint8), ValueError, "HWC or BHWC"),
        (np.zeros((16, 16, 4), dtype=np.uint8), ValueError, "expected 3 \\(RGB\\) channels"),
        (np.zeros((0, 16, 16, 3), dtype=np.uint8), ValueError, "empty batch"),
        ([], ValueError, "empty batch"),
        ([Image.new("RGB", (16, 16)), "x"], TypeError, "only PIL images"),
        ([Image.new("RGB", (16, 16)), Image.new("RGB", (24, 16))], ValueError, "same size"),
        ("picture.png", TypeError, "unsupported image type str"),
        (torch.zeros(1, 3, 20, 16), ValueError, "image size 20x16 \\(HxW\\) is not a multiple of the downsample factor 8"),
    ],
)
def test_bad_images_are_refused(no_compute, images, error, message):
    with pytest.raises(error, match=message):
        no_compute.encode(images)


def test_size_error_names_the_nearest_valid_sizes():
    with pytest.raises(ValueError, match="nearest valid sizes: 248x256, 256x256") as info:
        check_size(250, 256, 8)
    assert "pad=True" in str(info.value)


def test_pad_accepts_any_size(codec):
    tokens = codec.encode(torch.zeros(1, 3, 20, 17), pad=True)
    assert tokens.shape == (1, 3, 3)


@pytest.mark.parametrize(
    "tokens,error,message",
    [
        (torch.zeros(1, 2, 2), TypeError, "integer tensor"),
        (torch.zeros(1, 2, 2, dtype=torch.bool), TypeError, "integer tensor"),
        (torch.full((1, 2, 2), 1024), ValueError, "token ids must be in \\[0, 1024\\), got values in \\[1024, 1024\\]"),
        (torch.full((1, 2, 2), -1), ValueError, "token ids must be in \\[0, 1024\\)"),
        (torch.zeros(2, 2, dtype=torch.long), ValueError, "tokens must have shape \\[B, h, w\\]"),
        (torch.zeros(1, 1, 2, 2, dtype=torch.long), ValueError, "tokens must have shape \\[B, h, w\\]"),
        (torch.zeros(0, 2, 2, dtype=torch.long), ValueError, "empty batch"),
        ([[1, 2]], TypeError, "torch.LongTensor"),
    ],
)
def test_bad_tokens_are_refused(no_compute, tokens, error, message):
    with pytest.raises(error, match=message):
        no_compute.decode(tokens)


def test_uint8_and_float_inputs_agree():
    array = np.random.default_rng(0).integers(0, 256, (2, 8, 8, 3), dtype=np.uint8)
    from_numpy, fmt = to_tensor(array)
    from_tensor, _ = to_tensor(torch.from_numpy(array).permute(0, 3, 1, 2))
    from_pil, _ = to_tensor([Image.fromarray(a) for a in array])
    assert fmt.kind == "numpy" and fmt.batched
    assert torch.equal(from_numpy, from_tensor) and torch.equal(from_numpy, from_pil)
    assert from_numpy.min() >= -1 and from_numpy.max() <= 1


# ---------------------------------------------------------------------------------------------
# Configs are checked when they are built, from Python too (not only from dicts and JSON files).


@pytest.mark.parametrize(
    ("build", "message"),
    [
        (lambda: CodecConfig(ch=-1), r"invalid CodecConfig field 'ch': expected an int >= 32, got -1"),
        (lambda: CodecConfig(norm="batch"), r"field 'norm': expected one of \['spatial', 'group'\], got 'batch'"),
        (lambda: CodecConfig(ch_mult=()), r"field 'ch_mult': expected a list of at least 1 item"),
        (lambda: CodecConfig(quantizer={"kind": "fsq", "levels": [8, 1]}),
         r"field 'quantizer.levels\[1\]': expected an int >= 2, got 1"),
        (lambda: VQConfig(codebook_size=True), r"invalid VQConfig field 'codebook_size': expected an int, got True"),
        (lambda: TilingPolicy(stat_passes=-1), r"invalid TilingPolicy field 'stat_passes': expected an int >= 0"),
        (lambda: T2IConfig(tokenizer=""), r"invalid T2IConfig field 'tokenizer': expected a string of at least 1"),
    ],
)
def test_configs_built_in_python_are_checked(build, message):
    with pytest.raises(ConfigError, match=message):
        build()


def test_configs_built_in_python_are_converted_like_json():
    config = CodecConfig(ch_mult=[1, 2], attn_resolutions=[], quantizer={"codebook_size": 64}, dropout=0)
    assert config.ch_mult == (1, 2) and config.attn_resolutions == () and isinstance(config.dropout, float)
    assert config.quantizer == VQConfig(codebook_size=64)
    assert config == CodecConfig.from_dict(config.to_dict())
