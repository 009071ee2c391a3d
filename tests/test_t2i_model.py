"""movq.t2i model: config, causality, loss, layouts, save/load, input validation."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file, save_file

from helpers import tiny_t2i as make_model
from movq.t2i import (
    T2I_PRESETS,
    T2IConfig,
    T2ITransformer,
    drop_captions,
    empty_text,
    get_t2i_preset,
    pad_text,
    sequence_to_tokens,
    tokens_to_sequence,
)


def random_inputs(config: T2IConfig, batch: int = 2, seed: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    lengths = torch.randint(0, config.text_len + 1, (batch,), generator=g).tolist()
    text = pad_text(
        [torch.randint(0, config.text_vocab_size, (n,), generator=g).tolist() for n in lengths],
        config.text_len,
        config.text_vocab_size,
    )
    image = torch.randint(0, config.image_vocab_size, (batch, config.image_len), generator=g)
    return text, image


# ---------------------------------------------------------------------------------------------- config


def test_config_json_round_trip_and_presets():
    for name, preset in T2I_PRESETS.items():
        assert T2IConfig.from_json(preset.to_json()) == preset, name
    toy = get_t2i_preset("t2i-toy")
    assert (toy.n_layer, toy.n_head, toy.n_embd, toy.image_grid, toy.text_len) == (8, 8, 512, (16, 16), 128)
    assert T2IConfig().text_loss_weight == pytest.approx(
        1 / 8
    ) and T2IConfig().image_loss_weight == pytest.approx(7 / 8)
    assert json.loads(toy.to_json())["image_grid"] == [16, 16]
    assert get_t2i_preset("t2i-tiny", n_layer=3).n_layer == 3


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("n_embd", 33, "divisible by n_head"),
        ("image_grid", (4,), "image_grid"),
        ("text_len", 0, "text_len"),
        ("caption_dropout", 1.0, "caption_dropout"),
        ("text_loss_weight", -1.0, "text_loss_weight"),
    ],
)
def test_config_rejects_bad_values(field, value, message):
    with pytest.raises(ValueError, match=message):
        get_t2i_preset("t2i-tiny", **{field: value})


def test_config_rejects_unknown_fields():
    with pytest.raises(ValueError, match="unknown T2IConfig fields"):
        T2IConfig.from_dict({**T2IConfig().to_dict(), "n_layers": 3})
    with pytest.raises(KeyError, match="available"):
        get_t2i_preset("nope")


# ---------------------------------------------------------------------------------------------- forward


def test_forward_shape_and_causality():
    model = make_model()
    config = model.config
    text, image = random_inputs(config)
    logits = model(text, image)
    assert logits.shape == (2, config.image_len, config.image_vocab_size)
    for j in (0, 5, config.image_len - 1):
        changed = image.clone()
        changed[:, j] = (changed[:, j] + 1) % config.image_vocab_size
        new = model(text, changed)
        # image token j changes no logit at or before its position ...
        torch.testing.assert_close(new[:, : j + 1], logits[:, : j + 1], rtol=0, atol=1e-5)
        # ... and does change the later ones
        if j + 1 < config.image_len:
            assert (new[:, j + 1 :] - logits[:, j + 1 :]).abs().max() > 1e-3
    # the text conditions every image position, the first one included
    other_text, _ = random_inputs(config, seed=7)
    assert (model(other_text, image)[:, 0] - logits[:, 0]).abs().max() > 1e-3


def test_forward_on_a_prefix_matches_the_full_forward():
    model = make_model()
    text, image = random_inputs(model.config)
    full = model(text, image)
    torch.testing.assert_close(model(text, image[:, :7]), full[:, :7], rtol=1e-5, atol=1e-5)


def test_residual_layout_flattens_depth_per_position():
    tokens = torch.arange(2 * 3 * 2 * 4).view(2, 3, 2, 4)  # [B, D, h, w]
    sequence = tokens_to_sequence(tokens)
    assert sequence.shape == (2, 2 * 4 * 3)
    b, d, r, c = 1, 2, 1, 3
    assert sequence[b, (r * 4 + c) * 3 + d] == tokens[b, d, r, c]
    assert torch.equal(sequence_to_tokens(sequence, (2, 4), 3), tokens)
    flat = torch.arange(12).view(1, 3, 4)
    assert torch.equal(tokens_to_sequence(flat), flat.view(1, 12))
    assert torch.equal(sequence_to_tokens(flat.view(1, 12), (3, 4)), flat)
    assert sequence_to_tokens(flat.view(1, 12), (3, 4), 1, depth_axis=True).shape == (1, 1, 3, 4)

    model = make_model(image_grid=(2, 3), image_depth=2)
    assert model.config.image_len == 12 and model.config.row_len == 6
    assert model._image_row_ids.tolist() == [0] * 6 + [1] * 6
    assert model._image_col_ids.tolist() == [0, 0, 1, 1, 2, 2] * 2
    assert model._image_depth_ids.tolist() == [0, 1] * 6
    text, image = random_inputs(model.config)
    assert model(text, image).shape == (2, 12, model.config.image_vocab_size)


# ---------------------------------------------------------------------------------------------- loss


def test_loss_terms_weighting_and_gradients():
    model = make_model(text_loss_weight=0.25, image_loss_weight=2.0).train()
    text, image = random_inputs(model.config, batch=3)
    loss = model.loss(text, image, caption_dropout=0.0)
    torch.testing.assert_close(loss.total, 0.25 * loss.text + 2.0 * loss.image)
    loss.total.backward()
    for name, param in model.named_parameters():
        assert param.grad is not None and torch.isfinite(param.grad).all(), name
    # the image term is the cross-entropy of forward's logits
    model.eval()
    logits = model(text, image)
    expected = torch.nn.functional.cross_entropy(logits.flatten(0, 1), image.flatten())
    torch.testing.assert_close(model.loss(text, image).image, expected, rtol=1e-5, atol=1e-6)


def test_default_loss_weights_are_dalle():
    model = make_model()
    text, image = random_inputs(model.config)
    loss = model.loss(text, image)
    torch.testing.assert_close(loss.total, (loss.text + 7 * loss.image) / 8)


def test_caption_dropout():
    config = get_t2i_preset("t2i-tiny")
    text, _ = random_inputs(config, batch=64)
    empty = empty_text(64, config.text_len, config.text_vocab_size)
    assert torch.equal(drop_captions(text, 1.0, config.text_vocab_size), empty)
    assert drop_captions(text, 0.0, config.text_vocab_size) is text
    dropped = drop_captions(text, 0.5, config.text_vocab_size, generator=torch.Generator().manual_seed(0))
    is_empty = (dropped == empty).all(dim=1)
    assert 10 < int(is_empty.sum()) < 54
    assert torch.equal(dropped[~is_empty], text[~is_empty])
    # the loss applies config.caption_dropout in training mode only (or an explicit probability)
    model = make_model(caption_dropout=0.5)
    text, image = random_inputs(model.config, batch=4)
    model.train()
    model.drop.p = 0.0
    on_empty = model.loss(empty[:4], image, caption_dropout=0.0).total
    torch.testing.assert_close(model.loss(text, image, caption_dropout=1.0).total, on_empty)
    model.eval()
    assert torch.equal(model.loss(text, image).total, model.loss(text, image, caption_dropout=0.0).total)


# ---------------------------------------------------------------------------------------------- save / load


def test_save_load_round_trip_is_bit_exact(tmp_path):
    model = make_model(image_depth=2, image_grid=(2, 2))
    model.save_pretrained(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["config.json", "model.safetensors"]
    loaded = T2ITransformer.from_pretrained(tmp_path)
    assert loaded.config == model.config and not loaded.training
    original, restored = model.state_dict(), loaded.state_dict()
    assert original.keys() == restored.keys()
    for key in original:
        assert torch.equal(original[key], restored[key]), key
    text, image = random_inputs(model.config)
    assert torch.equal(model(text, image), loaded(text, image))
    assert torch.equal(model.generate(text, temperature=0), loaded.generate(text, temperature=0))


def test_from_pretrained_is_strict(tmp_path):
    make_model().save_pretrained(tmp_path)
    weights = tmp_path / "model.safetensors"
    state = load_file(weights)
    state["extra.weight"] = torch.zeros(1)
    del state["bos"]
    save_file(state, weights)
    with pytest.raises(ValueError, match=r"missing keys \['bos'\].*unexpected keys \['extra.weight'\]"):
        T2ITransformer.from_pretrained(tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    (tmp_path / "config.json").write_text(json.dumps({**config, "n_layers": 2}))
    with pytest.raises(ValueError, match="unknown T2IConfig fields"):
        T2ITransformer.from_pretrained(tmp_path)
    with pytest.raises(FileNotFoundError, match="config.json"):
        T2ITransformer.from_pretrained(tmp_path / "missing")


# ---------------------------------------------------------------------------------------------- bad input


def test_bad_inputs_raise_clear_errors():
    model = make_model()
    config = model.config
    text, image = random_inputs(config)
    vocab, length, n = config.text_vocab_size, config.text_len, config.image_len
    with pytest.raises(ValueError, match=f"text_len={length} positions, got {length - 1}"):
        model(text[:, :-1], image)
    bad = text.clone()
    bad[0, 0] = vocab + length
    with pytest.raises(ValueError, match=r"text ids must be in \[0, 272\)"):
        model(bad, image)
    bad[0, 0] = -1
    with pytest.raises(ValueError, match="got values in"):
        model(bad, image)
    bad = empty_text(2, length, vocab)
    bad[1, 3] = vocab + 5
    with pytest.raises(
        ValueError, match=r"text_ids\[1, 3\] = 261 is a padding id, but position 3 pads with 259"
    ):
        model(bad, image)
    with pytest.raises(ValueError, match=r"image ids in \[0, 64\), got values in \[.*, 64\]"):
        model(text, torch.full_like(image, 64))
    with pytest.raises(
        ValueError, match=f"image_ids has {n + 1} tokens; the 4x4 image grid accepts 1 to {n}"
    ):
        model(text, torch.zeros(2, n + 1, dtype=torch.long))
    with pytest.raises(ValueError, match=f"image_ids has 5 tokens; the 4x4 image grid accepts exactly {n}"):
        model.loss(text, image[:, :5])
    with pytest.raises(TypeError, match="integer tensor"):
        model(text.float(), image)
    with pytest.raises(TypeError, match="torch.LongTensor"):
        model(text.tolist(), image)
    with pytest.raises(ValueError, match="batch size 3 but text_ids has 2"):
        model(text, torch.zeros(3, n, dtype=torch.long))
    with pytest.raises(ValueError, match="2-D"):
        model(text[0], image)
    with pytest.raises(TypeError, match="T2IConfig"):
        T2ITransformer({"n_layer": 2})
