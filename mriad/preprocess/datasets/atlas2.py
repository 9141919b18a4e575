"""ATLAS v2.0 (Liew et al., Sci Data 2022): stroke lesions on T1, BIDS-like, in MNI152 space.

Layout of the release: ``ATLAS_2/Training/R001/sub-r001s001/ses-1/anat/`` with
``sub-r001s001_ses-1_space-MNI152NLin2009aSym_T1w.nii.gz`` and the lesion mask
``..._label-L_desc-T1lesion_mask.nii.gz`` (the test scans come without masks: healthy-looking rows
with label 0 unless a mask is found). The subject ID is ``sub-rNNNsNNN``, as in MHD's public splits
(splits/ATLAS_v2_*.csv); several sessions of one subject become ``sub-..._ses-N``. T1 only. The
scans are defaced but not skull stripped, so the default strips (HD-BET) and registers (MNI to SRI24).
"""

from __future__ import annotations

import re
from pathlib import Path

from mriad.preprocess.datasets.base import DatasetDefaults, Discovery, Problem, Subject, check_modality, nifti_files

NAME = "atlas2"
DEFAULTS = DatasetDefaults()
LABELS: tuple[int, ...] | None = None  # binary masks in the release; any label > 0 is lesion
_IMAGE = re.compile(r"^(sub-[A-Za-z0-9]+)(_ses-([A-Za-z0-9]+))?_.*T1w\.nii(\.gz)?$")
_MASK = re.compile(r"_label-L_desc-T1lesion_mask\.nii(\.gz)?$")


def discover(raw: Path, modality: str = "t1", demographics: Path | None = None) -> Discovery:
    check_modality(modality, ("t1",), "ATLAS v2")
    found = Discovery()
    images: dict[tuple[str, str], list[Path]] = {}
    for path in nifti_files(raw, recursive=True):
        match = _IMAGE.match(path.name)
        if match and not _MASK.search(path.name):
            images.setdefault((match.group(1), match.group(3) or ""), []).append(path)
    sessions: dict[str, int] = {}
    for subject, _ in images:
        sessions[subject] = sessions.get(subject, 0) + 1
    for (subject, session), paths in sorted(images.items()):
        identifier = f"{subject}_ses-{session}" if session and sessions[subject] > 1 else subject
        if len(paths) > 1:
            listed = ", ".join(str(p) for p in paths)
            found.problems.append(Problem(identifier, str(paths[0]), f"{len(paths)} T1w scans ({listed})"))
            continue
        image = paths[0]
        masks = sorted(p for p in image.parent.iterdir() if _MASK.search(p.name) and p.name.startswith(subject))
        found.subjects.append(Subject(identifier, image, masks[0] if masks else None))
    return found
