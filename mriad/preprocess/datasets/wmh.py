"""WMH segmentation challenge (Kuijf et al., IEEE TMI 2019): white matter hyperintensities on FLAIR.

Layout of the release: ``<site>/[<scanner>/]<id>/`` with ``pre/FLAIR.nii.gz`` and ``pre/T1.nii.gz``
(bias corrected, T1 registered to the FLAIR) and the reference ``wmh.nii.gz`` on the FLAIR grid:
0 background, 1 WMH, 2 other pathology. As in the challenge, label 2 is not a lesion: the lesion
mask is label 1 only (:data:`LESION_LABELS`), and label 2 is not scored either (:data:`IGNORE_LABELS`:
``ignore.nii.gz``, left out of every metric). The subject ID is ``<folder above>_<id>``
(``Utrecht_0``, ``GE3T_100``, ``Singapore_50``), as in MHD's public splits (splits/WMH_*.csv).
The scans are not skull stripped: the default strips (HD-BET) and registers to SRI24.
"""

from __future__ import annotations

from pathlib import Path

from mriad.preprocess.datasets.base import DatasetDefaults, Discovery, Problem, Subject, check_modality, is_nifti

NAME = "wmh"
DEFAULTS = DatasetDefaults()
LABELS: tuple[int, ...] | None = (0, 1, 2)
LESION_LABELS: tuple[int, ...] = (1,)  # 2 = "other pathology": excluded from the lesion mask
# ... and from scoring, as in the challenge: preprocess writes these voxels to ignore.nii.gz and
# evaluate counts them neither as lesion nor as healthy (docs/evaluation.md).
IGNORE_LABELS: tuple[int, ...] = (2,)
_FILES = {"flair": "FLAIR", "t1": "T1"}


def _first(folder: Path, name: str) -> Path | None:
    for suffix in (".nii.gz", ".nii"):
        if is_nifti(folder / f"{name}{suffix}"):
            return folder / f"{name}{suffix}"
    return None


def discover(raw: Path, modality: str = "flair", demographics: Path | None = None) -> Discovery:
    modality = check_modality(modality, _FILES, "WMH")
    found = Discovery()
    # A case folder holds wmh.nii.gz or a pre/ folder; everything else is site/scanner grouping.
    cases = sorted({p.parent for p in raw.rglob("wmh.nii*")} | {p.parent for p in raw.rglob("pre") if p.is_dir()})
    for case in cases:
        identifier = f"{case.parent.name}_{case.name}" if case != raw else case.name
        image = _first(case / "pre", _FILES[modality]) or _first(case, _FILES[modality])
        if image is None:
            found.problems.append(Problem(identifier, str(case), f"no {_FILES[modality]}.nii.gz in pre/"))
            continue
        found.subjects.append(Subject(identifier, image, _first(case, "wmh")))
    return found
