"""``preprocess --shard i/n`` and ``preprocess --merge``: one data set preprocessed by a Slurm array.

Shards of one data set write their subjects into the same OUT at the same time (each holds its own
lock, see :func:`mriad.infra.locking.shard_lock`) and a partial manifest and failure list of their
own, ``OUT/shards/<dataset>/<i>-of-<n>/{manifest.csv,failures.csv}``; they never touch
``OUT/manifest.csv``. The merge, run once every shard has finished and with the same options, looks
at every subject of the raw data set as an unsharded run would (a subject counts when its
``done.json`` verifies), takes the failure reasons from the shards' lists, and writes
``OUT/manifest.csv`` and ``OUT/failures.csv`` under a short lock: the same files as one unsharded run.
When every subject is accounted for, the shards' partial lists are removed.
"""

from __future__ import annotations

import contextlib
import shutil
from pathlib import Path
from typing import TYPE_CHECKING

import pandas as pd

from mriad.contracts.manifest import COLUMNS, OPTIONAL_COLUMNS, OPTIONAL_PATH_COLUMNS, write_manifest
from mriad.infra.io import atomic_write_csv
from mriad.infra.shards import shard_label
from mriad.preprocess.datasets import Problem, Subject

if TYPE_CHECKING:
    from mriad.preprocess.pipeline import PreprocessResult

SHARDS = "shards"


def shard_folder(out: Path, dataset: str, shard: tuple[int, int]) -> Path:
    return Path(out) / SHARDS / dataset / shard_label(shard)


def write_partial(
    out: Path, dataset: str, shard: tuple[int, int], rows: list[dict], failures: list[Problem]
) -> tuple[Path, Path]:
    """A shard's own manifest (its finished subjects) and failure list."""
    from mriad.preprocess.outputs import FAILURE_COLUMNS

    folder = shard_folder(out, dataset, shard)
    columns = COLUMNS + OPTIONAL_PATH_COLUMNS + OPTIONAL_COLUMNS
    frame = pd.DataFrame(rows, columns=columns) if rows else pd.DataFrame(columns=COLUMNS)
    frame = frame.sort_values(["dataset", "subject_id"], kind="stable").reset_index(drop=True)
    manifest = write_manifest(frame, folder / "manifest.csv")
    table = pd.DataFrame(
        [{"subject": p.subject, "file": p.file, "reason": p.reason, "dataset": dataset} for p in failures],
        columns=FAILURE_COLUMNS,
    )
    return manifest, atomic_write_csv(folder / "failures.csv", table)


def recorded_failures(out: Path, dataset: str) -> dict[str, Problem]:
    """Failures the shards (or an earlier merge, in OUT/failures.csv) recorded, by subject."""
    from mriad.preprocess.outputs import FAILURES

    lists = sorted((Path(out) / SHARDS / dataset).glob(f"*/{FAILURES}"))
    found: dict[str, Problem] = {}
    for path in [Path(out) / FAILURES, *lists]:  # the shards' lists are newer: they win
        try:
            table = pd.read_csv(path, dtype=str, keep_default_na=False)
        except (OSError, ValueError):
            continue
        if not {"subject", "file", "reason"} <= set(table.columns):
            continue
        for row in table.itertuples(index=False):
            if getattr(row, "dataset", dataset) == dataset:
                found[str(row.subject)] = Problem(str(row.subject), str(row.file), str(row.reason))
    return found


def missing_problem(subject: Subject) -> Problem:
    return Problem(
        subject.subject_id,
        str(subject.image),
        f"{subject.image}: not preprocessed (its shard has not run or did not finish: rerun that shard, then merge)",
    )


def remove_partials(out: Path, dataset: str) -> None:
    """After a merge that accounted for every subject: the shards' lists are in OUT's now."""
    folder = Path(out) / SHARDS / dataset
    shutil.rmtree(folder, ignore_errors=True)
    with contextlib.suppress(OSError):  # not empty: other data sets' shards are still there
        folder.parent.rmdir()


def merge(
    raw: Path,
    out: Path,
    *,
    dataset: str,
    modality: str = "t2",
    skull_strip: str | None = None,
    registration: str | None = None,
    demographics: Path | None = None,
    device: str = "cpu",
    n4: bool = True,
    qc: bool = True,
) -> PreprocessResult:
    """Write OUT's manifest and failure list from the finished subjects of ``raw`` (same options as the
    shards); subjects neither finished nor failed are listed as failures ("not preprocessed")."""
    import time

    from mriad.infra.locking import merge_lock, short_lock
    from mriad.preprocess.outputs import write_outputs
    from mriad.preprocess.pipeline import (
        PreprocessResult,
        check_paths,
        completed,
        discover_subjects,
        resolve_options,
        subject_folder,
    )

    start = time.perf_counter()
    raw, out = Path(raw), Path(out)
    check_paths(raw, out)
    options = resolve_options(dataset, modality, skull_strip, registration, device, n4, qc)
    subjects, problems = discover_subjects(raw, dataset, options, demographics)
    with merge_lock(out, f"preprocess {options.dataset} merge", options.dataset):
        recorded = recorded_failures(out, options.dataset)
        rows, finished, failures, missing = [], [], list(problems), 0
        for subject in subjects:
            outcome = completed(subject, subject_folder(out, options.dataset, subject.subject_id), options)
            if outcome is not None:
                rows.append(outcome.row)
                finished.append(subject.subject_id)
            elif subject.subject_id in recorded:
                failures.append(recorded[subject.subject_id])
            else:
                failures.append(missing_problem(subject))
                missing += 1
        with short_lock(out, "manifest", f"preprocess {options.dataset} merge: manifest"):
            manifest, failures_csv = write_outputs(out, options.dataset, rows, failures)
        if not missing:
            remove_partials(out, options.dataset)
    return PreprocessResult(
        manifest=manifest,
        failures_csv=failures_csv,
        done=[],
        skipped=finished,
        failures=failures,
        timings={},
        warnings={},
        options=options,
        seconds=round(time.perf_counter() - start, 3),
    )
