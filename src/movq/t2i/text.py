"""Text side of the text-to-image transformer: tokenizers, fixed-length padding, caption dropout.

A caption becomes exactly ``text_len`` ids. Tokenizer ids fill the first positions; every
remaining position ``j`` gets its own padding id ``vocab_size + j``, as in DALL·E ("a special
padding token for each of the 256 text positions") and ruDALL-E (pads become
``vocab_size - text_len + j``; here they sit after the tokenizer's ids instead). The first pad
therefore also marks the end of the text, and the empty caption (all pads) is the unconditional
input of classifier-free guidance.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import torch
from torch import Tensor

from movq.atomic import check_regular_file


@runtime_checkable
class TextTokenizer(Protocol):
    """What :func:`encode_prompts` needs: ``vocab_size`` ids, ``encode(str) -> list[int]`` with ids in
    ``[0, vocab_size)``, ``decode(list[int]) -> str``, and ``name``, the string that
    :func:`load_tokenizer` (and ``T2IConfig.tokenizer``) turns back into this tokenizer."""

    name: str

    @property
    def vocab_size(self) -> int: ...

    def encode(self, text: str) -> list[int]: ...

    def decode(self, ids: Sequence[int]) -> str: ...


class ByteTokenizer:
    """Tokenizer-free text: a string in, its UTF-8 bytes out (ids ``0..255``); no download.

    ``lowercase=True`` folds case first (seed 004's char-level toy lower-cases captions).
    ``decode`` ignores ids outside ``0..255`` (padding) and replaces invalid UTF-8.
    """

    def __init__(self, lowercase: bool = False) -> None:
        self.lowercase = lowercase
        self.name = "byte-lower" if lowercase else "byte"

    @property
    def vocab_size(self) -> int:
        return 256

    def encode(self, text: str) -> list[int]:
        _check_str(text)
        return list((text.lower() if self.lowercase else text).encode("utf-8"))

    def decode(self, ids: Sequence[int]) -> str:
        return bytes(int(i) for i in ids if 0 <= int(i) < 256).decode("utf-8", errors="replace")

    def __repr__(self) -> str:
        return f"ByteTokenizer(lowercase={self.lowercase})"


class HFTokenizer:
    """Any Hugging Face ``tokenizers`` tokenizer: a Hub name (e.g. ``"gpt2"``) or a local
    ``tokenizer.json`` file. Needs ``pip install tokenizers``.

    Text in, ids in ``[0, vocab_size)`` out (added tokens included in ``vocab_size``); special
    tokens (BOS / EOS / CLS ...) are not added by default, since the model has its own start and
    per-position padding tokens. ``tokenizer=`` wraps an already built ``tokenizers.Tokenizer``.
    """

    def __init__(
        self, name_or_path: str | os.PathLike, *, tokenizer: Any = None, add_special_tokens: bool = False
    ) -> None:
        self.name = str(name_or_path)
        self.add_special_tokens = add_special_tokens
        if tokenizer is None:
            try:
                from tokenizers import Tokenizer
            except ImportError as error:
                raise ImportError(
                    f"tokenizer {self.name!r} needs the Hugging Face 'tokenizers' package "
                    "(pip install tokenizers); or use the built-in 'byte' tokenizer"
                ) from error
            path = Path(name_or_path)
            check_regular_file(path, "expected a tokenizer.json file or a Hub tokenizer name")
            tokenizer = (
                Tokenizer.from_file(str(path)) if path.is_file() else Tokenizer.from_pretrained(self.name)
            )
        self.tokenizer = tokenizer

    @property
    def vocab_size(self) -> int:
        return int(self.tokenizer.get_vocab_size(with_added_tokens=True))

    def encode(self, text: str) -> list[int]:
        _check_str(text)
        return list(self.tokenizer.encode(text, add_special_tokens=self.add_special_tokens).ids)

    def decode(self, ids: Sequence[int]) -> str:
        return self.tokenizer.decode([int(i) for i in ids if 0 <= int(i) < self.vocab_size])

    def __repr__(self) -> str:
        return f"HFTokenizer({self.name!r}, vocab_size={self.vocab_size})"


def load_tokenizer(spec: str | os.PathLike | TextTokenizer = "byte") -> TextTokenizer:
    """``"byte"`` / ``"byte-lower"`` -> :class:`ByteTokenizer`; a tokenizer object -> itself;
    any other string -> :class:`HFTokenizer` (a ``tokenizer.json`` path or a Hub name)."""
    if isinstance(spec, (str, os.PathLike)):
        if str(spec) in ("byte", "byte-lower"):
            return ByteTokenizer(lowercase=str(spec) == "byte-lower")
        return HFTokenizer(spec)
    if isinstance(spec, TextTokenizer):
        return spec
    raise TypeError(
        f"tokenizer must be 'byte', a tokenizer.json path, a Hugging Face tokenizer name or an object with "
        f"name, vocab_size, encode and decode; got {type(spec).__name__}"
    )


def pad_text(
    token_lists: Sequence[Sequence[int]], text_len: int, vocab_size: int, *, truncate: bool = True
) -> Tensor:
    """Token id lists -> ``LongTensor [B, text_len]``: ids first, then ``vocab_size + j`` at every free
    position ``j``. Longer lists are cut to ``text_len`` (``truncate=False``: an error instead)."""
    if text_len < 1 or vocab_size < 1:
        raise ValueError(f"text_len and vocab_size must be positive, got {text_len} and {vocab_size}")
    out = vocab_size + torch.arange(text_len).repeat(len(token_lists), 1)
    for row, ids in enumerate(token_lists):
        ids = [int(i) for i in ids]
        if len(ids) > text_len and not truncate:
            raise ValueError(f"caption {row} has {len(ids)} tokens, more than text_len={text_len}")
        bad = [i for i in ids if not 0 <= i < vocab_size]
        if bad:
            raise ValueError(
                f"caption {row} has token ids {bad[:5]} outside the tokenizer's [0, {vocab_size})"
            )
        ids = ids[:text_len]
        out[row, : len(ids)] = torch.tensor(ids, dtype=torch.long)
    return out


def encode_prompts(
    tokenizer: TextTokenizer, prompts: str | Sequence[str], text_len: int, *, truncate: bool = True
) -> Tensor:
    """Prompts (a string or a list of strings) -> ``LongTensor [B, text_len]`` model text ids."""
    prompts = check_prompts(prompts)
    return pad_text([tokenizer.encode(p) for p in prompts], text_len, tokenizer.vocab_size, truncate=truncate)


CAPTION_CHECK_ITEMS = 65536
"""At most this many captions (evenly spaced) of a training set are checked by :func:`text_warnings`."""


def text_warnings(tokenizer: TextTokenizer, texts: Sequence[str | None], text_len: int,
                  what: str = "prompts") -> dict[str, str]:
    """What the model would do silently to ``texts`` (prompts or captions; ``None``: no caption), as
    one message per kind that occurs: ``"empty"`` (empty, blank or missing texts are read as the empty
    caption, i.e. unconditionally) and ``"cut"`` (texts of more than ``text_len`` tokens lose the
    rest). ``what`` names the texts in the messages. At most :data:`CAPTION_CHECK_ITEMS` evenly spaced
    texts are tokenized (the messages say so when fewer than all were)."""
    texts = list(texts)
    total = len(texts)
    if total > CAPTION_CHECK_ITEMS:
        texts = [texts[round(i * (total - 1) / (CAPTION_CHECK_ITEMS - 1))] for i in range(CAPTION_CHECK_ITEMS)]
    checked = "" if len(texts) == total else f" (in {len(texts)} evenly spaced of {total})"
    messages = {}
    empty = sum(1 for t in texts if t is None or not t.strip())
    if empty:
        messages["empty"] = (f"{empty} of {len(texts)} {what} are empty, blank or missing{checked}: the model reads them "
                             "as the empty caption (unconditional)")
    lengths = [n for t in texts if t and (n := len(tokenizer.encode(t))) > text_len]
    if lengths:
        messages["cut"] = (f"{len(lengths)} of {len(texts)} {what} are longer than the model's text_len={text_len} "
                           f"tokens (up to {max(lengths)}){checked}: they are cut to their first {text_len} tokens")
    return messages


def decode_text(tokenizer: TextTokenizer, text_ids: Tensor) -> list[str]:
    """Model text ids ``[B, text_len]`` -> strings (padding ids dropped)."""
    return [tokenizer.decode([i for i in row if i < tokenizer.vocab_size]) for row in text_ids.tolist()]


def empty_text(
    batch: int, text_len: int, vocab_size: int, device: torch.device | str | None = None
) -> Tensor:
    """The empty caption, ``[batch, text_len]`` of padding ids ``vocab_size + j``: the unconditional
    input of classifier-free guidance and the caption that caption dropout substitutes."""
    return (vocab_size + torch.arange(text_len, device=device)).repeat(batch, 1)


def drop_captions(
    text_ids: Tensor, prob: float, vocab_size: int, *, generator: torch.Generator | None = None
) -> Tensor:
    """Caption dropout for training: each row of ``text_ids`` ``[B, text_len]`` is replaced by the
    empty caption with probability ``prob`` (a new tensor; the input is not changed)."""
    if not 0.0 <= prob <= 1.0:
        raise ValueError(f"caption dropout probability must be in [0, 1], got {prob}")
    if prob == 0.0:
        return text_ids
    batch, text_len = text_ids.shape
    device = text_ids.device if generator is None else generator.device
    drop = torch.rand(batch, generator=generator, device=device).to(text_ids.device) < prob
    return torch.where(drop[:, None], empty_text(batch, text_len, vocab_size, text_ids.device), text_ids)


def check_prompts(prompts: str | Sequence[str]) -> list[str]:
    """A string or a non-empty list of strings -> a list of strings; anything else is a TypeError."""
    if isinstance(prompts, str):
        return [prompts]
    if isinstance(prompts, Sequence) and len(prompts) > 0 and all(isinstance(p, str) for p in prompts):
        return list(prompts)
    if isinstance(prompts, Sequence) and len(prompts) == 0:
        raise ValueError("prompts is empty; pass a string or a non-empty list of strings")
    raise TypeError(f"prompts must be a string or a list of strings, got {type(prompts).__name__}")


def _check_str(text: Any) -> None:
    if not isinstance(text, str):
        raise TypeError(f"text must be a str, got {type(text).__name__}")
