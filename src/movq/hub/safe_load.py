"""Reading checkpoint files without running code from them.

- ``.safetensors``: read with safetensors (no pickle involved).
- ``.ckpt`` / ``.pt`` / ``.pth`` / ``.bin``: ``torch.load(weights_only=True)``, which refuses any
  global that is not a tensor or plain container.
- DALL·E's ``encoder.pkl`` / ``decoder.pkl`` hold whole pickled module objects, which
  ``weights_only`` rejects. :func:`load_pickled_modules` reads them with :class:`RestrictedUnpickler`:
  it rebuilds tensors and plain containers itself, turns any other class into an inert
  :class:`OpaqueObject` (never importing it), and refuses to *call* anything it does not rebuild
  itself, so a pickle that tries to run code fails before anything runs. It reads PyTorch's zip
  archives and the older (pre-1.6) single-stream container that OpenAI's files use.
"""

from __future__ import annotations

import io
import pickle
import struct
import tarfile
import zipfile
from collections import OrderedDict
from pathlib import Path
from typing import IO, Any

import torch
from torch import Tensor

from movq.atomic import require_regular_file


class UnsafeCheckpointError(pickle.UnpicklingError, ValueError):
    """A checkpoint asked to import or call something other than tensors and plain containers.

    Also a ``ValueError``, so that code handling bad user input (the CLIs) reports it in one line."""


class CheckpointReadError(ValueError):
    """A checkpoint file is truncated, corrupt or in an unknown container format."""


def load_state_file(path: str | Path) -> Any:
    """Read a weights file safely and return what it holds (usually a dict of tensors).

    ``.safetensors`` goes through safetensors; everything else through
    ``torch.load(weights_only=True)``, falling back to :func:`load_pickled_modules` for pickles
    of objects (DALL·E's modules, Lightning callback classes). Raises :class:`UnsafeCheckpointError` when the pickle needs
    code to be run, :class:`CheckpointReadError` when the file is truncated or not a checkpoint.
    """
    path = require_regular_file(path, "expected a checkpoint file")
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
    except Exception as error:  # noqa: BLE001 - torch's readers raise many types (KeyError, struct.error...) on garbage
        first = str(error).strip().splitlines()[0] if str(error).strip() else ""
        raise CheckpointReadError(
            f"cannot read {path} (truncated, corrupt, or not a PyTorch checkpoint): {type(error).__name__}: {first}"
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
    """A view of ``storage`` (tensors that shared a storage when saved share it again, as with
    ``torch.load``; legacy-container storages are filled after the whole object is unpickled)."""
    if not isinstance(storage, Tensor):
        raise UnsafeCheckpointError(f"tensor rebuilt from a {type(storage).__name__}, not a storage")
    return storage.as_strided(tuple(size), tuple(stride), storage.storage_offset() + offset)


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
    """Unpickler for PyTorch checkpoints of pickled modules that never imports or calls user code.

    ``find_class`` returns our own rebuilders for tensors / ``OrderedDict`` / ``set`` / devices,
    dtype stand-ins for ``torch.*Storage``, and for every other name a fresh :class:`OpaqueObject`
    subclass: objects of it can be *created* (pickle's NEWOBJ + BUILD, which is how modules are
    stored) but *calling* it raises :class:`UnsafeCheckpointError`.

    Tensor storages come from ``storages``: a :class:`_ZipStorages` (PyTorch >= 1.6 zip archives),
    a :class:`_LegacyStorages` (the older single-stream container), or ``None`` for a plain pickle,
    which may hold no tensors.
    """

    def __init__(self, file: IO[bytes], storages: _ZipStorages | _LegacyStorages | None = None) -> None:
        super().__init__(file)
        self._storages = storages
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

    def persistent_load(self, pid: Any) -> Any:
        if isinstance(pid, tuple) and len(pid) == 4 and pid[0] == "module" and isinstance(pid[1], _OpaqueMeta):
            return pid[1]  # legacy container: a module class (already an inert stub) with its source text
        if not (isinstance(pid, tuple) and len(pid) in (5, 6) and pid[0] == "storage"):
            raise UnsafeCheckpointError(f"unexpected persistent id in pickle: {_short((pid,))}")
        if self._storages is None:
            raise CheckpointReadError("a plain pickle cannot hold tensor storages")
        storage_type, key, numel = pid[1], pid[2], pid[4]
        if not isinstance(storage_type, _StorageType):
            raise UnsafeCheckpointError(f"unexpected storage type in pickle: {storage_type!r}")
        if not isinstance(key, str) or not isinstance(numel, int) or isinstance(numel, bool) or numel < 0:
            raise CheckpointReadError(f"malformed storage reference in pickle: {_short((pid,))}")
        view = pid[5] if len(pid) == 6 else None
        return self._storages.get(key, storage_type.dtype, numel, view)


class _ZipStorages:
    """Storages of a PyTorch zip archive: ``<prefix>data/<key>`` holds the raw bytes of storage ``key``."""

    def __init__(self, archive: zipfile.ZipFile, prefix: str) -> None:
        self._archive, self._prefix = archive, prefix

    def get(self, key: str, dtype: torch.dtype, numel: int, view: Any) -> Tensor:
        raw = self._archive.read(f"{self._prefix}data/{key}")
        flat = torch.frombuffer(bytearray(raw), dtype=dtype) if raw else torch.empty(0, dtype=dtype)
        if flat.numel() != numel:
            raise CheckpointReadError(f"storage {key}: expected {numel} elements, found {flat.numel()}")
        return flat


_LEGACY_MAGIC_NUMBER = 0x1950A86A20F9469CFC6C
_LEGACY_PROTOCOL_VERSION = 1001


class _LegacyStorages:
    """Storages of the pre-1.6 PyTorch container (``torch.save(..., _use_new_zipfile_serialization=False)``).

    The file is a sequence of pickles: magic number, protocol version, ``sys_info``, the object
    (whose persistent ids are ``('storage', type, key, location, numel, view_metadata)``), the list
    of storage keys; then, for each key in that order, an 8-byte little-endian element count and
    the raw bytes. Storages are allocated empty while the object is unpickled (tensors are views of
    them) and filled by :meth:`read_data` afterwards; sizes are checked against the file size first.
    """

    def __init__(self, file_size: int) -> None:
        self._file_size = file_size
        self._declared = 0
        self._roots: dict[str, Tensor] = {}

    def get(self, key: str, dtype: torch.dtype, numel: int, view: Any) -> Tensor:
        root = self._roots.get(key)
        if root is None:
            self._declared += numel * torch.empty(0, dtype=dtype).element_size()
            if self._declared > self._file_size:
                raise CheckpointReadError(
                    f"storages of {self._declared} bytes declared, but the file has only {self._file_size} bytes"
                )
            root = self._roots[key] = torch.empty(numel, dtype=dtype)
        elif root.dtype != dtype or root.numel() != numel:
            raise CheckpointReadError(f"storage {key} is declared twice with different types or sizes")
        if view is None:
            return root
        if not (isinstance(view, tuple) and len(view) == 3 and all(isinstance(v, int) for v in view[1:])):
            raise CheckpointReadError(f"malformed storage view {view!r}")
        _, offset, size = view
        if offset < 0 or size < 0 or offset + size > numel:
            raise CheckpointReadError(f"storage view {view!r} is outside storage {key} of {numel} elements")
        return root[offset : offset + size]

    def read_data(self, handle: IO[bytes], keys: Any) -> None:
        """Fill the storages from ``handle``, positioned after the pickle of storage ``keys``."""
        if not isinstance(keys, list) or sorted(map(str, keys)) != sorted(self._roots):
            raise CheckpointReadError(
                f"the storage key list {_short((keys,))} does not match the {len(self._roots)} storages the object uses"
            )
        for key in keys:
            root = self._roots[key]
            header = handle.read(8)
            if len(header) != 8:
                raise CheckpointReadError(f"storage {key}: file ends before its data")
            (count,) = struct.unpack("<q", header)
            if count != root.numel():
                raise CheckpointReadError(f"storage {key}: {count} elements stored, {root.numel()} expected")
            buffer = root.view(torch.uint8) if root.numel() else root
            if root.numel() and handle.readinto(memoryview(buffer.numpy())) != buffer.numel():
                raise CheckpointReadError(f"storage {key}: file ends inside its data")


def load_pickled_modules(path: str | Path) -> Any:
    """Read a ``torch.save``-d module object with :class:`RestrictedUnpickler`: zip archives
    (PyTorch >= 1.6), the older single-stream container, and plain pickles.

    Returns the object tree: modules become :class:`OpaqueObject` instances whose ``state`` holds
    their ``__dict__`` (``_parameters``, ``_modules``, ...), tensors are real tensors.
    """
    path = require_regular_file(path, "expected a checkpoint file")
    try:
        if zipfile.is_zipfile(path):
            return _load_zip(path)
        return _load_stream(path)
    except UnsafeCheckpointError as error:
        raise UnsafeCheckpointError(f"refusing to load {path}: {error}") from None
    except CheckpointReadError as error:
        raise CheckpointReadError(f"cannot read {path}: {error}") from None
    except (pickle.UnpicklingError, EOFError, KeyError, zipfile.BadZipFile, ValueError, TypeError,
            RuntimeError, IndexError, AttributeError, struct.error, OverflowError, MemoryError) as error:
        # OverflowError / MemoryError: a garbage length field (FRAME, BINBYTES, ...) claiming exabytes
        raise CheckpointReadError(f"cannot read {path} (truncated, corrupt, or not a checkpoint): "
                                  f"{type(error).__name__}: {error}") from None


def _load_zip(path: Path) -> Any:
    try:
        archive = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError) as error:
        raise CheckpointReadError(f"corrupt PyTorch zip archive: {error}") from None
    with archive:
        names = [n for n in archive.namelist() if n.endswith("data.pkl")]
        if len(names) != 1:
            raise CheckpointReadError(f"expected one data.pkl in the archive, found {names}")
        prefix = names[0][: -len("data.pkl")]
        payload = archive.read(names[0])
        return RestrictedUnpickler(io.BytesIO(payload), _ZipStorages(archive, prefix)).load()


def _load_stream(path: Path) -> Any:
    """A plain pickle, or PyTorch's pre-1.6 container (which starts with a pickled magic number)."""
    if tarfile.is_tarfile(path):
        raise CheckpointReadError("the tar-based PyTorch container (PyTorch < 0.4) is not supported")
    with open(path, "rb") as handle:
        first = RestrictedUnpickler(handle).load()
        if not (type(first) is int and first == _LEGACY_MAGIC_NUMBER):
            return first  # a plain pickle: its only object
        version = RestrictedUnpickler(handle).load()
        if version != _LEGACY_PROTOCOL_VERSION:
            raise CheckpointReadError(f"unknown legacy PyTorch protocol version {version!r}")
        sys_info = RestrictedUnpickler(handle).load()
        if isinstance(sys_info, dict) and sys_info.get("little_endian") is False:
            raise CheckpointReadError("big-endian legacy PyTorch checkpoints are not supported")
        storages = _LegacyStorages(path.stat().st_size)
        result = RestrictedUnpickler(handle, storages).load()
        storages.read_data(handle, RestrictedUnpickler(handle).load())
        return result


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
