"""One writer per output folder: a lock file holding the owner's pid, taken over when stale.

Two processes writing the same run or output folder would interleave files; the second one is refused
with a message naming the holder. A lock left by a process that died (kill -9, power loss) is detected
by checking whether its pid is still alive on this host, and taken over.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import time
from collections.abc import Iterator
from pathlib import Path

from mriad.errors import LockError

LOCK_NAME = ".mriad.lock"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _read(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return {}


@contextlib.contextmanager
def folder_lock(folder: str | Path, purpose: str = "writing") -> Iterator[Path]:
    """Hold ``folder/.mriad.lock`` for the duration of the block (re-entrant within one process)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / LOCK_NAME
    me = {"pid": os.getpid(), "host": socket.gethostname(), "purpose": purpose, "since": time.time()}
    for _ in range(3):
        try:
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            holder = _read(path)
            pid = int(holder.get("pid", -1) or -1)
            same_host = holder.get("host") == me["host"]
            if pid == me["pid"] and same_host:
                yield path  # already ours (nested use)
                return
            if holder and same_host and pid > 0 and _alive(pid):
                raise LockError(
                    f"{folder}: in use by process {pid} ({holder.get('purpose', 'writing')}); "
                    f"wait for it to finish, or remove {path} if that process is gone"
                ) from None
            if holder and not same_host:
                raise LockError(f"{folder}: locked by {holder.get('host')} pid {pid}; remove {path} if stale") from None
            # Stale (dead owner) or unreadable half-written lock: take it over.
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
            continue
        with os.fdopen(fd, "w") as handle:
            json.dump(me, handle)
        try:
            yield path
        finally:
            if _read(path).get("pid") == me["pid"]:
                with contextlib.suppress(FileNotFoundError):
                    path.unlink()
        return
    raise LockError(f"{folder}: could not take the lock {path}")
