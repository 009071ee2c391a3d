"""Record parity fixtures: movq against the ORIGINAL implementation of each codec family, on
seeded random weights spread like trained ones, saved in the family's published container.

For each family the recorder

1. builds the original model (imported from its own repository checkout, never copied) at its
   published configuration;
2. fills it with :func:`seeded_weights` (a pure function of the published key names, shapes and a
   seed: norm scales around 1, small biases, convolutions scaled by fan-in, a codebook with real
   spread, so that a wrong key mapping cannot hide) and saves it exactly as the project publishes it;
3. runs ``movq.load(file)`` and the original on :func:`seeded_images` and compares token ids
   (``encode``) and pixels (``decode`` of the original's tokens);
4. writes ``tests/fixtures/<family>.json``: the recipe (seeds, sizes, container), a hash of the
   published key names and shapes, checksums of the weights and inputs, the original's token ids,
   per-image channel means / standard deviations and a small crop of its decoded pixels, and the
   measured parity.

``tests/test_family_*.py`` rebuild the same checkpoint from the recipe with :func:`seeded_weights`
(no third-party repository needed) and compare movq against the recorded outputs.

Usage (one family, or all)::

    python benchmarks/record_family_fixtures.py --llamagen /path/to/LlamaGen --seed-voken /path/to/SEED-Voken \\
        --one-d-tokenizer /path/to/1d-tokenizer --vqgan-lc /path/to/VQGAN-LC --var /path/to/VAR \\
        --simvq /path/to/SimVQ [--family ibq-1024]

A new family adds a recorder function to :data:`RECORDERS` (and, if needed, a ``--<repo>`` option).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import sys
import tempfile
import zlib
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

FIXTURES = Path(__file__).resolve().parents[1] / "tests" / "fixtures"
WEIGHTS_SEED = 20
INPUTS_SEED = 7
BATCH = 2
CROP = 8
"""Side of the square of decoded pixels recorded per image (all channels), at :func:`crop_box`."""


# ------------------------------------------------------------------ shared with the tests


def seeded_weights(shapes: Mapping[str, Sequence[int]], seed: int = WEIGHTS_SEED) -> dict[str, Tensor]:
    """Tensors for a state dict of ``shapes`` (key -> shape), each a function of ``(seed, key, shape)``
    only (so the order of keys does not matter). By the key with its dots removed (LitEma's shadow
    names are flattened: ``model_ema.encoderconv_inbias``):

    - ``*num_batches_tracked`` / ``*num_updates``: int64 1000; a scalar ``*decay``: 0.9999;
    - ``*codebook_used`` (LlamaGen's usage log, a buffer of code ids): integers in ``[0, 1024)``;
    - ``*running_var``: ``|N(0, 1)| + 0.5``;
    - 1-D ``*norm*weight``: ``1 + 0.2 * N(0, 1)``; ``*bias``: ``0.05 * N(0, 1)``;
    - ``*embeddingweight`` (codebooks): ``N(0, 1)``, spread in every direction, not unit-norm;
    - any other tensor: ``N(0, 1) / sqrt(fan_in)`` (fan_in = product of the shape after axis 0).
    """
    out = {}
    for key, shape in shapes.items():
        gen = torch.Generator().manual_seed(seed * 1_000_003 + zlib.crc32(key.encode()))
        shape = tuple(int(s) for s in shape)
        flat = key.replace(".", "")
        noise = torch.randn(shape, generator=gen)
        if flat.endswith(("num_batches_tracked", "num_updates")):
            value = torch.full(shape, 1000, dtype=torch.long)
        elif flat.endswith("decay") and not shape:
            value = torch.full(shape, 0.9999)
        elif flat.endswith("codebook_used"):
            value = torch.randint(0, 1024, shape, generator=gen).float()
        elif flat.endswith("running_var"):
            value = noise.abs() + 0.5
        elif flat.endswith("embeddingweight"):
            value = noise
        elif flat.endswith("bias"):
            value = 0.05 * noise
        elif len(shape) == 1 and "norm" in key:
            value = 1.0 + 0.2 * noise
        else:
            value = noise / math.sqrt(max(1, math.prod(shape[1:])))
        out[key] = value.contiguous()
    return out


def seeded_images(batch: int, size: int, seed: int = INPUTS_SEED) -> Tensor:
    """``[batch, 3, size, size]`` smooth random images in ``(-1, 1)``: Gaussian noise at 1/8 of the
    size, bilinearly upsampled, plus fine noise, through ``tanh``."""
    gen = torch.Generator().manual_seed(seed)
    coarse = torch.randn(batch, 3, max(1, size // 8), max(1, size // 8), generator=gen)
    fine = 0.3 * torch.randn(batch, 3, size, size, generator=gen)
    smooth = F.interpolate(coarse, size=(size, size), mode="bilinear", align_corners=False)
    return torch.tanh(smooth + fine)


def keys_digest(shapes: Mapping[str, Sequence[int]]) -> str:
    """sha256 of the sorted ``"key (shape)"`` lines: names and shapes of a state dict in a few bytes."""
    lines = "\n".join(f"{k} {tuple(int(s) for s in shapes[k])}" for k in sorted(shapes))
    return hashlib.sha256(lines.encode()).hexdigest()


def checksum(tensors: Mapping[str, Tensor] | Tensor) -> float:
    """float64 sum of the absolute values of ``tensors`` (a weak but order-free fingerprint)."""
    values = tensors.values() if isinstance(tensors, Mapping) else [tensors]
    return float(sum(t.double().abs().sum() for t in values))


def crop_box(height: int, width: int) -> tuple[int, int]:
    """Top-left corner of the recorded :data:`CROP` x :data:`CROP` square: off-centre, away from the borders."""
    return (height - CROP) // 3, (width - CROP) // 2


def pixel_summary(images: Tensor) -> dict[str, Any]:
    """What the fixtures keep of decoded images ``[B, 3, H, W]``: per image and channel the mean and
    standard deviation, and the :func:`crop_box` square (rounded to 1e-6)."""
    top, left = crop_box(*images.shape[-2:])
    images = images.double()
    return {
        "mean": images.mean(dim=(2, 3)).tolist(),
        "std": images.std(dim=(2, 3)).tolist(),
        "crop_top_left": [top, left],
        "crop": [[[[round(v, 6) for v in row] for row in channel] for channel in image]
                 for image in images[:, :, top:top + CROP, left:left + CROP].tolist()],
    }


# ------------------------------------------------------------------ the families


def record_llamagen(repo: Path, variant: str, size: int) -> dict[str, Any]:
    """LlamaGen ``VQ-16`` / ``VQ-8`` (``tokenizer/tokenizer_image/vq_model.py``), saved like the
    published ``vq_ds16_c2i.pt``: ``torch.save({"model": state_dict})``."""
    sys.path.insert(0, str(repo))
    from tokenizer.tokenizer_image.vq_model import VQ_models  # the original, from its checkout

    import movq

    torch.manual_seed(0)
    original: nn.Module = VQ_models[variant]().eval()
    shapes = {k: tuple(v.shape) for k, v in original.state_dict().items()}
    weights = seeded_weights(shapes)
    original.load_state_dict(weights, strict=True)
    images = seeded_images(BATCH, size)
    with torch.no_grad():
        _, _, (_, _, indices) = original.encode(images)
        grid = size // (16 if variant == "VQ-16" else 8)
        tokens = indices.reshape(BATCH, grid, grid)
        pixels = original.decode_code(tokens.flatten(), (BATCH, original.config.codebook_embed_dim, grid, grid))
        with tempfile.TemporaryDirectory() as folder:
            path = Path(folder) / ("vq_ds16_c2i.pt" if variant == "VQ-16" else "vq_ds8_c2i.pt")
            torch.save({"model": weights}, path)
            codec = movq.load(path)
        movq_tokens = codec.encode(images)
        movq_pixels = codec.decode(tokens)
        movq_unclamped = codec.decode(tokens, clamp=False)
    return {
        "family": "llamagen",
        "variant": variant,
        "preset": codec.config.name,
        "recipe": {
            "original": "FoundationVision/LlamaGen tokenizer/tokenizer_image/vq_model.py VQ_models[" + repr(variant) + "]",
            "container": "torch.save({'model': state_dict})",
            "weights": "seeded_weights(published shapes, seed)", "weights_seed": WEIGHTS_SEED,
            "inputs": "seeded_images(batch, size, seed)", "inputs_seed": INPUTS_SEED, "batch": BATCH, "size": size,
        },
        "published_keys": len(shapes),
        "published_keys_sha256": keys_digest(shapes),
        "weights_checksum": checksum(weights),
        "inputs_checksum": checksum(images),
        "tokens": tokens.tolist(),
        "pixels": pixel_summary(pixels),
        "parity": parity(movq_tokens, tokens, movq_unclamped, movq_pixels, pixels),
    }


def _import_ibq(repo: Path) -> Any:
    """SEED-Voken's ``IBQ`` class, imported from its checkout. Its module imports Lightning and the
    repository's ``main.instantiate_from_config`` (for the loss): Lightning's module base is stood in
    for by ``nn.Module`` (the codec's code paths use none of Lightning), and the loss by the original
    PatchGAN discriminator alone (LPIPS needs downloaded VGG weights), so that the checkpoint still
    carries ``loss.discriminator.*`` and LitEma's shadows of it, as the published ones do."""
    import types

    sys.path.insert(0, str(repo))
    from src.IBQ.modules.discriminator.model import NLayerDiscriminator

    class LossStandIn(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.discriminator = NLayerDiscriminator(input_nc=3, n_layers=3, ndf=64)

    for name in ("lightning", "pytorch_lightning"):
        sys.modules.setdefault(name, types.SimpleNamespace(LightningModule=nn.Module))  # type: ignore[arg-type]
    sys.modules.setdefault("main", types.SimpleNamespace(instantiate_from_config=lambda config: LossStandIn()))  # type: ignore[arg-type]
    from src.IBQ.models.ibqgan import IBQ

    return IBQ


IBQ_DDCONFIG = {"double_z": False, "z_channels": 256, "resolution": 256, "in_channels": 3, "out_ch": 3, "ch": 128,
                "ch_mult": [1, 1, 2, 2, 4], "num_res_blocks": 4, "attn_resolutions": [16], "dropout": 0.0}
"""``configs/IBQ/gpu/imagenet_ibqgan_*.yaml``'s ``ddconfig`` (the same for every codebook size)."""


def training_probe_latent(dim: int, seed: int = INPUTS_SEED) -> Tensor:
    """``[2, dim, 3, 3]`` seeded latent on which the quantizers' training paths are compared."""
    return torch.randn(2, dim, 3, 3, generator=torch.Generator().manual_seed(seed + 1))


def probe_weights(z_q: Tensor) -> Tensor:
    """Fixed weights ``w`` of the probe ``loss + sum(w * z_q)``, so that ``z_q``'s gradient path counts too."""
    return torch.linspace(-1.0, 1.0, z_q.shape[1]).view(1, -1, 1, 1)


def ibq_training_probe(original: nn.Module, quantizer: nn.Module) -> dict[str, Any]:
    """IBQ's training path: the loss its ``VQLPIPSWithDiscriminator`` uses (``quant_loss_weight`` 1 x
    quantizer loss + ``entropy_loss_weight`` 0.05 x entropy loss) plus ``sum(w * z_q)``, and its
    gradients to the latent and the codebook, from the original and from movq on the same codebook."""
    found = {}
    for name, module in (("original", original), ("movq", quantizer)):
        module.zero_grad()
        z = training_probe_latent(module.embedding.weight.shape[1]).requires_grad_()
        if name == "original":
            z_q, (quant_loss, _, _, entropy), _ = module(z)
            loss = quant_loss + 0.05 * entropy
        else:
            out = module(z)
            z_q, loss = out.z_q, out.loss
        (loss + (probe_weights(z_q) * z_q).sum()).backward()
        found[name] = (float(loss), z.grad.double(), module.embedding.weight.grad.double())
    (loss, z_grad, e_grad), (movq_loss, movq_z_grad, movq_e_grad) = found["original"], found["movq"]
    return {
        "probe": "loss + sum(linspace(-1, 1, dim) * z_q) on training_probe_latent(dim), codebook = the EMA one",
        "loss": loss,
        "latent_grad_abs_sum": float(z_grad.abs().sum()),
        "codebook_grad_abs_sum": float(e_grad.abs().sum()),
        "codebook_rows_with_grad": int((e_grad.abs().sum(-1) > 0).sum()),
        "parity": {
            "loss_difference": abs(loss - movq_loss),
            "max_latent_grad_difference": float((z_grad - movq_z_grad).abs().max()),
            "max_codebook_grad_difference": float((e_grad - movq_e_grad).abs().max()),
        },
    }


def record_ibq(repo: Path, codebook_size: int, size: int) -> dict[str, Any]:
    """IBQ (``src/IBQ/models/ibqgan.py``) at ``configs/IBQ/gpu/imagenet_ibqgan_<codebook_size>.yaml``,
    saved like the published ``imagenet256_<codebook_size>.ckpt``: a Lightning checkpoint whose
    ``state_dict`` holds the codec, the loss's discriminator and LitEma's ``model_ema.*`` shadows of
    every trainable weight. The reference is the EMA model (IBQ evaluates in ``ema_scope``); its
    pixels come from encode -> ``quantize.get_codebook_entry`` -> decode (IBQ's own ``decode_code``
    calls a missing ``embed_code``)."""
    import movq

    ibq_class = _import_ibq(repo)
    torch.manual_seed(0)
    original = ibq_class(
        ddconfig=IBQ_DDCONFIG, lossconfig={}, n_embed=codebook_size, embed_dim=256, l2_normalize=False,
        use_entropy_loss=True, sample_minimization_weight=1.0, batch_maximization_weight=1.0,
        entropy_temperature=0.01, beta=0.25, use_ema=True,
    ).eval()
    shapes = {k: tuple(v.shape) for k, v in original.state_dict().items()}
    weights = seeded_weights(shapes)  # raw weights and EMA shadows differ: the shadows must be the ones read
    original.load_state_dict(weights, strict=True)
    original.model_ema.copy_to(original)  # what ema_scope() does: the EMA weights in place
    codec_keys = {k for k in shapes if k.startswith(("encoder.", "decoder.", "quant_conv.", "post_quant_conv.", "quantize."))}
    shadows = {"model_ema." + k.replace(".", "") for k in codec_keys}
    images = seeded_images(BATCH, size)
    grid = size // 16
    with torch.no_grad():
        _, _, (_, _, indices) = original.encode(images)
        tokens = indices.reshape(BATCH, grid, grid)
        pixels = original.decode(original.quantize.get_codebook_entry(tokens.flatten(), (BATCH, grid, grid, 256)))
        with tempfile.TemporaryDirectory() as folder:
            path = Path(folder) / f"imagenet256_{codebook_size}.ckpt"
            torch.save({"epoch": 0, "global_step": 0, "pytorch-lightning_version": "2.2.1", "state_dict": weights,
                        "optimizer_states": [], "lr_schedulers": []}, path)
            codec = movq.load(path)
        movq_tokens = codec.encode(images)
        movq_pixels = codec.decode(tokens)
        movq_unclamped = codec.decode(tokens, clamp=False)
    training = ibq_training_probe(original.quantize, codec.quantize)
    return {
        "family": "ibq",
        "training": training,
        "variant": f"IBQ-{codebook_size}",
        "preset": codec.config.name,
        "recipe": {
            "original": "TencentARC/SEED-Voken src/IBQ/models/ibqgan.py IBQ, configs/IBQ/gpu/imagenet_ibqgan_"
                        f"{codebook_size}.yaml (Lightning stood in by nn.Module, the loss by its discriminator)",
            "container": "Lightning checkpoint: {'epoch', 'global_step', 'pytorch-lightning_version', 'state_dict', "
                         "'optimizer_states', 'lr_schedulers'}; state_dict = codec + loss.discriminator.* + model_ema.*",
            "weights": "seeded_weights(published shapes, seed); the reference runs on the model_ema.* shadows",
            "weights_seed": WEIGHTS_SEED,
            "inputs": "seeded_images(batch, size, seed)", "inputs_seed": INPUTS_SEED, "batch": BATCH, "size": size,
        },
        "published_keys": len(shapes),
        "published_keys_sha256": keys_digest(shapes),
        "non_codec_keys": {k: list(v) for k, v in shapes.items() if k not in codec_keys and k not in shadows},
        "weights_checksum": checksum({k: v for k, v in weights.items() if k in shadows}),
        "inputs_checksum": checksum(images),
        "tokens": tokens.tolist(),
        "pixels": pixel_summary(pixels),
        "parity": parity(movq_tokens, tokens, movq_unclamped, movq_pixels, pixels),
    }


MASKGIT_CONFIG = {"channel_mult": [1, 1, 2, 2, 4], "num_resolutions": 5, "dropout": 0.0, "hidden_channels": 128,
                  "num_channels": 3, "num_res_blocks": 2, "resolution": 256, "z_channels": 256}
"""bytedance/1d-tokenizer ``modeling/titok.py`` ``PretrainedTokenizer``'s config of the MaskGIT VQGAN
(the one ``maskgit-vqgan-imagenet-f16-256.bin`` loads into, with 1024 codes of 256 dims)."""


def record_maskgit(repo: Path, size: int) -> dict[str, Any]:
    """MaskGIT's VQGAN (bytedance/1d-tokenizer ``modeling/modules/maskgit_vqgan.py``) built as its
    ``PretrainedTokenizer`` builds it (that class itself needs omegaconf and accelerate: its
    ``encode`` / ``decode`` are repeated here, two lines each), saved like the published
    ``maskgit-vqgan-imagenet-f16-256.bin``: ``torch.save(state_dict)``. The original runs on pixels
    in ``[0, 1]``; movq's API takes ``[-1, 1]``, so the images go in as ``(x + 1) / 2`` and its
    decoded pixels are compared as ``2 y - 1``."""
    import types

    sys.path.insert(0, str(repo))
    from modeling.modules.maskgit_vqgan import (  # the original, from its checkout
        Decoder,
        Encoder,
        VectorQuantizer,
    )

    import movq

    torch.manual_seed(0)
    conf = types.SimpleNamespace(**MASKGIT_CONFIG)
    original = nn.Module()
    original.encoder, original.decoder = Encoder(conf), Decoder(conf)
    original.quantize = VectorQuantizer(num_embeddings=1024, embedding_dim=256, commitment_cost=0.25)
    original.eval()
    shapes = {k: tuple(v.shape) for k, v in original.state_dict().items()}
    weights = seeded_weights(shapes)
    original.load_state_dict(weights, strict=True)
    images = seeded_images(BATCH, size)
    grid = size // 16
    with torch.no_grad():
        _, indices, _ = original.quantize(original.encoder((images + 1) / 2))  # PretrainedTokenizer.encode
        tokens = indices.reshape(BATCH, grid, grid)
        pixels = 2 * original.decoder(original.quantize.get_codebook_entry(tokens)) - 1  # .decode, unclamped
        with tempfile.TemporaryDirectory() as folder:
            path = Path(folder) / "maskgit-vqgan-imagenet-f16-256.bin"
            torch.save(weights, path)
            codec = movq.load(path)
        movq_tokens = codec.encode(images)
        movq_pixels = codec.decode(tokens)
        movq_unclamped = codec.decode(tokens, clamp=False)
    return {
        "family": "maskgit",
        "variant": "MaskGIT VQGAN f16 1024",
        "preset": codec.config.name,
        "recipe": {
            "original": "bytedance/1d-tokenizer modeling/modules/maskgit_vqgan.py Encoder, Decoder, VectorQuantizer(1024, 256) "
                        "at modeling/titok.py PretrainedTokenizer's config; inputs (x + 1) / 2, outputs 2 y - 1",
            "container": "torch.save(state_dict)",
            "weights": "seeded_weights(published shapes, seed)", "weights_seed": WEIGHTS_SEED,
            "inputs": "seeded_images(batch, size, seed)", "inputs_seed": INPUTS_SEED, "batch": BATCH, "size": size,
        },
        "published_keys": len(shapes),
        "published_keys_sha256": keys_digest(shapes),
        "weights_checksum": checksum(weights),
        "inputs_checksum": checksum(images),
        "tokens": tokens.tolist(),
        "pixels": pixel_summary(pixels),
        "parity": parity(movq_tokens, tokens, movq_unclamped, movq_pixels, pixels),
    }


def parity(movq_tokens: Tensor, tokens: Tensor, movq_unclamped: Tensor, movq_pixels: Tensor, pixels: Tensor) -> dict[str, float]:
    """The measured parity: share of equal token ids, largest pixel difference (unclamped, and clamped to [-1, 1])."""
    return {
        "tokens_equal": float((movq_tokens == tokens).double().mean()),
        "max_pixel_difference": float((movq_unclamped - pixels).abs().max()),
        "max_pixel_difference_clamped": float((movq_pixels - pixels.clamp(-1, 1)).abs().max()),
    }


VQGAN_LC_ARGS = {"stage": 1, "embed_dim": 8, "rate_p": 1.0, "quantizer_type": "org", "tuning_codebook": 0,
                 "n_vision_words": 100000, "use_cblinear": 1}
"""VQGAN-LC's README command line for ``training_vqgan.py`` / ``eval_reconstruction.py`` (the
published VQGAN-LC-100K: ``--embed_dim 8 --tuning_codebook 0 --use_cblinear 1 --quantizer_type org``)."""


def _import_vqgan_lc(repo: Path) -> Any:
    """VQGAN-LC's ``VQModel`` (``vqgan-gpt-lc/models/models_vq.py``), imported from its checkout. Its
    LPIPS loads VGG weights from the network: the recorder stands in a module with LPIPS's
    ``scaling_layer`` buffers and ``lin0`` layer, so that the checkpoint still carries
    ``perceptual_loss.*`` keys (and the original ``discriminator.*``), which movq must drop."""
    import types

    class LPIPSStandIn(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.scaling_layer = nn.Module()
            self.scaling_layer.register_buffer("shift", torch.tensor([-0.030, -0.088, -0.188])[None, :, None, None])
            self.scaling_layer.register_buffer("scale", torch.tensor([0.458, 0.448, 0.450])[None, :, None, None])
            self.lin0 = nn.Module()
            self.lin0.model = nn.Sequential(nn.Dropout(), nn.Conv2d(64, 1, 1, bias=False))

    sys.path.insert(0, str(repo / "vqgan-gpt-lc"))
    sys.modules.setdefault("models.lpips", types.SimpleNamespace(LPIPS=LPIPSStandIn))  # type: ignore[arg-type]
    from models.models_vq import VQModel

    return VQModel


def projected_training_probe(original: nn.Module, quantizer: nn.Module) -> dict[str, Any]:
    """VQGAN-LC's quantizer training path: its loss ``mean((sg[q] - z)^2) + 0.33 mean((q - sg[z])^2)``
    plus ``sum(w * z_q)`` on a seeded latent, and the gradients to the latent and to the projection
    (the codebook is frozen), from the original's ``quantize`` and from movq's on the same weights."""
    found = {}
    for name in ("original", "movq"):
        z = training_probe_latent(8).requires_grad_()
        if name == "original":
            original.zero_grad()
            z_q, loss, _ = original.quantize(z)
            projection = original.codebook_projection
        else:
            quantizer.zero_grad()
            out = quantizer(z)
            z_q, loss, projection = out.z_q, out.loss, quantizer.projection
        (loss + (probe_weights(z_q) * z_q).sum()).backward()
        found[name] = (float(loss), z.grad.double(), projection.weight.grad.double(), projection.bias.grad.double())
    (loss, z_grad, w_grad, b_grad), (movq_loss, movq_z_grad, movq_w_grad, movq_b_grad) = found["original"], found["movq"]
    return {
        "probe": "loss + sum(linspace(-1, 1, 8) * z_q) on training_probe_latent(8), the published weights",
        "loss": loss,
        "latent_grad_abs_sum": float(z_grad.abs().sum()),
        "projection_weight_grad_abs_sum": float(w_grad.abs().sum()),
        "projection_bias_grad_abs_sum": float(b_grad.abs().sum()),
        "parity": {
            "loss_difference": abs(loss - movq_loss),
            "max_latent_grad_difference": float((z_grad - movq_z_grad).abs().max()),
            "max_projection_grad_difference": float(max((w_grad - movq_w_grad).abs().max(), (b_grad - movq_b_grad).abs().max())),
        },
    }


def record_vqgan_lc(repo: Path, size: int, codebook_size: int = 100000) -> dict[str, Any]:
    """VQGAN-LC (``vqgan-gpt-lc/models/models_vq.py`` ``VQModel`` at ``vqgan_configs/vq-f16.yaml`` and
    :data:`VQGAN_LC_ARGS`), saved like its ``checkpoint-last.pth`` (``util/misc.py`` ``save_model``:
    ``{"model", "optimizer", "epoch", "scaler", "args"}``, ``args`` an ``argparse.Namespace``). The
    frozen codebook file it reads at construction (``--local_embedding_path``) holds zeros: the
    seeded ``tok_embeddings.weight`` replaces it. Its ``decode_code`` calls a missing
    ``quantize.embedding``: the reference pixels come from encode -> ``F.embedding(ids,
    codebook_projection(tok_embeddings))`` -> ``decode``."""
    import argparse

    import yaml

    import movq

    vq_model = _import_vqgan_lc(repo)
    ddconfig = yaml.safe_load((repo / "vqgan-gpt-lc" / "vqgan_configs" / "vq-f16.yaml").read_text())["model"]["params"]
    torch.manual_seed(0)
    with tempfile.TemporaryDirectory() as folder:
        init = Path(folder) / "codebook.pth"
        torch.save(torch.zeros(codebook_size, 768), init)
        args = argparse.Namespace(**{**VQGAN_LC_ARGS, "n_vision_words": codebook_size, "local_embedding_path": str(init)})
        original = vq_model(args=args, **ddconfig).eval()
    shapes = {k: tuple(v.shape) for k, v in original.state_dict().items()}
    weights = seeded_weights(shapes)
    original.load_state_dict(weights, strict=True)
    images = seeded_images(BATCH, size)
    grid = size // 16
    with torch.no_grad():
        _, _, (_, _, indices) = original.encode(images)
        tokens = indices.reshape(BATCH, grid, grid)
        codes = F.embedding(tokens, original.codebook_projection(original.tok_embeddings.weight))
        pixels = original.decode(codes.permute(0, 3, 1, 2))
        with tempfile.TemporaryDirectory() as folder:
            path = Path(folder) / "checkpoint-last.pth"
            torch.save({"model": weights, "optimizer": {}, "epoch": 19, "scaler": {}, "args": args}, path)
            codec = movq.load(path)
        movq_tokens = codec.encode(images)
        movq_pixels = codec.decode(tokens)
        movq_unclamped = codec.decode(tokens, clamp=False)
    codec_prefixes = ("encoder.", "decoder.", "quant_conv.", "post_quant_conv.", "tok_embeddings.", "codebook_projection.")
    return {
        "family": "vqgan-lc",
        "training": projected_training_probe(original, codec.quantize),
        "variant": f"VQGAN-LC f16 {codebook_size}",
        "preset": codec.config.name,
        "recipe": {
            "original": "zh460045050/VQGAN-LC vqgan-gpt-lc/models/models_vq.py VQModel, vqgan_configs/vq-f16.yaml, "
                        f"args {VQGAN_LC_ARGS} (LPIPS stood in by its scaling_layer and lin0)",
            "container": "torch.save({'model': state_dict, 'optimizer', 'epoch', 'scaler', 'args': argparse.Namespace}); "
                         "state_dict = codec + discriminator.* + perceptual_loss.*",
            "weights": "seeded_weights(published shapes, seed)", "weights_seed": WEIGHTS_SEED,
            "inputs": "seeded_images(batch, size, seed)", "inputs_seed": INPUTS_SEED, "batch": BATCH, "size": size,
            "codebook_size": codebook_size,
        },
        "published_keys": len(shapes),
        "published_keys_sha256": keys_digest(shapes),
        "non_codec_keys": {k: list(v) for k, v in shapes.items() if not k.startswith(codec_prefixes)},
        "weights_checksum": checksum({k: v for k, v in weights.items() if k.startswith(codec_prefixes)}),
        "inputs_checksum": checksum(images),
        "tokens": tokens.tolist(),
        "pixels": pixel_summary(pixels),
        "parity": parity(movq_tokens, tokens, movq_unclamped, movq_pixels, pixels),
    }


VAR_SIZE = 256
"""VAR's VQVAE quantizes a 16 x 16 latent (its last scale): its images are 256 px."""


def var_training_probe(original: nn.Module, quantizer: nn.Module) -> dict[str, Any]:
    """VAR's quantizer training path (``VectorQuantizer2.forward``, "only used in VAE training"): its
    loss ``mean_s [beta mse(sg[f_hat_s], f) + mse(f_hat_s, sg[f])]`` plus ``sum(w * f_hat)`` on a
    seeded ``[2, 32, 16, 16]`` latent, and the gradients to the latent, the codebook and the Phi
    convolutions, from the original's ``quantize`` and from movq's on the same weights. The original
    reads the world size of ``torch.distributed``: a one-process gloo group stands in."""
    import torch.distributed as tdist

    if not tdist.is_initialized():
        with tempfile.NamedTemporaryFile() as store:
            tdist.init_process_group("gloo", init_method=f"file://{store.name}", rank=0, world_size=1)
    found = {}
    for name, module in (("original", original), ("movq", quantizer)):
        module.zero_grad()
        z = torch.randn(2, 32, 16, 16, generator=torch.Generator().manual_seed(INPUTS_SEED + 1)).requires_grad_()
        if name == "original":
            z_q, _, loss = module(z)
            phis = list(module.quant_resi.qresi_ls)
        else:
            out = module(z)
            z_q, loss, phis = out.z_q, out.loss, list(module.quant_resi)
        (loss + (probe_weights(z_q) * z_q).sum()).backward()
        found[name] = (float(loss), z.grad.double(), module.embedding.weight.grad.double(),
                       torch.cat([p.weight.grad.double().flatten() for p in phis]))
    (loss, z_grad, e_grad, p_grad), (m_loss, m_z_grad, m_e_grad, m_p_grad) = found["original"], found["movq"]
    return {
        "probe": "loss + sum(linspace(-1, 1, 32) * z_q) on randn(2, 32, 16, 16) seeded inputs_seed + 1, the published weights",
        "loss": loss,
        "latent_grad_abs_sum": float(z_grad.abs().sum()),
        "codebook_grad_abs_sum": float(e_grad.abs().sum()),
        "phi_grad_abs_sum": float(p_grad.abs().sum()),
        "parity": {
            "loss_difference": abs(loss - m_loss),
            "max_latent_grad_difference": float((z_grad - m_z_grad).abs().max()),
            "max_codebook_grad_difference": float((e_grad - m_e_grad).abs().max()),
            "max_phi_grad_difference": float((p_grad - m_p_grad).abs().max()),
        },
    }


def record_var(repo: Path, size: int = VAR_SIZE) -> dict[str, Any]:
    """VAR's VQVAE (``models/vqvae.py`` ``VQVAE``) at ``models/__init__.py`` ``build_vae_var``'s published
    configuration (``V=4096, Cvae=32, ch=160, share_quant_resi=4``, patch_nums 1..16), saved like the
    published ``vae_ch160v4096z32.pth``: ``torch.save(state_dict)``. Tokens are ``img_to_idxBl`` (one
    ``[B, s * s]`` per scale, compared with movq's ``[B, s, s]`` maps flattened); pixels are
    ``idxBl_to_img(same_shape=True, last_one=True)`` (clamped) and, unclamped, the decoder on
    ``embed_to_fhat`` of the same tokens."""
    sys.path.insert(0, str(repo))
    from models.vqvae import VQVAE  # the original, from its checkout

    import movq

    torch.manual_seed(0)
    original = VQVAE(vocab_size=4096, z_channels=32, ch=160, test_mode=True, share_quant_resi=4,
                     v_patch_nums=(1, 2, 3, 4, 5, 6, 8, 10, 13, 16))
    shapes = {k: tuple(v.shape) for k, v in original.state_dict().items()}
    weights = seeded_weights(shapes)
    original.load_state_dict(weights, strict=True)
    images = seeded_images(BATCH, size)
    with torch.no_grad():
        idx_bl = original.img_to_idxBl(images)
        tokens = torch.cat(idx_bl, dim=1)
        pixels = original.idxBl_to_img(idx_bl, same_shape=True, last_one=True)
        ms_h = [original.quantize.embedding(t).transpose(1, 2).reshape(BATCH, 32, round(t.shape[1] ** 0.5), -1) for t in idx_bl]
        f_hat = original.quantize.embed_to_fhat(ms_h, all_to_max_scale=True, last_one=True)
        unclamped = original.decoder(original.post_quant_conv(f_hat))
        with tempfile.TemporaryDirectory() as folder:
            path = Path(folder) / "vae_ch160v4096z32.pth"
            torch.save(weights, path)
            codec = movq.load(path)
        movq_tokens = codec.flat_tokens(codec.encode(images))
        movq_pixels = codec.decode(idx_bl)
        movq_unclamped = codec.decode(idx_bl, clamp=False)
    for p in original.parameters():
        p.requires_grad_(True)
    training = var_training_probe(original.quantize, codec.quantize)
    measured = parity(movq_tokens, tokens, movq_unclamped, movq_pixels, pixels)
    measured["max_pixel_difference"] = float((movq_unclamped - unclamped).abs().max())
    return {
        "family": "var",
        "training": training,
        "variant": "VAR VQVAE ch160 V4096 z32",
        "preset": codec.config.name,
        "recipe": {
            "original": "FoundationVision/VAR models/vqvae.py VQVAE(vocab_size=4096, z_channels=32, ch=160, "
                        "share_quant_resi=4, v_patch_nums=(1, 2, 3, 4, 5, 6, 8, 10, 13, 16)) (build_vae_var's)",
            "container": "torch.save(state_dict)",
            "weights": "seeded_weights(published shapes, seed)", "weights_seed": WEIGHTS_SEED,
            "inputs": "seeded_images(batch, size, seed)", "inputs_seed": INPUTS_SEED, "batch": BATCH, "size": size,
        },
        "published_keys": len(shapes),
        "published_keys_sha256": keys_digest(shapes),
        "weights_checksum": checksum(weights),
        "inputs_checksum": checksum(images),
        "scales": [1, 2, 3, 4, 5, 6, 8, 10, 13, 16],
        "tokens": tokens.tolist(),
        "pixels": pixel_summary(unclamped),
        "pixels_clamped_equal_unclamped": bool(torch.equal(pixels, unclamped.clamp(-1, 1))),
        "parity": measured,
    }


# ------------------------------------------------------------------ Open-MAGVIT2 and SimVQ (issue #21)


def _lightning_stand_ins(loss: Callable[[], nn.Module]) -> None:
    """Stand-ins for what SEED-Voken's Open-MAGVIT2 and SimVQ modules import but the codec never uses:
    Lightning's module base (``nn.Module``) and the repository's ``main.instantiate_from_config``,
    which builds ``loss()`` for a loss config (LPIPS needs downloaded VGG weights) and the class named
    by ``target`` otherwise (SimVQ's quantizer)."""
    import importlib
    import types

    def instantiate(config: Mapping[str, Any]) -> Any:
        target = config.get("target", "") if config else ""
        if not target or ".losses." in target:
            return loss()
        module, name = target.rsplit(".", 1)
        return getattr(importlib.import_module(module), name)(**config.get("params", {}))

    for name in ("lightning", "pytorch_lightning"):
        sys.modules.setdefault(name, types.SimpleNamespace(LightningModule=nn.Module))  # type: ignore[arg-type]
    sys.modules["main"] = types.SimpleNamespace(instantiate_from_config=instantiate)  # type: ignore[assignment]


def _discriminator_stand_in(discriminator_class: type) -> Callable[[], nn.Module]:
    """A loss module holding only the original's PatchGAN ``discriminator`` (so the checkpoint carries
    ``loss.discriminator.*`` keys and LitEma's shadows of them, as the published ones do)."""

    def build() -> nn.Module:
        loss = nn.Module()
        loss.discriminator = discriminator_class(input_nc=3, n_layers=3, ndf=64)
        return loss

    return build


def _lightning_checkpoint(weights: Mapping[str, Tensor], path: Path) -> None:
    """``weights`` saved as a Lightning checkpoint (what SEED-Voken's and SimVQ's ``ModelCheckpoint`` write)."""
    torch.save({"epoch": 0, "global_step": 0, "pytorch-lightning_version": "2.2.1", "state_dict": dict(weights),
                "optimizer_states": [], "lr_schedulers": []}, path)


OPEN_MAGVIT2_DDCONFIG = {"double_z": False, "z_channels": 18, "resolution": 128, "in_channels": 3, "out_ch": 3,
                         "ch": 128, "ch_mult": [1, 1, 2, 2, 4], "num_res_blocks": 4}
"""``configs/Open-MAGVIT2/gpu/imagenet_lfqgan_256_L.yaml``'s ``ddconfig`` (the 128 px model: ``ch_mult`` [1, 2, 2, 4])."""


def record_open_magvit2(repo: Path, ch_mult: list[int], size: int) -> dict[str, Any]:
    """Open-MAGVIT2 (``src/Open_MAGVIT2/models/lfqgan.py`` ``VQModel``) at
    ``configs/Open-MAGVIT2/gpu/imagenet_lfqgan_{256,128}_L.yaml`` (``n_embed`` 2^18, ``embed_dim`` 18,
    ``use_ema``), saved like the published ``imagenet_256_L.ckpt``: a Lightning checkpoint whose
    ``state_dict`` holds the codec, the loss's discriminator and LitEma's shadows. The reference is
    the EMA model; its pixels come from encode -> ``quantize.get_codebook_entry`` -> decode (its
    ``decode_code`` calls a missing ``embed_code``)."""
    import movq

    sys.path.insert(0, str(repo))
    from src.Open_MAGVIT2.modules.discriminator.model import NLayerDiscriminator

    _lightning_stand_ins(_discriminator_stand_in(NLayerDiscriminator))
    from src.Open_MAGVIT2.models.lfqgan import VQModel

    torch.manual_seed(0)
    ddconfig = {**OPEN_MAGVIT2_DDCONFIG, "ch_mult": ch_mult}
    original = VQModel(ddconfig=ddconfig, lossconfig={}, n_embed=2**18, embed_dim=18, sample_minimization_weight=1.0,
                       batch_maximization_weight=1.0, use_ema=True).eval()
    shapes = {k: tuple(v.shape) for k, v in original.state_dict().items()}
    weights = seeded_weights(shapes)
    original.load_state_dict(weights, strict=True)
    original.model_ema.copy_to(original)  # what ema_scope() does: the EMA weights in place
    codec_keys = {k for k in shapes if k.startswith(("encoder.", "decoder.", "quantize."))}
    shadows = {"model_ema." + k.replace(".", "") for k in codec_keys}
    images = seeded_images(BATCH, size)
    grid = size // 2 ** (len(ch_mult) - 1)
    with torch.no_grad():
        _, _, indices, _ = original.encode(images)
        tokens = indices.reshape(BATCH, grid, grid)
        codes = original.quantize.get_codebook_entry(tokens.reshape(BATCH, -1), (BATCH, grid, grid, 18), None)
        pixels = original.decode(codes)
        with tempfile.TemporaryDirectory() as folder:
            path = Path(folder) / ("imagenet_256_L.ckpt" if len(ch_mult) == 5 else "imagenet_128_L.ckpt")
            _lightning_checkpoint(weights, path)
            codec = movq.load(path)
        movq_tokens = codec.encode(images)
        movq_pixels = codec.decode(tokens)
        movq_unclamped = codec.decode(tokens, clamp=False)
    variant = "256_L" if len(ch_mult) == 5 else "128_L"
    return {
        "family": "open-magvit2",
        "variant": f"Open-MAGVIT2 imagenet_{variant}",
        "preset": codec.config.name,
        "recipe": {
            "original": "TencentARC/SEED-Voken src/Open_MAGVIT2/models/lfqgan.py VQModel, "
                        f"configs/Open-MAGVIT2/gpu/imagenet_lfqgan_{variant}.yaml (Lightning stood in by nn.Module, "
                        "the loss by its discriminator)",
            "container": "Lightning checkpoint: {'epoch', 'global_step', 'pytorch-lightning_version', 'state_dict', "
                         "'optimizer_states', 'lr_schedulers'}; state_dict = codec + loss.discriminator.* + model_ema.*",
            "weights": "seeded_weights(published shapes, seed); the reference runs on the model_ema.* shadows",
            "weights_seed": WEIGHTS_SEED, "ch_mult": ch_mult,
            "inputs": "seeded_images(batch, size, seed)", "inputs_seed": INPUTS_SEED, "batch": BATCH, "size": size,
        },
        "published_keys": len(shapes),
        "published_keys_sha256": keys_digest(shapes),
        "non_codec_keys": {k: list(v) for k, v in shapes.items() if k not in codec_keys and k not in shadows},
        "weights_checksum": checksum({k: v for k, v in weights.items() if k in shadows}),
        "inputs_checksum": checksum(images),
        "tokens": tokens.tolist(),
        "pixels": pixel_summary(pixels),
        "parity": parity(movq_tokens, tokens, movq_unclamped, movq_pixels, pixels),
    }


SIMVQ_DDCONFIG = {"double_z": False, "z_channels": 128, "resolution": 128, "in_channels": 3, "out_ch": 3, "ch": 128,
                  "ch_mult": [1, 2, 2, 4], "num_res_blocks": 2}
"""``configs/imagenet_simvq_128_B.yaml``'s ``ddconfig``; its ``quantconfig``: ``SimVQ(n_e=1024, e_dim=128,
beta=0.25, legacy=False)``."""


def simvq_training_probe(original: nn.Module, quantizer: nn.Module) -> dict[str, Any]:
    """SimVQ's quantizer training path: its commitment loss ``0.25 mean((sg[q] - z)^2) + mean((q -
    sg[z])^2)`` plus ``sum(w * z_q)`` on a seeded latent, and the gradients to the latent and to
    ``embedding_proj`` (the codebook is frozen), from the original and from movq on the same weights."""
    found = {}
    for name, module in (("original", original), ("movq", quantizer)):
        module.zero_grad()
        z = training_probe_latent(module.embedding.weight.shape[1]).requires_grad_()
        if name == "original":
            (z_q, _, _), breakdown = module(z)
            loss = breakdown.commitment
        else:
            out = module(z)
            z_q, loss = out.z_q, out.loss
        (loss + (probe_weights(z_q) * z_q).sum()).backward()
        proj = module.embedding_proj
        found[name] = (float(loss.detach()), z.grad.double(), proj.weight.grad.double(), proj.bias.grad.double())
    (loss, z_grad, w_grad, b_grad), (movq_loss, movq_z_grad, movq_w_grad, movq_b_grad) = found["original"], found["movq"]
    return {
        "probe": "loss + sum(linspace(-1, 1, 128) * z_q) on training_probe_latent(128), the published weights",
        "loss": loss,
        "latent_grad_abs_sum": float(z_grad.abs().sum()),
        "projection_weight_grad_abs_sum": float(w_grad.abs().sum()),
        "parity": {
            "loss_difference": abs(loss - movq_loss),
            "max_latent_grad_difference": float((z_grad - movq_z_grad).abs().max()),
            "max_projection_grad_difference": float(max((w_grad - movq_w_grad).abs().max(), (b_grad - movq_b_grad).abs().max())),
        },
    }


def record_simvq(repo: Path, size: int) -> dict[str, Any]:
    """SimVQ (``taming/models/vq.py`` ``VQModel`` at ``configs/imagenet_simvq_128_B.yaml``, ``use_ema``),
    saved as its Lightning ``ModelCheckpoint`` writes it (codec + ``loss.discriminator.*`` +
    LitEma's shadows of the trainable weights: the frozen codebook has none). The reference is the
    EMA model; its pixels are what its own encode hands the decoder: ``F.embedding(ids,
    embedding_proj(embedding.weight))`` (its ``get_codebook_entry`` skips the projection)."""
    import movq

    sys.path.insert(0, str(repo))
    from taming.modules.discriminator.model import NLayerDiscriminator

    _lightning_stand_ins(_discriminator_stand_in(NLayerDiscriminator))
    from taming.models.vq import VQModel

    torch.manual_seed(0)
    quantconfig = {"target": "taming.modules.vqvae.quantize.SimVQ",
                   "params": {"n_e": 1024, "e_dim": 128, "beta": 0.25, "legacy": False}}
    original = VQModel(ddconfig=SIMVQ_DDCONFIG, lossconfig={}, quantconfig=quantconfig, use_ema=True).eval()
    shapes = {k: tuple(v.shape) for k, v in original.state_dict().items()}
    weights = seeded_weights(shapes)
    original.load_state_dict(weights, strict=True)
    original.model_ema.copy_to(original)
    codec_keys = {k for k in shapes if k.startswith(("encoder.", "decoder.", "quantize."))}
    shadows = {"model_ema." + k.replace(".", "") for k in codec_keys}
    read = (shadows & set(shapes)) | {"quantize.embedding.weight"}  # what movq reads: the shadows, the frozen codebook
    images = seeded_images(BATCH, size)
    grid = size // 8
    with torch.no_grad():
        _, _, indices, _ = original.encode(images)
        tokens = indices.reshape(BATCH, grid, grid)
        quantize = original.quantize
        codes = F.embedding(tokens, quantize.embedding_proj(quantize.embedding.weight))
        pixels = original.decode(codes.permute(0, 3, 1, 2))
        with tempfile.TemporaryDirectory() as folder:
            path = Path(folder) / "epoch=49-step=1000000.ckpt"
            _lightning_checkpoint(weights, path)
            codec = movq.load(path)
        movq_tokens = codec.encode(images)
        movq_pixels = codec.decode(tokens)
        movq_unclamped = codec.decode(tokens, clamp=False)
    return {
        "family": "simvq",
        "training": simvq_training_probe(original.quantize, codec.quantize),
        "variant": "SimVQ imagenet 128 B, 1024 codes",
        "preset": codec.config.name,
        "recipe": {
            "original": "youngsheen/SimVQ taming/models/vq.py VQModel, configs/imagenet_simvq_128_B.yaml "
                        "(Lightning stood in by nn.Module, the loss by its discriminator)",
            "container": "Lightning checkpoint: {'epoch', 'global_step', 'pytorch-lightning_version', 'state_dict', "
                         "'optimizer_states', 'lr_schedulers'}; state_dict = codec + loss.discriminator.* + model_ema.*",
            "weights": "seeded_weights(published shapes, seed); the reference runs on the model_ema.* shadows and "
                       "the frozen codebook (LitEma shadows trainable weights only); weights_checksum covers those",
            "weights_seed": WEIGHTS_SEED,
            "inputs": "seeded_images(batch, size, seed)", "inputs_seed": INPUTS_SEED, "batch": BATCH, "size": size,
        },
        "published_keys": len(shapes),
        "published_keys_sha256": keys_digest(shapes),
        "non_codec_keys": {k: list(v) for k, v in shapes.items() if k not in codec_keys and k not in shadows},
        "weights_checksum": checksum({k: v for k, v in weights.items() if k in read}),
        "inputs_checksum": checksum(images),
        "tokens": tokens.tolist(),
        "pixels": pixel_summary(pixels),
        "parity": parity(movq_tokens, tokens, movq_unclamped, movq_pixels, pixels),
    }


RECORDERS: dict[str, tuple[str, Callable[[Path], dict[str, Any]]]] = {
    "llamagen-vq16": ("llamagen", lambda repo: record_llamagen(repo, "VQ-16", 64)),
    "llamagen-vq8": ("llamagen", lambda repo: record_llamagen(repo, "VQ-8", 64)),
    "ibq-1024": ("seed_voken", lambda repo: record_ibq(repo, 1024, 64)),
    "maskgit-vqgan": ("one_d_tokenizer", lambda repo: record_maskgit(repo, 64)),
    "vqgan-lc-100k": ("vqgan_lc", lambda repo: record_vqgan_lc(repo, 64)),
    "var-vqvae": ("var", lambda repo: record_var(repo)),
    "open-magvit2-256": ("seed_voken", lambda repo: record_open_magvit2(repo, [1, 1, 2, 2, 4], 64)),
    "open-magvit2-128": ("seed_voken", lambda repo: record_open_magvit2(repo, [1, 2, 2, 4], 64)),
    "simvq-1024": ("simvq", lambda repo: record_simvq(repo, 64)),
}
"""Family fixture name -> (the option naming its repository checkout, recorder(checkout) -> fixture)."""


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--llamagen", type=Path, help="checkout of github.com/FoundationVision/LlamaGen")
    parser.add_argument("--seed-voken", type=Path, help="checkout of github.com/TencentARC/SEED-Voken (IBQ, Open-MAGVIT2)")
    parser.add_argument("--one-d-tokenizer", type=Path, help="checkout of github.com/bytedance/1d-tokenizer (MaskGIT VQGAN)")
    parser.add_argument("--vqgan-lc", type=Path, help="checkout of github.com/zh460045050/VQGAN-LC")
    parser.add_argument("--var", type=Path, help="checkout of github.com/FoundationVision/VAR (multi-scale VQVAE)")
    parser.add_argument("--simvq", type=Path, help="checkout of github.com/youngsheen/SimVQ")
    parser.add_argument("--family", choices=sorted(RECORDERS), action="append", help="default: every family whose repo is given")
    parser.add_argument("--out", type=Path, default=FIXTURES)
    args = parser.parse_args(argv)
    families = args.family or [f for f, (repo, _) in RECORDERS.items() if getattr(args, repo) is not None]
    if not families:
        parser.error("give the checkout of at least one original repository (--llamagen, --seed-voken, "
                     "--one-d-tokenizer, --vqgan-lc, --var, --simvq)")
    torch.set_num_threads(max(1, torch.get_num_threads()))
    print("| family | tokens equal | max pixel difference |")
    print("|---|---|---|")
    for family in families:
        repo_option, recorder = RECORDERS[family]
        repo = getattr(args, repo_option)
        if repo is None or not repo.is_dir():
            parser.error(f"--{repo_option} must name a checkout of the original repository for {family}")
        fixture = recorder(repo)
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / f"{family}.json").write_text(json.dumps(fixture, separators=(",", ":")) + "\n")
        parity = fixture["parity"]
        print(f"| {family} | {100 * parity['tokens_equal']:.2f}% | {parity['max_pixel_difference']:.2e} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
