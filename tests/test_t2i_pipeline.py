"""movq.t2i end to end: prompts -> tokens -> codec -> PIL images, reranking, image completion."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from helpers import SMALL_2X, tiny_codec
from movq import Codec
from movq.config import ResidualConfig, VQConfig
from movq.t2i import T2IConfig, T2IPipeline, T2ITransformer, clip_scorer, tokens_to_sequence


def pipeline_for(codec: Codec) -> T2IPipeline:
    torch.manual_seed(0)
    config = T2IConfig.for_codec(codec, 8, preset="t2i-tiny", init_std=0.3)
    return T2IPipeline(T2ITransformer(config).eval(), codec)


def brightness(images: list[Image.Image], prompts: list[str]) -> list[float]:
    return [float(np.asarray(im, dtype=np.float64).mean()) for im in images]


def test_config_for_codec():
    config = T2IConfig.for_codec(tiny_codec(config=SMALL_2X), 8, preset="t2i-tiny")
    assert (config.image_vocab_size, config.image_grid, config.image_depth, config.n_layer) == (
        64,
        (4, 4),
        1,
        2,
    )
    residual = T2IConfig.for_codec(tiny_codec(config=SMALL_2X, quantizer=ResidualConfig(codebook_size=32, depth=3)), (8, 12), n_layer=1)
    assert (residual.image_vocab_size, residual.image_grid, residual.image_depth, residual.n_layer) == (
        32,
        (4, 6),
        3,
        1,
    )
    with pytest.raises(ValueError, match="derives"):
        T2IConfig.for_codec(tiny_codec(config=SMALL_2X), 8, image_grid=(2, 2))


def test_prompts_to_images_with_reranking():
    pipe = pipeline_for(tiny_codec(config=SMALL_2X))
    assert pipe.image_size == (8, 8)
    out = pipe(
        ["a red square", "a blue circle"],
        num_candidates=3,
        scorer=brightness,
        top_k=20,
        generator=torch.Generator().manual_seed(0),
        batch_size=4,
    )
    assert len(out.images) == 2 and all(im.size == (8, 8) and im.mode == "RGB" for im in out.images)
    assert out.scores.shape == (2, 3) and out.tokens.shape == (2, 16)
    assert [len(c) for c in out.candidates] == [3, 3]
    for i in range(2):
        best = int(out.scores[i].argmax())
        assert out.images[i] is out.candidates[i][best]
        assert out.scores[i, best] == pytest.approx(max(brightness(out.candidates[i], [])))
        # the returned tokens decode to the returned image
        assert np.array_equal(np.asarray(pipe.decode(out.tokens[i : i + 1])[0]), np.asarray(out.images[i]))

    plain = pipe("a red square", temperature=0)
    assert plain.scores is None and len(plain.images) == 1
    with pytest.raises(ValueError, match="scorer returned 1 scores for 2 images"):
        pipe("x", num_candidates=2, scorer=lambda images, prompts: [1.0])
    with pytest.raises(ValueError, match="num_candidates must be an integer >= 1"):
        pipe("x", num_candidates=0)


def test_image_completion_keeps_the_top_rows():
    pipe = pipeline_for(tiny_codec(config=SMALL_2X))
    image = Image.new("RGB", (8, 8), (200, 30, 30))
    expected = tokens_to_sequence(pipe.codec.encode([image]))
    out = pipe(
        ["a", "b"], prefix_image=image, prefix_rows=2, top_k=5, generator=torch.Generator().manual_seed(1)
    )
    assert torch.equal(out.tokens[:, :8], expected[:, :8].expand(2, -1))
    with pytest.raises(ValueError, match="prefix_rows must be an integer in"):
        pipe("a", prefix_image=image, prefix_rows=5)
    with pytest.raises(ValueError, match="prefix images must be 8x8 pixels"):
        pipe("a", prefix_image=Image.new("RGB", (16, 8)), prefix_rows=1)
    with pytest.raises(ValueError, match="go together"):
        pipe("a", prefix_image=image)
    with pytest.raises(ValueError, match="image_prefix has 17 tokens"):
        pipe("a", image_prefix=torch.zeros(1, 17, dtype=torch.long))


def test_residual_codec_end_to_end():
    codec = tiny_codec(config=SMALL_2X, quantizer=ResidualConfig(codebook_size=32, depth=2))
    pipe = pipeline_for(codec)
    assert pipe.model.config.image_len == 32
    out = pipe("stripes", guidance_scale=2.0, top_p=0.9, generator=torch.Generator().manual_seed(2))
    assert out.tokens.shape == (1, 32) and out.images[0].size == (8, 8)


def test_mismatched_codec_or_tokenizer_is_refused():
    pipe = pipeline_for(tiny_codec(config=SMALL_2X))
    with pytest.raises(
        ValueError, match="codec has 32 codes but the model was built for image_vocab_size=64"
    ):
        T2IPipeline(pipe.model, tiny_codec(config=SMALL_2X, quantizer=VQConfig(codebook_size=32)))
    with pytest.raises(ValueError, match="image_depth=1"):
        T2IPipeline(pipe.model, tiny_codec(config=SMALL_2X, quantizer=ResidualConfig(codebook_size=64, depth=2)))
    with pytest.raises(
        ValueError, match="tokenizer 'byte' has 256 ids but the model was built for text_vocab_size=300"
    ):
        T2IPipeline(
            T2ITransformer(T2IConfig.for_codec(pipe.codec, 8, preset="t2i-tiny", text_vocab_size=300)),
            pipe.codec,
        )


def test_clip_scorer_needs_transformers(monkeypatch):
    monkeypatch.setitem(sys.modules, "transformers", None)
    with pytest.raises(ImportError, match="pip install transformers"):
        clip_scorer()


def test_clip_scorer_with_a_stand_in_transformers(monkeypatch):
    """The scorer plumbing: processor -> image / text features -> cosine similarity per pair."""
    import types

    class FakeModel:
        device = torch.device("cpu")

        @classmethod
        def from_pretrained(cls, name):
            assert name == "some/clip"
            return cls()

        def eval(self):
            return self

        def to(self, device):
            return self

        def get_image_features(self, pixel_values):
            return pixel_values

        def get_text_features(self, input_ids, attention_mask):
            return input_ids.float() * attention_mask

    class FakeProcessor:
        @classmethod
        def from_pretrained(cls, name):
            return cls()

        def __call__(self, text, images, **kwargs):
            pixels = torch.from_numpy(
                np.stack([np.asarray(im, dtype=np.float32).mean(axis=(0, 1)) for im in images])
            )
            ids = torch.tensor([[len(t), 1.0, 0.0] for t in text])
            return {"pixel_values": pixels, "input_ids": ids, "attention_mask": torch.ones_like(ids)}

    monkeypatch.setitem(
        sys.modules, "transformers", types.SimpleNamespace(CLIPModel=FakeModel, CLIPProcessor=FakeProcessor)
    )
    score = clip_scorer("some/clip")
    images = [Image.new("RGB", (4, 4), (255, 0, 0)), Image.new("RGB", (4, 4), (0, 255, 0))]
    scores = score(images, ["x", "x"])
    expected = torch.nn.functional.cosine_similarity(
        torch.tensor([[255.0, 0, 0], [0, 255, 0]]), torch.tensor([[1.0, 1, 0]] * 2)
    )
    torch.testing.assert_close(scores, expected)


def run_python(code: str) -> subprocess.CompletedProcess:
    src = str(Path(__file__).resolve().parents[1] / "src")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([src, os.environ.get("PYTHONPATH", "")])}
    return subprocess.run(
        [sys.executable, "-c", code], check=False, capture_output=True, text=True, timeout=120, env=env
    )


def test_import_movq_does_not_load_t2i():
    result = run_python("import sys, movq; print('movq.t2i' in sys.modules)")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "False"
    result = run_python(
        "import sys, movq.t2i; print([m for m in ('tokenizers', 'transformers') if m in sys.modules])"
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"
