"""The quantizer table: every kind round-trips through JSON, and a new quantizer is one file
(here a toy quantizer defined in this test only, registered and built into a Codec)."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from typing import Literal

import pytest
import torch
from torch import Tensor, nn

import movq
from movq.codec import Codec
from movq.config import CodecConfig, quantizer_config_from_dict
from movq.quantizers import (
    QUANTIZERS,
    Quantizer,
    QuantizerConfig,
    QuantizerOutput,
    build_quantizer,
    code_statistics,
    register_quantizer,
)
from movq.strict import ConfigError, PositiveInt


def tiny_config(quantizer: object, embed_dim: int = 4) -> CodecConfig:
    return CodecConfig(
        name="registry", ch=32, ch_mult=(1, 2), num_res_blocks=1, attn_resolutions=(), resolution=16,
        embed_dim=embed_dim, quantizer=quantizer,
    )


# ---------------------------------------------------------------------------------------------
# A toy quantizer, defined here only: channel 0 rounded and clipped to ``levels`` integer values.


@dataclass
class ToyConfig(QuantizerConfig):
    levels: PositiveInt = 5
    kind: Literal["toy"] = "toy"


class ToyQuantizer(Quantizer):
    """Rounds channel 0 of ``z`` ``[B, dim, H, W]`` to ``0 .. levels - 1``; the code is that value in
    every channel, times a learned scale."""

    kind = "toy"
    config_class = ToyConfig
    architecture_fields = ("levels",)

    def __init__(self, levels: int, dim: int) -> None:
        super().__init__()
        self.codebook_size, self.dim = levels, dim
        self.scale = nn.Parameter(torch.ones(()))

    @classmethod
    def from_config(cls, config: ToyConfig, dim: int) -> ToyQuantizer:
        return cls(config.levels, dim)

    @classmethod
    def config_codebook_size(cls, config: ToyConfig, dim: int) -> int:
        return config.levels

    def forward(self, z: Tensor) -> QuantizerOutput:
        indices = z[:, 0].detach().round().clamp(0, self.codebook_size - 1).long()
        q = self.embed(indices).to(z.dtype)
        z_q = z + (q - z).detach()
        perplexity, usage = code_statistics(indices, self.codebook_size)
        return QuantizerOutput(z_q, indices, torch.zeros((), device=z.device), perplexity, usage)

    def embed(self, indices: Tensor) -> Tensor:
        return (indices.float() * self.scale)[:, None].expand(-1, self.dim, -1, -1)


@pytest.fixture
def toy_registered():
    register_quantizer(ToyQuantizer)
    yield ToyQuantizer
    QUANTIZERS.pop("toy", None)


def test_toy_quantizer_builds_a_codec_through_the_table(toy_registered, tmp_path):
    config = tiny_config(ToyConfig(levels=7))
    text = config.to_json()
    assert json.loads(text)["quantizer"] == {"levels": 7, "kind": "toy"}
    assert CodecConfig.from_json(text) == config
    assert CodecConfig.from_dict({"quantizer": {"kind": "toy", "levels": 3}}).quantizer == ToyConfig(levels=3)
    assert config.codebook_size == 7

    torch.manual_seed(0)
    codec = Codec(CodecConfig.from_json(text)).eval()
    assert type(codec.quantize) is ToyQuantizer and codec.codebook_size == 7
    x = torch.rand(1, 3, 16, 16) * 2 - 1
    tokens = codec.encode(x)
    assert tokens.shape == (1, 8, 8) and 0 <= int(tokens.min()) and int(tokens.max()) < 7
    assert codec.decode(tokens).shape == (1, 3, 16, 16)

    codec.save_pretrained(tmp_path)
    for loaded in (Codec.from_pretrained(tmp_path), movq.load(tmp_path)):
        assert loaded.config == codec.config and type(loaded.quantize) is ToyQuantizer
    torch.testing.assert_close(loaded.state_dict()["quantize.scale"], codec.state_dict()["quantize.scale"])


def test_toy_config_is_checked_and_unknown_once_removed(toy_registered):
    with pytest.raises(ConfigError, match=r"field 'quantizer.levels'.*expected an int >= 1, got 0"):
        CodecConfig.from_dict({"quantizer": {"kind": "toy", "levels": 0}})
    QUANTIZERS.pop("toy")
    with pytest.raises(ConfigError, match="unknown quantizer kind 'toy'"):
        CodecConfig.from_dict({"quantizer": {"kind": "toy"}})
    with pytest.raises(ValueError, match="expected a quantizer config"):
        build_quantizer(ToyConfig(), 4)


def test_register_quantizer_refuses_inconsistent_classes(toy_registered):
    class Other(ToyQuantizer):
        pass

    with pytest.raises(ValueError, match="'toy' is already taken by ToyQuantizer"):
        register_quantizer(Other)
    Other.kind = "other"
    with pytest.raises(ValueError, match=r"ToyConfig needs a field kind: Literal\['other'\]"):
        register_quantizer(Other)
    with pytest.raises(TypeError, match="Quantizer subclass"):
        register_quantizer(ToyConfig)  # type: ignore[arg-type]
    assert register_quantizer(ToyQuantizer) is ToyQuantizer  # registering again is a no-op


# ---------------------------------------------------------------------------------------------
# Every kind of the table.


@pytest.mark.parametrize("kind", sorted(QUANTIZERS))
def test_every_kind_round_trips_config_json_config_quantizer(kind):
    cls = QUANTIZERS[kind]
    config = cls.config_class()
    assert config.kind == cls.kind == kind
    assert json.loads(json.dumps(asdict(config)))["kind"] == kind
    assert quantizer_config_from_dict(json.loads(json.dumps(asdict(config)))) == config

    codec_config = tiny_config(config)
    again = CodecConfig.from_json(codec_config.to_json())
    assert again == codec_config and again.to_json() == codec_config.to_json()
    quantizer = build_quantizer(again.quantizer, again.embed_dim)
    assert type(quantizer) is cls and quantizer.dim == again.embed_dim
    assert quantizer.codebook_size == again.codebook_size
    assert all(hasattr(config, name) for name in cls.architecture_fields)
