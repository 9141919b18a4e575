"""MSLUB (Lesjak et al. 2018): ``patientNN/`` folders with ``T2W.nii.gz`` (or ``T2.nii.gz``) and the
consensus lesion mask ``consensus_gt.nii.gz`` (the shared sample calls it ``GOLD_STANDARD.nii.gz``).

MSLUB ships raw heads and skull-stripped scans; the default strips (HD-BET), which is harmless on an
already stripped scan. The shared sample (MNI space, stripped) is faster with ``--skull-strip none``.
"""

from __future__ import annotations

import re
from pathlib import Path

from mriad.preprocess.datasets.base import (
    DatasetDefaults,
    Discovery,
    Problem,
    Subject,
    check_modality,
    nifti_files,
    stem,
    subfolders,
)

NAME = "mslub"
DEFAULTS = DatasetDefaults()
LABELS: tuple[int, ...] | None = (0, 1)
_NAMES = {"t1": r"t1w?", "t2": r"t2w?", "flair": r"flair"}
_SEG = re.compile(r"(^|[-_])(consensus_gt|consensus|gold_standard|gt)$", re.IGNORECASE)


def discover(raw: Path, modality: str = "t2", demographics: Path | None = None) -> Discovery:
    modality = check_modality(modality, _NAMES, "MSLUB")
    wanted = re.compile(rf"(^|[-_]){_NAMES[modality]}$", re.IGNORECASE)
    found = Discovery()
    folders = subfolders(raw) or [raw]
    for folder in folders:
        # Files may sit in the patient folder or one level below (e.g. preprocessed/); nearest wins.
        files = sorted(nifti_files(folder, recursive=True), key=lambda p: (len(p.relative_to(folder).parts), str(p)))
        if not files:
            continue
        images = [f for f in files if wanted.search(stem(f))]
        segs = [f for f in files if _SEG.search(stem(f))]
        if not images:
            found.problems.append(Problem(folder.name, str(folder), f"no {modality.upper()} scan (e.g. T2W.nii.gz)"))
            continue
        found.subjects.append(Subject(folder.name, images[0], segs[0] if segs else None))
    return found
