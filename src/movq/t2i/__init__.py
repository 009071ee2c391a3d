"""movq.t2i: a DALL·E-style text-to-image transformer over movq codec tokens (optional submodule;
``import movq`` does not load it).

>>> from movq.t2i import T2IConfig, T2ITransformer, ByteTokenizer, encode_prompts
>>> model = T2ITransformer(T2IConfig(text_len=64, image_vocab_size=1024, image_grid=(16, 16)))
>>> text_ids = encode_prompts(ByteTokenizer(), ["a red square"], text_len=64)   # [1, 64]
>>> ids = model.generate(text_ids, top_k=200, guidance_scale=3.0)               # [1, 256]

With a codec: ``T2IPipeline(model, codec)(prompts)`` goes from prompts to PIL images.
"""

from movq.t2i.config import T2I_PRESETS, T2IConfig, get_t2i_preset
from movq.t2i.model import KVCache, T2ILoss, T2ITransformer, sequence_to_tokens, tokens_to_sequence
from movq.t2i.pipeline import Scorer, T2IOutput, T2IPipeline, clip_scorer
from movq.t2i.sampling import apply_guidance, filter_logits, sample_logits
from movq.t2i.text import (
    ByteTokenizer,
    HFTokenizer,
    TextTokenizer,
    decode_text,
    drop_captions,
    empty_text,
    encode_prompts,
    load_tokenizer,
    pad_text,
)

__all__ = [
    "T2I_PRESETS",
    "ByteTokenizer",
    "HFTokenizer",
    "KVCache",
    "Scorer",
    "T2IConfig",
    "T2ILoss",
    "T2IOutput",
    "T2IPipeline",
    "T2ITransformer",
    "TextTokenizer",
    "apply_guidance",
    "clip_scorer",
    "decode_text",
    "drop_captions",
    "empty_text",
    "encode_prompts",
    "filter_logits",
    "get_t2i_preset",
    "load_tokenizer",
    "pad_text",
    "sample_logits",
    "sequence_to_tokens",
    "tokens_to_sequence",
]
