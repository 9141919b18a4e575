"""BraTS: one folder per case, ``<case>_<modality>.nii.gz`` and ``<case>_seg.nii.gz``.

Covers the 2018-2021 naming (``Brats18_<case>/Brats18_<case>_t2.nii.gz``,
``BraTS2021_00000/BraTS2021_00000_t2.nii.gz``) and the 2023 one (``-t2w.nii.gz``, ``-seg.nii.gz``).
Labels > 0 (necrosis/core 1, oedema 2, enhancing 4 or 3) are the lesion. The scans are already skull
stripped and in SRI24 space at 1 mm, so by default neither skull stripping nor registration runs; the
volumes are still brought onto the crop grid through world coordinates.
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
    modality_list,
    nifti_files,
    stem,
    subfolders,
)

NAME = "brats"
DEFAULTS = DatasetDefaults(skull_strip="none", registration="none")
MULTI_MODALITY = True  # every modality of a case on one grid: `--modality t2,flair` gives one 4D image
LABELS: tuple[int, ...] | None = (0, 1, 2, 3, 4)  # 1 core, 2 oedema, 4 enhancing (2023: 3); lesion = > 0
# The modality suffix as BraTS writes it; t1 must not match t1ce / t1c / t1n.
_SUFFIX = {"t1": r"(t1|t1n)", "t2": r"(t2|t2w)", "flair": r"(flair|t2f)"}
_SEG = re.compile(r"[-_]seg$", re.IGNORECASE)


def _match(files: list[Path], pattern: str) -> list[Path]:
    regex = re.compile(rf"[-_]{pattern}$", re.IGNORECASE)
    return [f for f in files if regex.search(stem(f))]


def discover(raw: Path, modality: str = "t2", demographics: Path | None = None) -> Discovery:
    """Every sub-folder holding a ``*_<modality>`` scan is a case; a folder without one is reported.

    ``modality`` may be a list (``t2,flair``): a case needs one scan of each, the first is the image,
    the rest its ``others`` (BraTS releases every modality of a case on one grid).
    """
    modalities = [check_modality(m, _SUFFIX, "BraTS") for m in modality_list(modality)]
    found = Discovery()
    folders = subfolders(raw)
    # A single case folder given directly as RAW is accepted too.
    if not folders or _match(nifti_files(raw), _SUFFIX[modalities[0]]):
        folders = [raw]
    for folder in folders:
        files = nifti_files(folder)
        if not files:
            continue
        scans, problem = [], ""
        for name in modalities:
            images = _match(files, _SUFFIX[name])
            if len(images) != 1:
                problem = f"{'no' if not images else len(images)} *_{name}.nii.gz scan in the case folder"
                break
            scans.append(images[0])
        if problem:
            found.problems.append(Problem(folder.name, str(folder), problem))
            continue
        segs = [f for f in files if _SEG.search(stem(f))]
        found.subjects.append(Subject(folder.name, scans[0], segs[0] if segs else None, others=scans[1:]))
    return found
