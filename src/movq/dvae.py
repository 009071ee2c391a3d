"""OpenAI DALL·E's discrete VAE (dVAE): f=8, 8192 codes, logit-Laplace decoder.

The architecture follows the published ``dall_e`` package: an encoder of 4 groups of 2
bottleneck residual blocks (``n_hid`` 256, widths 1/2/4/8 x ``n_hid``, max-pool between groups)
ending in 8192 logits per position, and a decoder from a one-hot map (1x1 conv to ``n_init`` 128,
4 groups of residual blocks with nearest x2 upsampling) to 6 channels, of which the first 3 are
logit-Laplace means: ``pixels = unmap(sigmoid(mu))``. Residual branches are scaled by
``1 / n_layers**2`` (``n_layers = group_count * n_blk_per_group``). Parameter names (``blocks.
group_1.block_1.res_path.conv_1.w``) match the published pickles, so their state loads directly.

The dVAE is a checkpoint family like any other: :class:`DVAEConfig` builds its encoder, decoder and
one-hot quantizer (no 1x1 convolutions around the quantizer), and :class:`movq.codec.Codec`
assembles them, so it has the whole codec API (``encode`` / ``decode`` / ``reconstruct`` /
latents, tiling, input validation). The logit-Laplace pixel map lives in the encoder (``[-1, 1]``
-> ``[eps, 1 - eps]``) and the decoder (``sigmoid`` and unmap back to ``[-1, 1]``).
"""

from __future__ import annotations

import json
from collections import OrderedDict
from dataclasses import asdict, dataclass
from typing import Annotated, Any, Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from movq.codec import Codec
from movq.quantizers.base import Quantizer, QuantizerOutput
from movq.quantizers.codes import code_statistics
from movq.strict import (
    MAX_BLOCKS,
    MAX_LEVELS,
    PositiveFloat,
    PositiveInt,
    Range,
    StrictConfig,
    dataclass_from_dict,
)

LOGIT_LAPLACE_EPS = 0.1


@dataclass
class DVAEConfig(StrictConfig):
    """Architecture of a DALL·E dVAE; defaults are the published model."""

    name: str = "dalle-dvae"
    architecture: Literal["dalle-dvae"] = "dalle-dvae"
    group_count: Annotated[int, Range(1, MAX_LEVELS)] = 4
    n_hid: Annotated[int, Range(min=4)] = 256
    n_blk_per_group: Annotated[int, Range(1, MAX_BLOCKS)] = 2
    n_init: PositiveInt = 128
    in_channels: PositiveInt = 3
    vocab_size: PositiveInt = 8192
    scaling_factor: PositiveFloat = 1.0

    @property
    def downsample_factor(self) -> int:
        return 2 ** (self.group_count - 1)

    @property
    def embed_dim(self) -> int:
        """Channels of the decoder's input: the one-hot (or relaxed) code map."""
        return self.vocab_size

    @property
    def codebook_size(self) -> int:
        return self.vocab_size

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> DVAEConfig:
        return dataclass_from_dict(cls, data)

    # --------------------------------------------------------------- the network (``Codec`` assembles it)

    def build_encoder(self) -> DVAEEncoder:
        return DVAEEncoder(self)

    def build_quant_conv(self) -> nn.Module:
        return nn.Identity()  # the encoder's logits are the quantizer's input

    def build_quantizer(self) -> OneHotQuantizer:
        return OneHotQuantizer(self.vocab_size)

    def build_post_quant_conv(self) -> nn.Module:
        return nn.Identity()  # the one-hot map is the decoder's input

    def build_decoder(self) -> DVAEDecoder:
        return DVAEDecoder(self)

    @property
    def activation_channels(self) -> int:
        """Channels of the widest full-resolution feature map (sizes the activation-memory estimate)."""
        return self.n_hid

    def describe(self) -> str:
        """The fields that set the size of the network (for error messages)."""
        return (
            f"the dVAE config {self.name!r} (n_hid={self.n_hid}, vocab_size={self.vocab_size}, "
            f"group_count={self.group_count})"
        )


class _Conv(nn.Module):
    """Same-padded convolution with parameters named ``w`` / ``b`` (the published names)."""

    def __init__(self, n_in: int, n_out: int, kw: int) -> None:
        super().__init__()
        self.w = nn.Parameter(torch.empty(n_out, n_in, kw, kw).normal_(std=(n_in * kw**2) ** -0.5))
        self.b = nn.Parameter(torch.zeros(n_out))
        self.padding = (kw - 1) // 2

    def forward(self, x: Tensor) -> Tensor:
        return F.conv2d(x, self.w, self.b, padding=self.padding)


class _Block(nn.Module):
    """``id_path(x) + post_gain * res_path(x)``; the bottleneck is ``n_out // 4`` wide.

    Encoder blocks use kernels (3, 3, 3, 1), decoder blocks (1, 3, 3, 3).
    """

    def __init__(self, n_in: int, n_out: int, n_layers: int, kernels: tuple[int, int, int, int]) -> None:
        super().__init__()
        hid = n_out // 4
        self.post_gain = 1.0 / n_layers**2
        self.id_path = _Conv(n_in, n_out, 1) if n_in != n_out else nn.Identity()
        widths = (n_in, hid, hid, hid, n_out)
        layers: OrderedDict[str, nn.Module] = OrderedDict()
        for i, kw in enumerate(kernels):
            layers[f"relu_{i + 1}"] = nn.ReLU()
            layers[f"conv_{i + 1}"] = _Conv(widths[i], widths[i + 1], kw)
        self.res_path = nn.Sequential(layers)

    def forward(self, x: Tensor) -> Tensor:
        return self.id_path(x) + self.post_gain * self.res_path(x)


def _group(blocks: list[nn.Module], resample: tuple[str, nn.Module] | None) -> nn.Sequential:
    items: OrderedDict[str, nn.Module] = OrderedDict((f"block_{i + 1}", b) for i, b in enumerate(blocks))
    if resample is not None:
        items[resample[0]] = resample[1]
    return nn.Sequential(items)


class DVAEEncoder(nn.Module):
    """Image ``[B, 3, H, W]`` in ``[-1, 1]`` -> code logits ``[B, vocab, H/8, W/8]``.

    The image is mapped to ``[eps, 1 - eps]`` (the logit-Laplace pixel map) before ``blocks``, the
    published network. No attention, no norms: the whole encoder is the local stage of tiling.
    """

    local_scale = 1
    """The local stage (the whole network) ends at the latent resolution."""

    def __init__(self, config: DVAEConfig) -> None:
        super().__init__()
        n, per = config.n_hid, config.n_blk_per_group
        n_layers = config.group_count * per
        widths = [n * 2**g for g in range(config.group_count)]
        layers: OrderedDict[str, nn.Module] = OrderedDict(input=_Conv(config.in_channels, n, 7))
        n_in = n
        for g, width in enumerate(widths):
            blocks = [_Block(n_in if i == 0 else width, width, n_layers, (3, 3, 3, 1)) for i in range(per)]
            n_in = width
            last = g == config.group_count - 1
            layers[f"group_{g + 1}"] = _group(blocks, None if last else ("pool", nn.MaxPool2d(kernel_size=2)))
        layers["output"] = nn.Sequential(OrderedDict(relu=nn.ReLU(), conv=_Conv(n_in, config.vocab_size, 1)))
        self.blocks = nn.Sequential(layers)

    def forward(self, x: Tensor) -> Tensor:
        pixels = (x + 1.0) / 2.0
        return self.blocks((1 - 2 * LOGIT_LAPLACE_EPS) * pixels + LOGIT_LAPLACE_EPS)

    def local_stage(self, x: Tensor) -> Tensor:
        return self(x)

    def global_stage(self, h: Tensor) -> Tensor:
        return h


class DVAEDecoder(nn.Module):
    """Code map ``[B, vocab, h, w]`` (one-hot or relaxed) -> image ``[B, 3, 8h, 8w]`` in ``[-1, 1]``.

    ``blocks`` (the published network) gives the logit-Laplace statistics ``[B, 6, 8h, 8w]``; the
    image is ``unmap(sigmoid(mu))`` of the first 3, computed in float32, returned in the input's
    dtype. ``zq`` is accepted and ignored (the codec's decoder call). No attention, no norms: the
    whole decoder is the local stage of tiling.
    """

    local_scale = 1
    """The global stage (the identity) ends at the latent resolution."""

    def __init__(self, config: DVAEConfig) -> None:
        super().__init__()
        n, per = config.n_hid, config.n_blk_per_group
        n_layers = config.group_count * per
        widths = [n * 2 ** (config.group_count - 1 - g) for g in range(config.group_count)]
        layers: OrderedDict[str, nn.Module] = OrderedDict(input=_Conv(config.vocab_size, config.n_init, 1))
        n_in = config.n_init
        for g, width in enumerate(widths):
            blocks = [_Block(n_in if i == 0 else width, width, n_layers, (1, 3, 3, 3)) for i in range(per)]
            n_in = width
            last = g == config.group_count - 1
            upsample = ("upsample", nn.Upsample(scale_factor=2, mode="nearest"))
            layers[f"group_{g + 1}"] = _group(blocks, None if last else upsample)
        layers["output"] = nn.Sequential(OrderedDict(relu=nn.ReLU(), conv=_Conv(n_in, 2 * config.in_channels, 1)))
        self.blocks = nn.Sequential(layers)
        self.in_channels = config.in_channels

    def forward(self, z: Tensor, zq: Tensor | None = None) -> Tensor:
        stats = self.blocks(z)
        mu = torch.sigmoid(stats[:, : self.in_channels].float())
        pixels = ((mu - LOGIT_LAPLACE_EPS) / (1 - 2 * LOGIT_LAPLACE_EPS)).clamp(0.0, 1.0)
        return (pixels * 2.0 - 1.0).to(z.dtype)

    def global_stage(self, z: Tensor, zq: Tensor | None = None) -> Tensor:
        return z

    def local_stage(self, h: Tensor, zq: Tensor | None = None) -> Tensor:
        return self(h)


class OneHotQuantizer(Quantizer):
    """The dVAE's discretisation: ``argmax`` of the encoder logits, as a one-hot map.

    In ``[B, vocab, h, w]`` logits; out :class:`QuantizerOutput` with ``z_q`` the one-hot map
    (straight-through to the softmax in training), indices ``[B, h, w]``, zero loss. No parameters.
    """

    def __init__(self, codebook_size: int) -> None:
        super().__init__()
        self.codebook_size = codebook_size
        self.dim = codebook_size

    def forward(self, z: Tensor) -> QuantizerOutput:
        indices = z.argmax(dim=1)
        one_hot = self.embed(indices).to(z.dtype)
        if self.training:
            soft = z.softmax(dim=1)
            one_hot = soft + (one_hot - soft).detach()
        perplexity, usage = code_statistics(indices, self.codebook_size)
        return QuantizerOutput(one_hot, indices, z.new_zeros(()), perplexity, usage)

    def embed(self, indices: Tensor) -> Tensor:
        """``[B, h, w]`` ids -> one-hot ``[B, vocab, h, w]`` (float32)."""
        return F.one_hot(indices.long(), self.codebook_size).permute(0, 3, 1, 2).float()


class DVAE(Codec):
    """DALL·E's dVAE with the :class:`~movq.codec.Codec` API: ``DVAE(config)`` is ``Codec(config)``
    with ``config`` defaulting to the published architecture (:class:`DVAEConfig`).

    ``encode`` takes the same image inputs as ``Codec`` (sides multiples of 8) and returns
    ``LongTensor`` tokens ``[B, H/8, W/8]`` in ``[0, 8192)``; ``decode`` returns float images
    ``[B, 3, H, W]`` in ``[-1, 1]``. ``encode_latents`` gives the code logits ``[B, 8192, h, w]``;
    ``decode_latents(..., quantize=False)`` decodes a relaxed (e.g. softmax) code map.
    State-dict keys: ``encoder.blocks.*`` and ``decoder.blocks.*`` (the published names). Only the
    movq format can be saved (diffusers has no dVAE).
    """

    config_class = DVAEConfig

    def __init__(self, config: DVAEConfig | None = None) -> None:
        super().__init__(config or DVAEConfig())


def dalle_state_dict(encoder_state: dict[str, Tensor], decoder_state: dict[str, Tensor]) -> dict[str, Tensor]:
    """Combine the flattened ``encoder.pkl`` / ``decoder.pkl`` states into the :class:`DVAE` keys."""
    return {**{f"encoder.{k}": v for k, v in encoder_state.items()}, **{f"decoder.{k}": v for k, v in decoder_state.items()}}
