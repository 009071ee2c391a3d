"""Conversion between user images (PIL, numpy, tensors) and model tensors, with input validation,
and :func:`to_rgb` (any PIL mode to 8-bit RGB). Image *files* are read by :mod:`movq.image_files`.

Model tensors are float ``[B, 3, H, W]`` in ``[-1, 1]``. Every check runs before any compute and
raises ``TypeError`` / ``ValueError`` saying what was wrong and what is accepted.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal, Sequence, Union

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import Tensor

ImageInput = Union[Image.Image, Sequence[Image.Image], np.ndarray, Tensor]
ACCEPTED = (
    "a PIL image or a list of PIL images, a uint8 numpy array HWC or BHWC with 3 channels, "
    "a float tensor CHW or BCHW in [-1, 1], or a uint8 tensor CHW or BCHW"
)
RANGE_TOLERANCE = 1e-3


@dataclass(frozen=True)
class ImageFormat:
    """How the user passed the images, so outputs can be returned in the same form.

    ``kind`` is the container; ``batched`` says whether the input had a batch axis (list / 4-D);
    ``dtype`` is the tensor dtype for tensor inputs.
    """

    kind: Literal["pil", "numpy", "tensor"]
    batched: bool
    dtype: torch.dtype | None = None


def to_tensor(images: ImageInput) -> tuple[Tensor, ImageFormat]:
    """Validate ``images`` and return them as float32 ``[B, 3, H, W]`` in ``[-1, 1]`` plus their format."""
    if isinstance(images, Image.Image):
        return _pil_to_tensor([images]), ImageFormat("pil", batched=False)
    if isinstance(images, (list, tuple)):
        if len(images) == 0:
            raise ValueError(f"empty batch: got an empty {type(images).__name__}; expected {ACCEPTED}")
        if not all(isinstance(im, Image.Image) for im in images):
            kinds = sorted({type(im).__name__ for im in images})
            raise TypeError(f"a list of images must hold only PIL images, got {kinds}; expected {ACCEPTED}")
        return _pil_to_tensor(list(images)), ImageFormat("pil", batched=True)
    if isinstance(images, np.ndarray):
        return _numpy_to_tensor(images)
    if isinstance(images, Tensor):
        return _tensor_to_tensor(images)
    raise TypeError(f"unsupported image type {type(images).__name__}; expected {ACCEPTED}")


def from_tensor(x: Tensor, fmt: ImageFormat) -> Any:
    """Turn model output ``[B, 3, H, W]`` in ``[-1, 1]`` back into the form described by ``fmt``."""
    x = x.detach().float().clamp(-1.0, 1.0)
    if fmt.kind == "tensor" and fmt.dtype != torch.uint8:
        out = x.to(fmt.dtype or torch.float32)
        return out if fmt.batched else out[0]
    as_uint8 = ((x + 1.0) * 127.5).round().to(torch.uint8)
    if fmt.kind == "tensor":
        return as_uint8 if fmt.batched else as_uint8[0]
    arrays = as_uint8.permute(0, 2, 3, 1).cpu().numpy()
    if fmt.kind == "numpy":
        return arrays if fmt.batched else arrays[0]
    pils = [Image.fromarray(a) for a in arrays]
    return pils if fmt.batched else pils[0]


OUTPUT_TYPES = ("pil", "pt")
"""What the generators' pipelines return (``output_type=``): PIL images, or the tensor ``[B, 3, H, W]`` in ``[-1, 1]``."""


def check_output_type(output_type: str) -> None:
    """``ValueError`` unless ``output_type`` is one of :data:`OUTPUT_TYPES`."""
    if output_type not in OUTPUT_TYPES:
        raise ValueError(f"unknown output_type {output_type!r}; expected one of {list(OUTPUT_TYPES)}")


def generated_output(x: Tensor, output_type: str) -> list[Image.Image] | Tensor:
    """A generator's images ``[B, 3, H, W]`` (about ``[-1, 1]``) as ``output_type`` asks: ``"pil"`` ``B`` RGB
    PIL images (rounded to uint8), ``"pt"`` the tensor clamped to ``[-1, 1]``."""
    check_output_type(output_type)
    return x.clamp(-1.0, 1.0) if output_type == "pt" else from_tensor(x, ImageFormat("pil", batched=True))


def check_size(height: int, width: int, factor: int) -> None:
    """Raise ``ValueError`` unless both sides are positive multiples of ``factor``, naming the nearest valid sizes."""
    if height % factor == 0 and width % factor == 0 and height > 0 and width > 0:
        return

    def near(n: int) -> list[int]:
        lower = n // factor * factor
        return [s for s in (lower, lower + factor) if s > 0] if n % factor or n < 1 else [n]

    options = [f"{h}x{w}" for h in near(height) for w in near(width)]
    raise ValueError(
        f"image size {height}x{width} (HxW) is not a multiple of the downsample factor {factor}; "
        f"nearest valid sizes: {', '.join(options)}. Resize or crop the image, or pass pad=True."
    )


def pad_to_multiple(x: Tensor, factor: int) -> Tensor:
    """Pad ``[B, C, H, W]`` on the right and bottom (edge replication) up to multiples of ``factor``."""
    height, width = x.shape[-2:]
    pad_h, pad_w = -height % factor, -width % factor
    if pad_h == 0 and pad_w == 0:
        return x
    return F.pad(x, (0, pad_w, 0, pad_h), mode="replicate")


def to_rgb(image: Image.Image) -> Image.Image:
    """Any PIL mode -> 8-bit RGB: palette/gray/CMYK/YCbCr converted, 16/32-bit scaled, alpha on white."""
    if image.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        array = np.asarray(image, dtype=np.float64)
        if not np.isfinite(array).all():
            raise ValueError(f"PIL image of mode {image.mode!r} contains NaN or inf values; expected finite pixels")
        high = 65535.0 if image.mode.startswith("I;16") or array.max() > 255 else 255.0
        image = Image.fromarray(np.clip(array / high * 255.0 + 0.5, 0, 255).astype(np.uint8), "L")
    if image.mode == "P":
        image = image.convert("RGBA" if "transparency" in image.info else "RGB")
    if image.mode == "La":  # premultiplied: PIL converts it only to LA
        image = image.convert("LA")
    if image.mode in ("RGBA", "LA", "PA", "RGBa"):
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return image.convert("RGB")


def _pil_to_tensor(images: list[Image.Image]) -> Tensor:
    for im in images:
        if im.width < 1 or im.height < 1:
            raise ValueError(f"empty image: {im.width}x{im.height} pixels (WxH); expected at least 1x1")
    sizes = {im.size for im in images}
    if len(sizes) > 1:
        raise ValueError(f"all images in a batch must have the same size, got (W, H) sizes {sorted(sizes)}")
    arrays = np.stack([np.asarray(_decoded_rgb(im), dtype=np.uint8) for im in images])
    return _uint8_to_float(torch.from_numpy(arrays).permute(0, 3, 1, 2))


def _decoded_rgb(image: Image.Image) -> Image.Image:
    """:func:`to_rgb`, with the errors of a lazily opened file that cannot be decoded (truncated,
    corrupt, closed) turned into one ``ValueError`` naming the file."""
    try:
        return to_rgb(image)
    except (OSError, SyntaxError) as error:  # PIL's decoders raise OSError / SyntaxError for broken data
        name = getattr(image, "filename", "") or "a PIL image"
        raise ValueError(f"cannot decode {name} ({error}); the file is truncated or corrupt") from None


def _numpy_to_tensor(array: np.ndarray) -> tuple[Tensor, ImageFormat]:
    if array.dtype != np.uint8:
        raise TypeError(
            f"numpy images must be uint8 (0..255), got dtype {array.dtype}; "
            "convert float images to a tensor in [-1, 1] instead"
        )
    if array.ndim not in (3, 4):
        raise ValueError(f"numpy images must be HWC or BHWC, got {array.ndim} dimensions {array.shape}")
    batched = array.ndim == 4
    batch = array if batched else array[None]
    _check_channels(batch.shape[-1], batch.shape, "HWC / BHWC (channels last)")
    _check_not_empty(batch.shape)
    batch = np.ascontiguousarray(batch)
    if not batch.flags.writeable:  # e.g. np.asarray(pil_image): torch.from_numpy would warn
        batch = batch.copy()
    x = torch.from_numpy(batch).permute(0, 3, 1, 2)
    return _uint8_to_float(x), ImageFormat("numpy", batched=batched)


def check_has_data(x: Tensor, what: str) -> None:
    """Refuse tensors on the ``meta`` device (shapes only, no values) and sparse or other non-strided
    layouts before any work reads them."""
    if x.is_meta:
        raise ValueError(f"got {what} on the 'meta' device (shapes only, no values); pass a tensor on cpu or cuda")
    if x.layout != torch.strided:
        raise TypeError(f"got {what} with layout {x.layout}; pass a dense tensor (x.to_dense())")


def batch_size_of(images: object) -> tuple[int, int, int] | None:
    """``(batch, height, width)`` of well-formed image input, read from shapes alone (nothing is
    converted), or ``None`` when the input is not well formed (:func:`to_tensor` then says why)."""
    if isinstance(images, Image.Image):
        return 1, images.height, images.width
    if isinstance(images, (list, tuple)) and images and isinstance(images[0], Image.Image):
        return len(images), images[0].height, images[0].width
    if isinstance(images, np.ndarray) and images.ndim in (3, 4):
        shape = images.shape if images.ndim == 4 else (1, *images.shape)
        return shape[0], shape[1], shape[2]
    if isinstance(images, Tensor) and images.ndim in (3, 4):
        shape = tuple(images.shape) if images.ndim == 4 else (1, *images.shape)
        return shape[0], shape[2], shape[3]
    return None


def _tensor_to_tensor(x: Tensor) -> tuple[Tensor, ImageFormat]:
    check_has_data(x, "the image tensor")
    if x.ndim not in (3, 4):
        raise ValueError(f"image tensors must be CHW or BCHW, got {x.ndim} dimensions {tuple(x.shape)}")
    batched = x.ndim == 4
    batch = x if batched else x[None]
    _check_channels(batch.shape[1], tuple(batch.shape), "CHW / BCHW (channels first)")
    _check_not_empty(tuple(batch.shape))
    fmt = ImageFormat("tensor", batched=batched, dtype=x.dtype)
    if x.dtype == torch.uint8:
        return _uint8_to_float(batch), fmt
    if not x.is_floating_point():
        raise TypeError(f"image tensors must be float in [-1, 1] or uint8, got dtype {x.dtype}")
    if not torch.isfinite(batch).all():
        raise ValueError("image tensor contains NaN or inf values; expected finite values in [-1, 1]")
    low, high = batch.min().item(), batch.max().item()
    if low < -1.0 - RANGE_TOLERANCE or high > 1.0 + RANGE_TOLERANCE:
        raise ValueError(
            f"float image tensors must be in [-1, 1], got values in [{low:.4g}, {high:.4g}]; "
            "for [0, 1] images pass x * 2 - 1, for [0, 255] pass a uint8 tensor"
        )
    return batch.float(), fmt


def _check_channels(channels: int, shape: tuple[int, ...], layout: str) -> None:
    if channels != 3:
        raise ValueError(f"expected 3 (RGB) channels in layout {layout}, got {channels} in shape {shape}")


def _check_not_empty(shape: tuple[int, ...]) -> None:
    if 0 in shape:
        raise ValueError(f"empty batch or image: shape {shape} has a zero-sized axis")


def _uint8_to_float(x: Tensor) -> Tensor:
    return x.float() / 127.5 - 1.0
