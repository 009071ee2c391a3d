"""The registry of published codecs: one :class:`ModelSpec` per name, and :func:`list_models`.

A spec says where the weights live (a Hugging Face Hub repo + file, a plain URL, or a folder
shipped inside the package), which architecture they need (a preset name, or ``None`` when the
source carries its own config) and in which key format they are stored.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from movq.hub.formats import (
    DALLE,
    DIFFUSERS,
    FORMATS,
    LIGHTNING,
    LLAMAGEN,
    MAGVIT2,
    MASKGIT,
    MOVQ,
    ORIGINAL,
    VAR,
    VQGAN_LC,
)
from movq.strict import unknown_name_error

PACKAGE_WEIGHTS = Path(__file__).resolve().parent.parent / "weights"
"""Folder of weights shipped inside the package (``src/movq/weights``)."""


@dataclass(frozen=True)
class PublishedFigures:
    """A model's ImageNet reconstruction figures *as its authors published them* (not measured by
    movq): ``rfid`` and ``psnr`` (``None`` where the authors give none), ``tokens`` per image (e.g.
    ``"16x16"``) at ``resolution`` pixels, ``codebook_size``, and ``source``, where they are stated.
    ``cited_by`` names the paper or page the figure was read from when the authors' own publication
    could not be checked here (the line then says so)."""

    tokens: str
    codebook_size: int
    source: str
    rfid: float | None = None
    psnr: float | None = None
    resolution: int = 256
    cited_by: str | None = None

    def describe(self) -> str:
        """One line: ``"authors' figures (source): ImageNet 256px, rFID 2.19, PSNR not published, ..."``."""

        def shown(value: float | None) -> str:
            return "not stated" if value is None else f"{value:.2f}"

        source = self.source if self.cited_by is None else f"{self.source}, as cited by {self.cited_by}"
        return (
            f"authors' figures ({source}): ImageNet {self.resolution}px, rFID {shown(self.rfid)}, "
            f"PSNR {shown(self.psnr)}, {self.tokens} tokens, {self.codebook_size} codes"
        )


@dataclass(frozen=True)
class ModelSpec:
    """Where a published codec lives and how to read it.

    - ``source``: ``"hub"`` (``repo_id`` / ``filenames`` / ``subfolder`` at ``revision``), ``"url"``
      (``urls``, one per file of ``filenames``, cached under the Hub cache), ``"package"``
      (``package_dir`` inside ``movq/weights``), or ``"manual"`` (published where no program can
      fetch it, e.g. a Google Drive folder at ``urls[0]``: ``movq.load(name)`` says where to get
      ``filenames[0]`` and to load it by path; ``pretrained=False`` builds the architecture).
    - ``format``: a name of :data:`movq.hub.formats.FORMATS`.
    - ``filenames``: the files to fetch, in order (DALL·E: encoder then decoder; diffusers: config
      then weights). Empty for a ``"hub"`` folder format: the (sub)folder is then read as
      ``movq.load(repo_id, subfolder=...)`` reads it, with whichever weight file it holds (a diffusers
      folder's ``.safetensors`` or ``.bin``).
    - ``preset``: the :mod:`movq.config` preset the weights need (``None``: the source carries its
      own architecture: a ``config.json``, or DALL·E's pickled modules).
    - ``size``: parameter count of that architecture (``"67.8M"``, checked by the tests);
      ``description``: one line for :func:`list_models`.
    - ``published``: the authors' own ImageNet figures (:class:`PublishedFigures`), when they give them;
      ``unpublished``: why there are none (e.g. not trained on ImageNet), shown instead.
    """

    name: str
    source: Literal["hub", "url", "package", "manual"]
    format: str
    description: str
    size: str
    preset: str | None = None
    repo_id: str | None = None
    filenames: tuple[str, ...] = ()
    subfolder: str | None = None
    revision: str = "main"
    urls: tuple[str, ...] = ()
    package_dir: str | None = None
    published: PublishedFigures | None = None
    unpublished: str = ""

    def __post_init__(self) -> None:
        if self.format not in FORMATS:
            raise ValueError(f"model {self.name!r}: unknown format {self.format!r}; expected one of {tuple(FORMATS)}")

    @property
    def location(self) -> str:
        """Human-readable origin: ``hf://repo/subfolder/file@revision``, the URL, or the folder."""
        if self.source == "hub":
            parts = [self.repo_id or "", self.subfolder or "", self.filenames[0] if len(self.filenames) == 1 else ""]
            return "hf://" + "/".join(p for p in parts if p) + f"@{self.revision}"
        if self.source in ("url", "manual"):
            return ", ".join(self.urls)
        return str(PACKAGE_WEIGHTS / (self.package_dir or self.name))


_MOVQGAN = "ai-forever/MoVQGAN"
_LLAMAGEN_README = "LlamaGen README, github.com/FoundationVision/LlamaGen"
_IBQ_DOCS = "SEED-Voken docs/IBQ.md, github.com/TencentARC/SEED-Voken"
_OPTVQ_README = "OptVQ's README, github.com/zbr17/OptVQ"
_NOT_IMAGENET = "no ImageNet figures published: trained on {}"
_MAGVIT2_DOCS = "SEED-Voken docs/Open-MAGVIT2.md, github.com/TencentARC/SEED-Voken"
_TAMING = "https://heibox.uni-heidelberg.de/d/{}/files/?p=%2Fckpts%2Flast.ckpt&dl=1"

REGISTRY: dict[str, ModelSpec] = {
    spec.name: spec
    for spec in (
        ModelSpec(
            "sber-movqgan-67m", "hub", ORIGINAL,
            "SBER-MoVQGAN 67M, f=8, 16384 codes, LAION HighRes 256px (Kandinsky 2.1's codec)",
            "67.8M", preset="movqgan-67m", repo_id=_MOVQGAN, filenames=("movqgan_67M.ckpt",),
        ),
        ModelSpec(
            "sber-movqgan-102m", "hub", ORIGINAL,
            "SBER-MoVQGAN 102M, f=8, 16384 codes, 4 res blocks per level",
            "101.6M", preset="movqgan-102m", repo_id=_MOVQGAN, filenames=("movqgan_102M.ckpt",),
        ),
        ModelSpec(
            "sber-movqgan-270m", "hub", ORIGINAL,
            "SBER-MoVQGAN 270M, f=8, 16384 codes, 2x channels",
            "270.7M", preset="movqgan-270m", repo_id=_MOVQGAN, filenames=("movqgan_270M.ckpt",),
        ),
        ModelSpec(
            "kandinsky-2.2-movq", "hub", DIFFUSERS,
            "Kandinsky 2.2 decoder's MoVQ (diffusers VQModel, spatial norm, f=8, 16384 codes)",
            "67.8M", repo_id="kandinsky-community/kandinsky-2-2-decoder",
            filenames=("config.json", "diffusion_pytorch_model.safetensors"), subfolder="movq",
        ),
        ModelSpec(
            "sber-vqgan", "hub", LIGHTNING,
            "SBER-VQGAN: taming gumbel f8 fine-tuned by Sber (ruDALL-E), 8192 codes",
            "69.0M", preset="vqgan-gumbel-f8-8192", repo_id="shonenkov/rudalle-utils",
            filenames=("vqgan.gumbelf8-sber.model.ckpt",),
        ),
        ModelSpec(
            "vqgan-imagenet-f16-16384", "url", LIGHTNING,
            "taming-transformers VQGAN, ImageNet, f=16, 16384 codes",
            "76.1M", preset="vqgan-f16-16384", filenames=("vqgan_imagenet_f16_16384.ckpt",),
            urls=(_TAMING.format("a7530b09fed84f80a887"),),
        ),
        ModelSpec(
            "vqgan-gumbel-f8-openimages", "url", LIGHTNING,
            "taming-transformers VQGAN, Open Images, f=8, 8192 codes, Gumbel quantizer",
            "69.0M", preset="vqgan-gumbel-f8-8192", filenames=("vqgan_gumbel_f8_8192.ckpt",),
            urls=(_TAMING.format("2e5662443a6b4307b470"),),
        ),
        ModelSpec(
            "dalle-dvae", "url", DALLE,
            "OpenAI DALL-E dVAE, f=8, 8192 codes (Gumbel-trained), logit-Laplace decoder",
            "97.6M", filenames=("encoder.pkl", "decoder.pkl"),
            urls=("https://cdn.openai.com/dall-e/encoder.pkl", "https://cdn.openai.com/dall-e/decoder.pkl"),
        ),
        ModelSpec(
            "llamagen-vq16-c2i", "hub", LLAMAGEN,
            "LlamaGen VQ-16 (class-conditional ImageNet tokenizer), f=16, 16384 l2-normalised 8-dim codes",
            "71.9M", preset="llamagen-vq16", repo_id="FoundationVision/LlamaGen", filenames=("vq_ds16_c2i.pt",),
            published=PublishedFigures("16x16", 16384, _LLAMAGEN_README, rfid=2.19),
        ),
        ModelSpec(
            "llamagen-vq8-c2i", "hub", LLAMAGEN,
            "LlamaGen VQ-8 (class-conditional ImageNet tokenizer), f=8, 16384 l2-normalised 8-dim codes",
            "70.1M", preset="llamagen-vq8", repo_id="FoundationVision/LlamaGen", filenames=("vq_ds8_c2i.pt",),
            published=PublishedFigures("32x32", 16384, _LLAMAGEN_README, rfid=0.59),
        ),
        ModelSpec(
            "llamagen-vq16-t2i", "hub", LLAMAGEN,
            "LlamaGen VQ-16 (text-to-image tokenizer, LAION-COCO + internal data), f=16, 16384 l2-normalised codes",
            "71.9M", preset="llamagen-vq16", repo_id="peizesun/llamagen_t2i", filenames=("vq_ds16_t2i.pt",),
        ),
        ModelSpec(
            "ibq-1024", "hub", LIGHTNING,
            "IBQ tokenizer (index backpropagation quantization), ImageNet, f=16, 1024 codes, EMA weights",
            "107.0M", preset="ibq-f16-1024", repo_id="TencentARC/IBQ-Tokenizer-1024", filenames=("imagenet256_1024.ckpt",),
            published=PublishedFigures("16x16", 1024, _IBQ_DOCS, rfid=2.24),
        ),
        ModelSpec(
            "ibq-8192", "hub", LIGHTNING,
            "IBQ tokenizer (index backpropagation quantization), ImageNet, f=16, 8192 codes, EMA weights",
            "108.9M", preset="ibq-f16-8192", repo_id="TencentARC/IBQ-Tokenizer-8192", filenames=("imagenet256_8192.ckpt",),
            published=PublishedFigures("16x16", 8192, _IBQ_DOCS, rfid=1.87),
        ),
        ModelSpec(
            "ibq-16384", "hub", LIGHTNING,
            "IBQ tokenizer (index backpropagation quantization), ImageNet, f=16, 16384 codes, EMA weights",
            "111.0M", preset="ibq-f16-16384", repo_id="TencentARC/IBQ-Tokenizer-16384", filenames=("imagenet256_16384.ckpt",),
            published=PublishedFigures("16x16", 16384, _IBQ_DOCS, rfid=1.37),
        ),
        ModelSpec(
            "ibq-262144", "hub", LIGHTNING,
            "IBQ tokenizer (index backpropagation quantization), ImageNet, f=16, 262144 codes, EMA weights",
            "173.9M", preset="ibq-f16-262144", repo_id="TencentARC/IBQ-Tokenizer-262144", filenames=("imagenet256_262144.ckpt",),
            published=PublishedFigures("16x16", 262144, _IBQ_DOCS, rfid=1.0),
        ),
        ModelSpec(
            "ibq-16384-pretrain", "hub", LIGHTNING,
            "IBQ tokenizer pretrained on 200M web images (text-to-image), f=16, 16384 codes, EMA weights",
            "111.0M", preset="ibq-f16-16384", repo_id="TencentARC/IBQ-Tokenizer-16384-Pretrain",
            filenames=("IBQ_pretrain_16384.ckpt",),
            published=PublishedFigures("16x16", 16384, _IBQ_DOCS, rfid=2.06, psnr=22.01),
        ),
        ModelSpec(
            "ibq-262144-pretrain", "hub", LIGHTNING,
            "IBQ tokenizer pretrained on 200M web images (text-to-image), f=16, 262144 codes, EMA weights",
            "173.9M", preset="ibq-f16-262144", repo_id="TencentARC/IBQ-Tokenizer-262144-Pretrain",
            filenames=("IBQ_pretrain_262144.ckpt",),
            published=PublishedFigures("16x16", 262144, _IBQ_DOCS, rfid=1.53, psnr=22.69),
        ),
        ModelSpec(
            "open-magvit2-256", "hub", MAGVIT2,
            "Open-MAGVIT2 tokenizer, ImageNet 256px, f=16, lookup-free quantization with 2^18 codes, EMA weights",
            "115.1M", preset="open-magvit2-f16-262144", repo_id="TencentARC/Open-MAGVIT2-Tokenizer-256-resolution",
            filenames=("imagenet_256_L.ckpt",),
            published=PublishedFigures("16x16", 262144, _MAGVIT2_DOCS, rfid=1.17, psnr=21.90),
        ),
        ModelSpec(
            "open-magvit2-128", "hub", MAGVIT2,
            "Open-MAGVIT2 tokenizer, ImageNet 128px, f=8, lookup-free quantization with 2^18 codes, EMA weights",
            "112.0M", preset="open-magvit2-f8-262144", repo_id="TencentARC/Open-MAGVIT2-Tokenizer-128-resolution",
            filenames=("imagenet_128_L.ckpt",),
            published=PublishedFigures("16x16", 262144, _MAGVIT2_DOCS, rfid=1.18, psnr=25.08, resolution=128),
        ),
        ModelSpec(
            "open-magvit2-262144-pretrain", "hub", MAGVIT2,
            "Open-MAGVIT2 tokenizer pretrained on 100M web images (text-to-image), f=16, 2^18 codes, EMA weights",
            "115.1M", preset="open-magvit2-f16-262144", repo_id="TencentARC/Open-MAGVIT2-Tokenizer-262144-Pretrain",
            filenames=("pretrain256_262144.ckpt",),
            published=PublishedFigures("16x16", 262144, _MAGVIT2_DOCS, rfid=1.67, psnr=22.70),
        ),
        ModelSpec(
            "maskgit-vqgan-f16-256", "hub", MASKGIT,
            "MaskGIT's VQGAN (PyTorch conversion of google-research/maskgit's ImageNet tokenizer), f=16, "
            "1024 codes, no attention, trained on [0, 1] pixels",
            "54.5M", preset="maskgit-vqgan-f16-1024", repo_id="fun-research/TiTok",
            filenames=("maskgit-vqgan-imagenet-f16-256.bin",),
            published=PublishedFigures("16x16", 1024, "MaskGIT, Chang et al. 2022", rfid=2.28,
                                       cited_by="TiTok (Yu et al. 2024) and " + _OPTVQ_README),
        ),
        ModelSpec(
            "vqgan-lc-100k", "manual", VQGAN_LC,
            "VQGAN-LC (taming VQGAN + a frozen 100,000 x 768 CLIP-feature codebook behind a learned projection "
            "to 8 dims), ImageNet, f=16; published on Google Drive only: download it, then movq.load(path)",
            "71.8M", preset="vqgan-lc-f16-100k", filenames=("vqgan-lc-100K-f16-dim8.pth",),
            urls=("https://drive.google.com/drive/folders/12824gtaR_upGH1DJRNfAjQFiw8c1FmwJ",),
            published=PublishedFigures("16x16", 100000, "VQGAN-LC, Zhu et al. 2024, arXiv:2406.11837", rfid=2.62,
                                       psnr=23.80, cited_by=_OPTVQ_README),
        ),
        ModelSpec(
            "var-vqvae-f16-256", "hub", VAR,
            "VAR's multi-scale VQVAE (FoundationVision/VAR, NeurIPS 2024): f=16, 4096 codes of 32 dims at ten "
            "scales 1..16 (680 tokens per 256 px image, a list of token maps coarse to fine)",
            "108.9M", preset="var-f16-4096", repo_id="FoundationVision/var", filenames=("vae_ch160v4096z32.pth",),
        ),
        ModelSpec(
            "amused-256-vq", "hub", DIFFUSERS,
            "aMUSEd 256's VQ (diffusers VQModel, f=16, 8192 codes, no mid attention, [0, 1] pixels)",
            "146.2M", repo_id="amused/amused-256", filenames=("config.json", "diffusion_pytorch_model.safetensors"),
            subfolder="vqvae", unpublished=_NOT_IMAGENET.format("LAION (aMUSEd, Patil et al. 2024)"),
        ),
        ModelSpec(
            "amused-512-vq", "hub", DIFFUSERS,
            "aMUSEd 512's VQ (diffusers VQModel, f=16, 8192 codes, no mid attention, [0, 1] pixels)",
            "146.2M", repo_id="amused/amused-512", filenames=("config.json", "diffusion_pytorch_model.safetensors"),
            subfolder="vqvae", unpublished=_NOT_IMAGENET.format("LAION (aMUSEd, Patil et al. 2024)"),
        ),
        ModelSpec(
            "ldm-celebahq-256-vq", "hub", DIFFUSERS,
            "CompVis LDM VQ-f4 of the CelebA-HQ 256 latent diffusion model (diffusers VQModel, 8192 codes of 3 dims)",
            "55.3M", repo_id="CompVis/ldm-celebahq-256", subfolder="vqvae",
            unpublished=_NOT_IMAGENET.format("CelebA-HQ (Rombach et al. 2022)"),
        ),
        ModelSpec(
            "movqgan-tiny-photos", "package", MOVQ,
            "small MoVQ (ch_mult 1-2-2-3, EMA codebook of 1024) trained by the movq project on photos, "
            "shipped inside the package",
            "2.1M", package_dir="movqgan-tiny-photos",
        ),
    )
}


def get_spec(name: str) -> ModelSpec:
    """The spec registered as ``name``; ``KeyError`` suggesting the closest names otherwise."""
    try:
        return REGISTRY[name]
    except KeyError:
        raise KeyError(unknown_name_error("model", name, REGISTRY, listing="registered models")) from None


def list_models() -> list[dict[str, str]]:
    """One dict per registered model: ``name``, ``source`` (where the weights come from),
    ``format``, ``size`` (parameters), ``description`` and ``published`` (the authors' own ImageNet
    figures, labelled as theirs; otherwise why there are none, or ``""``), sorted by name."""
    return [
        {
            "name": spec.name,
            "source": spec.location,
            "format": spec.format,
            "size": spec.size,
            "description": spec.description,
            "published": spec.published.describe() if spec.published else spec.unpublished,
        }
        for spec in sorted(REGISTRY.values(), key=lambda s: s.name)
    ]
