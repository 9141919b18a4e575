"""Identifiers that become parts of paths, and the one way to build an output path from them.

A subject ID, dataset, split or model name read from a manifest, a run's config or the command line is
untrusted: ``../../x`` or ``a/b`` must never reach the file system. :func:`check_identifier` accepts a
conservative pattern (what BraTS, IXI, MSLUB, BIDS and mriad's own names use) and :func:`child` joins
parts under a folder and refuses any result that resolves outside it (symlinks included).
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from mriad.infra.errors import InputError, MriadError

# Letters, digits, '.', '_', '-', '+'; starts with a letter or digit (so never '.', '..' or a dot-file).
IDENTIFIER = re.compile(r"[A-Za-z0-9][A-Za-z0-9._+-]{0,199}")


def is_identifier(value: object) -> bool:
    return isinstance(value, str) and IDENTIFIER.fullmatch(value) is not None and ".." not in value


def check_identifier(value: object, what: str, source: str | os.PathLike[str] = "") -> str:
    """``value`` as a string if it is a safe identifier, else a one-line error naming ``source``."""
    text = str(value)
    if not is_identifier(text):
        reason = (
            f"{what} {text!r} cannot be used in a file name: use letters, digits, '.', '_', '-' or '+', "
            "starting with a letter or digit"
        )
        raise InputError(os.fspath(source), reason) if str(source) else MriadError(reason)
    return text


def child(folder: str | os.PathLike[str], *parts: str) -> Path:
    """``folder/parts...``, refused with an :class:`InputError` if it would land outside ``folder``."""
    base = Path(folder)
    path = base.joinpath(*parts)
    root = os.path.realpath(base)
    target = os.path.realpath(path)
    if os.path.commonpath([root, target]) != root or any(Path(p).is_absolute() for p in parts):
        raise InputError(path, f"refusing a path outside {base}")
    return path
