"""movq.t2i text side: byte tokenizer, per-position padding, Hugging Face tokenizers wrapper."""

from __future__ import annotations

import pytest
import torch

from movq.t2i import (
    ByteTokenizer,
    HFTokenizer,
    TextTokenizer,
    decode_text,
    empty_text,
    encode_prompts,
    load_tokenizer,
    pad_text,
)


def test_byte_tokenizer_round_trip():
    tok = ByteTokenizer()
    assert tok.vocab_size == 256 and tok.name == "byte" and isinstance(tok, TextTokenizer)
    assert tok.encode("hé") == [104, 195, 169]
    assert tok.decode(tok.encode("привет, мир")) == "привет, мир"
    assert ByteTokenizer(lowercase=True).encode("AbC") == tok.encode("abc")
    with pytest.raises(TypeError, match="text must be a str"):
        tok.encode(b"bytes")


def test_per_position_padding():
    ids = encode_prompts(ByteTokenizer(), ["ab", ""], text_len=5)
    assert ids.dtype == torch.long
    assert ids.tolist() == [[97, 98, 258, 259, 260], [256, 257, 258, 259, 260]]
    assert torch.equal(ids[1:], empty_text(1, 5, 256))
    assert decode_text(ByteTokenizer(), ids) == ["ab", ""]
    # too long: cut to text_len by default, an error on request
    assert encode_prompts(ByteTokenizer(), "abcdefg", text_len=3).tolist() == [[97, 98, 99]]
    with pytest.raises(ValueError, match="caption 0 has 7 tokens, more than text_len=3"):
        encode_prompts(ByteTokenizer(), "abcdefg", text_len=3, truncate=False)
    with pytest.raises(ValueError, match=r"outside the tokenizer's \[0, 10\)"):
        pad_text([[1, 12]], 4, 10)


def test_prompts_are_checked():
    with pytest.raises(ValueError, match="prompts is empty"):
        encode_prompts(ByteTokenizer(), [], 4)
    with pytest.raises(TypeError, match="prompts must be a string or a list of strings"):
        encode_prompts(ByteTokenizer(), ["a", 3], 4)
    with pytest.raises(TypeError, match="prompts must be a string or a list of strings"):
        encode_prompts(ByteTokenizer(), 3, 4)


def test_load_tokenizer():
    assert isinstance(load_tokenizer("byte"), ByteTokenizer)
    assert load_tokenizer("byte-lower").lowercase
    tok = ByteTokenizer()
    assert load_tokenizer(tok) is tok
    with pytest.raises(TypeError, match="tokenizer must be"):
        load_tokenizer(42)


def test_hugging_face_tokenizer_from_file(tmp_path):
    tokenizers = pytest.importorskip("tokenizers")
    from tokenizers import models, pre_tokenizers, trainers

    tok = tokenizers.Tokenizer(models.WordLevel(unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.train_from_iterator(
        ["a red cat", "a blue dog on a red mat"], trainers.WordLevelTrainer(special_tokens=["[UNK]"])
    )
    path = tmp_path / "tokenizer.json"
    tok.save(str(path))

    wrapped = load_tokenizer(str(path))
    assert isinstance(wrapped, HFTokenizer) and wrapped.name == str(path)
    assert wrapped.vocab_size == tok.get_vocab_size()
    ids = encode_prompts(wrapped, ["a red cat", "purple"], text_len=4)
    vocab = wrapped.vocab_size
    assert ids[0, :3].tolist() == tok.encode("a red cat").ids and ids[0, 3] == vocab + 3
    assert ids[1].tolist() == [tok.token_to_id("[UNK]"), vocab + 1, vocab + 2, vocab + 3]
    assert decode_text(wrapped, ids)[0] == "a red cat"


def test_hugging_face_tokenizer_missing_package(monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "tokenizers", None)
    with pytest.raises(ImportError, match="pip install tokenizers"):
        HFTokenizer("gpt2")
