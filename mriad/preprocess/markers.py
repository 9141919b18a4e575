"""Resumability on disk: the ``done.json`` marker and leftovers of interrupted writes.

(The output folder's lock is :func:`mriad.infra.locking.folder_lock`, shared with the other stages.)

A subject is finished only when ``done.json`` exists and every file it lists still has the recorded
size and SHA-256. The marker is written last, after image, mask, segmentation and QC picture, and
removed first when a subject is redone, so a crash at any moment leaves either a complete subject or
one that the next run redoes.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
from pathlib import Path
from typing import Any

from mriad.contracts.subject_folder import DONE, OUTPUTS
from mriad.infra.io import atomic_write_json, remove_temporaries

__all__ = ["DONE", "OUTPUTS", "clear_subject", "file_digest", "read_done", "remove_outputs", "write_done"]
MARKER_VERSION = 1


def file_digest(path: Path) -> dict[str, Any]:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return {"size": path.stat().st_size, "sha256": digest.hexdigest()}


def write_done(subject_dir: Path, files: list[str], payload: dict[str, Any]) -> Path:
    record = {"version": MARKER_VERSION, **payload, "files": {n: file_digest(subject_dir / n) for n in files}}
    return atomic_write_json(subject_dir / DONE, record)


def read_done(subject_dir: Path, *, verify: str = "sha256") -> dict[str, Any] | None:
    """The marker when the subject is complete and intact (``verify``: ``sha256``, ``size``), else None."""
    path = subject_dir / DONE
    try:
        record = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(record, dict) or record.get("version") != MARKER_VERSION or not record.get("files"):
        return None
    for name, expected in record["files"].items():
        target = subject_dir / name
        if not target.is_file() or target.stat().st_size != expected.get("size"):
            return None
        if verify == "sha256" and file_digest(target)["sha256"] != expected.get("sha256"):
            return None
    return record


def clear_subject(subject_dir: Path) -> None:
    """Before (re)doing a subject: drop its marker first, then leftovers of an interrupted write."""
    with contextlib.suppress(FileNotFoundError):
        (subject_dir / DONE).unlink()
    remove_temporaries(subject_dir)


def remove_outputs(subject_dir: Path) -> None:
    """After a failure: no half-made subject is left (the marker goes first), nor an empty folder."""
    for name in OUTPUTS:
        with contextlib.suppress(FileNotFoundError):
            (subject_dir / name).unlink()
    remove_temporaries(subject_dir)
    with contextlib.suppress(OSError):
        subject_dir.rmdir()  # only when empty
