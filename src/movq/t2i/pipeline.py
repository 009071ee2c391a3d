"""Prompts to images: text ids -> :meth:`T2ITransformer.generate` -> ``codec.decode`` -> PIL images,
with optional image completion and reranking of candidates by an image-text scorer (e.g. CLIP)."""

from __future__ import annotations

import math
import os
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from PIL import Image
from torch import Tensor

from movq.atomic import require_regular_file
from movq.images import ImageFormat, ImageInput, check_output_type, from_tensor, generated_output
from movq.progress import ProgressBarConfig
from movq.seeding import Generators, batch_generators, check_generators
from movq.strict import read_json_object
from movq.t2i.model import T2ITransformer, sequence_to_tokens, tokens_to_sequence
from movq.t2i.sampling import check_sampling_args
from movq.t2i.text import TextTokenizer, check_prompts, encode_prompts, load_tokenizer, text_warnings
from movq.tokenize.training_data import recorded_codec

CODEC_INFO = "codec.json"
"""The file of a ``movq-t2i-train`` run folder naming the codec whose tokens the model learned."""

Scorer = Callable[[list[Image.Image], list[str]], "Sequence[float] | Tensor"]
"""``scorer(images, prompts) -> scores``: one score per (image, prompt) pair, higher is better."""


@dataclass
class T2IOutput:
    """What :class:`T2IPipeline` returns, for ``P`` prompts and ``C`` candidates per prompt.

    ``images``: the best candidate of each prompt (the first one without a scorer), ``P`` PIL
    images. ``tokens``: their image sequences ``LongTensor [P, N]``. ``scores``: ``[P, C]`` float
    scores in generation order, or ``None`` without a scorer. ``candidates``: all ``C`` images of
    each prompt in generation order (``P`` lists). With ``output_type="pt"``, ``images`` is a tensor
    ``[P, 3, H, W]`` and ``candidates`` ``[P, C, 3, H, W]``, in ``[-1, 1]``.
    """

    images: list[Image.Image] | Tensor
    tokens: Tensor
    scores: Tensor | None
    candidates: list[list[Image.Image]] | Tensor


class T2IPipeline(ProgressBarConfig):
    """End-to-end text-to-image: ``T2IPipeline(model, codec)(prompts) -> T2IOutput``.

    ``model`` is a :class:`T2ITransformer`; ``codec`` a :class:`movq.Codec` (any quantizer; residual
    codecs decode their ``depth`` tokens per position) whose codebook and token grid match the
    model's config; ``tokenizer`` defaults to ``model.config.tokenizer`` (``"byte"``). Images come
    out at ``image_grid * codec.downsample_factor`` pixels. :meth:`from_pretrained` loads a
    ``movq-t2i-train`` run folder with its recorded codec.
    """

    def _warn_about_prompts(self, prompts: Sequence[str]) -> None:
        """Warn (once per pipeline and kind) about empty prompts and prompts cut to ``text_len`` tokens."""
        warned = self.__dict__.setdefault("_warned", set())
        for kind, message in text_warnings(self.tokenizer, prompts, self.model.config.text_len).items():
            if kind not in warned:
                warned.add(kind)
                warnings.warn(message, stacklevel=4)  # the caller of __call__ (under no_grad)

    def __init__(
        self, model: T2ITransformer, codec: Any, tokenizer: str | TextTokenizer | None = None
    ) -> None:
        if not isinstance(model, T2ITransformer):
            raise TypeError(f"model must be a T2ITransformer, got {type(model).__name__}")
        config = model.config
        self.model, self.codec = model, codec
        self.tokenizer = load_tokenizer(config.tokenizer if tokenizer is None else tokenizer)
        if self.tokenizer.vocab_size != config.text_vocab_size:
            raise ValueError(
                f"tokenizer {self.tokenizer.name!r} has {self.tokenizer.vocab_size} ids but the model was built for "
                f"text_vocab_size={config.text_vocab_size}"
            )
        if codec.codebook_size != config.image_vocab_size:
            raise ValueError(
                f"codec has {codec.codebook_size} codes but the model was built for image_vocab_size={config.image_vocab_size}"
            )
        h, w = config.image_grid
        self.multiscale = bool(getattr(codec, "multiscale", False))
        if self.multiscale or config.image_scales:
            scales = tuple(codec.quantize.scales) if self.multiscale else None
            if scales != tuple(config.image_scales):
                raise ValueError(
                    f"codec token maps are {'of sides ' + str(list(scales)) if scales else 'one grid'}, but the model "
                    f"expects {'the multi-scale maps ' + str(list(config.image_scales)) if config.image_scales else 'one grid'}"
                )
            self.depth_axis = False
            return
        layout = tuple(codec.quantize.indices_shape(h, w))
        self.depth_axis = len(layout) == 3
        expected = (config.image_depth, h, w) if self.depth_axis else (h, w)
        if layout != expected or (not self.depth_axis and config.image_depth != 1):
            raise ValueError(
                f"codec tokens per image are {layout} for a {h}x{w} grid, but the model expects image_depth="
                f"{config.image_depth} tokens per position"
            )

    @classmethod
    def from_pretrained(cls, directory: str | os.PathLike, *, codec: Any = None,
                        device: torch.device | str | None = None, dtype: torch.dtype | None = None,
                        check_codec: bool = True) -> T2IPipeline:
        """Load a ``movq-t2i-train`` run folder: the EMA release weights (``config.json`` +
        ``model.safetensors``) and the codec its ``codec.json`` records (``codec``: a codec, or a name /
        folder to load instead). With ``check_codec`` a codec whose weights differ from the recorded
        ones is warned about (its tokens would not mean what the model learned)."""
        info_path = require_regular_file(Path(directory) / CODEC_INFO,
                                         f"not a movq-t2i-train run folder (it writes {CODEC_INFO})")
        info = read_json_object(info_path)
        model = T2ITransformer.from_pretrained(directory, device=device, dtype=dtype)
        if codec is None and not info.get("model"):
            raise ValueError(f"{info_path} records no codec: pass codec=")
        codec, _ = recorded_codec(codec, info["model"], info.get("weights_hash"), directory, "tokens", device,
                                  check_codec)
        return cls(model, codec.eval())

    @property
    def image_size(self) -> tuple[int, int]:
        """``(height, width)`` in pixels of the generated images."""
        f = self.codec.downsample_factor
        return self.model.config.image_grid[0] * f, self.model.config.image_grid[1] * f

    def encode_prefix(self, images: ImageInput, rows: int) -> Tensor:
        """Encode ``images`` with the codec and keep the top ``rows`` grid rows: ``LongTensor [B, rows * row_len]``."""
        config = self.model.config
        if self.multiscale:
            raise ValueError(
                "prefix_rows keeps grid rows, and a multi-scale codec's tokens are maps coarse to fine: pass "
                "image_prefix (the first scales' tokens, movq.t2i.tokens_to_sequence(codec.encode(images))[:, :k])"
            )
        if isinstance(rows, bool) or not isinstance(rows, int) or not 0 <= rows <= config.image_grid[0]:
            raise ValueError(f"prefix_rows must be an integer in [0, {config.image_grid[0]}], got {rows!r}")
        tokens = self.codec.encode(images)
        sequence = tokens_to_sequence(tokens)
        if sequence.shape[1] != config.image_len:
            raise ValueError(
                f"prefix images must be {self.image_size[0]}x{self.image_size[1]} pixels (the model's grid), "
                f"got tokens of shape {tuple(tokens.shape[1:])}"
            )
        return sequence[:, : rows * config.row_len]

    def decode(self, sequences: Tensor, output_type: str = "pil") -> list[Image.Image] | Tensor:
        """Image sequences ``[B, N]`` -> ``B`` PIL images through ``codec.decode`` (``output_type="pt"``:
        the tensor ``[B, 3, H, W]`` in ``[-1, 1]``)."""
        config = self.model.config
        if self.multiscale:  # the sequence is the codec's flat tokens, coarse to fine
            return from_tensor(self.codec.decode(sequences), ImageFormat("pil", batched=True))
        tokens = sequence_to_tokens(
            sequences, config.image_grid, config.image_depth, depth_axis=self.depth_axis
        )
        return generated_output(self.codec.decode(tokens), output_type)

    @torch.no_grad()
    def __call__(
        self,
        prompts: str | Sequence[str],
        *,
        num_candidates: int = 1,
        scorer: Scorer | None = None,
        image_prefix: Tensor | None = None,
        prefix_image: ImageInput | None = None,
        prefix_rows: int | None = None,
        temperature: float = 1.0,
        top_k: int | None = None,
        top_p: float | None = None,
        guidance_scale: float = 1.0,
        generator: Generators = None,
        batch_size: int = 16,
        use_cache: bool = True,
        progress: bool | None = None,
        output_type: str = "pil",
    ) -> T2IOutput:
        """Generate ``num_candidates`` images per prompt and keep the best of each.

        - ``prompts``: a string or a list of ``P`` strings.
        - ``scorer(images, prompts) -> scores`` ranks the candidates (higher is better; e.g.
          :func:`clip_scorer`); without one the first candidate is kept.
        - Image completion: either ``image_prefix`` (image ids ``[1 or P, k]``, see
          ``T2ITransformer.generate``) or ``prefix_image`` (1 or ``P`` images the size of
          :attr:`image_size`) with ``prefix_rows`` top grid rows kept.
        - Sampling arguments as in ``T2ITransformer.generate``; ``batch_size`` samples run at once.
          ``generator``: one generator, or a list of ``P * num_candidates``, one per sample in
          generation order (prompt-major), so that a sample does not depend on its batch.
        - ``progress``: a tqdm bar over each batch's tokens (``None``: shown unless
          :meth:`set_progress_bar_config` ``(disable=True)``).
        - ``output_type="pt"``: ``images`` is a tensor ``[P, 3, H, W]`` and ``candidates``
          ``[P, C, 3, H, W]``, in ``[-1, 1]``, instead of PIL images.
        """
        prompts = check_prompts(prompts)
        check_sampling_args(temperature, top_k, top_p, guidance_scale)
        for name, value in (("num_candidates", num_candidates), ("batch_size", batch_size)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be an integer >= 1, got {value!r}")
        check_output_type(output_type)
        check_generators(generator, len(prompts) * num_candidates, self.model.device)
        if scorer is not None and not callable(scorer):
            raise TypeError(
                f"scorer must be callable as scorer(images, prompts) -> scores, got {type(scorer).__name__}"
            )
        if prefix_image is not None and image_prefix is not None:
            raise ValueError(
                "pass either image_prefix (token ids) or prefix_image with prefix_rows, not both"
            )
        if (prefix_image is None) != (prefix_rows is None):
            raise ValueError(
                "prefix_image and prefix_rows go together: the images and how many top rows to keep"
            )
        count = len(prompts)
        self._warn_about_prompts(prompts)
        text_ids = encode_prompts(self.tokenizer, prompts, self.model.config.text_len).to(self.model.device)
        if prefix_image is not None:
            image_prefix = self.encode_prefix(prefix_image, prefix_rows)
        if image_prefix is not None:
            if (
                not isinstance(image_prefix, Tensor)
                or image_prefix.ndim != 2
                or image_prefix.shape[0] not in (1, count)
            ):
                shape = (
                    tuple(image_prefix.shape)
                    if isinstance(image_prefix, Tensor)
                    else type(image_prefix).__name__
                )
                raise ValueError(
                    f"image prefix must be [1 or {count} (one per prompt), k] image ids, got {shape}"
                )
            image_prefix = image_prefix.to(self.model.device).expand(count, -1)
            image_prefix = image_prefix.repeat_interleave(num_candidates, dim=0)
        text_ids = text_ids.repeat_interleave(num_candidates, dim=0)

        sequences, images = [], []
        bar = self._progress(progress)
        for start in range(0, text_ids.shape[0], batch_size):
            chunk = slice(start, start + batch_size)
            ids = self.model.generate(
                text_ids[chunk],
                top_k=top_k,
                top_p=top_p,
                temperature=temperature,
                guidance_scale=guidance_scale,
                image_prefix=None if image_prefix is None else image_prefix[chunk],
                generator=batch_generators(generator, chunk),
                use_cache=use_cache,
                progress=bar,
            )
            sequences.append(ids)
            images.extend(self.decode(ids, output_type))
        sequences_all = torch.cat(sequences).view(count, num_candidates, -1)
        candidates = [images[i * num_candidates : (i + 1) * num_candidates] for i in range(count)]

        scores = None
        best = torch.zeros(count, dtype=torch.long)
        if scorer is not None:
            pils = images if output_type == "pil" else from_tensor(torch.stack(images), ImageFormat("pil", batched=True))
            scores = self._score(scorer, pils, [p for p in prompts for _ in range(num_candidates)])
            scores = scores.view(count, num_candidates)
            best = scores.argmax(dim=1)
        chosen = [candidates[i][int(best[i])] for i in range(count)]
        if output_type == "pt":
            chosen, candidates = torch.stack(chosen), torch.stack([torch.stack(c) for c in candidates])
        return T2IOutput(
            images=chosen,
            tokens=sequences_all[
                torch.arange(count, device=sequences_all.device), best.to(sequences_all.device)
            ],
            scores=scores,
            candidates=candidates,
        )

    generate = __call__

    @staticmethod
    def _score(scorer: Scorer, images: list[Image.Image], prompts: list[str]) -> Tensor:
        raw = scorer(images, prompts)
        scores = torch.as_tensor(
            raw.detach().cpu() if isinstance(raw, Tensor) else list(raw), dtype=torch.float64
        ).flatten()
        if scores.numel() != len(images):
            raise ValueError(
                f"scorer returned {scores.numel()} scores for {len(images)} images; expected one per image"
            )
        if not all(math.isfinite(s) for s in scores.tolist()):
            raise ValueError("scorer returned NaN or infinite scores")
        return scores


def clip_scorer(
    model_name: str = "openai/clip-vit-base-patch32", *, device: torch.device | str | None = None
) -> Scorer:
    """A reranking scorer from a Hugging Face ``transformers`` CLIP model (not a movq dependency:
    ``pip install transformers``): ``scorer(images, prompts)`` -> cosine similarity of each image
    with its prompt, ``Tensor [n]`` in ``[-1, 1]``."""
    try:
        from transformers import CLIPModel, CLIPProcessor
    except ImportError as error:
        raise ImportError(
            "clip_scorer needs the 'transformers' package (pip install transformers); "
            "or pass any callable scorer(images, prompts) -> scores"
        ) from error
    model = CLIPModel.from_pretrained(model_name).eval().to(device)
    processor = CLIPProcessor.from_pretrained(model_name)

    @torch.no_grad()
    def score(images: list[Image.Image], prompts: list[str]) -> Tensor:
        inputs = processor(text=prompts, images=images, return_tensors="pt", padding=True, truncation=True)
        inputs = {k: v.to(model.device) for k, v in inputs.items()}
        image_features = torch.nn.functional.normalize(
            model.get_image_features(pixel_values=inputs["pixel_values"]), dim=-1
        )
        text_inputs = {k: v for k, v in inputs.items() if k != "pixel_values"}
        text_features = torch.nn.functional.normalize(model.get_text_features(**text_inputs), dim=-1)
        return (image_features * text_features).sum(dim=-1).cpu()

    return score
