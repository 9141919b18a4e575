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
# 2: "protocol" (reference | brain: AUROC/AUPRC/Dice change meaning with it), "pooled_oracle_dice",
#    "slice_auroc", "healthy" (FPR thresholds, l1 and Dice at those thresholds from a healthy split).
SCHEMA_VERSION = 2


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
class HealthyReference:
    """Numbers from a healthy split's maps; ``split`` None (with ``note`` saying why) when there was none."""

    split: str | None
    note: str | None = None
    n_subjects: int = 0
    l1: Stats | None = None
    fpr_thresholds: dict[str, float] = field(default_factory=dict)
    dice_at_fpr: dict[str, Stats] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        if self.split is None:
            return {"split": None, "note": self.note}
        return {
            "split": self.split,
            "n_subjects": self.n_subjects,
            "l1": None if self.l1 is None else self.l1.to_json(),
            "fpr_thresholds": dict(self.fpr_thresholds),
            "dice_at_fpr": {rate: stats.to_json() for rate, stats in self.dice_at_fpr.items()},
        }


@dataclass
class EvalSummary:
    """What one evaluation of a run on a split found, with the settings that produced it."""

    run: str
    model: Any
    fold: int
    split: str
    protocol: str
    val_split: str | None
    threshold: float | None
    threshold_search: str | None
    threshold_val_dice: float | None
    n_subjects: int
    failures: list[dict[str, str]]
    metrics: dict[str, Stats]
    pooled_auprc: float | None
    pooled_oracle_dice: float | None
    slice_auroc: float | None
    fpr_thresholds: dict[str, float] | None
    healthy: HealthyReference
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
            "protocol": self.protocol,
            "val_split": self.val_split,
            "threshold": self.threshold,
            "threshold_search": self.threshold_search,
            "threshold_val_dice": nan_to_none(self.threshold_val_dice),
            "n_subjects": self.n_subjects,
            "failures": list(self.failures),
            "metrics": {name: stats.to_json() for name, stats in self.metrics.items()},
            "pooled_auprc": nan_to_none(self.pooled_auprc),
            "pooled_oracle_dice": nan_to_none(self.pooled_oracle_dice),
            "slice_auroc": nan_to_none(self.slice_auroc),
            "fpr_thresholds": self.fpr_thresholds,
            "healthy": self.healthy.to_json(),
            "settings": dict(self.settings),
            "versions": dict(self.versions),
            "provenance": dict(self.provenance),
            "outputs": dict(self.outputs),
        }
