"""The paper's data splits, deterministic by seed.

IXI: a held-out test set (158 of 560 in the paper), the rest in 5 folds stratified by age; BraTS:
100 validation volumes, the rest test; MSLUB: 10 validation, 20 test. Sizes are given as fractions
so that small sets split sensibly.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from mriad.contracts.manifest import read_manifest, validate_manifest, write_manifest
from mriad.infra.errors import ManifestError


@dataclass
class SplitSettings:
    healthy_test_fraction: float = 158 / 560
    folds: int = 5
    lesion_val_fraction: dict[str, float] | None = None  # dataset -> fraction in val
    # dataset -> fraction of patients in train, for training on their lesion-free slices (default 0)
    lesion_train_fraction: dict[str, float] | None = None

    def val_fraction(self, dataset: str) -> float:
        defaults = {"brats": 100 / 1251, "mslub": 10 / 30}
        chosen = (self.lesion_val_fraction or {}).get(dataset)
        return chosen if chosen is not None else defaults.get(dataset, 1 / 3)


def _age_order(frame: pd.DataFrame, rng: np.random.Generator) -> np.ndarray:
    """Row indices sorted by age (missing ages last), ties broken at random for determinism by seed."""
    ages = pd.to_numeric(frame["age"], errors="coerce").to_numpy(dtype=float)
    jitter = rng.random(len(frame))
    ages = np.where(np.isnan(ages), np.inf, ages)
    return np.lexsort((jitter, ages))


def split_healthy(frame: pd.DataFrame, settings: SplitSettings, rng: np.random.Generator) -> pd.DataFrame:
    """Test set, then age-stratified folds: walk subjects by age in blocks, one per fold/test slot."""
    frame = frame.copy()
    n = len(frame)
    n_test = int(round(settings.healthy_test_fraction * n))
    if n - n_test < settings.folds:
        raise ManifestError(f"{n} healthy subjects are too few for a test set of {n_test} and {settings.folds} folds")
    order = _age_order(frame, rng)
    # Systematic sampling over the age-sorted list keeps every part's age distribution alike.
    test_positions = set(np.round(np.linspace(0, n - 1, n_test)).astype(int).tolist()) if n_test else set()
    while len(test_positions) < n_test:  # rounding collisions on tiny sets
        test_positions.add(int(rng.integers(n)))
    splits = np.empty(n, dtype=object)
    folds = np.full(n, -1, dtype=int)
    rest = [int(order[p]) for p in range(n) if p not in test_positions]
    for p in test_positions:
        splits[order[p]] = "test"
    for start in range(0, len(rest), settings.folds):
        block = rest[start : start + settings.folds]
        assignment = rng.permutation(settings.folds)[: len(block)]
        for row, fold in zip(block, assignment):
            splits[row] = "trainval"
            folds[row] = int(fold)
    frame["split"] = splits
    frame["fold"] = folds
    return frame


def split_lesions(
    frame: pd.DataFrame, fraction: float, rng: np.random.Generator, train_fraction: float = 0.0
) -> pd.DataFrame:
    """Patients to val / test, and with ``train_fraction`` > 0 some to train (their healthy slices)."""
    frame = frame.copy()
    n = len(frame)
    # A positive fraction of a small set still gives one val subject; 0 means none (`--mslub-val 0`).
    n_val = min(max(1, int(round(fraction * n))), n - 1) if n > 1 and fraction > 0 else 0
    n_train = min(int(round(train_fraction * n)), n - n_val - 1) if train_fraction > 0 else 0
    if train_fraction > 0 and n_train < 1:
        raise ManifestError(f"{n} lesion subjects are too few for train, val ({n_val}) and test parts")
    order = rng.permutation(n)
    chosen = set(order[:n_val].tolist())
    trained = set(order[n_val : n_val + n_train].tolist())
    frame["split"] = ["val" if i in chosen else "train" if i in trained else "test" for i in range(n)]
    frame["fold"] = -1
    return frame


def split_frame(frame: pd.DataFrame, settings: SplitSettings | None = None, seed: int = 0) -> pd.DataFrame:
    """Assign ``split``/``fold`` to every row: healthy rows by age strata, lesion rows val/test."""
    settings = settings or SplitSettings()
    parts = []
    for dataset, rows in frame.groupby("dataset", sort=True):
        # One generator per data set, so adding a data set does not reshuffle the others.
        rng = np.random.default_rng([seed, sum(map(ord, str(dataset)))])
        healthy = rows[rows["label"].astype(int) == 0]
        unhealthy = rows[rows["label"].astype(int) == 1]
        if len(unhealthy) and len(healthy):
            raise ManifestError(
                f"data set {dataset} mixes healthy and lesion subjects; split them into separate data sets"
            )
        if len(healthy):
            parts.append(split_healthy(healthy, settings, rng))
        if len(unhealthy):
            train_fraction = (settings.lesion_train_fraction or {}).get(str(dataset), 0.0)
            parts.append(split_lesions(unhealthy, settings.val_fraction(str(dataset)), rng, train_fraction))
    result = pd.concat(parts).loc[frame.index]
    validate_manifest(result, check_files=False)
    return result


def split_manifest(
    path: str | Path, *, seed: int = 0, settings: SplitSettings | None = None, out: str | Path | None = None
) -> tuple[Path, pd.DataFrame]:
    """Split a manifest file and write it back (or to ``out``) atomically."""
    frame = read_manifest(path)
    result = split_frame(frame, settings, seed)
    target = Path(out) if out else Path(path)
    write_manifest(result, target)
    return target, result


def describe(frame: pd.DataFrame) -> pd.DataFrame:
    """Counts and mean age per data set, split and fold (for the summary table)."""
    table = frame.assign(age_num=pd.to_numeric(frame["age"], errors="coerce"))
    grouped = table.groupby(["dataset", "split", "fold"], dropna=False)
    return grouped.agg(subjects=("subject_id", "count"), mean_age=("age_num", "mean")).reset_index()
