"""The batch-level outputs: ``OUT/manifest.csv`` and ``OUT/failures.csv``.

The manifest lists every finished subject under OUT, not only this run's: preprocessing IXI and then
BraTS into the same folder gives one manifest with both. Splits and folds that ``mriad split`` already
wrote into it are kept for subjects that are still there.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd

from mriad.contracts.manifest import COLUMNS, OPTIONAL_COLUMNS, OPTIONAL_PATH_COLUMNS, write_manifest
from mriad.contracts.subject_folder import finished_markers
from mriad.preprocess import markers
from mriad.preprocess.datasets import Problem

MANIFEST = "manifest.csv"
FAILURES = "failures.csv"
FAILURE_COLUMNS = ["subject", "file", "reason", "dataset"]


def _stored_rows(out: Path, skip_dataset: str) -> list[dict[str, Any]]:
    """Rows of finished subjects of other data sets under OUT (size check only: cheap for thousands)."""
    rows = []
    for done in finished_markers(out):
        folder = done.parent
        if folder.parent.name == skip_dataset:
            continue
        record = markers.read_done(folder, verify="size")
        if record is None:
            continue
        row = dict(record.get("row", {}))
        for column in ("image", "mask", "seg", *OPTIONAL_PATH_COLUMNS):
            row[column] = str(folder / row[column]) if row.get(column) else ""
        rows.append(row)
    return rows


def _previous_splits(path: Path) -> dict[str, tuple[str, str]]:
    if not path.is_file():
        return {}
    try:
        old = pd.read_csv(path, dtype=str, keep_default_na=False)
    except Exception:
        return {}
    if not {"subject_id", "split", "fold"} <= set(old.columns):
        return {}
    return {str(r.subject_id): (str(r.split), str(r.fold)) for r in old.itertuples(index=False)}


def write_outputs(out: Path, dataset: str, rows: list[dict[str, Any]], failures: list[Problem]) -> tuple[Path, Path]:
    """Write the manifest (this data set's ``rows`` plus the other data sets found in OUT) and failures."""
    out = Path(out)
    manifest_path = out / MANIFEST
    all_rows = _stored_rows(out, dataset) + list(rows)
    columns = COLUMNS + OPTIONAL_PATH_COLUMNS + OPTIONAL_COLUMNS  # write_manifest drops an optional one nobody has
    frame = pd.DataFrame(all_rows, columns=columns) if all_rows else pd.DataFrame(columns=COLUMNS)
    frame = _unique_ids(frame)
    splits = _previous_splits(manifest_path)
    if splits and len(frame):
        frame["split"] = [splits.get(s, ("", ""))[0] for s in frame["subject_id"]]
        frame["fold"] = [splits.get(s, ("", ""))[1] for s in frame["subject_id"]]
    frame = frame.sort_values(["dataset", "subject_id"], kind="stable").reset_index(drop=True)
    write_manifest(frame, manifest_path)
    failure_frame = pd.DataFrame(
        [{"subject": p.subject, "file": p.file, "reason": p.reason, "dataset": dataset} for p in failures],
        columns=FAILURE_COLUMNS,
    )
    from mriad.infra.io import atomic_write_csv

    failures_path = out / FAILURES
    atomic_write_csv(failures_path, failure_frame)
    return manifest_path, failures_path


def _unique_ids(frame: pd.DataFrame) -> pd.DataFrame:
    """Two data sets with the same subject name (``sub-01``) get ``<dataset>-`` prefixes, not a clash."""
    if frame.empty:
        return frame
    ids = frame["subject_id"].astype(str)
    clash = ids.duplicated(keep=False)
    if clash.any():
        frame = frame.copy()
        frame.loc[clash, "subject_id"] = frame.loc[clash, "dataset"].astype(str) + "-" + ids[clash]
    return frame
