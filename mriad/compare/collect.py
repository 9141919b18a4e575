"""Find run folders and read what `mriad evaluate` wrote into them, refusing what cannot be compared.

Only the files of the run-folder contract are read (the config, each split's per-subject metrics and
summary, located by :class:`mriad.contracts.run_folder.RunFolder`), never another stage's code, so
`compare` works on runs copied from elsewhere.
"""

from __future__ import annotations

import glob
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from mriad.contracts.run_folder import CONFIG, RunFolder, is_run_folder
from mriad.infra.console import debug
from mriad.infra.errors import InputError, MriadError

_GLOB_CHARS = set("*?[")


@dataclass(eq=False)  # identity equality: a run is itself, whatever its tables hold
class RunEval:
    """One run's configuration and its evaluation on one split."""

    path: Path
    config: dict[str, Any]
    summary: dict[str, Any] = field(default_factory=dict)
    per_subject: pd.DataFrame = field(default_factory=pd.DataFrame)  # indexed by subject_id

    @property
    def name(self) -> str:
        return self.path.name

    @property
    def model(self) -> str:
        return str(self.config.get("model") or "")

    @property
    def fold(self) -> int | None:
        return parse_fold(self.config.get("fold"))

    @property
    def label(self) -> str | None:
        value = self.config.get("label")
        return str(value).strip() if value not in (None, "") and str(value).strip() else None

    @property
    def options(self) -> dict[str, Any]:
        value = self.config.get("options")
        return value if isinstance(value, dict) else {}


def parse_fold(value: Any) -> int | None:
    """A fold as an int, or None for runs trained without cross-validation."""
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return None
    try:
        fold = int(float(str(value)))
    except ValueError:
        return None
    return fold if fold >= 0 else None


def is_run(path: Path) -> bool:
    return is_run_folder(path)


def expand_runs(items: Sequence[str | Path]) -> list[Path]:
    """Resolve run arguments: folders, glob patterns (quoted on the shell) and folders of runs.

    A glob or a folder of runs (e.g. ``runs/``) silently skips entries that are not run folders (a
    README, an earlier compare output); a run named explicitly must be one. Order is kept, duplicates
    dropped, so "the first run given" stays meaningful for the default baseline.
    """
    found: list[Path] = []
    for item in items:
        text = str(item)
        if _GLOB_CHARS & set(text):
            matches = [Path(m) for m in sorted(glob.glob(text))]
            runs = [m for m in matches if m.is_dir() and is_run(m)]
            if not runs:
                raise MriadError(f"no run folder (with a {CONFIG}) matches {text}")
            debug(f"{text}: {len(runs)} run(s), {len(matches) - len(runs)} other match(es) skipped")
            found.extend(runs)
            continue
        path = Path(text)
        if not path.exists():
            raise InputError(path, "run folder not found")
        if not path.is_dir():
            raise InputError(path, f"not a run folder (expected a folder with {CONFIG})")
        if is_run(path):
            found.append(path)
            continue
        children = sorted(child for child in path.iterdir() if child.is_dir() and is_run(child))
        if not children:
            raise InputError(path, f"not a run folder: no {CONFIG} here nor in its subfolders")
        found.extend(children)
    unique: list[Path] = []
    seen: set[Path] = set()
    for path in found:
        resolved = path.resolve()
        if resolved not in seen:
            seen.add(resolved)
            unique.append(resolved)
    return unique


def read_json(path: Path) -> dict[str, Any]:
    try:
        value = json.loads(path.read_text())
    except OSError as exc:
        raise InputError(path, f"cannot be read ({exc.strerror or type(exc).__name__})") from None
    except json.JSONDecodeError as exc:
        raise InputError(path, f"not valid JSON (line {exc.lineno}: {exc.msg})") from None
    if not isinstance(value, dict):
        raise InputError(path, "expected a JSON object")
    return value


def evaluate_hint(run: Path, split: str) -> str:
    return f"`mriad evaluate --run {run} --split {split}`"


def read_per_subject(path: Path) -> pd.DataFrame:
    """per_subject.csv indexed by subject_id, metric columns as floats (empty cells are NaN)."""
    try:
        frame = pd.read_csv(path, dtype={"subject_id": str})
    except Exception as exc:  # pandas raises many types for garbage input
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise InputError(path, f"not a readable CSV ({first[:120]})") from None
    if "subject_id" not in frame.columns:
        raise InputError(path, "has no subject_id column")
    frame["subject_id"] = frame["subject_id"].astype(str).str.strip()
    duplicated = frame["subject_id"][frame["subject_id"].duplicated()]
    if len(duplicated):
        raise InputError(path, f"subject {duplicated.iloc[0]} appears twice")
    if frame.empty:
        raise InputError(path, "has no subjects")
    for column in frame.columns:
        if column in ("subject_id", "dataset", "protocol"):
            continue
        converted = pd.to_numeric(frame[column], errors="coerce")
        bad = converted.isna() & frame[column].notna()
        if bad.any():
            value = frame.loc[bad, column].iloc[0]
            raise InputError(path, f"column {column}: {value!r} is not a number")
        frame[column] = converted.astype(float)
    return frame.set_index("subject_id", drop=True)


def load_runs(paths: Sequence[Path], split: str) -> list[RunEval]:
    """Read every run's evaluation on ``split``; all missing ones are named in one message."""
    configs = [(RunFolder(path), RunFolder(path).read_config()) for path in paths]
    missing = [run.root for run, _ in configs if not run.per_subject(split).is_file()]
    if missing:
        expected = configs[0][0].per_subject(split).relative_to(configs[0][0].root)
        names = ", ".join(str(p) for p in missing[:5]) + (f" and {len(missing) - 5} more" if len(missing) > 5 else "")
        example = evaluate_hint(missing[0], split)
        plural = "s" if len(missing) > 1 else ""
        raise MriadError(
            f"no evaluation on {split} in run{plural} {names} ({expected} missing): "
            f"run {example}" + (" for each" if len(missing) > 1 else "")
        )
    runs: list[RunEval] = []
    for run, config in configs:
        summary_path = run.summary(split)
        summary = read_json(summary_path) if summary_path.is_file() else {}
        recorded = summary.get("split")
        if recorded not in (None, "", split):
            hint = evaluate_hint(run.root, split)
            raise InputError(summary_path, f"records split {recorded!r}, not {split!r}: re-run {hint}")
        per_subject = read_per_subject(run.per_subject(split))
        runs.append(RunEval(path=run.root, config=config, summary=summary, per_subject=per_subject))
    return runs


def check_same_subjects(runs: Sequence[RunEval], split: str) -> list[str]:
    """Refuse runs evaluated on different subjects: paired tests need the very same volumes."""
    reference = runs[0]
    ids = list(reference.per_subject.index)
    wanted = set(ids)
    for run in runs[1:]:
        other = set(run.per_subject.index)
        if other == wanted:
            continue
        only_ref = sorted(wanted - other)
        only_run = sorted(other - wanted)
        parts = []
        if only_ref:
            parts.append(f"{len(only_ref)} only in {reference.name} (e.g. {only_ref[0]})")
        if only_run:
            parts.append(f"{len(only_run)} only in {run.name} (e.g. {only_run[0]})")
        raise MriadError(
            f"runs {reference.path} and {run.path} were evaluated on different subjects of {split} "
            f"({'; '.join(parts)}): evaluate both on the same manifest with {evaluate_hint(run.path, split)}"
        )
    return ids


def val_splits(runs: Sequence[RunEval]) -> set[str]:
    """The validation splits the thresholds came from; differing ones make Dice less comparable."""
    return {str(run.summary.get("val_split")) for run in runs if run.summary.get("val_split")}


def manifest_candidates(run: RunEval) -> list[Path]:
    """Where a run says its manifest is: config "data" (a path or {"manifest": path}), else summary settings.

    Relative paths are tried against the run folder and the workspace, since a run may be moved.
    """
    values: list[Any] = []
    data = run.config.get("data")
    values.append(data.get("manifest") if isinstance(data, dict) else data)
    settings = run.summary.get("settings")
    if isinstance(settings, dict):
        values.append(settings.get("manifest") or settings.get("data"))
    values.append(run.summary.get("manifest"))
    found: list[Path] = []
    for value in values:
        if not isinstance(value, str) or not value.strip():
            continue
        path = Path(value)
        found.extend([path] if path.is_absolute() else [run.path / path, Path.cwd() / path])
    return found


def find_manifest(runs: Sequence[RunEval]) -> pd.DataFrame | None:
    """The first readable manifest named by the runs (or remembered by the workspace); None if none."""
    from mriad.contracts.manifest import read_manifest
    from mriad.infra.workspace import default_manifest

    candidates = [path for run in runs for path in manifest_candidates(run)]
    try:
        candidates.append(default_manifest())
    except MriadError:
        pass
    for path in candidates:
        if path.is_file():
            try:
                return read_manifest(path, check_files=False)
            except MriadError as exc:
                debug(f"manifest {path} not usable for figures: {exc}")
    return None
