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
    try:
        _refuse_participants(folder, path)  # shards writing it (see shard_lock)
    except BaseException:
        if _still_named(fd, path):
            path.unlink()
        os.close(fd)
        _remove_if_empty(created)
        raise
    _HELD[key] = fd
    try:
        remove_temporaries(folder)  # ours now: any temporary file is a dead writer's leftover
        yield path
    finally:
        _release(key, fd, path, created)


def _release(key: str, fd: int, path: Path, created: list[Path]) -> None:
    """Let go of a lock taken by :func:`_acquire`. Unlink while still holding the flock, then close:
    a waiter that opened the old file notices that the name has moved on (see _still_named) and tries
    again."""
    del _HELD[key]
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


def refuse_live_locks(folder: str | Path, why: str) -> None:
    """Raise LockError if a live process (other than this one) holds any lock file under ``folder``.

    For whoever deletes a tree (``train --force``): a running ``evaluate`` or ``reconstruct`` holds its
    lock in the split's evaluation or reconstruction folder, and removing the folder under it would leave the old
    model's maps and metrics beside the new weights. Locks this process holds are its own business.
    """
    folder = Path(folder)
    if not folder.is_dir():
        return
    for path in sorted(folder.rglob(LOCK_NAME + "*")):
        if not path.is_file() or str(path.resolve()) in _HELD:
            continue
        holder = _probe(path)
        if holder is not None:
            raise LockError(
                f"{path.parent}: in use by process {holder.get('pid', '?')} ({holder.get('purpose', 'writing')}); "
                f"{why}: wait for it to finish, or remove {path} if that process is gone"
            )


# --- Several writers in one folder: shards (issue 20) -------------------------------------------------
#
# Shards of one stage (a Slurm array) write disjoint subjects into the same folder at the same time.
# Each holds its own lock file ``.mriad.lock.shard-[<group>-]<i>-of-<n>``; a merge holds
# ``.mriad.lock.merge-<group>`` and writes shared files (a manifest) under ``.mriad.lock.manifest``.
# Whole-folder writers (:func:`folder_lock`) and these participants exclude each other by the usual
# two-flag pattern: each takes its own lock first and then looks for the other's, so of two that start
# together at least one sees the other. Participants never sweep the folder's temporaries: a live
# shard's temporary file looks like a dead one's (whole-folder writers sweep them).

PARTICIPANT_PREFIX = LOCK_NAME + "."
_RETRIES = 5  # a sibling probing our file holds its flock for microseconds: look again, not refuse


def _probe(path: Path) -> dict | None:
    """The holder of a live lock at ``path`` (its JSON, or ``{"pid": "?"}``), None when free or absent."""
    try:
        fd = os.open(path, os.O_RDWR)
    except (FileNotFoundError, PermissionError):
        return None
    try:
        got = _flock(fd)
        if got is True:
            return None  # free: a dead holder's file (our flock goes with the descriptor)
        holder = _read(path)
        if got is None:
            mine = holder.get("host") in (None, socket.gethostname())
            return holder if holder and mine and _alive(int(holder.get("pid", -1) or -1)) else None
        return holder or {"pid": "?"}
    finally:
        os.close(fd)


def _live_participants(folder: Path, skip: Path | None = None) -> list[tuple[Path, dict]]:
    found = []
    for path in sorted(folder.glob(PARTICIPANT_PREFIX + "*")):
        if path == skip or str(path.resolve()) in _HELD:
            continue
        holder = _probe(path)
        if holder is not None:
            found.append((path, holder))
    return found


def _refuse_participants(folder: Path, own: Path) -> None:
    """Raise LockError when a shard or merge is writing ``folder`` (called by :func:`folder_lock`)."""
    live = _live_participants(folder, skip=own)
    if live:
        path, holder = live[0]
        raise LockError(
            f"{folder}: {len(live)} shard(s) or merge(s) are writing it (process {holder.get('pid', '?')}: "
            f"{holder.get('purpose', path.name)}); wait for them to finish, or remove {path} if that process is gone"
        )


@contextlib.contextmanager
def _named_lock(folder: Path, name: str, purpose: str, wait: float = 0.0) -> Iterator[Path]:
    """Hold ``folder/.mriad.lock.<name>``; ``wait`` seconds of retrying before a live holder refuses us."""
    created = _missing_ancestors(folder)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / (PARTICIPANT_PREFIX + name)
    key = str(path.resolve())
    if key in _HELD:
        yield path
        return
    me = {"pid": os.getpid(), "host": socket.gethostname(), "purpose": purpose, "since": time.time()}
    deadline = time.monotonic() + wait
    attempt = 0
    while True:
        try:
            fd = _acquire(folder, path, me)
            break
        except LockError:
            attempt += 1
            if attempt >= _RETRIES and time.monotonic() >= deadline:
                _remove_if_empty(created)
                raise
            time.sleep(0.05 if attempt < _RETRIES else 0.2)
        except BaseException:
            _remove_if_empty(created)
            raise
    _HELD[key] = fd
    try:
        yield path
    finally:
        _release(key, fd, path, created)


def _check_no_folder_writer(folder: Path) -> None:
    if str((folder / LOCK_NAME).resolve()) in _HELD:
        return  # this process holds the whole folder: nested use
    holder = _probe(folder / LOCK_NAME)
    if holder is not None:
        raise _refusal(folder, folder / LOCK_NAME, holder)


def _merge_tag(group: str) -> str:
    return f"merge-{group}" if group else "merge"


def _shard_tag(group: str, index: int, count: int) -> str:
    return f"shard-{group + '-' if group else ''}{index}-of-{count}"


@contextlib.contextmanager
def shard_lock(folder: str | Path, index: int, count: int, purpose: str, group: str = "") -> Iterator[Path]:
    """Hold shard ``index`` of ``count`` of ``folder`` (``group``: e.g. the data set, when shards of
    several kinds share a folder). Shards of one count run side by side; refused are a second copy of
    the same shard, a whole-folder writer, a merge of the group and shards of the group cut another way."""
    from mriad.infra.paths import check_identifier

    if not 0 <= index < count:
        raise LockError(f"{folder}: shard {index}/{count} does not exist")
    if group:
        check_identifier(group, "shard group")
    folder = Path(folder)
    prefix = PARTICIPANT_PREFIX + "shard-" + (group + "-" if group else "")
    with _named_lock(folder, _shard_tag(group, index, count), purpose) as own:
        _check_no_folder_writer(folder)
        for path, holder in _live_participants(folder, skip=own):
            name = path.name
            other_cut = name.startswith(prefix) and not name.endswith(f"-of-{count}")
            if other_cut or name == PARTICIPANT_PREFIX + _merge_tag(group):
                raise LockError(
                    f"{folder}: process {holder.get('pid', '?')} ({holder.get('purpose', name)}) is writing it; "
                    f"all shards must use the same n, and a merge waits for the shards (remove {path} if it is gone)"
                )
        yield own


@contextlib.contextmanager
def merge_lock(folder: str | Path, purpose: str, group: str = "") -> Iterator[Path]:
    """Hold the merge of ``group``'s shards in ``folder``: refused while one of them still runs."""
    folder = Path(folder)
    prefix = PARTICIPANT_PREFIX + "shard-" + (group + "-" if group else "")
    with _named_lock(folder, _merge_tag(group), purpose) as own:
        _check_no_folder_writer(folder)
        running = [(p, h) for p, h in _live_participants(folder, skip=own) if p.name.startswith(prefix)]
        if running:
            path, holder = running[0]
            raise LockError(
                f"{folder}: {len(running)} shard(s) still running (process {holder.get('pid', '?')}: "
                f"{holder.get('purpose', path.name)}); merge when they have finished"
            )
        yield own


@contextlib.contextmanager
def short_lock(folder: str | Path, name: str, purpose: str, wait: float = 60.0) -> Iterator[Path]:
    """Hold ``folder/.mriad.lock.<name>`` around one shared write (a manifest), waiting up to ``wait``
    seconds for another holder (a merge of another data set) to finish its write."""
    with _named_lock(Path(folder), name, purpose, wait=wait) as path:
        yield path
