"""Generic: a folder of NIfTI scans (one subject each, ``<name>_seg.nii.gz`` beside it as lesion mask),
or a CSV listing ``image[,seg]`` (optionally ``subject_id``, ``age``, ``sex``; paths relative to the CSV).
"""

from __future__ import annotations

import re
from pathlib import Path

from mriad.infra.errors import InputError
from mriad.preprocess.datasets.base import (
    DatasetDefaults,
    Discovery,
    Problem,
    Subject,
    age_value,
    nifti_files,
    sex_code,
    stem,
)

NAME = "generic"
DEFAULTS = DatasetDefaults()
LABELS: tuple[int, ...] | None = None  # any integer labels; lesion = > 0
_MASKLIKE = re.compile(r"[-_](seg|mask|lesion|label|gt)$", re.IGNORECASE)


def discover(raw: Path, modality: str = "t2", demographics: Path | None = None) -> Discovery:
    """The modality is not looked at: the listed or found files are the scans."""
    if raw.is_file():
        return _from_csv(raw)
    found = Discovery()
    files = nifti_files(raw)
    by_stem = {stem(f): f for f in files}
    for path in files:
        name = stem(path)
        if _MASKLIKE.search(name) and _MASKLIKE.sub("", name) in by_stem:
            continue  # the segmentation of another file
        candidates = [f"{name}{s}" for s in ("_seg", "-seg", "_lesion", "_mask")]
        seg = next((by_stem[c] for c in candidates if c in by_stem), None)
        found.subjects.append(Subject(name, path, seg))
    return found


def _from_csv(path: Path) -> Discovery:
    import pandas as pd

    try:
        frame = pd.read_csv(path, dtype=str, keep_default_na=False)
    except Exception as exc:
        raise InputError(path, f"not a readable CSV ({str(exc).splitlines()[0][:120]})") from None
    if "image" not in frame.columns:
        raise InputError(path, "the CSV needs an 'image' column (and optionally seg, subject_id, age, sex)")
    base = path.resolve().parent
    found = Discovery()
    for index, row in frame.iterrows():
        image = base / str(row["image"]).strip()
        ident = str(row.get("subject_id", "")).strip() or stem(image)
        seg_text = str(row.get("seg", "")).strip()
        seg = base / seg_text if seg_text else None
        if not str(row["image"]).strip():
            found.problems.append(Problem(ident or f"row {index + 2}", str(path), f"row {index + 2}: empty image"))
            continue
        found.subjects.append(
            Subject(ident, image, seg, age=age_value(row.get("age", "")), sex=sex_code(row.get("sex", "")))
        )
    return found
