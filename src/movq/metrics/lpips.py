"""LPIPS that loads offline: the network (:class:`LPIPS`, :func:`load_lpips`; the training loss) and the
per-image metric on ``[0, 1]`` images (:class:`LPIPSMetric`; ``movq-bench``).

``load_lpips(net="vgg")`` returns a frozen :class:`LPIPS` module. Weights are looked up, in order:

1. ``weights=`` (a ``.pth`` / ``.pt`` / ``.safetensors`` state dict), else ``$MOVQ_LPIPS_WEIGHTS``;
2. the files of the ``stlpips-pytorch`` package (``pip install --no-deps stlpips-pytorch``): full
   AlexNet / VGG16 LPIPS weights of the *shift-tolerant* variant (blur-pooled backbone, ST-LPIPS,
   Ghildyal & Liu 2022), backbone and linear heads in one file;
3. the standard LPIPS linear heads of the ``lpips`` package plus the torchvision ImageNet backbone
   found in the torch hub cache (``~/.cache/torch/hub/checkpoints``), never downloaded.

A state dict is recognised by its keys: blur filters (``net.slice*.filt``) mean the shift-tolerant
layout; otherwise the standard (torchvision) layout. A file holding only the ``lin*`` heads needs
the torchvision backbone from the cache. ``source`` and ``variant`` on the module say what was
loaded (report them with any number computed with it).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from movq.atomic import require_regular_file
from movq.strict import state_dict_mismatches

Net = Literal["vgg", "alex"]
Variant = Literal["standard", "shift_tolerant"]

WEIGHTS_ENV = "MOVQ_LPIPS_WEIGHTS"
NORM_EPS = 1e-10
"""Added to the channel norm when LPIPS unit-normalises features (its ``normalize_tensor`` eps)."""
_CHANNELS: dict[str, tuple[int, ...]] = {"vgg": (64, 128, 256, 512, 512), "alex": (64, 192, 384, 256, 256)}
_TORCHVISION_FILES = {"vgg": "vgg16-397923af.pth", "alex": "alexnet-owt-7be5be79.pth"}
# torchvision ``features`` indices of the conv layers, in the LPIPS slices' numbering (standard layout)
_TV_CONV_INDICES = {"vgg": (0, 2, 5, 7, 10, 12, 14, 17, 19, 21, 24, 26, 28), "alex": (0, 3, 6, 8, 10)}


class BlurDownsample(nn.Module):
    """Anti-aliased stride-2 downsampling: reflect-pad by 2, depthwise [1,2,1]x[1,2,1]/16 blur, stride 2.

    In ``[B, C, H, W]``, out ``[B, C, floor(H/2)+1, floor(W/2)+1]``. The filter is a buffer ``filt``
    ``[C, 1, 3, 3]`` (named as in the shift-tolerant LPIPS checkpoints).
    """

    def __init__(self, channels: int) -> None:
        super().__init__()
        a = torch.tensor([1.0, 2.0, 1.0])
        filt = (a[:, None] * a[None, :]) / 16.0
        self.register_buffer("filt", filt[None, None].repeat(channels, 1, 1, 1))

    def forward(self, x: Tensor) -> Tensor:
        x = F.pad(x, (2, 2, 2, 2), mode="reflect")
        return F.conv2d(x, self.filt.to(x.dtype), stride=2, groups=x.shape[1])


def _conv(cin: int, cout: int, k: int, stride: int = 1, pad: int = 1) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, kernel_size=k, stride=stride, padding=pad)


def _relu() -> nn.ReLU:
    return nn.ReLU(inplace=False)


def _numbered(layers: list[nn.Module], start: int) -> nn.Sequential:
    """Sequential whose children are named ``start, start+1, ...`` (the checkpoints' global indices)."""
    seq = nn.Sequential()
    for i, layer in enumerate(layers):
        seq.add_module(str(start + i), layer)
    return seq


def _vgg_slices(variant: Variant) -> list[nn.Sequential]:
    plan = [[64, 64], [128, 128], [256, 256, 256], [512, 512, 512], [512, 512, 512]]
    slices, index, cin = [], 0, 3
    for level, widths in enumerate(plan):
        layers: list[nn.Module] = []
        if level > 0:
            if variant == "shift_tolerant":
                layers += [nn.MaxPool2d(2, stride=1), BlurDownsample(cin)]
            else:
                layers += [nn.MaxPool2d(2, stride=2)]
        for width in widths:
            layers += [_conv(cin, width, 3), _relu()]
            cin = width
        slices.append(_numbered(layers, index))
        index += len(layers)
    return slices


def _alex_slices(variant: Variant) -> list[nn.Sequential]:
    if variant == "shift_tolerant":
        groups: list[list[nn.Module]] = [
            [_conv(3, 64, 11, 1, 2), BlurDownsample(64), _relu()],
            [nn.MaxPool2d(3, stride=1), BlurDownsample(64), _conv(64, 192, 5, 1, 2), _relu()],
            [nn.MaxPool2d(3, stride=1), BlurDownsample(192), _conv(192, 384, 3), _relu()],
            [_conv(384, 256, 3), _relu()],
            [_conv(256, 256, 3), _relu()],
        ]
    else:
        groups = [
            [_conv(3, 64, 11, 4, 2), _relu()],
            [nn.MaxPool2d(3, stride=2), _conv(64, 192, 5, 1, 2), _relu()],
            [nn.MaxPool2d(3, stride=2), _conv(192, 384, 3), _relu()],
            [_conv(384, 256, 3), _relu()],
            [_conv(256, 256, 3), _relu()],
        ]
    slices, index = [], 0
    for layers in groups:
        slices.append(_numbered(layers, index))
        index += len(layers)
    return slices


class _Backbone(nn.Module):
    def __init__(self, net: Net, variant: Variant) -> None:
        super().__init__()
        slices = _vgg_slices(variant) if net == "vgg" else _alex_slices(variant)
        for i, s in enumerate(slices, start=1):
            self.add_module(f"slice{i}", s)

    def forward(self, x: Tensor) -> list[Tensor]:
        feats = []
        for i in range(1, 6):
            x = getattr(self, f"slice{i}")(x)
            feats.append(x)
        return feats


class _Lin(nn.Module):
    """1x1 conv to one channel, stored as ``model.1.weight`` like the LPIPS checkpoints."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.model = nn.Sequential(nn.Identity(), nn.Conv2d(channels, 1, kernel_size=1, bias=False))

    def forward(self, x: Tensor) -> Tensor:
        return self.model(x)


class LPIPS(nn.Module):
    """LPIPS distance between two image batches.

    ``forward(x, y)`` takes float tensors ``[B, 3, H, W]`` in ``[-1, 1]`` (H, W >= 16 for VGG) and
    returns ``[B]``: the per-image distance (>= 0, about 0.0-0.8; 0 for identical images).
    ``spatial=True`` returns the per-pixel map ``[B, 1, H, W]`` instead. The network is frozen
    (no parameter needs grad) but differentiable with respect to its inputs, so it serves as a
    training loss. Attributes: ``net`` ("vgg" / "alex"), ``variant`` ("standard" /
    "shift_tolerant"), ``source`` (where the weights came from).
    """

    def __init__(self, net: Net = "vgg", variant: Variant = "shift_tolerant") -> None:
        super().__init__()
        if net not in _CHANNELS:
            raise ValueError(f"net must be one of {sorted(_CHANNELS)}, got {net!r}")
        self.net_name, self.variant, self.source = net, variant, "random (no weights loaded)"
        self.register_buffer("shift", torch.tensor([-0.030, -0.088, -0.188])[None, :, None, None])
        self.register_buffer("scale", torch.tensor([0.458, 0.448, 0.450])[None, :, None, None])
        self.net = _Backbone(net, variant)
        self.lins = nn.ModuleList(_Lin(c) for c in _CHANNELS[net])

    def forward(self, x: Tensor, y: Tensor, spatial: bool = False) -> Tensor:
        if x.shape != y.shape or x.ndim != 4 or x.shape[1] != 3:
            raise ValueError(f"LPIPS expects two [B, 3, H, W] tensors of one shape, got {tuple(x.shape)} and {tuple(y.shape)}")
        n = x.shape[0]
        both = torch.cat([x, y]).to(self.shift.dtype) if not torch.is_autocast_enabled() else torch.cat([x, y])
        feats = self.net((both - self.shift) / self.scale)
        total: Tensor | None = None
        for lin, f in zip(self.lins, feats):
            f = f.float()
            f = f / (f.pow(2).sum(dim=1, keepdim=True).sqrt() + NORM_EPS)
            d = lin((f[:n] - f[n:]).pow(2).to(lin.model[1].weight.dtype)).float()
            d = F.interpolate(d, size=x.shape[-2:], mode="bilinear", align_corners=False) if spatial else d.mean((2, 3))
            total = d if total is None else total + d
        assert total is not None
        return total if spatial else total[:, 0]

    def train(self, mode: bool = True) -> LPIPS:  # always eval: no dropout, frozen
        return super().train(False)

    def _load(self, state: dict[str, Tensor], source: str) -> None:
        own = self.state_dict()
        state = {_rename_key(k): v for k, v in state.items()}
        state = {k: v for k, v in state.items() if k in own and not k.startswith(("shift", "scale"))}
        fixed = [k for k in own if k.endswith("filt") or k in ("shift", "scale")]  # set at init, not loaded
        problems = state_dict_mismatches(own, state, optional=fixed, limit=8)
        if problems:
            raise ValueError(f"LPIPS weights from {source} do not fit: " + "; ".join(problems))
        self.load_state_dict(state, strict=False)  # only the init-time buffers in ``fixed`` stay as they are
        self.source = source


def _rename_key(key: str) -> str:
    """Map checkpoint keys (``lin0.model.1.weight``, ``scaling_layer.shift``) onto this module's."""
    key = key.removeprefix("module.")
    if key.startswith("lin") and key[3].isdigit():
        return f"lins.{key[3]}{key[4:]}"
    return key.removeprefix("scaling_layer.")


def _read_state(path: Path) -> dict[str, Tensor]:
    from movq.hub.safe_load import load_state_file  # safetensors or weights_only; errors name the file

    state = load_state_file(path)
    if isinstance(state, dict) and "state_dict" in state:
        state = state["state_dict"]
    if not isinstance(state, dict):
        raise ValueError(f"{path} does not hold a state dict")
    return state


def _torchvision_backbone(net: Net) -> dict[str, Tensor] | None:
    """torchvision ImageNet weights from the hub cache, renamed to ``net.sliceK.I.*``; None if absent."""
    path = Path(torch.hub.get_dir()) / "checkpoints" / _TORCHVISION_FILES[net]
    if not path.is_file():
        return None
    from movq.hub.safe_load import load_state_file

    tv = load_state_file(path)
    model = LPIPS(net, "standard")
    names = [n for n in model.state_dict() if n.startswith("net.") and n.endswith(".weight")]
    out: dict[str, Tensor] = {}
    for idx, name in zip(_TV_CONV_INDICES[net], names):
        prefix = name.rsplit(".", 1)[0]
        out[f"{prefix}.weight"] = tv[f"features.{idx}.weight"]
        out[f"{prefix}.bias"] = tv[f"features.{idx}.bias"]
    return out


def stlpips_weights_path(net: Net) -> Path | None:
    """Path of the shift-tolerant LPIPS weights shipped by ``stlpips-pytorch``, or None if not installed."""
    import importlib.util

    spec = importlib.util.find_spec("stlpips_pytorch")
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(list(spec.submodule_search_locations)[0]) / "weights" / "vST0.0" / f"{net}_shift_tolerant.pth"
    return path if path.is_file() else None


def _standard_lin_path(net: Net) -> Path | None:
    import importlib.util

    spec = importlib.util.find_spec("lpips")
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(list(spec.submodule_search_locations)[0]) / "weights" / "v0.1" / f"{net}.pth"
    return path if path.is_file() else None


def _from_state(net: Net, state: dict[str, Tensor], source: str) -> LPIPS:
    variant: Variant = "shift_tolerant" if any(k.endswith(".filt") for k in state) else "standard"
    if not any(k.removeprefix("module.").startswith("net.") for k in state):
        backbone = _torchvision_backbone(net) if variant == "standard" else None
        if backbone is None:
            raise FileNotFoundError(
                f"{source} holds only the LPIPS linear heads; the {net} ImageNet backbone "
                f"({_TORCHVISION_FILES[net]}) is not in {Path(torch.hub.get_dir()) / 'checkpoints'}"
            )
        state = {**backbone, **state}
        source = f"{source} + torchvision {_TORCHVISION_FILES[net]}"
    model = LPIPS(net, variant)
    model._load(state, source)
    return model


def load_lpips(
    net: Net = "vgg",
    weights: str | os.PathLike | None = None,
    *,
    device: torch.device | str | None = None,
) -> LPIPS:
    """A frozen, eval-mode :class:`LPIPS` on ``device`` loaded without network access.

    ``weights``: a local state-dict file (full LPIPS, shift-tolerant LPIPS, or linear heads only
    with the torchvision backbone in the hub cache). Without it, ``$MOVQ_LPIPS_WEIGHTS``, then
    the ``stlpips-pytorch`` package's files, then ``lpips`` heads + cached torchvision backbone.
    Raises ``FileNotFoundError`` explaining the options when nothing is found.
    """
    if net not in _CHANNELS:
        raise ValueError(f"net must be one of {sorted(_CHANNELS)}, got {net!r}")
    weights = weights if weights is not None else os.environ.get(WEIGHTS_ENV) or None
    if weights is not None:
        path = require_regular_file(weights, "expected an LPIPS weights file")
        model = _from_state(net, _read_state(path), str(path))
    elif (st := stlpips_weights_path(net)) is not None:
        model = _from_state(net, _read_state(st), f"stlpips-pytorch {st.name} (shift-tolerant LPIPS)")
    elif (lin := _standard_lin_path(net)) is not None and _torchvision_backbone(net) is not None:
        model = _from_state(net, _read_state(lin), f"lpips {net} v0.1")
    else:
        raise FileNotFoundError(_missing_weights_message(net))
    model.requires_grad_(False)
    return model.to(device).eval()


def _missing_weights_message(net: Net) -> str:
    """Where :func:`load_lpips` looked for LPIPS-``net`` weights (nothing is downloaded) and how to provide them."""
    cache = Path(torch.hub.get_dir()) / "checkpoints"
    heads = _standard_lin_path(net)
    backbone = "found" if (cache / _TORCHVISION_FILES[net]).is_file() else "not there"
    return (
        f"no LPIPS-{net} weights found (they are never downloaded). Looked in: weights= / ${WEIGHTS_ENV} (not set); "
        f"the stlpips-pytorch package (not installed, or without its weight files); the lpips package's heads "
        f"({heads if heads is not None else 'lpips not installed'}) with torchvision's {_TORCHVISION_FILES[net]} "
        f"in {cache} ({backbone}). Provide them with weights=PATH (or ${WEIGHTS_ENV}=PATH) to a full LPIPS state "
        f"dict, or `pip install --no-deps stlpips-pytorch` (full shift-tolerant AlexNet/VGG LPIPS weights), or "
        f"put {_TORCHVISION_FILES[net]} into {cache} next to the `lpips` package's heads."
    )


def describe(model: LPIPS) -> str:
    """One line naming the perceptual network, e.g. for logs and result tables."""
    return f"LPIPS-{model.net_name} ({model.variant}) from {model.source}"


class LPIPSMetric(nn.Module):
    """Per-image LPIPS distance between two batches ``[B, 3, H, W]`` in ``[0, 1]`` -> ``[B]`` float64.

    ``net`` is ``"alex"`` (the usual metric backbone) or ``"vgg"``; ``weights`` is a local state
    dict path (see :func:`load_lpips` for the lookup order when it is ``None``).
    Weights are never downloaded: when none of those places has them, construction raises
    ``RuntimeError`` saying where it looked and how to provide them. ``description``
    names the weights actually used (report it next to the numbers: the shift-tolerant variant is
    not the standard LPIPS).
    """

    def __init__(self, net: str = "alex", weights: str | os.PathLike | None = None) -> None:
        super().__init__()
        try:
            self.model = load_lpips(net=net, weights=weights)
        except Exception as err:
            raise RuntimeError(
                f"could not load LPIPS ({net}) weights: {err} (movq-bench: --lpips-weights PATH)"
            ) from err
        self.description = f"LPIPS-{net} ({self.model.variant}; weights: {self.model.source})"
        self.is_standard = self.model.variant == "standard"

    @torch.no_grad()
    def forward(self, x: Tensor, y: Tensor) -> Tensor:
        device = next(self.model.parameters()).device
        out = self.model(x.to(device).float() * 2 - 1, y.to(device).float() * 2 - 1)
        return out.reshape(out.shape[0], -1).mean(1).double()
