"""Parity of ``movq.load(repo_id, subfolder=...)`` with diffusers' ``VQModel`` for the diffusers
families of issue #20: aMUSEd's VQ (``amused/amused-256``, subfolder ``vqvae``) and CompVis LDM's
VQ-f4 (``CompVis/ldm-celebahq-256``, subfolder ``vqvae``).

The weights cannot be downloaded here, so each reference is diffusers' own ``VQModel`` built at the
published config with seeded random weights spread like trained ones (norm scales around 1, a
codebook drawn from the model's own latents), saved with ``save_pretrained`` into a Hub cache laid
out by hand under a temporary ``HF_HUB_CACHE`` (``models--owner--name/snapshots/<commit>/vqvae/``,
``refs/main``) and loaded by repo id with ``HF_HUB_OFFLINE=1``. Compared: the token ids of the same
images, and the pixels decoded from the reference's tokens, both in movq's ``[-1, 1]`` (aMUSEd's
pipeline feeds ``[0, 1]`` and clips its decode to ``[0, 1]``; LDM's clamps to ``[-1, 1]``).

    python benchmarks/hub_parity.py            # the published configs (a few minutes on one core)
    python benchmarks/hub_parity.py --small    # scaled-down configs, seconds

The tests (``tests/test_hub_repos.py``) run the same functions on scaled-down aMUSEd and the full
LDM VQ-f4 config.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import os
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
from versus import spread_weights  # noqa: E402  (benchmarks/versus.py)

import movq  # noqa: E402

COMMIT = "0123456789abcdef0123456789abcdef01234567"

AMUSED_256_VQVAE = {  # amused/amused-256 vqvae/config.json (diffusers scripts/convert_amused.py)
    "act_fn": "silu", "block_out_channels": [128, 256, 256, 512, 768], "down_block_types": ["DownEncoderBlock2D"] * 5,
    "force_upcast": True, "in_channels": 3, "latent_channels": 64, "layers_per_block": 2,
    "lookup_from_codebook": True, "mid_block_add_attention": False, "norm_num_groups": 32, "norm_type": "group",
    "num_vq_embeddings": 8192, "out_channels": 3, "sample_size": 32, "up_block_types": ["UpDecoderBlock2D"] * 5,
}
LDM_CELEBAHQ_VQVAE = {  # CompVis/ldm-celebahq-256 vqvae: latent-diffusion's vq-f4 (embed_dim 3, n_embed 8192)
    "act_fn": "silu", "block_out_channels": [128, 256, 512], "down_block_types": ["DownEncoderBlock2D"] * 3,
    "in_channels": 3, "latent_channels": 3, "layers_per_block": 2, "num_vq_embeddings": 8192, "out_channels": 3,
    "sample_size": 256, "up_block_types": ["UpDecoderBlock2D"] * 3,
}
LDM_VQ_F8 = {  # latent-diffusion models/first_stage_models/vq-f8 (embed_dim 4, n_embed 16384, attention at 32)
    **LDM_CELEBAHQ_VQVAE, "block_out_channels": [128, 256, 256, 512], "latent_channels": 4, "num_vq_embeddings": 16384,
    "down_block_types": ["DownEncoderBlock2D"] * 3 + ["AttnDownEncoderBlock2D"],
    "up_block_types": ["AttnUpDecoderBlock2D"] + ["UpDecoderBlock2D"] * 3,
}
FAMILIES = {
    "aMUSEd VQ (amused/amused-256, vqvae)": ("amused/amused-256", "vqvae", AMUSED_256_VQVAE, 128),
    "CompVis LDM VQ-f4 (CompVis/ldm-celebahq-256, vqvae)": ("CompVis/ldm-celebahq-256", "vqvae", LDM_CELEBAHQ_VQVAE, 64),
    # no diffusers repo publishes it: the first stage as diffusers' conversion writes it, in a test repo
    "CompVis LDM VQ-f8 (vq-f8 converted to a VQModel)": ("test/ldm-vq-f8", "vqvae", LDM_VQ_F8, 64),
}
SMALL_CODES = 512
"""``--small``: block widths / 4 and this many codes."""


def hub_snapshot(root: Path, repo_id: str, files: dict[str, Path], commit: str = COMMIT,
                 refs: tuple[str, ...] = ("main",)) -> Path:
    """Lay out one snapshot of the model repo ``repo_id`` in the Hub cache ``root`` by hand, as
    ``huggingface_hub`` does: ``models--owner--name/snapshots/<commit>/<path>`` (links to ``files``'
    sources, keyed by the path in the repo) and ``refs/<ref>`` holding ``commit``. Returns the snapshot."""
    repo = root / f"models--{repo_id.replace('/', '--')}"
    (repo / "refs").mkdir(parents=True, exist_ok=True)
    for ref in refs:
        (repo / "refs" / ref).write_text(commit)
    snapshot = repo / "snapshots" / commit
    snapshot.mkdir(parents=True, exist_ok=True)
    for name, source in files.items():
        target = snapshot / name
        target.parent.mkdir(parents=True, exist_ok=True)
        target.symlink_to(Path(source).resolve())
    return snapshot


@contextlib.contextmanager
def offline_hub_cache(root: Path) -> Iterator[None]:
    """``HF_HUB_CACHE=root`` and ``HF_HUB_OFFLINE=1`` (the variables and ``huggingface_hub.constants``)
    for the duration; everything restored afterwards."""
    from huggingface_hub import constants

    saved_env = {k: os.environ.get(k) for k in ("HF_HUB_CACHE", "HF_HUB_OFFLINE")}
    saved = (constants.HF_HUB_CACHE, constants.HF_HUB_OFFLINE)
    os.environ.update(HF_HUB_CACHE=str(root), HF_HUB_OFFLINE="1")
    constants.HF_HUB_CACHE, constants.HF_HUB_OFFLINE = str(root), True
    try:
        yield
    finally:
        constants.HF_HUB_CACHE, constants.HF_HUB_OFFLINE = saved
        for key, value in saved_env.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def _input_range_01(model: nn.Module) -> bool:
    """aMUSEd's VQ (``lookup_from_codebook``) takes and gives pixels in ``[0, 1]``."""
    return bool(model.config.lookup_from_codebook)


def reference_vqmodel(config: dict, seed: int) -> nn.Module:
    """diffusers' ``VQModel(**config)`` with seeded spread weights: norm scales around 1, a codebook
    of latents the model gives for random images (plus noise), and an output scaled to a spread of
    about 0.25 around the middle of its pixel range (so that clipping rarely hides a difference)."""
    from diffusers import VQModel

    torch.manual_seed(seed)
    model = spread_weights(VQModel(**config), seed)
    gen = torch.Generator().manual_seed(seed)
    probe = torch.rand(2, 3, 64, 64, generator=gen)
    if not _input_range_01(model):
        probe = probe * 2 - 1
    with torch.no_grad():
        latents = model.encode(probe).latents.permute(0, 2, 3, 1).reshape(-1, model.config.vq_embed_dim or model.config.latent_channels)
        codebook = model.quantize.embedding.weight
        picks = latents[torch.randint(len(latents), (codebook.shape[0],), generator=gen)]
        codebook.copy_(picks + 0.3 * latents.std() * torch.randn(codebook.shape, generator=gen))
        out = model.decode(model.encode(probe).latents).sample
        model.decoder.conv_out.weight.mul_(0.25 / out.std())
        model.decoder.conv_out.bias.mul_(0.25 / out.std())
        if _input_range_01(model):
            model.decoder.conv_out.bias.add_(0.5)
    return model.eval()


@dataclass
class Parity:
    """The codec ``movq.load`` returned and how it compares with the reference."""

    codec: movq.Codec
    tokens_equal: float  # fraction of positions with the same token id
    distinct_tokens: int  # distinct ids in the reference's tokens (a degenerate reference has few)
    max_pixel_diff: float  # max |movq - reference| over the decoded pixels, in [-1, 1] units
    positions: int
    worst_tie_gap: float  # over differing ids: max relative gap of their squared distances (float64)


def tie_gap(model: nn.Module, x: torch.Tensor, ref_tokens: torch.Tensor, tokens: torch.Tensor) -> float:
    """How far from a tie the differing token ids are: over the positions where ``tokens`` differ
    from ``ref_tokens``, the largest ``|d(a) - d(b)| / d(a)`` of the squared distances (in float64)
    from the reference's latent to the two codes (0.0 when no id differs). Values around 1e-6 mean
    the two codes are equally near: float32 rounding, not a different network, chose between them."""
    differ = tokens != ref_tokens
    if not differ.any():
        return 0.0
    with torch.no_grad():
        h = model.encode((x + 1) / 2 if _input_range_01(model) else x).latents.double().permute(0, 2, 3, 1)[differ]
    codebook = model.quantize.embedding.weight.double()
    d_ref = ((h - codebook[ref_tokens[differ]]) ** 2).sum(-1)
    d_ours = ((h - codebook[tokens[differ]]) ** 2).sum(-1)
    return ((d_ours - d_ref).abs() / d_ref).max().item()


def reference_outputs(model: nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The reference's tokens of ``x`` (in ``[-1, 1]``) and its pixels decoded from those tokens,
    clipped to its range as its pipeline does, in ``[-1, 1]``."""
    to_01 = _input_range_01(model)
    with torch.no_grad():
        h = model.encode((x + 1) / 2 if to_01 else x).latents
        _, _, (_, _, indices) = model.quantize(h)
        batch, _, height, width = h.shape
        shape = (batch, height, width, h.shape[1])
        if to_01:  # aMUSEd: decode looks the ids up in the codebook (lookup_from_codebook), clip(0, 1)
            pixels = model.decode(indices, force_not_quantize=True, shape=shape).sample.clip(0, 1) * 2 - 1
        else:
            codes = model.quantize.get_codebook_entry(indices, shape)
            pixels = model.decode(codes, force_not_quantize=True).sample.clamp(-1, 1)
    return indices.reshape(batch, height, width), pixels


def hub_parity(model: nn.Module, repo_id: str, subfolder: str, root: Path, *, size: int = 64, batch: int = 2,
               monkeypatch: object = None) -> Parity:
    """Save ``model`` with diffusers' ``save_pretrained`` as ``repo_id/subfolder`` (next to an
    unrelated ``model_index.json``) in a Hub cache under ``root``, load it offline with
    ``movq.load(repo_id, subfolder=subfolder)`` and compare on ``batch`` random images of
    ``size x size``. (``monkeypatch`` is accepted for pytest callers; the environment is restored
    either way.)"""
    export = root / "export"
    model.save_pretrained(export, safe_serialization=True)
    (root / "model_index.json").write_text('{"_class_name": "SomePipeline"}')
    files = {f"{subfolder}/{p.name}": p for p in export.iterdir()}
    hub_snapshot(root / "cache", repo_id, {**files, "model_index.json": root / "model_index.json"})
    with offline_hub_cache(root / "cache"):
        codec = movq.load(repo_id, subfolder=subfolder)
    x = torch.rand(batch, 3, size, size, generator=torch.Generator().manual_seed(size)) * 2 - 1
    ref_tokens, ref_pixels = reference_outputs(model, x)
    tokens = codec.encode(x)
    pixels = codec.decode(ref_tokens)
    return Parity(
        codec=codec,
        tokens_equal=(tokens == ref_tokens).float().mean().item(),
        distinct_tokens=ref_tokens.unique().numel(),
        max_pixel_diff=(pixels - ref_pixels).abs().max().item(),
        positions=ref_tokens.numel(),
        worst_tie_gap=tie_gap(model, x, ref_tokens, tokens),
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--small", action="store_true", help="scaled-down configs (widths / 4, 512 codes)")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--family", help="only the families whose label starts with this (amused, compvis)")
    parser.add_argument("--size", type=int, help="image side in pixels (default: 128 for aMUSEd, 64 for LDM)")
    parser.add_argument("--batch", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print("| family | config | positions | tokens equal | distinct ids | differing ids: distance gap | max pixel diff ([-1, 1]) |")
    print("|---|---|---|---|---|---|---|")
    for seed, (family, (repo_id, subfolder, config, size)) in enumerate(FAMILIES.items(), 1):
        if args.family and not family.lower().startswith(args.family.lower()):
            continue
        size = args.size or size
        if args.small:
            config = {**copy.deepcopy(config), "block_out_channels": [c // 4 for c in config["block_out_channels"]],
                      "num_vq_embeddings": SMALL_CODES}
        model = reference_vqmodel(config, seed)
        with tempfile.TemporaryDirectory() as tmp:
            result = hub_parity(model, repo_id, subfolder, Path(tmp), size=size, batch=args.batch)
        label = "scaled down" if args.small else "published"
        gap = f"{result.worst_tie_gap:.1e}" if result.tokens_equal < 1 else "-"
        print(f"| {family} | {label} | {result.positions} | {100 * result.tokens_equal:.2f}% | "
              f"{result.distinct_tokens} | {gap} | {result.max_pixel_diff:.2e} |")


if __name__ == "__main__":
    main()
