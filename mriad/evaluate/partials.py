"""What a shard of an evaluation leaves for the merge: ``eval/<split>/shards/<i>-of-<n>.npz``.

One ``.npz`` per shard (written atomically): a JSON ``meta`` record (options, calibration digest,
subjects assigned and scored with their positions in the split, failures, the digests of the map
records scored, the ``--clamp`` counts), the shard's per-subject rows column by column (floats kept
as float64 bits: the merged ``per_subject.csv`` is byte-identical to one run's), and what the split's
pooled numbers need: lesion and healthy voxel counts per distinct score (:mod:`mriad.evaluate.pools`),
per-slice maxima and flags (slice AUROC) and Dice at the healthy FPR thresholds per subject.
"""

from __future__ import annotations

import io
import json
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from mriad.evaluate.pools import CountedPool
from mriad.infra.errors import InputError
from mriad.infra.io import atomic_write_bytes

PARTIAL_VERSION = 1
SLICE_ARRAYS = ("scores", "positive", "brain")


@dataclass
class Partial:
    """One shard's results. ``table`` is None when none of its subjects could be read."""

    meta: dict[str, Any]
    table: pd.DataFrame | None = None
    lesion: CountedPool | None = None
    healthy: CountedPool | None = None
    slices: dict[str, np.ndarray] = field(default_factory=dict)
    dice_at_fpr: dict[str, np.ndarray] = field(default_factory=dict)

    @property
    def positions(self) -> list[int]:
        """The scored subjects' rows in the split (the merge orders by these)."""
        return [int(p) for p in self.meta["positions"]]


def write_partial(path: Path, partial: Partial) -> Path:
    arrays: dict[str, np.ndarray] = {}
    meta = dict(partial.meta)
    meta["table"] = None if partial.table is None else _table_arrays(partial.table, arrays)
    for name, pool in (("lesion", partial.lesion), ("healthy", partial.healthy)):
        if pool is not None:
            arrays.update(pool.arrays(name))
    for name, array in partial.slices.items():
        arrays[f"slices.{name}"] = array
    meta["dice_at_fpr"] = list(partial.dice_at_fpr)
    for number, array in enumerate(partial.dice_at_fpr.values()):
        arrays[f"dice_at_fpr.{number}"] = array
    arrays["meta"] = np.frombuffer(json.dumps(meta).encode("utf-8"), dtype=np.uint8)
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)  # type: ignore[arg-type]  # the stub types **kwds as allow_pickle
    return atomic_write_bytes(path, buffer.getvalue())


def read_partial(path: Path) -> Partial:
    """A shard's results; an unreadable or foreign file is refused with one line naming it."""
    try:
        with np.load(path, allow_pickle=False) as data:
            arrays = {name: data[name] for name in data.files}
        meta = json.loads(arrays.pop("meta").tobytes().decode("utf-8"))
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as exc:
        raise InputError(path, f"unreadable shard result ({type(exc).__name__}); score that shard again") from None
    if not isinstance(meta, dict) or meta.get("version") != PARTIAL_VERSION:
        raise InputError(path, "not a shard result of this mriad version; score that shard again")
    partial = Partial(meta)
    if meta.get("table") is not None:
        partial.table = _table_from(meta["table"], arrays)
    partial.lesion = CountedPool.from_arrays(arrays, "lesion")
    partial.healthy = CountedPool.from_arrays(arrays, "healthy")
    partial.slices = {name: arrays[f"slices.{name}"] for name in SLICE_ARRAYS if f"slices.{name}" in arrays}
    partial.dice_at_fpr = {rate: arrays[f"dice_at_fpr.{n}"] for n, rate in enumerate(meta.get("dice_at_fpr", []))}
    return partial


def _table_arrays(table: pd.DataFrame, arrays: dict[str, np.ndarray]) -> dict[str, Any]:
    """The per-subject rows as arrays (numbers) and lists (text); returns how to rebuild them."""
    kinds: dict[str, str] = {}
    text: dict[str, list[str]] = {}
    for name in table.columns:
        column = table[name]
        if isinstance(column.dtype, pd.Int64Dtype):  # nullable counts (predicted_voxels without a threshold)
            kinds[name] = "Int64"
            arrays[f"table.{name}"] = column.fillna(0).to_numpy(dtype=np.int64)
            arrays[f"table.{name}.na"] = column.isna().to_numpy(dtype=bool)
        elif pd.api.types.is_numeric_dtype(column.dtype) or pd.api.types.is_bool_dtype(column.dtype):
            kinds[name] = "array"
            arrays[f"table.{name}"] = column.to_numpy()
        else:
            kinds[name] = "text"
            text[name] = [str(value) for value in column]
    return {"columns": list(table.columns), "kinds": kinds, "text": text}


def _table_from(layout: dict[str, Any], arrays: dict[str, np.ndarray]) -> pd.DataFrame:
    columns: dict[str, Any] = {}
    for name in layout["columns"]:
        kind = layout["kinds"][name]
        if kind == "Int64":
            columns[name] = pd.arrays.IntegerArray(arrays[f"table.{name}"], arrays[f"table.{name}.na"])
        elif kind == "array":
            columns[name] = arrays[f"table.{name}"]
        else:
            columns[name] = pd.Series(layout["text"][name], dtype=object)
    return pd.DataFrame(columns)[layout["columns"]]
