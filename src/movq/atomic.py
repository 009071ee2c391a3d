"""Output files: atomic writes (temporary name in the target folder, then rename, so a crash or kill
never leaves a half-written file under the final name) and up-front checks that an output location
is writable, so a run fails before its work rather than after it; and the check that a file about to
be read is a regular file (:func:`check_regular_file`: a FIFO or device would block the reader)."""

from __future__ import annotations

import contextlib
import errno
import os
import uuid
from collections.abc import Callable
from pathlib import Path


def atomic_write(path: str | os.PathLike, write: Callable[[str], object]) -> Path:
    """Call ``write(tmp_path)`` to fill a temporary file beside ``path``, then rename it onto ``path``.

    Every output gets the usual permissions, ``0o666 & ~umask`` (e.g. ``0o644``), whatever ``write`` does:
    the temporary file is created with mode ``0o666`` (the kernel applies the process umask), and
    that mode is set again after ``write``, since writers that replace the file (safetensors'
    ``save_file`` writes ``0o600``) would otherwise leave it unreadable to others. The umask itself is
    never changed (thread-safe). On any error the temporary file is removed and the error re-raised.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.parent / f".{path.name}.{uuid.uuid4().hex[:12]}.tmp"
    fd = os.open(tmp, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o666)
    try:
        mode = os.fstat(fd).st_mode & 0o777  # 0o666 less the umask
    finally:
        os.close(fd)
    try:
        write(str(tmp))
        with contextlib.suppress(OSError):  # a filesystem without modes (some FUSE / SMB mounts) keeps its own
            os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException as error:
        tmp.unlink(missing_ok=True)
        if is_disk_full(error):
            state = "its previous version is unchanged" if path.exists() else "nothing was written"
            raise DiskFullError(f"no space left on device while writing {path}; {state}. Free space and retry") from error
        raise
    return path


class DiskFullError(OSError):
    """No space left on the device (or quota) while a file was written atomically; the message names the
    file, whose previous version (if any) is left unchanged."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.errno = errno.ENOSPC


def is_disk_full(error: BaseException | None) -> bool:
    """Whether ``error`` (or an error it was raised from or during: torch.save's ``inline_container``
    ``RuntimeError`` hides the ``OSError``) says the disk or the quota is full."""
    while error is not None:
        if isinstance(error, OSError) and error.errno in (errno.ENOSPC, errno.EDQUOT):
            return True
        if "no space left on device" in str(error).lower():
            return True
        error = error.__cause__ or error.__context__
    return False


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    """Write ``text`` (UTF-8) to ``path`` atomically."""
    return atomic_write(path, lambda tmp: Path(tmp).write_text(text, encoding="utf-8"))


def check_writable_dir(path: str | os.PathLike, flag: str = "--out") -> Path:
    """Create the folder ``path`` if needed and prove a file can be written in it; ``ValueError`` otherwise."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise ValueError(f"{flag} {path} is a file, expected a folder")
    try:
        path.mkdir(parents=True, exist_ok=True)
        probe = path / f".movq-write-test-{uuid.uuid4().hex[:12]}"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as error:
        raise ValueError(f"{flag} {path} is not writable: {error.strerror or error}") from None
    return path


def check_writable_file(path: str | os.PathLike, flag: str = "--out") -> Path:
    """Check that the file ``path`` can be written (its folder is created if needed); ``ValueError`` otherwise."""
    path = Path(path)
    if path.is_dir():
        raise ValueError(f"{flag} {path} is a folder, expected a file name")
    if path.exists() and not os.access(path, os.W_OK):
        raise ValueError(f"{flag} {path} exists and is not writable")
    try:
        check_writable_dir(path.parent)
    except ValueError as error:
        raise ValueError(f"{flag} {path} cannot be written: {str(error).removeprefix('--out ')}") from None
    return path


NOT_REGULAR = "is not a regular file (a FIFO, device, socket or folder)"


def check_regular_file(path: str | os.PathLike, advice: str, error: type[Exception] = ValueError) -> None:
    """Refuse (``error``, naming ``path`` and saying ``advice``) a ``path`` that exists but is not a regular
    file: reading a FIFO, device or socket blocks or never ends, and a folder cannot be read. A missing
    ``path`` passes (the caller decides what that means)."""
    path = Path(path)
    if path.exists() and not path.is_file():
        raise error(f"{path} {NOT_REGULAR}; {advice}")


def require_regular_file(path: str | os.PathLike, advice: str, error: type[Exception] = FileNotFoundError) -> Path:
    """``path`` as a ``Path`` when it is a regular file (every reader of the project opens files through this
    check or :func:`check_regular_file`); otherwise ``error`` naming ``path``, what it is (missing, or a FIFO,
    device, socket or folder, whose read would block, never end or fail) and ``advice``."""
    path = Path(path)
    if not path.is_file():
        raise error(f"{path} {NOT_REGULAR if path.exists() else 'not found'}; {advice}")
    return path


def remove_stale_temporaries(folder: str | os.PathLike) -> int:
    """Delete the temporary files (``.NAME.<12 hex>.tmp``) that :func:`atomic_write` calls of a killed run left
    directly in ``folder``; returns how many. Call it before any process of a resumed run writes there."""
    stale = [p for p in Path(folder).glob(".*.tmp") if len(p.suffixes) >= 2 and len(p.suffixes[-2]) == 13]
    for path in stale:
        path.unlink(missing_ok=True)
    return len(stale)
