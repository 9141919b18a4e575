"""The manifest CSV that passes subjects between stages: schema, validation and named splits.

One row per subject; paths are stored relative to the CSV's folder and resolved on reading::

    subject_id, dataset, split, fold, label, image, mask, seg, age, sex, source

plus the optional path column ``ignore`` (voxels no metric counts, e.g. WMH's label 2; empty for a
subject without one), written only when some subject has one, so other manifests stay as they were.
``split`` is ``trainval`` (with ``fold`` k = "validation in fold k"), ``train``, ``val`` or ``test``.
On the command line a split is named ``<dataset>-<split>``: ``ixi-train``, ``ixi-val``, ``ixi-test``,
``brats-val``, ``brats-test``, ``mslub-val``, ``mslub-test``.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

import numpy as np
import pandas as pd

from mriad.infra.errors import ManifestError
from mriad.infra.io import atomic_write_csv
from mriad.infra.paths import check_identifier, is_identifier

COLUMNS = ["subject_id", "dataset", "split", "fold", "label", "image", "mask", "seg", "age", "sex", "source"]
REQUIRED = ["subject_id", "dataset", "split", "label", "image"]
PATH_COLUMNS = ["image", "mask", "seg"]
# Path columns a manifest may lack (then the frame lacks them too: readers use ``row.get``); resolved and
# checked like the others when present; write_manifest leaves one out when every cell is empty.
OPTIONAL_PATH_COLUMNS = ["ignore"]
# Other optional columns written by preprocess/synth (left out when every cell is empty): ``channels``,
# the modalities of a multi-channel image in its channel order (e.g. ``t2,flair``).
OPTIONAL_COLUMNS = ["channels"]
SPLIT_VALUES = {"trainval", "train", "val", "test", ""}
KNOWN_SPLIT_SUFFIXES = ("train", "val", "test", "trainval", "all")
_SHOWN = 5  # subject IDs named in a leak message


def empty_manifest() -> pd.DataFrame:
    return pd.DataFrame({column: pd.Series(dtype=object) for column in COLUMNS})


def blank(value: object) -> bool:
    """An empty manifest cell: None, NaN or only whitespace."""
    return value is None or (isinstance(value, float) and np.isnan(value)) or str(value).strip() == ""


def read_manifest(path: str | Path, *, check_files: bool = True) -> pd.DataFrame:
    """Read, validate and return a manifest with absolute paths.

    Raises :class:`ManifestError` with a one-line message naming the manifest, subject and file.
    """
    path = Path(path)
    if not path.is_file():
        raise ManifestError(f"{path}: manifest not found")
    try:
        frame = pd.read_csv(path, dtype=str, keep_default_na=False)
    except Exception as exc:
        raise ManifestError(f"{path}: not a readable CSV ({str(exc).splitlines()[0][:120]})") from None
    missing = [column for column in REQUIRED if column not in frame.columns]
    if missing:
        raise ManifestError(f"{path}: missing column(s) {', '.join(missing)}")
    for column in COLUMNS:
        if column not in frame.columns:
            frame[column] = ""
    frame = frame[COLUMNS + [c for c in frame.columns if c not in COLUMNS]].copy()
    base = path.resolve().parent
    for column in _path_columns(frame):
        frame[column] = [str((base / value).resolve()) if not blank(value) else "" for value in frame[column]]
    frame["label"] = [_parse_int(v, path, "label", i) for i, v in zip(frame.index, frame["label"])]
    frame["fold"] = [_parse_int(v, path, "fold", i) if not blank(v) else -1 for i, v in zip(frame.index, frame["fold"])]
    validate_manifest(frame, source=str(path), check_files=check_files)
    frame.attrs["path"] = str(path.resolve())
    return frame


def _path_columns(frame: pd.DataFrame) -> list[str]:
    """The path columns ``frame`` has: always image, mask, seg; the optional ones when present."""
    return PATH_COLUMNS + [c for c in OPTIONAL_PATH_COLUMNS if c in frame.columns]


def _cell(index: object, column: str) -> str:
    """Where a value sits in the CSV, as a spreadsheet shows it: line 2 is the first data row."""
    row = int(index) + 2 if isinstance(index, int | np.integer) else index
    return f"row {row}, column {column}"


def _parse_int(value: object, path: Path, column: str, index: object) -> int:
    """A whole number written as ``1`` or ``1.0``; ``0.9``, ``inf`` or ``x`` are refused, never rounded."""
    text = str(value).strip()
    try:
        number = float(text)
    except ValueError:
        number = math.nan
    if not math.isfinite(number) or number != int(number):
        raise ManifestError(f"{path}: {_cell(index, column)}: {text!r} is not a whole number")
    return int(number)


def validate_manifest(frame: pd.DataFrame, *, source: str = "manifest", check_files: bool = True) -> None:
    """Refuse unsafe names, duplicate IDs, unknown splits, label 1 without seg, missing files and leaks."""
    ids = frame["subject_id"].astype(str)
    for index, sid in zip(frame.index, ids):
        if sid.strip() == "":
            raise ManifestError(f"{source}: {_cell(index, 'subject_id')}: a row has an empty subject_id")
    for column in ("subject_id", "dataset"):
        for index, value in zip(frame.index, frame[column].astype(str)):
            if not is_identifier(value):
                check_identifier(value, f"{_cell(index, column)}: {column}", source)
    duplicated = ids[ids.duplicated()]
    if len(duplicated):
        sid = duplicated.iloc[0]
        splits = sorted(set(frame.loc[ids == sid, "split"].astype(str)))
        if len(splits) > 1:
            raise ManifestError(f"{source}: subject {sid} appears in two splits ({', '.join(splits)}): split leak")
        raise ManifestError(f"{source}: duplicate subject_id {sid}")
    path_columns = _path_columns(frame)
    for row in frame.itertuples(index=False):
        sid = row.subject_id
        if str(row.split) not in SPLIT_VALUES:
            raise ManifestError(f"{source}: subject {sid}: unknown split {row.split!r}")
        if int(row.label) not in (0, 1):
            raise ManifestError(f"{source}: subject {sid}: label must be 0 or 1, got {row.label}")
        if int(row.label) == 1 and blank(row.seg):
            raise ManifestError(f"{source}: subject {sid}: label 1 (unhealthy) but no seg file")
        if str(row.split) == "trainval" and int(row.fold) < 0:
            raise ManifestError(f"{source}: subject {sid}: split trainval needs a fold")
        if check_files:
            for column in path_columns:
                value = getattr(row, column)
                if not blank(value) and not Path(value).is_file():
                    raise ManifestError(f"{source}: subject {sid}: {column} file {value} does not exist")
    _check_fold_leaks(frame, source)
    if check_files:
        _check_content_leaks(frame, source)


def _some(ids: list[str]) -> str:
    """``n subjects (A, B, C, ...)``: a leak among thousands stays one readable line."""
    shown = ", ".join(ids[:_SHOWN]) + (", ..." if len(ids) > _SHOWN else "")
    return f"{len(ids)} subjects ({shown})"


def _check_fold_leaks(frame: pd.DataFrame, source: str) -> None:
    """No two rows may name the same scan file."""
    images = frame["image"].astype(str)
    shared = images[images.duplicated(keep=False) & (images != "")]
    if len(shared):
        rows = frame.loc[shared.index]
        first = rows.iloc[0]
        others = rows[rows["image"] == first["image"]]["subject_id"].astype(str).tolist()
        raise ManifestError(f"{source}: {_some(others)} share image {first['image']}: split leak")


def _check_content_leaks(frame: pd.DataFrame, source: str) -> None:
    """No scan may appear, under any file name, in two splits (test and train, or two folds' val).

    Path strings miss a test scan hard-linked or copied under a new training ID. Only files of equal
    size are digested (a stat per file), so the check costs almost nothing on real data, where scans
    differ in size; digests are cached per (path, size, mtime) for the rest of the process.
    """
    from mriad.infra.digests import file_sha256

    groups = [f"{s}/{f}" if s == "trainval" else str(s) for s, f in zip(frame["split"], frame["fold"])]
    by_size: dict[int, list[int]] = {}
    for position, image in enumerate(frame["image"].astype(str)):
        if image:
            by_size.setdefault(os.stat(image).st_size, []).append(position)
    for positions in by_size.values():
        if len({groups[p] for p in positions}) < 2:
            continue  # copies within one split can leak nothing into another
        by_digest: dict[str, list[int]] = {}
        for p in positions:
            by_digest.setdefault(file_sha256(frame["image"].iloc[p]), []).append(p)
        for same in by_digest.values():
            if len({groups[p] for p in same}) > 1:
                ids = [str(frame["subject_id"].iloc[p]) for p in same]
                where = sorted({groups[p] for p in same})
                raise ManifestError(
                    f"{source}: {_some(ids)} in {', '.join(where)} have identical image files "
                    f"({frame['image'].iloc[same[0]]}): split leak"
                )


def write_manifest(frame: pd.DataFrame, path: str | Path) -> Path:
    """Write a manifest atomically, storing paths relative to its folder.

    Paths in ``frame`` are absolute or relative to the current working directory.
    """
    path = Path(path)
    base = path.resolve().parent
    out = frame.copy()
    for column in COLUMNS:
        if column not in out.columns:
            out[column] = ""
    for column in OPTIONAL_PATH_COLUMNS + OPTIONAL_COLUMNS:
        if column in out.columns and all(blank(value) for value in out[column]):
            out = out.drop(columns=column)
    for column in _path_columns(out):
        out[column] = [_relative(value, base) for value in out[column]]
    out["fold"] = ["" if blank(v) or int(v) < 0 else int(v) for v in out["fold"]]
    extra = [c for c in out.columns if c not in COLUMNS]
    return atomic_write_csv(path, out[COLUMNS + extra])


def _relative(value: object, base: Path) -> str:
    if blank(value):
        return ""
    # Relative paths in memory are relative to the working directory, like every other path.
    target = Path(str(value)).resolve()
    try:
        return str(target.resolve().relative_to(base))
    except ValueError:
        import os

        return os.path.relpath(target.resolve(), base)


def parse_split_name(name: str) -> tuple[str, str]:
    """``"brats-test"`` -> ``("brats", "test")``; refuses names without a dataset and a split."""
    if "-" not in name:
        raise ManifestError(f"split {name!r}: expected <dataset>-<split>, e.g. ixi-train or brats-test")
    dataset, split = name.rsplit("-", 1)
    if split not in KNOWN_SPLIT_SUFFIXES:
        raise ManifestError(f"split {name!r}: unknown split {split!r} (train, val, test, trainval or all)")
    return dataset, split


def select_split(frame: pd.DataFrame, name: str, fold: int = 0) -> pd.DataFrame:
    """Rows of a named split; ``ixi-train``/``ixi-val`` follow fold ``fold`` of the trainval rows."""
    dataset, split = parse_split_name(name)
    rows = frame[frame["dataset"].astype(str) == dataset]
    folds = sorted({int(f) for f in rows.loc[rows["split"] == "trainval", "fold"]})
    if split in ("train", "val") and folds and fold not in folds:
        # Otherwise fold 7 of 5 "trains on every fold" and validates on none.
        source = frame.attrs.get("path", "manifest")
        raise ManifestError(f"--fold {fold}: {source} has {dataset} folds {', '.join(map(str, folds))} only")
    if split == "all":
        chosen = rows
    elif split == "train":
        chosen = rows[(rows["split"] == "train") | ((rows["split"] == "trainval") & (rows["fold"] != fold))]
    elif split == "val":
        chosen = rows[(rows["split"] == "val") | ((rows["split"] == "trainval") & (rows["fold"] == fold))]
    else:
        chosen = rows[rows["split"] == split]
    if chosen.empty:
        have = sorted({f"{d}-{s}" for d, s in zip(frame["dataset"], frame["split"])})
        source = frame.attrs.get("path", "manifest")
        raise ManifestError(f"{source}: split {name} (fold {fold}) is empty; the manifest has {', '.join(have)}")
    return chosen.reset_index(drop=True)


def available_splits(frame: pd.DataFrame) -> list[str]:
    names: set[str] = set()
    for dataset, split in zip(frame["dataset"], frame["split"]):
        if split == "trainval":
            names.update({f"{dataset}-train", f"{dataset}-val"})
        elif split:
            names.add(f"{dataset}-{split}")
    return sorted(names)
