"""Checkpoint formats: the one table of format names, key-format detection, unwrapping (Lightning,
EMA, extras) and config inference.

The codec's own state-dict keys are the original taming / MoVQGAN keys (``encoder.down.1.block.0``,
``decoder.up.3.attn.0.norm.conv_y``, ``quantize.embedding``), so an ``original`` checkpoint loads as
is. A ``lightning`` checkpoint is the same keys inside ``{"state_dict": ...}`` next to training
state; ``diffusers`` keys are converted by :mod:`movq.hub.diffusers`.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any, Literal

from torch import Tensor

from movq.config import (
    MASKGIT_VQGAN_F16_1024,
    OPEN_MAGVIT2_F16_262144,
    PRESETS,
    CodecConfig,
    EMAConfig,
    GumbelConfig,
    LFQConfig,
    MultiScaleConfig,
    ProjectedConfig,
    ResidualConfig,
    SimVQConfig,
    VQConfig,
    get_preset,
)
from movq.hub.ibq import recognise_ibq
from movq.modules.blocks import level_has_attention

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class FormatSpec:
    """One checkpoint format: its ``name``, how it is stored (``layout``: a ``"folder"`` with a
    ``config.json`` that gives the architecture, a single ``"file"``, or DALL-E's ``"file pair"``),
    whether ``Codec.save_pretrained`` can ``write`` it, and a one-line ``description``."""

    name: str
    layout: Literal["folder", "file", "file pair"]
    write: bool
    description: str


MOVQ, DIFFUSERS, ORIGINAL, LIGHTNING, DALLE = "movq", "diffusers", "original", "lightning", "dalle"
LLAMAGEN, MASKGIT, VQGAN_LC = "llamagen", "maskgit", "vqgan-lc"
VAR, MAGVIT2 = "var", "magvit2"
FORMATS: dict[str, FormatSpec] = {
    spec.name: spec
    for spec in (
        FormatSpec(MOVQ, "folder", True, "Codec.save_pretrained folder: config.json + model.safetensors"),
        FormatSpec(DIFFUSERS, "folder", True, "diffusers VQModel: config.json + diffusion_pytorch_model.safetensors"),
        FormatSpec(ORIGINAL, "file", False, "taming-transformers / MoVQGAN state dict (encoder.down.* keys)"),
        FormatSpec(LIGHTNING, "file", False, "original keys inside a Lightning checkpoint's 'state_dict'"),
        FormatSpec(DALLE, "file pair", False, "OpenAI DALL-E dVAE: pickled encoder.pkl + decoder.pkl modules"),
        FormatSpec(LLAMAGEN, "file", False, "LlamaGen VQ state dict (encoder.conv_blocks.* keys) in {'model': ...}"),
        FormatSpec(MASKGIT, "file", False, "MaskGIT VQGAN PyTorch conversion (encoder.mid.0.*, decoder.up.*.upsample_conv.*)"),
        FormatSpec(VQGAN_LC, "file", False, "VQGAN-LC training checkpoint: taming keys + tok_embeddings + "
                                             "codebook_projection in {'model': ...}"),
        FormatSpec(VAR, "file", False, "VAR multi-scale VQVAE state dict (fused attn qkv, quantize.quant_resi.*)"),
        FormatSpec(MAGVIT2, "file", False, "Open-MAGVIT2 / SimVQ Lightning checkpoint (encoder.mid_block.N.*, "
                                           "decoder.up.N.upsample.conv1.*)"),
    )
}
"""Every checkpoint format movq reads, by name: the only place format names are spelled out."""
WRITE_FORMATS = tuple(name for name, spec in FORMATS.items() if spec.write)
"""Formats ``Codec.save_pretrained`` / ``push_to_hub`` write: ``("movq", "diffusers")``."""


def check_write_format(format: str) -> None:
    """``ValueError`` unless ``format`` is one of :data:`WRITE_FORMATS`."""
    if format not in WRITE_FORMATS:
        raise ValueError(f"format must be one of {WRITE_FORMATS}, got {format!r}")


HARMLESS_PREFIXES = ("loss.", "discriminator.", "perceptual_loss.", "lpips.")
"""Training-only modules stored next to the codec (GAN discriminator, LPIPS): dropped on load."""
EMA_PREFIX = "model_ema."
"""LitEma (taming / latent-diffusion / MoVQGAN): shadow of parameter ``a.b.c`` stored as
``model_ema.abc`` (dots removed), plus ``model_ema.decay`` and ``model_ema.num_updates``."""
EMA_BOOKKEEPING = ("decay", "num_updates")
WRAPPER_PREFIXES = ("module.", "first_stage_model.", "vqvae.", "model.")
"""Prefixes under which codec keys may sit (DDP, latent-diffusion's first stage, wrappers)."""


_VAR_KEY = re.compile(r"^((encoder|decoder)\..*\.qkv\.(weight|bias)|quantize\.quant_resi\.(qresi_ls\.\d+|qresi)\.(weight|bias)"
                      r"|quantize\.ema_vocab_hit_SV)$")
"""VAR's keys that movq's lack: the fused ``qkv`` attention, its shared Phi containers, its usage log
(:mod:`movq.hub.var`; a movq state dict's Phi keys are ``quantize.quant_resi.{k}.*``)."""
_MASKGIT_KEY = re.compile(r"^((encoder|decoder)\.mid\.\d+|decoder\.up\.\d+\.upsample_conv)\.")
"""MaskGIT's keys that taming's lack: numbered mid blocks, the decoder's ``upsample_conv``."""
_MAGVIT2_MID_BLOCK = re.compile(r"^(encoder|decoder)\.mid_block\.\d+\.")
"""Keys only Open-MAGVIT2's and SimVQ's checkpoints have (diffusers' ``mid_block`` is not numbered)."""


def detect_format(state: Mapping[str, Any]) -> str:
    """``"original"`` (taming / MoVQGAN keys), ``"diffusers"`` (``VQModel`` keys), ``"dalle"``
    (OpenAI dVAE ``blocks.*`` keys), ``"llamagen"`` (``conv_blocks.*`` keys), ``"maskgit"``
    (numbered mid blocks, ``upsample_conv``), ``"var"`` (fused ``qkv`` attention, Phi convolutions:
    :mod:`movq.hub.var`), ``"vqgan-lc"`` (``tok_embeddings`` and ``codebook_projection`` next to
    taming keys) or ``"magvit2"`` (Open-MAGVIT2's and SimVQ's numbered ``mid_block``); ``ValueError``
    when none fits."""
    keys = list(state)
    if "tok_embeddings.weight" in state and any(k.startswith("codebook_projection.") for k in keys):
        return VQGAN_LC
    if any(_MAGVIT2_MID_BLOCK.match(k) for k in keys):
        return MAGVIT2
    if any(k.startswith(("encoder.down_blocks.", "decoder.up_blocks.", "encoder.mid_block.")) for k in keys):
        return DIFFUSERS
    if any(k.startswith(("encoder.conv_blocks.", "decoder.conv_blocks.")) for k in keys):
        return LLAMAGEN
    if any(_MASKGIT_KEY.match(k) for k in keys):
        return MASKGIT
    if any(_VAR_KEY.match(k) for k in keys):
        return VAR
    if any(k.startswith(("encoder.down.", "decoder.up.", "encoder.mid.")) for k in keys):
        return ORIGINAL
    if any(k.startswith(("encoder.blocks.", "decoder.blocks.")) for k in keys):
        return DALLE
    raise ValueError(
        "unrecognised checkpoint keys (neither taming/MoVQGAN, diffusers VQModel nor DALL-E dVAE): "
        f"first keys {keys[:8]}"
    )


def unwrap_checkpoint(obj: Any, *, ema: bool | None = None) -> dict[str, Tensor]:
    """The codec's state dict out of whatever a checkpoint file held.

    Accepts a plain state dict, a Lightning checkpoint (``{"state_dict": ...}``) and codec keys
    under a wrapper prefix (``module.``, ``first_stage_model.``...). Drops training-only extras
    (:data:`HARMLESS_PREFIXES`). EMA shadow weights (``model_ema.*``) replace the raw weights when
    ``ema`` is ``None`` (prefer EMA when present) or ``True`` (EMA required); ``ema=False`` drops them.
    """
    obj, ema = _separate_ema_copy(obj, ema)
    state = _find_state_dict(obj)
    state = _strip_wrapper(state)
    # LitEma shadows every trainable weight, the discriminator's too (``model_ema.lossdiscriminator...``)
    shadow_prefixes = tuple(EMA_PREFIX + p.replace(".", "") for p in HARMLESS_PREFIXES)
    dropped = sorted(k for k in state if k.startswith(HARMLESS_PREFIXES + shadow_prefixes))
    if dropped:
        logger.info("dropping %d training-only keys (%s)", len(dropped), _first_modules(dropped))
    state = {k: v for k, v in state.items() if not k.startswith(HARMLESS_PREFIXES + shadow_prefixes)}
    return apply_ema(state, ema=ema)


def _first_modules(keys: list[str], limit: int = 6) -> str:
    """``keys`` summarised by their first two name parts (``loss.discriminator: 20 keys, ...``)."""
    counts: dict[str, int] = {}
    for key in keys:
        head = "model_ema shadows of them" if key.startswith(EMA_PREFIX) else ".".join(key.split(".")[:2])
        counts[head] = counts.get(head, 0) + 1
    shown = [f"{head}: {n} keys" for head, n in list(counts.items())[:limit]]
    return ", ".join(shown) + (f", ... ({len(counts) - limit} more)" if len(counts) > limit else "")


def _separate_ema_copy(obj: Any, ema: bool | None) -> tuple[Any, bool | None]:
    """DiT-style training checkpoints (LlamaGen's ``vq_train.py``) keep the EMA model as a whole second
    state dict: ``{"model": ..., "ema": ...}``. ``ema`` ``None`` / ``True`` picks ``"ema"``, ``False``
    ``"model"``; the returned ``ema`` is then ``False`` (the chosen dict holds no ``model_ema.*`` keys)."""
    if not (isinstance(obj, Mapping) and isinstance(obj.get("ema"), Mapping) and isinstance(obj.get("model"), Mapping)):
        return obj, ema
    chosen = "model" if ema is False else "ema"
    logger.info("the checkpoint holds 'model' and its EMA copy 'ema': reading %r", chosen)
    return {"model": obj[chosen]}, False


def _find_state_dict(obj: Any) -> dict[str, Any]:
    if not isinstance(obj, Mapping):
        raise ValueError(f"checkpoint holds a {type(obj).__name__}, expected a dict of tensors")
    not_names = sorted(repr(k) for k in obj if not isinstance(k, str))
    if not_names:
        raise ValueError(f"checkpoint is not a state dict: its keys {not_names[:8]} are not strings")
    for key in ("state_dict", "model_state_dict"):
        if isinstance(obj.get(key), Mapping):
            return dict(obj[key])
    if "model" in obj and isinstance(obj["model"], Mapping) and all(isinstance(k, str) for k in obj["model"]):
        inner = obj["model"]
        if any(isinstance(v, Tensor) for v in inner.values()):
            return dict(inner)
    bad = sorted(str(k) for k, v in obj.items() if not isinstance(v, Tensor))
    if bad:
        raise ValueError(f"checkpoint is not a state dict: entries {bad[:8]} are not tensors")
    return dict(obj)


def _strip_wrapper(state: dict[str, Any]) -> dict[str, Any]:
    if any(k.startswith(("encoder.", "decoder.")) for k in state):
        return state
    for prefix in WRAPPER_PREFIXES:
        if any(k.startswith(prefix + "encoder.") for k in state):
            logger.info("reading codec keys under %r", prefix)
            inner = {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}
            ema = {k: v for k, v in state.items() if k.startswith(EMA_PREFIX)}
            return {**inner, **ema}
    return state


def apply_ema(state: dict[str, Tensor], *, ema: bool | None = None) -> dict[str, Tensor]:
    """Replace weights by their ``model_ema.*`` shadows (see :data:`EMA_PREFIX`) and drop the EMA keys."""
    shadows = {
        k[len(EMA_PREFIX):]: v
        for k, v in state.items()
        if k.startswith(EMA_PREFIX) and k[len(EMA_PREFIX):] not in EMA_BOOKKEEPING
    }
    base = {k: v for k, v in state.items() if not k.startswith(EMA_PREFIX)}
    if ema is True and not shadows:
        raise ValueError("ema=True but the checkpoint has no EMA weights (no 'model_ema.*' keys)")
    if ema is False or not shadows:
        return base
    by_flat_name: dict[str, str] = {}
    for key in base:
        flat = key.replace(".", "")
        if flat in by_flat_name:
            raise ValueError(f"EMA names are ambiguous: {key!r} and {by_flat_name[flat]!r} both flatten to {flat!r}")
        by_flat_name[flat] = key
    unmatched = sorted(s for s in shadows if s not in by_flat_name)
    if unmatched:
        raise ValueError(f"EMA weights without a matching model weight: {unmatched[:20]}")
    for flat, value in shadows.items():
        base[by_flat_name[flat]] = value
    logger.info("using EMA weights for %d of %d tensors", len(shadows), len(base))
    return base


# ---------------------------------------------------------------------------------------------
# Architecture inference from an original-format state dict.

_LEVEL = re.compile(r"^encoder\.down\.(\d+)\.block\.(\d+)\.conv2\.weight$")


def infer_config(state: Mapping[str, Tensor], preset: str | None = None, source: str = "checkpoint") -> CodecConfig:
    """The :class:`CodecConfig` an original-format state dict needs.

    With ``preset`` given, that preset is returned (the strict load then checks it). Otherwise
    the architecture is read from the shapes; if it equals a preset's architecture, that preset
    (with its name) is returned, else a ``custom`` config. Shapes that no valid config produces
    are a ``ValueError`` naming ``source``, listing what was found and suggesting ``preset=``.
    """
    if preset is not None:
        return get_preset(preset)
    if "quant_conv.weight" not in state and "encoder.conv_in.weight" in state and "encoder.conv_in.bias" not in state:
        if is_magvit2_state(state):
            return magvit2_config(state, source)  # Open-MAGVIT2's / SimVQ's network: numbered mid blocks
        return maskgit_config(state, source)  # MaskGIT's network: no quant_conv, a bias-free conv_in
    config = recognise_ibq(_config_from_shapes(state, source))  # IBQ: a VQ codebook's tensors, IBQ's network
    for candidate in PRESETS.values():
        if _same_architecture(candidate, config):
            return get_preset(candidate.name)
    return config


def maskgit_config(state: Mapping[str, Tensor], source: str = "checkpoint") -> CodecConfig:
    """The codec config of a MaskGIT VQGAN state dict (MaskGIT's key names or movq's: the keys read
    here are the same in both), read from the shapes: the
    preset :data:`~movq.config.MASKGIT_VQGAN_F16_1024` when they are its, else a ``maskgit-custom``
    config with its network. ``ValueError`` naming ``source`` when a needed key is missing."""
    levels: dict[int, dict[int, int]] = {}
    for key, value in state.items():
        match = _LEVEL.match(key)
        if match:
            levels.setdefault(int(match[1]), {})[int(match[2])] = value.shape[0]
    needed = ("encoder.conv_in.weight", "encoder.conv_out.weight", "quantize.embedding.weight")
    missing = [k for k in needed if k not in state] + ([] if levels else ["encoder.down.0.block.0.conv2.weight"])
    if missing:
        raise ValueError(f"{source}: MaskGIT VQGAN keys, but {missing} are missing")
    ch = state["encoder.conv_in.weight"].shape[0]
    widths = [levels[i].get(0, 0) for i in range(max(levels) + 1)]
    if any(w % ch for w in widths):
        raise ValueError(f"{source}: MaskGIT level widths {widths} are not multiples of ch={ch}")
    codebook = state["quantize.embedding.weight"]
    z_channels = state["encoder.conv_out.weight"].shape[0]
    config = replace(
        MASKGIT_VQGAN_F16_1024, name="maskgit-custom", ch=ch, ch_mult=tuple(w // ch for w in widths),
        num_res_blocks=len(levels[0]), z_channels=z_channels, embed_dim=z_channels,
        quantizer=VQConfig(codebook_size=codebook.shape[0]),
    )
    for preset in PRESETS.values():
        if replace(config, name=preset.name) == preset:
            return get_preset(preset.name)
    return CodecConfig.from_dict(config.to_dict())  # checks every field


def is_magvit2_state(state: Mapping[str, object]) -> bool:
    """Whether ``state`` in movq's names is Open-MAGVIT2's / SimVQ's network (a mid block of
    numbered ResNet blocks, no ``quant_conv``): a movq state dict without its saved config."""
    return "quant_conv.weight" not in state and "encoder.mid.block.0.conv1.weight" in state


def magvit2_config(state: Mapping[str, Tensor], source: str = "checkpoint") -> CodecConfig:
    """The codec config of an Open-MAGVIT2 / SimVQ state dict (their key names or movq's: the keys
    read here are the same in both), from the shapes: a preset when they are its (up to the training
    ``resolution``, which no tensor sets), else a ``magvit2-custom`` / ``simvq-custom`` config.
    ``ValueError`` naming ``source`` when a needed key is missing or the shapes fit no network."""
    levels: dict[int, dict[int, int]] = {}
    for key, value in state.items():
        match = _LEVEL.match(key)
        if match:
            levels.setdefault(int(match[1]), {})[int(match[2])] = value.shape[0]
    needed = ("encoder.conv_in.weight", "encoder.conv_out.weight")
    missing = [k for k in needed if k not in state] + ([] if levels else ["encoder.down.0.block.0.conv2.weight"])
    if missing:
        raise ValueError(f"{source}: Open-MAGVIT2 / SimVQ keys, but {missing} are missing")
    ch = state["encoder.conv_in.weight"].shape[0]
    widths = [levels.get(i, {}).get(0, 0) for i in range(max(levels) + 1)]
    if any(w == 0 or w % ch for w in widths):
        raise ValueError(f"{source}: Open-MAGVIT2 level widths {widths} are not multiples of ch={ch}")
    z_channels = state["encoder.conv_out.weight"].shape[0]
    network = "magvit2" if any(k.startswith("decoder.adaptive.") for k in state) else "simvq"
    if "quantize.embedding_proj.weight" in state and "quantize.embedding.weight" in state:
        quantizer: LFQConfig | SimVQConfig = SimVQConfig(
            codebook_size=state["quantize.embedding.weight"].shape[0],
            projection_bias="quantize.embedding_proj.bias" in state,
        )
    elif any(k.startswith("quantize.") for k in state):
        found = sorted(k for k in state if k.startswith("quantize."))[:4]
        raise ValueError(f"{source}: Open-MAGVIT2 network with quantizer tensors {found}: movq reads LFQ and SimVQ only")
    else:
        quantizer = LFQConfig(bit_order="lsb_first")
    try:
        config = replace(
            OPEN_MAGVIT2_F16_262144, name=f"{network}-custom", ch=ch, ch_mult=tuple(w // ch for w in widths),
            num_res_blocks=len(levels[0]), z_channels=z_channels, embed_dim=z_channels, quantizer=quantizer,
            network=network,
        )
    except ValueError as error:
        raise ValueError(f"{source}: the Open-MAGVIT2 / SimVQ shapes fit no network: {error}") from None
    for preset in PRESETS.values():
        if replace(config, name=preset.name, resolution=preset.resolution) == preset:
            return get_preset(preset.name)
    return CodecConfig.from_dict(config.to_dict())  # checks every field


def _config_from_shapes(state: Mapping[str, Tensor], source: str) -> CodecConfig:
    hint = f"pass preset= (one of {sorted(PRESETS)}) if it is a checkpoint of one of them"
    try:
        found = _shapes_summary(state)
    except KeyError as error:
        raise ValueError(f"{source}: cannot infer the architecture: key {error} is missing; {hint}") from None
    ch, widths = found["ch"], found["level widths"]
    quantizer = _quantizer_from_shapes(state, found["embed_dim"], source)
    try:
        if any(w % ch for w in widths):
            raise ValueError(f"level widths {widths} are not multiples of ch={ch}")
        resolution = 256
        values = {
            "in_channels": found["in_channels"], "out_channels": found["out_channels"], "ch": ch,
            "ch_mult": [w // ch for w in widths], "num_res_blocks": found["num_res_blocks"],
            "attn_resolutions": [resolution // 2**i for i in found["attention levels"]], "resolution": resolution,
            "z_channels": found["z_channels"], "embed_dim": found["embed_dim"], "norm": found["norm"],
            "quantizer": quantizer, "mid_attention": found["mid attention"],
            "quant_conv_kernel": found["quant_conv kernel"],
        }
        return CodecConfig.from_dict(values)
    except (ValueError, ZeroDivisionError) as error:
        shown = ", ".join(f"{k} {v}" for k, v in found.items())
        raise ValueError(
            f"{source}: the tensor shapes match no known architecture ({error}); found {shown}; {hint}"
        ) from None


def _shapes_summary(state: Mapping[str, Tensor]) -> dict[str, Any]:
    """What the encoder / decoder tensors say about the architecture (``KeyError``: a key is missing)."""
    levels: dict[int, dict[int, int]] = {}
    for key, value in state.items():
        match = _LEVEL.match(key)
        if match:
            levels.setdefault(int(match[1]), {})[int(match[2])] = value.shape[0]
    if not levels:
        raise KeyError("encoder.down.0.block.0.conv2.weight")
    return {
        "in_channels": state["encoder.conv_in.weight"].shape[1],
        "out_channels": state["decoder.conv_out.weight"].shape[0],
        "ch": state["encoder.conv_in.weight"].shape[0],
        "level widths": [levels[i][0] if 0 in levels.get(i, {}) else 0 for i in range(max(levels) + 1)],
        "num_res_blocks": len(levels[0]),
        "attention levels": [i for i in range(max(levels) + 1) if f"encoder.down.{i}.attn.0.q.weight" in state],
        "z_channels": state["encoder.conv_out.weight"].shape[0],
        "embed_dim": state["quant_conv.weight"].shape[0],
        "norm": "spatial" if "decoder.norm_out.conv_y.weight" in state else "group",
        "mid attention": "encoder.mid.attn_1.q.weight" in state,
        "quant_conv kernel": state["quant_conv.weight"].shape[-1],
    }


def _quantizer_from_shapes(state: Mapping[str, Tensor], embed_dim: int, source: str) -> Any:
    """The quantizer config the ``quantize.*`` tensors reveal.

    A shared-codebook residual quantizer has the same tensors as a plain VQ one and is read as
    VQ; FSQ and LFQ have no tensors at all. Their configs travel in ``config.json`` or in the
    state dict's metadata (:data:`movq.config.STATE_DICT_CONFIG_KEY`), not in the shapes.
    """
    if "quantize.embedding_proj.weight" in state:
        return SimVQConfig(codebook_size=state["quantize.embedding.weight"].shape[0],
                           projection_bias="quantize.embedding_proj.bias" in state)
    if "quantize.codebook" in state and "quantize.projection.weight" in state:
        codebook = state["quantize.codebook"]
        return ProjectedConfig(codebook_size=codebook.shape[0], codebook_dim=codebook.shape[1])
    phis = [k for k in state if re.fullmatch(r"quantize\.quant_resi\.\d+\.weight", k)]
    if phis and "quantize.embedding.weight" in state:  # VAR's multi-scale quantizer, at VAR's ten scales
        return MultiScaleConfig(codebook_size=state["quantize.embedding.weight"].shape[0], phi_count=len(phis))
    if "quantize.embedding.cluster_size" in state:
        return EMAConfig(codebook_size=state["quantize.embedding.weight"].shape[0])
    if "quantize.embedding.weight" in state:
        codebook = state["quantize.embedding.weight"]
        if "quantize.project_in.weight" in state:
            code_dim = state["quantize.project_in.weight"].shape[0]
            return VQConfig(codebook_size=codebook.shape[0], code_dim=code_dim, groups=code_dim // codebook.shape[1])
        return VQConfig(codebook_size=codebook.shape[0], groups=max(1, embed_dim // codebook.shape[1]))
    if "quantize.embed.weight" in state:
        return GumbelConfig(codebook_size=state["quantize.embed.weight"].shape[0])
    books = sorted(k for k in state if re.fullmatch(r"quantize\.embeddings\.\d+\.weight", k))
    if books:
        return ResidualConfig(codebook_size=state[books[0]].shape[0], depth=len(books), shared_codebook=False)
    raise ValueError(
        f"{source}: cannot infer the quantizer: the checkpoint has no 'quantize.*' codebook tensors "
        "(FSQ and LFQ quantizers have none, so their levels are not in the tensors). Load the codec's "
        "save_pretrained folder, a torch.save(codec.state_dict()) file written by this movq version "
        f"(it carries the config), or pass preset= (one of {sorted(PRESETS)})"
    )


def attention_levels(config: CodecConfig) -> tuple[int, ...]:
    """Resolution levels (0 = full size) that have attention blocks."""
    return tuple(i for i in range(len(config.ch_mult)) if level_has_attention(config, i))


def _same_architecture(a: CodecConfig, b: CodecConfig) -> bool:
    fields = (
        "in_channels", "out_channels", "ch", "ch_mult", "num_res_blocks", "z_channels", "embed_dim", "norm",
        "mid_attention", "network", "input_range", "quant_conv_kernel",
    )
    if any(getattr(a, f) != getattr(b, f) for f in fields) or attention_levels(a) != attention_levels(b):
        return False
    qa, qb = a.quantizer, b.quantizer
    if type(qa) is not type(qb) or a.codebook_size != b.codebook_size:
        return False
    return all(getattr(qa, f) == getattr(qb, f) for f in qa.architecture_fields)
