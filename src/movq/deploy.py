"""Graphs of a codec for deployment: images -> tokens and tokens -> images, as plain modules for
``torch.compile``, ``torch.export`` and ONNX.

The modules take and return tensors only and validate nothing at run time (validation is
data-dependent and cannot be part of a graph): pass float images ``[B, 3, H, W]`` in ``[-1, 1]``
with sides multiples of the downsample factor, and token ids in ``[0, codebook_size)``.
Exported graphs have static shapes: export one per input size.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import torch
from torch import Tensor, nn

from movq.atomic import atomic_write, check_writable_file
from movq.memory_budget import check_memory_budget
from movq.strict import PositiveInt, check_argument

if TYPE_CHECKING:
    from movq.codec import Codec

Part = Literal["encoder", "decoder"]
ONNX_OPSETS: tuple[int, ...] = tuple(range(18, 24))
"""The ONNX opsets :func:`export_onnx` writes: torch's exporter (``dynamo=True``) starts at 18."""


class TokenEncoder(nn.Module):
    """Images ``[B, 3, H, W]`` (float in ``[-1, 1]``) -> ``LongTensor`` tokens ``[B, *tokens_shape(H, W)]``,
    the ids ``Codec.encode`` returns; the nearest-code search runs in float32."""

    def __init__(self, codec: Codec) -> None:
        super().__init__()
        self.codec = codec

    def forward(self, images: Tensor) -> Tensor:
        return self.codec.quantize.indices(self.codec.encode_to_prequant(images))


class TokenDecoder(nn.Module):
    """``LongTensor`` tokens ``[B, *tokens_shape]`` -> images ``[B, 3, H, W]`` in ``[-1, 1]`` in the
    codec's dtype, what ``Codec.decode`` returns."""

    def __init__(self, codec: Codec) -> None:
        super().__init__()
        self.codec = codec

    def forward(self, tokens: Tensor) -> Tensor:
        z_q = self.codec.quantize.embed(tokens).to(self.codec.dtype)
        return self.codec.decode_from_quantized(z_q).clamp(-1.0, 1.0)


def graph_module(codec: Codec, part: Part) -> nn.Module:
    """:class:`TokenEncoder` (``part="encoder"``) or :class:`TokenDecoder` (``"decoder"``) of ``codec``, in eval mode."""
    if part == "encoder":
        return TokenEncoder(codec).eval()
    if part == "decoder":
        return TokenDecoder(codec).eval()
    raise ValueError(f"part must be 'encoder' or 'decoder', got {part!r}")


def example_input(codec: Codec, part: Part, height: int, width: int, batch: int = 1) -> Tensor:
    """A valid input of ``part`` for ``batch`` images of ``height x width`` pixels, on the codec's device."""
    shape = (batch, *codec.tokens_shape(height, width))  # also checks the size
    if part == "decoder":
        return torch.randint(0, codec.codebook_size, shape, device=codec.device)
    generator = torch.Generator().manual_seed(0)
    images = torch.rand(batch, 3, height, width, generator=generator) * 2 - 1
    return images.to(codec.device, codec.dtype)


def check_export_size(codec: Codec, height: int, width: int, batch: int) -> None:
    """Refuse bad sizes before any work: ``height`` / ``width`` / ``batch`` must be ints >= 1
    (``height`` and ``width`` multiples of the downsample factor), and the example forward must fit in
    the codec device's memory (:class:`~movq.memory_budget.MemoryBudgetError` otherwise)."""
    for name, value in (("height", height), ("width", width), ("batch", batch)):
        check_argument(value, PositiveInt, name)
    codec.tokens_shape(height, width)  # checks the sides
    check_memory_budget(
        codec.activation_bytes(batch, height, width), codec.device, f"exporting {batch} x {height} x {width} images",
        "export at a smaller size: exported graphs have static shapes, export one per input size",
    )


def export_program(codec: Codec, part: Part, height: int, width: int, batch: int = 1) -> torch.export.ExportedProgram:
    """``torch.export`` of ``part`` for inputs of ``batch`` images of ``height x width`` pixels."""
    check_export_size(codec, height, width, batch)
    module = graph_module(codec, part)
    with torch.no_grad():
        return torch.export.export(module, (example_input(codec, part, height, width, batch),))


def export_onnx(
    codec: Codec,
    path: str | os.PathLike,
    part: Part,
    height: int,
    width: int,
    batch: int = 1,
    *,
    opset: int = 18,
    optimize: bool = True,
) -> Path:
    """Write ``part`` as an ONNX model (``torch.onnx.export`` through ``torch.export``; needs the
    ``onnx`` and ``onnxscript`` packages, extra ``[export]``) for inputs of ``batch`` images of
    ``height x width`` pixels. Input name ``images`` or ``tokens``, output ``tokens`` or ``images``.
    ``optimize=False`` skips the ONNX graph optimisation (faster export, same results). ``opset``
    must be one of :data:`ONNX_OPSETS` (the exporter writes at least opset 18).

    Before any work the arguments, the size (:func:`check_export_size`) and the output path
    (writable) are checked; the file is written atomically (a temporary name, then a rename) and
    only if it holds the requested opset."""
    check_argument(opset, int, "opset")
    if opset not in ONNX_OPSETS:
        raise ValueError(
            f"opset {opset} cannot be exported: torch.onnx's exporter writes opsets "
            f"{ONNX_OPSETS[0]} to {ONNX_OPSETS[-1]}; pass one of those"
        )
    check_export_size(codec, height, width, batch)
    path = check_writable_file(path, flag="path")
    module = graph_module(codec, part)
    names = ("images", "tokens") if part == "encoder" else ("tokens", "images")

    def write(tmp: str) -> None:
        with torch.no_grad():
            torch.onnx.export(
                module,
                (example_input(codec, part, height, width, batch),),
                tmp,
                input_names=[names[0]],
                output_names=[names[1]],
                opset_version=opset,
                dynamo=True,
                external_data=False,
                verbose=False,
                optimize=optimize,
            )
        import onnx

        written = {o.version for o in onnx.load(tmp, load_external_data=False).opset_import if o.domain in ("", "ai.onnx")}
        if written != {opset}:
            raise ValueError(f"the exporter wrote opset {sorted(written)} instead of the requested {opset}; "
                             f"{path} is left untouched")

    return atomic_write(path, write)
