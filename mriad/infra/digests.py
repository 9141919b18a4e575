"""SHA-256 of files, computed once per process for each version of a file.

A result's record names the digests of what made it (scans, masks, checkpoint); checking a split of
a thousand subjects must not read every scan twice. A digest is kept per (real path, size, mtime_ns):
a file rewritten in place gets a new mtime and is digested again.
"""

from __future__ import annotations

import hashlib
import os
import threading
from pathlib import Path

from mriad.infra.errors import InputError

_BLOCK = 1 << 20
_cache: dict[tuple[str, int, int], str] = {}
_guard = threading.Lock()


def file_sha256(path: str | os.PathLike[str]) -> str:
    """The hex SHA-256 of ``path``'s bytes; an unreadable file is refused with one line naming it."""
    path = Path(path)
    try:
        stat = path.stat()
        key = (os.path.realpath(path), stat.st_size, stat.st_mtime_ns)
        with _guard:
            known = _cache.get(key)
        if known is not None:
            return known
        digest = hashlib.sha256()
        with open(path, "rb") as handle:
            for block in iter(lambda: handle.read(_BLOCK), b""):
                digest.update(block)
    except OSError as exc:
        raise InputError(path, f"cannot be read ({exc.strerror or type(exc).__name__})") from None
    value = digest.hexdigest()
    with _guard:
        _cache[key] = value
    return value


def text_sha256(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()
