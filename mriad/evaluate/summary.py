"""The schema of a split's ``summary.json``: a typed, versioned record (docs/CONTRACTS.md).

:class:`EvalSummary` is the only place the summary's keys are spelled; :func:`mriad.evaluate.run`
fills it in one function (``_summarise``) and writes ``to_json()``. Adding a key means adding a
field here (readers of older summaries see it missing) and raising :data:`SCHEMA_VERSION` when a key
changes meaning or disappears.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import pandas as pd

# 1: the keys of mriad 0.x before the version was recorded, plus "schema_version".
SCHEMA_VERSION = 1


@dataclass(frozen=True)
class Stats:
    """Mean and population std (ddof=0) over the subjects that have a value."""

    mean: float
    std: float
    n: int

    @classmethod
    def of(cls, values: pd.Series) -> Stats | None:
        finite = values.dropna().to_numpy(dtype=float)
        if finite.size == 0:
            return None
        return cls(float(finite.mean()), float(finite.std()), int(finite.size))

    def to_json(self) -> dict[str, Any]:
        return {"mean": self.mean, "std": self.std, "n": self.n}


def nan_to_none(value: float | None) -> float | None:
    """NaN is not JSON: a missing number is written as null."""
    return None if value is None or (isinstance(value, float) and math.isnan(value)) else value


@dataclass
class EvalSummary:
    """What one evaluation of a run on a split found, with the settings that produced it."""

    run: str
    model: Any
    fold: int
    split: str
    val_split: str | None
    threshold: float | None
    threshold_search: str | None
    threshold_val_dice: float | None
    n_subjects: int
    failures: list[dict[str, str]]
    metrics: dict[str, Stats]
    pooled_auprc: float | None
    fpr_thresholds: dict[str, float] | None
    settings: dict[str, Any]
    versions: dict[str, str]
    outputs: dict[str, str] = field(default_factory=dict)
    provenance: dict[str, Any] = field(default_factory=dict)  # digests of the manifest and checkpoint
    schema_version: int = SCHEMA_VERSION

    def to_json(self) -> dict[str, Any]:
        """The JSON object of summary.json (keys in a stable order)."""
        return {
            "schema_version": self.schema_version,
            "run": self.run,
            "model": self.model,
            "fold": self.fold,
            "split": self.split,
            "val_split": self.val_split,
            "threshold": self.threshold,
            "threshold_search": self.threshold_search,
            "threshold_val_dice": nan_to_none(self.threshold_val_dice),
            "n_subjects": self.n_subjects,
            "failures": list(self.failures),
            "metrics": {name: stats.to_json() for name, stats in self.metrics.items()},
            "pooled_auprc": nan_to_none(self.pooled_auprc),
            "fpr_thresholds": self.fpr_thresholds,
            "settings": dict(self.settings),
            "versions": dict(self.versions),
            "provenance": dict(self.provenance),
            "outputs": dict(self.outputs),
        }
