"""DALL·E-style text-to-image transformer over codec tokens: one decoder-only GPT on
``[BOS, text, image]`` with a KV cache for sampling.

Sequence (index ``p`` of the transformer's input; the output at ``p`` predicts the token at ``p + 1``)::

    p:      0     1 .. L              L+1 .. L+N-1
    token:  BOS   t_0 .. t_{L-1}      i_0 .. i_{N-2}        (i_{N-1} is only ever a target)

so the outputs at ``0 .. L-1`` predict the text (the text loss) and the outputs at ``L .. L+N-1``
predict ``i_0 .. i_{N-1}`` (the image loss, and the logits of ``forward``). Text and image tokens
have separate embeddings and separate output heads; text positions are learned 1D embeddings,
image positions the sum of learned row, column (and, for ``image_depth > 1``, depth) embeddings.
Blocks are pre-norm (LayerNorm -> causal ``scaled_dot_product_attention`` -> LayerNorm -> GELU
MLP), as in GPT-2 / nanoGPT.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from movq.memory_budget import check_memory_budget, check_parameters_fit
from movq.model_folder import MODEL_WEIGHTS_FILE, load_strict, read_model_folder, save_model_folder
from movq.progress import Progress, progress_bar
from movq.seeding import Generators, check_generators
from movq.t2i.config import T2IConfig
from movq.t2i.sampling import apply_guidance, check_sampling_args, sample_logits
from movq.t2i.text import drop_captions, empty_text

# ---------------------------------------------------------------------------------------------
# Image token layout


def tokens_to_sequence(tokens: Tensor | list[Tensor]) -> Tensor:
    """Codec tokens -> the transformer's image sequence.

    ``[B, h, w]`` -> ``[B, h*w]`` (raster order); ``[B, D, h, w]`` (residual / grouped codecs)
    -> ``[B, h*w*D]`` with the ``D`` tokens of one position next to each other (coarse to fine); a
    multi-scale codec's list of ``[B, s, s]`` maps -> ``[B, sum(s * s)]``, the maps coarse to fine
    (its flat ``[B, L]`` tokens pass unchanged).
    """
    if isinstance(tokens, (list, tuple)):  # a multi-scale codec's maps [B, s, s], coarse to fine (VAR's order)
        return torch.cat([t.reshape(t.shape[0], -1) for t in tokens], dim=1)
    if tokens.ndim == 2:  # already a sequence: a multi-scale codec's flat tokens [B, L]
        return tokens
    if tokens.ndim == 3:
        return tokens.reshape(tokens.shape[0], -1)
    if tokens.ndim == 4:
        return tokens.permute(0, 2, 3, 1).reshape(tokens.shape[0], -1)
    raise ValueError(f"codec tokens must be [B, h, w] or [B, depth, h, w], got shape {tuple(tokens.shape)}")


def sequence_to_tokens(
    sequence: Tensor, grid: tuple[int, int], depth: int = 1, *, depth_axis: bool | None = None
) -> Tensor:
    """Inverse of :func:`tokens_to_sequence`: ``[B, h*w*depth]`` -> ``[B, h, w]``, or
    ``[B, depth, h, w]`` when ``depth > 1`` or ``depth_axis=True`` (codecs whose token layout
    has a depth axis even at depth 1)."""
    h, w = grid
    if sequence.ndim != 2 or sequence.shape[1] != h * w * depth:
        raise ValueError(
            f"image sequence must be [B, {h * w * depth}] for grid {grid} and depth {depth}, "
            f"got shape {tuple(sequence.shape)}"
        )
    if depth_axis is None:
        depth_axis = depth > 1
    if not depth_axis:
        if depth != 1:
            raise ValueError(f"depth {depth} > 1 needs depth_axis=True")
        return sequence.reshape(-1, h, w)
    return sequence.reshape(-1, h, w, depth).permute(0, 3, 1, 2).contiguous()


# ---------------------------------------------------------------------------------------------
# Transformer parts


class KVCache:
    """Keys and values of one attention layer, preallocated ``[B, n_head, max_len, head_dim]``;
    ``length`` positions are filled. ``append(k, v)`` stores ``[B, n_head, T, head_dim]`` new
    entries and returns all filled ones."""

    def __init__(
        self, batch: int, n_head: int, max_len: int, head_dim: int, device: torch.device, dtype: torch.dtype
    ):
        self.k = torch.zeros(batch, n_head, max_len, head_dim, device=device, dtype=dtype)
        self.v = torch.zeros_like(self.k)
        self.length = 0

    def append(self, k: Tensor, v: Tensor) -> tuple[Tensor, Tensor]:
        end = self.length + k.shape[2]
        if end > self.k.shape[2]:
            raise RuntimeError(f"KV cache overflow: {end} positions, room for {self.k.shape[2]}")
        self.k[:, :, self.length : end] = k
        self.v[:, :, self.length : end] = v
        self.length = end
        return self.k[:, :, :end], self.v[:, :, :end]


class CausalSelfAttention(nn.Module):
    """Multi-head causal self-attention: ``[B, T, C]`` -> ``[B, T, C]``; with a cache, the ``T``
    new positions attend to the cached ones and to themselves causally."""

    def __init__(self, config: T2IConfig) -> None:
        super().__init__()
        self.n_head = config.n_head
        self.qkv = nn.Linear(config.n_embd, 3 * config.n_embd, bias=config.bias)
        self.proj = nn.Linear(config.n_embd, config.n_embd, bias=config.bias)
        self.dropout = config.dropout
        self.resid_dropout = nn.Dropout(config.dropout)

    def forward(self, x: Tensor, cache: KVCache | None = None) -> Tensor:
        batch, length, width = x.shape
        q, k, v = self.qkv(x).view(batch, length, 3, self.n_head, width // self.n_head).permute(2, 0, 3, 1, 4)
        start = 0
        if cache is not None:
            start = cache.length
            k, v = cache.append(k, v)
        if start == 0:  # the whole sequence so far: plain causal attention
            mask, causal = None, length > 1
        elif length == 1:  # one new token: it sees every cached position
            mask, causal = None, False
        else:  # several new tokens: all cached positions, and causally among themselves
            rows = torch.arange(start, start + length, device=x.device)[:, None]
            mask, causal = torch.arange(start + length, device=x.device)[None, :] <= rows, False
        y = F.scaled_dot_product_attention(
            q, k, v, attn_mask=mask, is_causal=causal, dropout_p=self.dropout if self.training else 0.0
        )
        return self.resid_dropout(self.proj(y.transpose(1, 2).reshape(batch, length, width)))


class MLP(nn.Module):
    """Position-wise feed-forward ``C -> mlp_ratio * C -> C`` with GELU: ``[B, T, C]`` -> ``[B, T, C]``."""

    def __init__(self, config: T2IConfig) -> None:
        super().__init__()
        hidden = round(config.mlp_ratio * config.n_embd)
        self.fc = nn.Linear(config.n_embd, hidden, bias=config.bias)
        self.proj = nn.Linear(hidden, config.n_embd, bias=config.bias)
        self.dropout = nn.Dropout(config.dropout)

    def forward(self, x: Tensor) -> Tensor:
        return self.dropout(self.proj(F.gelu(self.fc(x))))


class Block(nn.Module):
    """Pre-norm transformer block: ``x + attn(ln(x))``, then ``x + mlp(ln(x))``; ``[B, T, C]`` in and out."""

    def __init__(self, config: T2IConfig) -> None:
        super().__init__()
        self.ln_1 = nn.LayerNorm(config.n_embd, bias=config.bias)
        self.attn = CausalSelfAttention(config)
        self.ln_2 = nn.LayerNorm(config.n_embd, bias=config.bias)
        self.mlp = MLP(config)

    def forward(self, x: Tensor, cache: KVCache | None = None) -> Tensor:
        x = x + self.attn(self.ln_1(x), cache)
        return x + self.mlp(self.ln_2(x))


@dataclass
class T2ILoss:
    """Training loss terms (scalars): ``total = text_loss_weight * text + image_loss_weight * image``;
    ``text`` and ``image`` are mean cross-entropies in nats per token."""

    total: Tensor
    text: Tensor
    image: Tensor


# ---------------------------------------------------------------------------------------------
# The model


class T2ITransformer(nn.Module):
    """Text-to-image transformer over codec tokens (DALL·E, ruDALL-E, seed 004).

    Inputs: ``text_ids`` ``LongTensor [B, text_len]`` with tokenizer ids in
    ``[0, text_vocab_size)`` followed by per-position padding ids ``text_vocab_size + j`` (see
    :func:`movq.t2i.encode_prompts`); ``image_ids`` ``LongTensor [B, k]``, ``1 <= k <= N``, codec
    ids in ``[0, image_vocab_size)`` in the layout of :func:`tokens_to_sequence`
    (``N = h*w`` for plain codecs, ``h*w*depth`` for residual ones).

    - ``model(text_ids, image_ids)`` -> float logits ``[B, k, image_vocab_size]``; ``logits[:, i]``
      predicts image token ``i`` from the text and image tokens ``< i``.
    - ``model.loss(text_ids, image_ids)`` -> :class:`T2ILoss` (training; applies caption dropout).
    - ``model.generate(text_ids, ...)`` -> ``LongTensor [B, N]`` sampled image ids.
    - ``save_pretrained(dir)`` / ``T2ITransformer.from_pretrained(dir)``: ``config.json`` +
      ``model.safetensors``, strict.
    """

    def __init__(self, config: T2IConfig) -> None:
        super().__init__()
        if not isinstance(config, T2IConfig):
            raise TypeError(f"config must be a T2IConfig, got {type(config).__name__}")
        check_parameters_fit(
            lambda: T2ITransformer(config),
            f"a T2ITransformer with text_vocab_size={config.text_vocab_size}, image_vocab_size="
            f"{config.image_vocab_size}, n_embd={config.n_embd}, n_layer={config.n_layer}",
            "the config asks for far more parameters than such a model has; "
            "check text_vocab_size, image_vocab_size, n_embd and n_layer",
        )
        self.config = config
        c, (h, w), depth = config.n_embd, config.image_grid, config.image_depth
        self.bos = nn.Parameter(torch.zeros(c))
        self.text_embed = nn.Embedding(config.text_vocab_with_pads, c)
        self.text_pos = nn.Embedding(config.text_len + 1, c)
        self.image_embed = nn.Embedding(config.image_vocab_size, c)
        self.image_row = nn.Embedding(h, c)
        self.image_col = nn.Embedding(w, c)
        self.image_depth = nn.Embedding(depth, c) if depth > 1 else None
        scales = config.image_scales
        self.image_scale = nn.Embedding(len(scales), c) if scales else None
        self.drop = nn.Dropout(config.dropout)
        self.blocks = nn.ModuleList(Block(config) for _ in range(config.n_layer))
        self.ln_f = nn.LayerNorm(c, bias=config.bias)
        self.text_head = nn.Linear(c, config.text_vocab_with_pads, bias=False)
        self.image_head = nn.Linear(c, config.image_vocab_size, bias=False)
        index = torch.arange(config.image_len)
        spatial = index // depth
        self.register_buffer("_image_row_ids", spatial // w, persistent=False)
        self.register_buffer("_image_col_ids", spatial % w, persistent=False)
        self.register_buffer("_image_depth_ids", index % depth, persistent=False)
        if scales:  # map k's cell (r, c) sits under grid cell floor((r + 1/2) h / s): its centre
            rows, cols, levels = [], [], []
            for k, s in enumerate(scales):
                centre = ((torch.arange(s) * 2 + 1) * h) // (2 * s)
                rows.append(centre.repeat_interleave(s))
                cols.append(centre.repeat(s))
                levels.append(torch.full((s * s,), k))
            self._image_row_ids, self._image_col_ids = torch.cat(rows), torch.cat(cols)
            self.register_buffer("_image_scale_ids", torch.cat(levels), persistent=False)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """GPT-2 initialisation: normal(0, init_std) weights, zero biases, and residual output
        projections scaled by ``1 / sqrt(2 * n_layer)``."""
        std = self.config.init_std
        for module in self.modules():
            if isinstance(module, (nn.Linear, nn.Embedding)):
                nn.init.normal_(module.weight, 0.0, std)
                if getattr(module, "bias", None) is not None:
                    nn.init.zeros_(module.bias)
            elif isinstance(module, nn.LayerNorm):
                nn.init.ones_(module.weight)
                if module.bias is not None:
                    nn.init.zeros_(module.bias)
        nn.init.normal_(self.bos, 0.0, std)
        for block in self.blocks:
            nn.init.normal_(block.attn.proj.weight, 0.0, std / math.sqrt(2 * self.config.n_layer))
            nn.init.normal_(block.mlp.proj.weight, 0.0, std / math.sqrt(2 * self.config.n_layer))

    # ----------------------------------------------------------------------------- properties

    @property
    def device(self) -> torch.device:
        return self.bos.device

    @property
    def dtype(self) -> torch.dtype:
        return self.bos.dtype

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())

    def empty_text(self, batch: int) -> Tensor:
        """The empty caption ``[batch, text_len]`` (all padding ids) on the model's device."""
        return empty_text(batch, self.config.text_len, self.config.text_vocab_size, self.device)

    # ----------------------------------------------------------------------------- trunk

    def _embed_text(self, text_ids: Tensor) -> Tensor:
        """``[B, L]`` text ids -> ``[B, 1 + L, C]`` embeddings of BOS and the text."""
        x = torch.cat([self.bos.expand(text_ids.shape[0], 1, -1), self.text_embed(text_ids)], dim=1)
        return x + self.text_pos.weight

    def _embed_image(self, image_ids: Tensor, offset: int = 0) -> Tensor:
        """``[B, m]`` image ids at image positions ``offset .. offset + m - 1`` -> ``[B, m, C]``."""
        index = slice(offset, offset + image_ids.shape[1])
        x = (
            self.image_embed(image_ids)
            + self.image_row(self._image_row_ids[index])
            + self.image_col(self._image_col_ids[index])
        )
        if self.image_depth is not None:
            x = x + self.image_depth(self._image_depth_ids[index])
        if self.image_scale is not None:
            x = x + self.image_scale(self._image_scale_ids[index])
        return x

    def _trunk(self, x: Tensor, caches: list[KVCache] | None = None) -> Tensor:
        x = self.drop(x)
        for i, block in enumerate(self.blocks):
            x = block(x, None if caches is None else caches[i])
        return self.ln_f(x)

    def _hidden(self, text_ids: Tensor, image_in: Tensor, caches: list[KVCache] | None = None) -> Tensor:
        """Hidden states ``[B, 1 + L + m, C]`` of ``[BOS, text, image_in]`` (``image_in`` ``[B, m]``)."""
        x = self._embed_text(text_ids)
        if image_in.shape[1]:
            x = torch.cat([x, self._embed_image(image_in)], dim=1)
        return self._trunk(x, caches)

    # ----------------------------------------------------------------------------- training

    def forward(self, text_ids: Tensor, image_ids: Tensor) -> Tensor:
        """``[B, text_len]`` text and ``[B, k]`` image ids -> image logits ``[B, k, image_vocab_size]``."""
        text_ids = self._check_text(text_ids)
        image_ids = self._check_image(image_ids, "image_ids", text_ids.shape[0], min_len=1)
        hidden = self._hidden(text_ids, image_ids[:, :-1])
        return self.image_head(hidden[:, self.config.text_len :])

    def loss(
        self,
        text_ids: Tensor,
        image_ids: Tensor,
        *,
        caption_dropout: float | None = None,
        generator: torch.Generator | None = None,
    ) -> T2ILoss:
        """Training loss on full samples: ``text_ids`` ``[B, text_len]``, ``image_ids`` ``[B, N]``.

        Captions are first replaced by the empty caption with probability ``caption_dropout``
        (default: ``config.caption_dropout`` in training mode, 0 in eval mode). The text term is
        the cross-entropy of every text position (padding included, as in DALL·E), the image term
        that of every image token; ``total`` weights them by ``config.text_loss_weight`` and
        ``config.image_loss_weight``.
        """
        text_ids = self._check_text(text_ids)
        image_ids = self._check_image(
            image_ids, "image_ids", text_ids.shape[0], min_len=self.config.image_len
        )
        if caption_dropout is None:
            caption_dropout = self.config.caption_dropout if self.training else 0.0
        text_ids = drop_captions(text_ids, caption_dropout, self.config.text_vocab_size, generator=generator)
        hidden = self._hidden(text_ids, image_ids[:, :-1])
        length = self.config.text_len
        text_logits = self.text_head(hidden[:, :length]).float()
        image_logits = self.image_head(hidden[:, length:]).float()
        text_loss = F.cross_entropy(text_logits.flatten(0, 1), text_ids.flatten())
        image_loss = F.cross_entropy(image_logits.flatten(0, 1), image_ids.flatten())
        total = self.config.text_loss_weight * text_loss + self.config.image_loss_weight * image_loss
        return T2ILoss(total=total, text=text_loss, image=image_loss)

    # ----------------------------------------------------------------------------- sampling

    def new_caches(self, batch: int) -> list[KVCache]:
        """Empty KV caches (one per layer) with room for a whole sequence of ``batch`` samples."""
        head_dim = self.config.n_embd // self.config.n_head
        return [
            KVCache(batch, self.config.n_head, self.config.block_size, head_dim, self.device, self.dtype)
            for _ in self.blocks
        ]

    @torch.no_grad()
    def generate(
        self,
        text_ids: Tensor,
        *,
        top_k: int | None = None,
        top_p: float | None = None,
        temperature: float = 1.0,
        guidance_scale: float = 1.0,
        image_prefix: Tensor | None = None,
        generator: Generators = None,
        use_cache: bool = True,
        progress: Progress = False,
    ) -> Tensor:
        """Sample image ids autoregressively: ``text_ids`` ``[B, text_len]`` -> ``LongTensor [B, N]``.

        - ``temperature`` (0 = greedy), ``top_k`` (seed 004: 200), ``top_p``: see
          :mod:`movq.t2i.sampling`; ``generator`` makes the draws reproducible: one generator, or a list
          of ``B``, one per row (row ``i``'s draws then depend on ``generator[i]`` alone, :mod:`movq.seeding`).
        - ``guidance_scale``: classifier-free guidance against the empty caption; ``1.0`` runs no
          unconditional branch at all (exactly unguided sampling).
        - ``image_prefix``: ``LongTensor [B, k]``, ``0 <= k <= N``, image ids kept as the first
          ``k`` tokens (DALL·E's image completion: ``k = rows * config.row_len`` keeps the top
          ``rows`` rows; any ``k`` is accepted and continues mid-row).
        - ``use_cache=False`` recomputes the whole sequence for every token (slow; for checks and
          speed comparisons). Results agree with the cached path up to float rounding.
        - ``progress``: a tqdm bar over the generated tokens (``True`` or a dict of tqdm keywords).

        Runs in eval mode (dropout off) and restores the previous mode.
        """
        check_sampling_args(temperature, top_k, top_p, guidance_scale)
        text_ids = self._check_text(text_ids)
        batch, total = text_ids.shape[0], self.config.image_len
        if image_prefix is None:
            image_prefix = torch.zeros(batch, 0, dtype=torch.long, device=self.device)
        image_prefix = self._check_image(image_prefix, "image_prefix", batch, min_len=0)
        check_generators(generator, batch, self.device)
        self._check_sample_memory(batch * (2 if guidance_scale != 1.0 else 1), use_cache)
        out = torch.empty(batch, total, dtype=torch.long, device=self.device)
        start = image_prefix.shape[1]
        out[:, :start] = image_prefix
        if start == total:
            return out
        guided = guidance_scale != 1.0
        if guided:
            text_ids = torch.cat([text_ids, self.empty_text(batch)])

        def doubled(ids: Tensor) -> Tensor:
            return torch.cat([ids, ids]) if guided else ids

        was_training = self.training
        self.eval()
        try:
            caches = self.new_caches(text_ids.shape[0]) if use_cache else None
            hidden = self._hidden(text_ids, doubled(image_prefix), caches)[:, -1]
            for j in progress_bar(range(start, total), progress, desc="tokens", unit="tok"):
                logits = self.image_head(hidden).float()
                if guided:
                    logits = apply_guidance(logits[:batch], logits[batch:], guidance_scale)
                out[:, j] = sample_logits(
                    logits, temperature=temperature, top_k=top_k, top_p=top_p, generator=generator
                )
                if j + 1 == total:
                    continue  # the last token: nothing left to predict (continue, so the bar counts it)
                if caches is not None:
                    new_token = self._embed_image(doubled(out[:, j : j + 1]), offset=j)
                    hidden = self._trunk(new_token, caches)[:, -1]
                else:
                    hidden = self._hidden(text_ids, doubled(out[:, : j + 1]))[:, -1]
        finally:
            self.train(was_training)
        return out

    # ----------------------------------------------------------------------------- input checks

    def _check_sample_memory(self, rows: int, use_cache: bool) -> None:
        """Refuse (:class:`~movq.memory_budget.MemoryBudgetError`) a sampling batch of ``rows`` sequences
        (twice the prompts with guidance) whose KV caches and logits cannot fit on the model's device,
        before anything is allocated."""
        c = self.config
        item = torch.empty(0, dtype=self.dtype).element_size()
        caches = 2 * len(self.blocks) * c.block_size * c.n_embd * item if use_cache else 0
        activations = c.block_size * c.n_embd * item + c.image_vocab_size * 4
        check_memory_budget(rows * (caches + activations), self.device, f"sampling {rows} sequences at once",
                            "sample fewer prompts at once (T2IPipeline batch_size)")

    def _check_ids(self, ids: object, name: str, batch: int | None) -> Tensor:
        if not isinstance(ids, Tensor):
            raise TypeError(f"{name} must be a torch.LongTensor, got {type(ids).__name__}")
        if ids.is_floating_point() or ids.is_complex() or ids.dtype == torch.bool:
            raise TypeError(f"{name} must be an integer tensor (torch.long), got dtype {ids.dtype}")
        if ids.ndim != 2:
            raise ValueError(f"{name} must be 2-D [B, length], got shape {tuple(ids.shape)}")
        if ids.shape[0] == 0:
            raise ValueError(f"{name} is an empty batch (shape {tuple(ids.shape)})")
        if batch is not None and ids.shape[0] != batch:
            raise ValueError(f"{name} has batch size {ids.shape[0]} but text_ids has {batch}")
        return ids.to(self.device, torch.long)

    def _check_text(self, text_ids: object) -> Tensor:
        config = self.config
        text_ids = self._check_ids(text_ids, "text_ids", None)
        if text_ids.shape[1] != config.text_len:
            raise ValueError(
                f"text_ids must have text_len={config.text_len} positions, got {text_ids.shape[1]} "
                "(pad or cut captions with movq.t2i.encode_prompts / pad_text)"
            )
        low, high = text_ids.min().item(), text_ids.max().item()
        if low < 0 or high >= config.text_vocab_with_pads:
            raise ValueError(
                f"text ids must be in [0, {config.text_vocab_with_pads}) (tokenizer ids < {config.text_vocab_size}, "
                f"then one padding id per position), got values in [{low}, {high}]"
            )
        pads = text_ids >= config.text_vocab_size
        expected = config.text_vocab_size + torch.arange(config.text_len, device=text_ids.device)
        wrong = pads & (text_ids != expected)
        if wrong.any():
            row, pos = (int(v) for v in wrong.nonzero()[0])
            raise ValueError(
                f"text_ids[{row}, {pos}] = {int(text_ids[row, pos])} is a padding id, but position {pos} pads with "
                f"{config.text_vocab_size + pos} (text_vocab_size + position); build text ids with movq.t2i.pad_text"
            )
        return text_ids

    def _check_image(self, image_ids: object, name: str, batch: int, min_len: int) -> Tensor:
        config = self.config
        image_ids = self._check_ids(image_ids, name, batch)
        length, total = image_ids.shape[1], config.image_len
        if not min_len <= length <= total:
            grid = f"{config.image_grid[0]}x{config.image_grid[1]}" + (
                f"x{config.image_depth}" if config.image_depth > 1 else ""
            ) + (f" multi-scale ({list(config.image_scales)})" if config.image_scales else "")
            accepted = f"exactly {total}" if min_len == total else f"{min_len} to {total}"
            raise ValueError(f"{name} has {length} tokens; the {grid} image grid accepts {accepted}")
        if image_ids.numel():
            low, high = image_ids.min().item(), image_ids.max().item()
            if low < 0 or high >= config.image_vocab_size:
                raise ValueError(
                    f"{name} must hold image ids in [0, {config.image_vocab_size}), got values in [{low}, {high}]"
                )
        return image_ids

    # ----------------------------------------------------------------------------- persistence

    def save_pretrained(self, save_directory: str | os.PathLike) -> Path:
        """Write ``config.json`` and ``model.safetensors`` (fp as stored) into ``save_directory``, atomically."""
        return save_model_folder(save_directory, self, self.config)

    @classmethod
    def from_pretrained(
        cls,
        directory: str | os.PathLike,
        *,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> T2ITransformer:
        """Load a folder written by :meth:`save_pretrained`; every key and shape must match. Eval mode."""
        config, state = read_model_folder(directory, T2IConfig, "a movq.t2i model folder")
        model = cls(config)
        load_strict(model, state, f"{Path(directory) / MODEL_WEIGHTS_FILE} does not match its config.json")
        return model.to(device=device, dtype=dtype).eval()
