"""Text the t2i model would change silently is warned about once: prompts / captions longer than
``text_len`` tokens (cut) and empty or missing ones (read as the unconditional caption)."""

from __future__ import annotations

import warnings

import pytest
import torch

from helpers import SMALL_2X, TokenList, t2i_train_config, tiny_codec
from movq.t2i import T2IConfig, T2IPipeline, T2ITransformer
from movq.t2i.text import ByteTokenizer, text_warnings
from movq.t2i.train import T2ITrainer

pytestmark = pytest.mark.usefixtures("one_thread")


def test_text_warnings_count_cut_and_empty_texts():
    long = "größer als acht"  # UTF-8: 17 bytes for the byte tokenizer
    assert len(long.encode("utf-8")) == 17
    messages = text_warnings(ByteTokenizer(), ["short", long, "", "  ", None], 8, "captions")
    assert messages["empty"].startswith("3 of 5 captions are empty, blank or missing: ")
    assert messages["cut"] == ("1 of 5 captions are longer than the model's text_len=8 tokens (up to 17): "
                               "they are cut to their first 8 tokens")
    assert text_warnings(ByteTokenizer(), ["12345678"], 8) == {}  # exactly text_len: nothing is cut


def record(call) -> list[str]:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        call()
    return [str(w.message) for w in caught if issubclass(w.category, UserWarning)]


def test_pipeline_warns_once_per_kind():
    codec = tiny_codec(config=SMALL_2X)
    torch.manual_seed(0)
    pipe = T2IPipeline(T2ITransformer(T2IConfig.for_codec(codec, 8, preset="t2i-tiny")).eval(), codec)
    assert pipe.model.config.text_len == 16
    with pytest.warns(UserWarning, match=r"1 of 2 prompts are longer than the model's text_len=16 tokens \(up to 20\)") as info:
        pipe(["a" * 20, "red"], generator=torch.Generator().manual_seed(0))
    assert info[0].filename == __file__  # points at the caller
    assert record(lambda: pipe(["b" * 30], generator=torch.Generator().manual_seed(0))) == []  # once per pipeline
    with pytest.warns(UserWarning, match="1 of 1 prompts are empty, blank or missing"):
        pipe("", generator=torch.Generator().manual_seed(0))
    assert record(lambda: pipe(["red", ""], generator=torch.Generator().manual_seed(0))) == []


class CaptionedTokens(TokenList):
    """A TokenList that lists its captions up front, as TokenDataset does."""

    def __init__(self) -> None:
        super().__init__(16)
        self.items[3]["caption"] = "a caption far longer than twelve bytes"
        self.captions = [it["caption"] for it in self.items]


def test_training_warns_once_per_run_about_its_captions(tmp_path):
    data = CaptionedTokens()  # captions 7 and 15 are missing (None), the longest is 38 bytes
    messages = record(lambda: T2ITrainer(t2i_train_config(tmp_path / "out", max_steps=1), data).run())
    long = sum(len(c.encode("utf-8")) > 12 for c in data.captions if c)  # UTF-8 bytes = byte-tokenizer ids
    assert long >= 2
    assert [m for m in messages if "captions" in m] == [
        "2 of 16 captions are empty, blank or missing: the model reads them as the empty caption (unconditional)",
        f"{long} of 16 captions are longer than the model's text_len=12 tokens (up to 38): they are cut to their "
        "first 12 tokens",
    ]
