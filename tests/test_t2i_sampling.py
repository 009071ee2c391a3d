"""movq.t2i sampling: filters, KV cache, guidance, image prefixes, argument checks."""

from __future__ import annotations

import math

import pytest
import torch

from movq.t2i import apply_guidance, filter_logits, get_t2i_preset, pad_text, sample_logits
from movq.t2i.model import T2ITransformer


def make_model(**overrides) -> T2ITransformer:
    torch.manual_seed(0)
    return T2ITransformer(get_t2i_preset("t2i-tiny", init_std=0.3, **overrides)).eval()


def captions(model: T2ITransformer, batch: int = 3) -> torch.Tensor:
    config = model.config
    g = torch.Generator().manual_seed(3)
    rows = [torch.randint(0, config.text_vocab_size, (n,), generator=g).tolist() for n in (0, 5, 40)[:batch]]
    return pad_text(rows, config.text_len, config.text_vocab_size)


def seeded(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


# ---------------------------------------------------------------------------------------------- filters


def test_filter_logits_top_k_keeps_exactly_k():
    logits = torch.randn(8, 50, generator=seeded())
    kept = torch.isfinite(filter_logits(logits, top_k=5))
    assert kept.sum(dim=1).tolist() == [5] * 8
    assert torch.equal(kept, torch.zeros_like(kept).scatter(1, logits.topk(5).indices, True))
    assert torch.isfinite(filter_logits(logits, top_k=500)).all()
    assert torch.equal(filter_logits(logits), logits)


def test_filter_logits_top_p_keeps_the_smallest_nucleus():
    logits = torch.log(torch.tensor([[0.5, 0.3, 0.15, 0.05], [0.05, 0.15, 0.3, 0.5]]))
    assert torch.isfinite(filter_logits(logits, top_p=0.7)).tolist() == [
        [True, True, False, False],
        [False, False, True, True],
    ]
    assert torch.isfinite(filter_logits(logits, top_p=0.8)).tolist()[0] == [True, True, False, False]
    assert torch.isfinite(filter_logits(logits, top_p=0.81)).tolist()[0] == [True, True, True, False]
    assert torch.isfinite(filter_logits(logits, top_p=0.01)).sum(dim=1).tolist() == [1, 1]  # always one token
    assert torch.isfinite(filter_logits(logits, top_p=1.0)).all()


def test_sample_logits_never_emits_excluded_tokens():
    logits = torch.randn(4, 30, generator=seeded(1))
    allowed_k = torch.zeros_like(logits, dtype=torch.bool).scatter(1, logits.topk(3).indices, True)
    allowed_p = torch.isfinite(filter_logits(logits, top_p=0.5))
    g = seeded(2)
    for _ in range(200):
        ids = sample_logits(logits, temperature=2.0, top_k=3, generator=g)
        assert allowed_k.gather(1, ids[:, None]).all()
        ids = sample_logits(logits, top_p=0.5, generator=g)
        assert allowed_p.gather(1, ids[:, None]).all()
    assert torch.equal(sample_logits(logits, temperature=0), logits.argmax(dim=1))


def test_apply_guidance():
    cond, uncond = torch.randn(2, 10), torch.randn(2, 10)
    assert apply_guidance(cond, uncond, 1.0) is cond
    assert torch.equal(apply_guidance(cond, uncond, 0.0), uncond)
    torch.testing.assert_close(apply_guidance(cond, uncond, 3.0), uncond + 3 * (cond - uncond))


# ---------------------------------------------------------------------------------------------- generate


@pytest.mark.parametrize("depth", [1, 2])
def test_kv_cache_greedy_equals_full_forward_greedy(depth):
    model = make_model(image_depth=depth)
    text = captions(model)
    cached = model.generate(text, temperature=0)
    full = model.generate(text, temperature=0, use_cache=False)
    assert cached.shape == (3, model.config.image_len)
    assert torch.equal(cached, full)
    # and greedy decoding agrees with the argmax of one forward pass over its own output
    assert torch.equal(model(text, cached).argmax(dim=-1), cached)
    # with guidance and a prefix too
    prefix = torch.randint(0, model.config.image_vocab_size, (3, 5), generator=seeded())
    kwargs = {"temperature": 0, "guidance_scale": 3.0, "image_prefix": prefix}
    assert torch.equal(model.generate(text, **kwargs), model.generate(text, use_cache=False, **kwargs))


def test_kv_cache_in_chunks_matches_one_pass():
    model = make_model()
    text = captions(model)
    image = torch.randint(0, model.config.image_vocab_size, (3, model.config.image_len), generator=seeded())
    with torch.no_grad():
        full = model._hidden(text, image[:, :-1])
        caches = model.new_caches(3)
        parts = [model._hidden(text, image[:, :4], caches)]  # BOS + text + 4 image tokens
        parts.append(model._trunk(model._embed_image(image[:, 4:9], offset=4), caches))  # 5 at once
        parts.append(model._trunk(model._embed_image(image[:, 9:10], offset=9), caches))  # then one
    assert caches[0].length == 1 + model.config.text_len + 10
    torch.testing.assert_close(torch.cat(parts, dim=1), full[:, : caches[0].length], rtol=1e-5, atol=1e-5)


def test_generated_tokens_respect_top_k_and_top_p():
    model = make_model()
    text = captions(model)
    ids = model.generate(text, top_k=3, temperature=1.5, generator=seeded(4))
    logits = model(text, ids)
    rank = (logits > logits.gather(2, ids[..., None])).sum(dim=2)  # tokens strictly more likely
    assert rank.max() < 3

    ids = model.generate(text, top_p=0.6, temperature=0.7, generator=seeded(5))
    probs = torch.softmax(model(text, ids) / 0.7, dim=-1)
    chosen = probs.gather(2, ids[..., None])
    mass_before = (probs * (probs > chosen)).sum(dim=2)
    assert mass_before.max() < 0.6 + 1e-4

    # with guidance the filter applies to the guided logits
    scale = 2.5
    ids = model.generate(text, top_k=2, guidance_scale=scale, generator=seeded(6))
    empty = model.empty_text(3)
    guided = model(empty, ids) + scale * (model(text, ids) - model(empty, ids))
    assert ((guided > guided.gather(2, ids[..., None])).sum(dim=2)).max() < 2


def test_top_k_one_is_greedy_and_sampling_is_reproducible():
    model = make_model()
    text = captions(model)
    greedy = model.generate(text, temperature=0)
    assert torch.equal(model.generate(text, top_k=1, generator=seeded(1)), greedy)
    a = model.generate(text, top_k=20, generator=seeded(9))
    assert torch.equal(a, model.generate(text, top_k=20, generator=seeded(9)))
    assert not torch.equal(a, model.generate(text, top_k=20, generator=seeded(10)))


def test_image_prefix_is_kept():
    model = make_model()
    config = model.config
    text = captions(model)
    n = config.image_len
    for k in (config.row_len * 2, 5, 0, n):  # whole rows, mid-row, nothing, everything
        prefix = torch.randint(0, config.image_vocab_size, (3, k), generator=seeded(k))
        out = model.generate(text, image_prefix=prefix, top_k=10, generator=seeded())
        assert out.shape == (3, n)
        assert torch.equal(out[:, :k], prefix)
    # greedy completion equals greedy decoding forced through the same prefix
    greedy = model.generate(text, temperature=0)
    assert torch.equal(model.generate(text, temperature=0, image_prefix=greedy[:, :6]), greedy)


def test_guidance_scale_one_is_unguided_sampling():
    model = make_model()
    text = captions(model)
    guided = model.generate(text, guidance_scale=1.0, top_k=10, use_cache=False, generator=seeded(11))
    # reference: unguided sampling written out with forward() and sample_logits()
    g = seeded(11)
    ids = torch.zeros(3, model.config.image_len, dtype=torch.long)
    with torch.no_grad():
        for j in range(model.config.image_len):
            ids[:, j] = sample_logits(model(text, ids[:, : j + 1])[:, j], top_k=10, generator=g)
    assert torch.equal(guided, ids)
    assert torch.equal(model.generate(text, top_k=10, generator=seeded(11)), guided)
    assert not torch.equal(model.generate(text, top_k=10, guidance_scale=3.0, generator=seeded(11)), guided)


def test_guidance_scale_zero_is_the_empty_caption():
    model = make_model()
    text = captions(model)
    assert torch.equal(
        model.generate(text, temperature=0, guidance_scale=0.0),
        model.generate(model.empty_text(3), temperature=0),
    )


def test_generate_restores_training_mode():
    model = make_model(dropout=0.5).train()
    text = captions(model)
    assert torch.equal(model.generate(text, temperature=0), model.generate(text, temperature=0))
    assert model.training


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        ({"top_k": 0}, ValueError, "top_k must be an int >= 1 or null, got 0"),
        ({"top_k": 2.5}, ValueError, "top_k must be an int or null, got 2.5"),
        ({"top_k": True}, ValueError, "top_k must be an int or null, got True"),
        ({"top_p": 0.0}, ValueError, r"top_p must be a number in \(0, 1\] or null, got 0.0"),
        ({"top_p": math.nan}, ValueError, r"top_p must be a finite number or null, got nan"),
        ({"top_p": 1.5}, ValueError, "top_p"),
        ({"temperature": -1.0}, ValueError, "temperature must be a finite number >= 0"),
        ({"temperature": math.nan}, ValueError, "temperature"),
        ({"guidance_scale": math.inf}, ValueError, "guidance_scale must be a finite number"),
        (
            {"image_prefix": torch.zeros(3, 17, dtype=torch.long)},
            ValueError,
            "image_prefix has 17 tokens; the 4x4 image grid accepts 0 to 16",
        ),
        (
            {"image_prefix": torch.zeros(2, 4, dtype=torch.long)},
            ValueError,
            "image_prefix has batch size 2 but text_ids has 3",
        ),
        (
            {"image_prefix": torch.full((3, 4), 64)},
            ValueError,
            r"image_prefix must hold image ids in \[0, 64\)",
        ),
        ({"image_prefix": torch.zeros(3, 4)}, TypeError, "integer tensor"),
    ],
)
def test_generate_rejects_bad_arguments(kwargs, error, message):
    model = make_model()
    with pytest.raises(error, match=message):
        model.generate(captions(model), **kwargs)


def test_generate_rejects_bad_text():
    model = make_model()
    text = captions(model)
    with pytest.raises(ValueError, match="text_len=16 positions, got 17"):
        model.generate(torch.cat([text, text[:, :1]], dim=1))
    with pytest.raises(ValueError, match="text ids must be in"):
        model.generate(text + 1000)


@pytest.mark.parametrize("temperature", [1e-300, 5e-324, 1e-7, float("inf"), True])
def test_temperatures_that_overflow_the_logits_are_refused(temperature):
    model = make_model()
    with pytest.raises(ValueError, match="temperature must be a finite number >= 0: 0 .greedy. or at least 1e-06"):
        model.generate(captions(model), temperature=temperature)


def test_a_sampling_batch_beyond_memory_is_refused_before_allocation(monkeypatch):
    """The KV caches of a batch are counted before anything is allocated: with a device of 32 KiB, 3 guided
    prompts (6 sequences) of t2i-tiny do not fit, and the error says how many sequences and what to do."""
    import movq.memory_budget
    from movq.memory_budget import MemoryBudgetError

    model = make_model()
    monkeypatch.setattr(movq.memory_budget, "available_bytes", lambda device: 2**15)
    with pytest.raises(MemoryBudgetError, match=r"sampling 6 sequences at once needs at least .*batch_size"):
        model.generate(captions(model), guidance_scale=3.0)
    monkeypatch.setattr(movq.memory_budget, "available_bytes", lambda device: 2**40)
    assert model.generate(captions(model), temperature=0).shape == (3, model.config.image_len)
