"""Atomic file writes and checksummed framing of binary files.

An atomic write leaves a reader the old file or the new one, never half of one.
"""

import hashlib
import json
import os
import struct
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any, BinaryIO


def prepare_dir(path: str | os.PathLike, name: str = "out") -> Path:
    """Creates directory ``path`` if needed; raises a clear error if it cannot be used.

    Example:
      >>> import tempfile
      >>> prepare_dir(tempfile.mkdtemp()).is_dir()
      True

    """
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise NotADirectoryError(f"{name} must be a directory, but {str(path)!r} is a file")
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise OSError(f"{name}: cannot create directory {str(path)!r}: {e.strerror}") from e
    # Probe with a real file: permission bits do not tell root about read-only mounts
    # or immutable directories.
    try:
        fd, probe = tempfile.mkstemp(dir=path, prefix=".write-test.")
    except OSError as e:
        reason = e.strerror
        raise PermissionError(f"{name}: directory {str(path)!r} is not writable: {reason}") from e
    os.close(fd)
    os.unlink(probe)
    return path


def _umask() -> int:
    """The process's umask, read without changing it where the system allows."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except OSError:
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def atomic_write(path: str | os.PathLike, write: Callable[[BinaryIO], Any]) -> Path:
    """Calls ``write(f)`` on a temporary file beside ``path``, then renames it over ``path``.

    The data is flushed to disk before the rename, so a crash leaves either the
    previous file or the complete new one. The file gets the mode a plain ``open``
    would give it (0666 less the umask), so a group or a web server may read a run.

    Example:
      >>> import tempfile
      >>> p = Path(tempfile.mkdtemp()) / "x.bin"
      >>> _ = atomic_write(p, lambda f: f.write(b"hi"))
      >>> p.read_bytes()
      b'hi'

    """
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            os.fchmod(f.fileno(), 0o666 & ~_umask())
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def write_json(path: str | os.PathLike, obj: Any) -> Path:
    """Writes ``obj`` as indented JSON, atomically."""
    data = (json.dumps(obj, indent=2, allow_nan=True) + "\n").encode()
    return atomic_write(path, lambda f: f.write(data))


def frame(magic: bytes, version: int, payload: bytes) -> bytes:
    """``magic``, ``version`` (little-endian uint32) and the payload's SHA-256, then it.

    Example:
      >>> data = frame(b"DEMO", 1, b"payload")
      >>> unframe(data, b"DEMO", 1, path="x", what="demo file")
      b'payload'

    """
    return magic + struct.pack("<I", version) + hashlib.sha256(payload).digest() + payload


def unframe(
    data: bytes,
    magic: bytes,
    version: int,
    *,
    path: str | os.PathLike,
    what: str,
    error: type[Exception] = ValueError,
) -> bytes:
    """The payload of :func:`frame`'s ``data``; raises ``error`` naming ``path`` if damaged."""
    header = len(magic) + 4 + 32
    if len(data) < header or not data.startswith(magic):
        raise error(f"{str(path)!r} is not a {what} (or is truncated)")
    (got,) = struct.unpack("<I", data[len(magic) : len(magic) + 4])
    if got != version:
        raise error(f"{str(path)!r} has format version {got}; this metaopt reads version {version}")
    digest, payload = data[len(magic) + 4 : header], data[header:]
    if hashlib.sha256(payload).digest() != digest:
        raise error(f"{str(path)!r} is corrupted or truncated (checksum mismatch)")
    return payload
