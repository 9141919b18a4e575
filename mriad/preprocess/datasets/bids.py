"""BIDS: ``sub-*/[ses-*/]anat/*_T2w.nii.gz`` (``_T1w``, ``_FLAIR``); age and sex from ``participants.tsv``.

A session makes its own subject ID (``sub-01_ses-02``) so repeated scans stay distinct rows. A lesion
mask next to the scan (``*_label-lesion*_mask.nii.gz`` or ``*_lesion*``) marks the subject unhealthy.
"""

from __future__ import annotations

import re
from pathlib import Path

from mriad.preprocess.datasets.base import (
    DatasetDefaults,
    Discovery,
    Problem,
    Subject,
    age_value,
    check_modality,
    nifti_files,
    sex_code,
    stem,
)

NAME = "bids"
DEFAULTS = DatasetDefaults()
LABELS: tuple[int, ...] | None = None  # any integer labels; lesion = > 0
_SUFFIX = {"t1": "T1w", "t2": "T2w", "flair": "FLAIR"}
_LESION = re.compile(r"(label-lesion|_lesion)", re.IGNORECASE)


def discover(raw: Path, modality: str = "t2", demographics: Path | None = None) -> Discovery:
    modality = check_modality(modality, _SUFFIX, "BIDS")
    suffix = _SUFFIX[modality]
    table = _participants(demographics or raw / "participants.tsv")
    found = Discovery()
    anat_folders = sorted(set(raw.glob("sub-*/anat")) | set(raw.glob("sub-*/ses-*/anat")))
    for anat in anat_folders:
        files = nifti_files(anat)
        scans = [f for f in files if stem(f).endswith(f"_{suffix}")]
        subject = anat.parent.name if anat.parent.name.startswith("sub-") else anat.parent.parent.name
        ident = subject if anat.parent.name == subject else f"{subject}_{anat.parent.name}"
        if not scans:
            found.problems.append(Problem(ident, str(anat), f"no *_{suffix}.nii.gz scan"))
            continue
        # Several runs: the first (sorted) one, the usual choice when one scan per subject is wanted.
        lesions = [f for f in files if _LESION.search(stem(f))]
        age, sex = table.get(subject, (None, ""))
        notes = [f"{len(scans)} {suffix} runs, used {scans[0].name}"] if len(scans) > 1 else []
        found.subjects.append(Subject(ident, scans[0], lesions[0] if lesions else None, age=age, sex=sex, notes=notes))
    return found


def _participants(path: Path) -> dict[str, tuple[float | None, str]]:
    if not path.is_file():
        return {}
    import pandas as pd

    frame = pd.read_csv(path, sep="\t", dtype=str, keep_default_na=False)
    if "participant_id" not in frame.columns:
        return {}
    table: dict[str, tuple[float | None, str]] = {}
    for _, row in frame.iterrows():
        ident = str(row["participant_id"])
        ident = ident if ident.startswith("sub-") else f"sub-{ident}"
        table[ident] = (age_value(row.get("age", "")), sex_code(row.get("sex", "")))
    return table
