"""The record beside each map, ``recon/<split>/<subject>.json``: what made it (issue 14, defect 3).

``reconstruct`` writes it after both maps of a subject: the SHA-256 of the scan and brain mask it
read, the identity of the model (:func:`~mriad.contracts.run_folder.model_identity`: the checkpoint's
digest) and the inference settings. A map is reused only while its record matches: ``reconstruct``
redoes any other, ``evaluate`` refuses to score a scan against the maps of another. File digests are
cached per (path, size, mtime_ns) (:mod:`mriad.infra.digests`), so checking a split is cheap.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from mriad.contracts.run_folder import RunFolder, model_identity
from mriad.infra.digests import file_sha256
from mriad.infra.errors import InputError

RECORD_VERSION = 1
# Settings that change a map; a map made with others is redone by `reconstruct`. The batch size and
# device are recorded too, but only for the reader: `evaluate` fills in missing maps with defaults and
# must not redo every map of a split that `reconstruct --volumes-per-batch 8` made on a GPU.
MATCHED_SETTINGS = ("which", "seed", "skip_empty_boxes", "inference")


def input_digests(image: str | Path, mask: str | Path | None) -> dict[str, str | None]:
    """SHA-256 of a subject's scan and brain mask (None when the manifest names no mask)."""
    return {"image": file_sha256(image), "mask": None if _blank(mask) else file_sha256(str(mask))}


def _blank(value: object) -> bool:
    return value is None or (isinstance(value, float) and value != value) or not str(value).strip()


def write_recon_record(
    run: str | Path,
    split: str,
    subject: str,
    *,
    inputs: dict[str, str | None],
    model: dict[str, Any],
    settings: dict[str, Any],
) -> Path:
    """Record what made a subject's maps; call it after both maps are written (a crash in between
    leaves maps without a record, which are redone)."""
    folder = RunFolder(run)
    rec, score = folder.recon_files(split, subject)
    from mriad.infra.io import atomic_write_json

    record = {
        "version": RECORD_VERSION,
        "subject_id": subject,
        "inputs": inputs,
        "model": model,
        "settings": settings,
        "maps": {"rec_bytes": rec.stat().st_size, "score_bytes": score.stat().st_size},
    }
    return atomic_write_json(folder.recon_record(split, subject), record)


def read_recon_record(run: str | Path, split: str, subject: str) -> dict[str, Any] | None:
    """The record of a subject's maps, or None when there is none (or it is not a record)."""
    try:
        record = json.loads(RunFolder(run).recon_record(split, subject).read_text())
    except (OSError, ValueError):
        return None
    return record if isinstance(record, dict) and record.get("version") == RECORD_VERSION else None


def recon_mismatch(
    run: str | Path,
    split: str,
    subject: str,
    inputs: dict[str, str | None],
    *,
    model: dict[str, Any] | None = None,
    settings: dict[str, Any] | None = None,
) -> str | None:
    """Why a subject's maps cannot be used for ``inputs`` (a few words), or None when they can.

    ``model`` is the identity of the model that would make them now; None accepts the checkpoint the
    record names as long as that file is unchanged. ``settings`` None accepts any settings.
    """
    folder = RunFolder(run)
    rec, score = folder.recon_files(split, subject)
    if not (rec.is_file() and score.is_file()):
        return "no maps"
    record = read_recon_record(run, split, subject)
    if record is None:
        return "maps without a record of what made them"
    maps = record.get("maps") or {}
    if (maps.get("rec_bytes"), maps.get("score_bytes")) != (rec.stat().st_size, score.stat().st_size):
        return "maps changed after they were recorded"
    for key, what in (("image", "the image"), ("mask", "the brain mask")):
        if (record.get("inputs") or {}).get(key) != inputs.get(key):
            return f"made from another version of {what}"
    recorded_model = record.get("model") or {}
    current = model if model is not None else model_identity(run, str(recorded_model.get("which", "best")))
    if recorded_model != current:
        return "made by another checkpoint"
    if settings is not None:
        stored = record.get("settings") or {}
        changed = [key for key in MATCHED_SETTINGS if stored.get(key) != settings.get(key)]
        if changed:
            return f"made with other settings ({', '.join(changed)})"
    return None


def stale_maps(run: str | Path, split: str, subject: str, image: str | Path, mask: str | Path | None) -> str | None:
    """Why a subject's maps do not belong to its scan and mask as they are now, or to the checkpoint
    that made them (see :func:`recon_mismatch`); None when they do. For readers of maps (evaluate)."""
    try:
        inputs = input_digests(image, mask)
    except InputError as exc:
        return str(exc)
    return recon_mismatch(run, split, subject, inputs)
