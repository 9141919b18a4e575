"""One writer per output folder: a lock file that names its owner, taken over when the owner is dead.

Two processes writing the same run or output folder would interleave files; the second one is refused
with a message naming the holder. Liveness comes from an advisory ``flock`` on the lock file, which the
kernel releases when its process ends, however it ends (kill -9, out of memory): a lock file whose
flock is free belongs to a dead process and is taken over, and a reused pid can never make a dead
lock look alive. The file's JSON content (pid, host, purpose, since) is only for messages. Where a
file system has no flock, the pid is checked instead (alive on this host = held).

Whoever takes the lock also sweeps the folder of temporary files a killed writer left behind (they
never carry a final name, see :func:`mriad.infra.io.atomic_path`), and a folder the lock itself created is
removed again when the block ends with nothing written into it, so a stage that fails before writing
anything leaves no empty output folder behind.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import socket
import time
from collections.abc import Iterator
from pathlib import Path

from mriad.infra.errors import LockError
from mriad.infra.io import remove_temporaries

LOCK_NAME = ".mriad.lock"
_ATTEMPTS = 20
# Lock files this process holds (resolved path -> open descriptor): nested use is not a second writer.
_HELD: dict[str, int] = {}


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
        content = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return content if isinstance(content, dict) else {}


def _flock(fd: int) -> bool | None:
    """Try to take the flock: True (ours), False (a live process holds it), None (no flock here)."""
    import fcntl

    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    except OSError as exc:
        if exc.errno in (errno.EAGAIN, errno.EACCES):
            return False
        return None  # ENOLCK, EOPNOTSUPP...: this file system cannot flock
    return True


def _still_named(fd: int, path: Path) -> bool:
    """Whether ``path`` still names the file open as ``fd`` (a releasing holder unlinks it)."""
    try:
        named = os.stat(path)
    except FileNotFoundError:
        return False
    mine = os.fstat(fd)
    return (named.st_dev, named.st_ino) == (mine.st_dev, mine.st_ino)


def _refusal(folder: Path, path: Path, holder: dict) -> LockError:
    pid, host = holder.get("pid", "?"), holder.get("host")
    if host and host != socket.gethostname():
        return LockError(f"{folder}: locked by {host} pid {pid}; remove {path} if that process is gone")
    return LockError(
        f"{folder}: in use by process {pid} ({holder.get('purpose', 'writing')}); "
        f"wait for it to finish, or remove {path} if that process is gone"
    )


def _acquire(folder: Path, path: Path, me: dict) -> int:
    """Open ``path`` and make it ours; returns the descriptor that keeps it (raises LockError if held)."""
    for _ in range(_ATTEMPTS):
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        except PermissionError as exc:
            raise LockError(f"{folder}: cannot open the lock file {path} ({exc.strerror})") from None
        try:
            got = _flock(fd)
            holder = _read(path)
            if got is False:
                if not holder:  # the holder has not written its name yet: look again shortly
                    time.sleep(0.05)
                    holder = _read(path) or {"pid": "?"}
                raise _refusal(folder, path, holder)
            if got is True and not _still_named(fd, path):
                os.close(fd)  # we locked a file its holder had just removed: start over
                continue
            if holder and holder.get("host") not in (None, me["host"]):
                raise _refusal(folder, path, holder)  # another machine: its liveness is unknown here
            if got is None and holder and _alive(int(holder.get("pid", -1) or -1)) and holder["pid"] != me["pid"]:
                raise _refusal(folder, path, holder)
            # Free, or left by a dead process: ours now.
            os.ftruncate(fd, 0)
            os.pwrite(fd, json.dumps(me).encode(), 0)
            return fd
        except BaseException:
            with contextlib.suppress(OSError):
                os.close(fd)
            raise
    raise LockError(f"{folder}: could not take the lock {path}")


@contextlib.contextmanager
def folder_lock(folder: str | Path, purpose: str = "writing") -> Iterator[Path]:
    """Hold ``folder/.mriad.lock`` for the duration of the block (re-entrant within one process)."""
    folder = Path(folder)
    created = _missing_ancestors(folder)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / LOCK_NAME
    key = str(path.resolve())
    if key in _HELD:  # nested use within this process
        yield path
        return
    me = {"pid": os.getpid(), "host": socket.gethostname(), "purpose": purpose, "since": time.time()}
    try:
        fd = _acquire(folder, path, me)
    except BaseException:
        _remove_if_empty(created)
        raise
    _HELD[key] = fd
    try:
        remove_temporaries(folder)  # ours now: any temporary file is a dead writer's leftover
        yield path
    finally:
        del _HELD[key]
        # Unlink while still holding the flock, then let go: a waiter that opened the old file notices
        # that the name has moved on (see _still_named) and tries again.
        if _still_named(fd, path):
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
        os.close(fd)
        _remove_if_empty(created)


def _missing_ancestors(folder: Path) -> list[Path]:
    """``folder`` and those of its parents that do not exist yet, deepest first."""
    missing = []
    current = folder.absolute()
    while not current.exists() and current != current.parent:
        missing.append(current)
        current = current.parent
    return missing


def _remove_if_empty(folders: list[Path]) -> None:
    """Remove folders the lock created (deepest first) as long as they are empty."""
    for folder in folders:
        try:
            folder.rmdir()
        except FileNotFoundError:
            continue
        except OSError:  # not empty: outputs were written
            return
