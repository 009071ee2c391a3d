"""The quantizer configs: a static union (``movq.quantizers.QuantizerConfig``) whose every member has a
``kind`` and builds its quantizer; every kind round-trips through JSON, and bad configs are refused
with the field named."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, fields, is_dataclass
from typing import Literal, get_args, get_type_hints

import pytest
import torch

import movq
from movq.codec import Codec
from movq.config import CodecConfig, quantizer_config_from_dict
from movq.quantizers import Quantizer, QuantizerConfig, QuantizerConfigBase, VectorQuantizer, build_quantizer
from movq.strict import ConfigError, PositiveInt

MEMBERS = get_args(QuantizerConfig)


def tiny_config(quantizer: object, embed_dim: int = 4) -> CodecConfig:
    return CodecConfig(
        name="registry", ch=32, ch_mult=(1, 2), num_res_blocks=1, attn_resolutions=(), resolution=16,
        embed_dim=embed_dim, quantizer=quantizer,
    )


def test_the_union_is_static_and_every_member_has_a_kind_and_build():
    kinds = [member().kind for member in MEMBERS]
    assert kinds == ["vq", "ema", "gumbel", "residual", "fsq", "lfq", "ibq", "projected", "multiscale", "simvq"]  # "vq" first: a dict without kind
    for member in MEMBERS:
        assert is_dataclass(member) and issubclass(member, QuantizerConfigBase)
        kind = {f.name: f for f in fields(member)}["kind"]
        assert get_args(get_type_hints(member)["kind"]) == (kind.default,)  # kind: Literal["name"] = "name"
        assert member.build is not QuantizerConfigBase.build, member.__name__
    assert CodecConfig.from_dict({"quantizer": {"codebook_size": 8}}).quantizer == MEMBERS[0](codebook_size=8)


def test_a_config_outside_the_union_is_refused():
    @dataclass
    class ToyConfig(QuantizerConfigBase):
        levels: PositiveInt = 5
        kind: Literal["toy"] = "toy"

    kinds = r"\['ema', 'fsq', 'gumbel', 'ibq', 'lfq', 'multiscale', 'projected', 'residual', 'simvq', 'vq'\]"
    with pytest.raises(ConfigError, match=r"unknown quantizer kind 'toy'; expected one of: " + kinds):
        CodecConfig.from_dict({"quantizer": {"kind": "toy"}})
    with pytest.raises(ConfigError, match="unknown quantizer kind 'toy'"):
        CodecConfig(quantizer={"kind": "toy"})
    with pytest.raises(ValueError, match="expected a quantizer config"):
        build_quantizer(ToyConfig(), 4)
    with pytest.raises(ConfigError, match=r"invalid ToyConfig field 'levels': expected an int >= 1, got 0"):
        ToyConfig(levels=0)


def test_quantizer_configs_are_checked_from_dicts_and_from_python():
    with pytest.raises(ConfigError, match=r"field 'quantizer.levels\[1\]'.*expected an int >= 2, got 0"):
        CodecConfig.from_dict({"quantizer": {"kind": "fsq", "levels": [4, 0]}})
    with pytest.raises(ConfigError, match=r"invalid CodecConfig field 'quantizer.codebook_size'.*expected an int >= 1, got 0"):
        CodecConfig(quantizer={"kind": "vq", "codebook_size": 0})
    with pytest.raises(ConfigError, match=r"invalid EMAConfig field 'decay': expected a number in \[0, 1\), got 1.5"):
        movq.config.EMAConfig(decay=1.5)
    with pytest.raises(ConfigError, match="invalid VQConfig field 'codebook_size'"):
        VectorQuantizer(0, 4)  # a quantizer built directly checks its arguments through its config


def test_fsq_codec_round_trips_through_save_and_load(tmp_path):
    config = tiny_config(movq.config.FSQConfig(levels=(7,)), embed_dim=1)
    text = config.to_json()
    assert json.loads(text)["quantizer"] == {"levels": [7], "num_codebooks": 1, "symmetric": False, "kind": "fsq"}
    assert CodecConfig.from_json(text) == config and config.codebook_size == 7

    torch.manual_seed(0)
    codec = Codec(CodecConfig.from_json(text)).eval()
    assert codec.codebook_size == 7
    x = torch.rand(1, 3, 16, 16) * 2 - 1
    tokens = codec.encode(x)
    assert tokens.shape == (1, 8, 8) and 0 <= int(tokens.min()) and int(tokens.max()) < 7
    codec.save_pretrained(tmp_path)
    for loaded in (Codec.from_pretrained(tmp_path), movq.load(tmp_path)):
        assert loaded.config == codec.config and type(loaded.quantize) is type(codec.quantize)


@pytest.mark.parametrize("member", MEMBERS, ids=lambda m: m.__name__)
def test_every_kind_round_trips_config_json_config_quantizer(member):
    config = member()
    if config.kind == "multiscale":  # its last scale is the latent's side: 16 px at f=2
        config = member(scales=(1, 2, 4, 8))
    assert json.loads(json.dumps(asdict(config)))["kind"] == config.kind
    assert quantizer_config_from_dict(json.loads(json.dumps(asdict(config)))) == config

    codec_config = tiny_config(config)
    again = CodecConfig.from_json(codec_config.to_json())
    assert again == codec_config and again.to_json() == codec_config.to_json()
    quantizer = build_quantizer(again.quantizer, again.embed_dim)
    assert isinstance(quantizer, Quantizer) and quantizer.dim == again.embed_dim
    assert type(quantizer) is type(again.quantizer.build(again.embed_dim))
    assert quantizer.codebook_size == again.codebook_size
    assert all(hasattr(config, name) for name in member.architecture_fields)
