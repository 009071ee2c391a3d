"""Reading checkpoint files without running code from them.

- ``.safetensors``: read with safetensors (no pickle involved).
- ``.ckpt`` / ``.pt`` / ``.pth`` / ``.bin``: ``torch.load(weights_only=True)``, which refuses any
  global that is not a tensor or plain container.
- DALL·E's ``encoder.pkl`` / ``decoder.pkl`` hold whole pickled module objects, which
  ``weights_only`` rejects. :func:`load_pickled_modules` reads them with :class:`RestrictedUnpickler`:
  it rebuilds tensors and plain containers itself, turns any other class into an inert
  :class:`OpaqueObject` (never importing it), and refuses to *call* anything it does not rebuild
  itself, so a pickle that tries to run code fails before anything runs.
"""

from __future__ import annotations

import io
import pickle
import zipfile
from collections import OrderedDict
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

PICKLE_SUFFIXES = (".ckpt", ".pt", ".pth", ".bin", ".pkl")


class UnsafeCheckpointError(pickle.UnpicklingError):
    """A checkpoint asked to import or call something other than tensors and plain containers."""


class CheckpointReadError(ValueError):
    """A checkpoint file is truncated, corrupt or in an unknown container format."""


def load_state_file(path: str | Path) -> Any:
    """Read a weights file safely and return what it holds (usually a dict of tensors).

    ``.safetensors`` goes through safetensors; everything else through
    ``torch.load(weights_only=True)``, falling back to :func:`load_pickled_modules` for pickles
    of objects (DALL·E's modules, Lightning callback classes). Raises :class:`UnsafeCheckpointError` when the pickle needs
    code to be run, :class:`CheckpointReadError` when the file is truncated or not a checkpoint.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint file {path} does not exist")
    if path.suffix == ".safetensors":
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            return load_file(path)
        except (SafetensorError, OSError, ValueError) as error:
            raise CheckpointReadError(f"cannot read {path} as safetensors (truncated or corrupt?): {error}") from None
    try:
        return torch.load(path, map_location="cpu", weights_only=True, mmap=False)
    except pickle.UnpicklingError as error:
        message = str(error)
        if "Weights only load failed" not in message:
            raise CheckpointReadError(f"cannot read {path}: {message.splitlines()[0]}") from None
        # Pickled objects beyond plain containers (module objects, Lightning callback classes as
        # dict keys): the restricted unpickler rebuilds them inertly or refuses.
        return load_pickled_modules(path)
    except (RuntimeError, EOFError, OSError, zipfile.BadZipFile, ValueError) as error:
        raise CheckpointReadError(
            f"cannot read {path} (truncated, corrupt, or not a PyTorch checkpoint): {error}"
        ) from None


# ---------------------------------------------------------------------------------------------
# Restricted unpickler for pickled module objects (DALL·E).

_STORAGE_DTYPES = {
    "FloatStorage": torch.float32,
    "DoubleStorage": torch.float64,
    "HalfStorage": torch.float16,
    "BFloat16Storage": torch.bfloat16,
    "LongStorage": torch.int64,
    "IntStorage": torch.int32,
    "ShortStorage": torch.int16,
    "CharStorage": torch.int8,
    "ByteStorage": torch.uint8,
    "BoolStorage": torch.bool,
}


class _StorageType:
    """Stand-in for ``torch.FloatStorage`` & co. in a persistent id: carries only the dtype."""

    def __init__(self, dtype: torch.dtype) -> None:
        self.dtype = dtype


class _OpaqueMeta(type):
    """Metaclass of :class:`OpaqueObject` classes: calling such a class (pickle's REDUCE / INST)
    is refused, because a pickle that calls an arbitrary global is asking to run code."""

    def __call__(cls, *args: Any, **kwargs: Any) -> Any:
        raise UnsafeCheckpointError(
            f"pickle tries to call {cls.__module__}.{cls.__qualname__}{_short(args)}; "
            "only tensors and plain containers are rebuilt, nothing was executed"
        )


class OpaqueObject(metaclass=_OpaqueMeta):
    """An instance of a class the pickle named but we refused to import: holds its pickled
    state (``state``) and nothing else. ``__module__`` / ``__qualname__`` of the stub class are
    the names found in the pickle."""

    def __setstate__(self, state: Any) -> None:
        self.__dict__["state"] = state


def _short(args: tuple) -> str:
    text = repr(args)
    return text if len(text) < 80 else text[:77] + "...)"


def _rebuild_tensor(storage: Tensor, offset: int, size: tuple, stride: tuple, *_: Any) -> Tensor:
    return torch.as_strided(storage, tuple(size), tuple(stride), offset).clone()


def _rebuild_parameter(data: Tensor, *_: Any) -> Tensor:
    return data


def _ordered_dict(*args: Any) -> OrderedDict:
    if args and not (isinstance(args[0], (list, tuple, dict)) and len(args) == 1):
        raise UnsafeCheckpointError("unexpected OrderedDict arguments in pickle")
    return OrderedDict(*args)


def _set(*args: Any) -> set:
    return set(*args)


def _device(*args: Any) -> str:
    return ":".join(str(a) for a in args)


_REBUILDERS: dict[tuple[str, str], Any] = {
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor,
    ("torch._utils", "_rebuild_tensor"): _rebuild_tensor,
    ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
    ("collections", "OrderedDict"): _ordered_dict,
    ("builtins", "set"): _set,
    ("__builtin__", "set"): _set,
    ("torch", "device"): _device,
}


class RestrictedUnpickler(pickle.Unpickler):
    """Unpickler for PyTorch zip archives of pickled modules that never imports or calls user code.

    ``find_class`` returns our own rebuilders for tensors / ``OrderedDict`` / ``set`` / devices,
    dtype stand-ins for ``torch.*Storage``, and for every other name a fresh :class:`OpaqueObject`
    subclass: objects of it can be *created* (pickle's NEWOBJ + BUILD, which is how modules are
    stored) but *calling* it raises :class:`UnsafeCheckpointError`.
    """

    def __init__(self, file: io.BufferedIOBase, archive: zipfile.ZipFile | None, prefix: str = "") -> None:
        super().__init__(file)
        self._archive = archive
        self._prefix = prefix
        self._stubs: dict[tuple[str, str], type] = {}

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in _REBUILDERS:
            return _REBUILDERS[(module, name)]
        if module == "torch" and name in _STORAGE_DTYPES:
            return _StorageType(_STORAGE_DTYPES[name])
        key = (module, name)
        if key not in self._stubs:
            self._stubs[key] = _OpaqueMeta(name, (OpaqueObject,), {"__module__": module, "__qualname__": name})
        return self._stubs[key]

    def persistent_load(self, pid: Any) -> Tensor:
        if not (isinstance(pid, tuple) and len(pid) == 5 and pid[0] == "storage"):
            raise UnsafeCheckpointError(f"unexpected persistent id in pickle: {_short((pid,))}")
        if self._archive is None:
            raise CheckpointReadError("legacy (pre-1.6, non-zip) PyTorch checkpoints are not supported")
        _, storage_type, key, _location, numel = pid
        if not isinstance(storage_type, _StorageType):
            raise UnsafeCheckpointError(f"unexpected storage type in pickle: {storage_type!r}")
        raw = self._archive.read(f"{self._prefix}data/{key}")
        dtype = storage_type.dtype
        flat = torch.frombuffer(bytearray(raw), dtype=dtype) if raw else torch.empty(0, dtype=dtype)
        if flat.numel() != numel:
            raise CheckpointReadError(f"storage {key}: expected {numel} elements, found {flat.numel()}")
        return flat


def load_pickled_modules(path: str | Path) -> Any:
    """Read a ``torch.save``-d module object (zip format) with :class:`RestrictedUnpickler`.

    Returns the object tree: modules become :class:`OpaqueObject` instances whose ``state`` holds
    their ``__dict__`` (``_parameters``, ``_modules``, ...), tensors are real tensors.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint file {path} does not exist")
    if not zipfile.is_zipfile(path):
        return _load_plain_pickle(path)
    try:
        archive = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError) as error:
        raise CheckpointReadError(f"cannot read {path}: corrupt PyTorch zip archive: {error}") from None
    with archive:
        names = [n for n in archive.namelist() if n.endswith("data.pkl")]
        if len(names) != 1:
            raise CheckpointReadError(f"{path}: expected one data.pkl in the archive, found {names}")
        prefix = names[0][: -len("data.pkl")]
        try:
            payload = archive.read(names[0])
            return RestrictedUnpickler(io.BytesIO(payload), archive, prefix).load()
        except UnsafeCheckpointError as error:
            raise UnsafeCheckpointError(f"refusing to load {path}: {error}") from None
        except (pickle.UnpicklingError, EOFError, KeyError, zipfile.BadZipFile, ValueError) as error:
            raise CheckpointReadError(f"cannot read {path} (truncated or corrupt?): {error}") from None


def _load_plain_pickle(path: Path) -> Any:
    """A plain (non-zip) pickle, through the same restricted unpickler (no tensor storages)."""
    try:
        with open(path, "rb") as handle:
            return RestrictedUnpickler(handle, None).load()
    except UnsafeCheckpointError as error:
        raise UnsafeCheckpointError(f"refusing to load {path}: {error}") from None
    except CheckpointReadError as error:
        raise CheckpointReadError(f"cannot read {path}: {error}") from None
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError) as error:
        raise CheckpointReadError(f"cannot read {path} (truncated, corrupt, or not a checkpoint): {error}") from None


def module_state_dict(obj: Any, prefix: str = "") -> dict[str, Tensor]:
    """Flatten an unpickled module tree (or nested dicts) into ``{"a.b.w": tensor}``."""
    out: dict[str, Tensor] = {}
    if isinstance(obj, Tensor):
        out[prefix.rstrip(".")] = obj
    elif isinstance(obj, OpaqueObject):
        state = obj.__dict__.get("state")
        if isinstance(state, tuple) and len(state) == 2:  # (dict state, slot state)
            state = state[0]
        if isinstance(state, dict):
            for group in ("_parameters", "_buffers"):
                for name, value in (state.get(group) or {}).items():
                    if value is not None:
                        out[prefix + name] = value
            for name, child in (state.get("_modules") or {}).items():
                if child is not None:
                    out.update(module_state_dict(child, prefix + name + "."))
    elif isinstance(obj, dict):
        for name, value in obj.items():
            out.update(module_state_dict(value, f"{prefix}{name}."))
    return out
