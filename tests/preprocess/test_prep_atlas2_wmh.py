"""ATLAS v2 and WMH adapters: the release layouts, subject IDs as MHD's splits name them, and WMH's
label 2 ("other pathology") kept out of the lesion mask."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from mriad.infra.errors import InputError, MriadError
from mriad.preprocess.datasets import dataset_name, discover
from mriad.preprocess.subject import load_inputs


def _touch(root: Path, *names: str) -> None:
    for name in names:
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"")


def test_atlas2_release_layout(tmp_path: Path) -> None:
    anat = "ATLAS_2/Training/R001/sub-r001s001/ses-1/anat/sub-r001s001_ses-1_space-MNI152NLin2009aSym"
    test = "ATLAS_2/Testing/R009/sub-r009s002/ses-1/anat/sub-r009s002_ses-1_space-MNI152NLin2009aSym"
    _touch(
        tmp_path,
        f"{anat}_T1w.nii.gz",
        f"{anat}_label-L_desc-T1lesion_mask.nii.gz",
        f"{test}_T1w.nii.gz",
        "ATLAS_2/Training/20220425_Training_dataset.csv",
    )
    found = discover("atlas2", tmp_path, "t1")
    assert [(s.subject_id, s.label) for s in found.subjects] == [("sub-r001s001", 1), ("sub-r009s002", 0)]
    assert found.subjects[0].seg is not None and found.subjects[0].seg.name.endswith("T1lesion_mask.nii.gz")
    assert dataset_name("atlas2") == "atlas2"
    with pytest.raises(MriadError, match="--modality t2: the ATLAS v2 data set has t1"):
        discover("atlas2", tmp_path, "t2")


def test_wmh_release_layout(tmp_path: Path) -> None:
    _touch(
        tmp_path,
        "training/Utrecht/0/wmh.nii.gz",
        "training/Utrecht/0/pre/FLAIR.nii.gz",
        "training/Utrecht/0/pre/T1.nii.gz",
        "training/Utrecht/0/orig/FLAIR.nii.gz",
        "training/Amsterdam/GE3T/100/wmh.nii.gz",
        "training/Amsterdam/GE3T/100/pre/FLAIR.nii.gz",
        "training/Singapore/50/wmh.nii.gz",
        "training/Singapore/50/pre/T1.nii.gz",
    )
    found = discover("wmh", tmp_path, "flair")
    assert [(s.subject_id, s.image.parent.name, s.seg is not None) for s in found.subjects] == [
        ("GE3T_100", "pre", True),
        ("Utrecht_0", "pre", True),
    ]
    assert [p.subject for p in found.problems] == ["Singapore_50"]
    assert [s.subject_id for s in discover("wmh", tmp_path, "t1").subjects] == ["Singapore_50", "Utrecht_0"]


def _write(path: Path, data: np.ndarray) -> Path:
    nib.save(nib.Nifti1Image(data, np.eye(4)), path)
    return path


def test_wmh_label_2_is_not_lesion(tmp_path: Path) -> None:
    image = _write(tmp_path / "FLAIR.nii.gz", np.random.default_rng(0).random((8, 8, 8)).astype(np.float32))
    labels = np.zeros((8, 8, 8), np.uint8)
    labels[1:3, 1:3, 1:3] = 1
    labels[5:7, 5:7, 5:7] = 2
    seg = _write(tmp_path / "wmh.nii.gz", labels)
    _, kept = load_inputs(image, seg, labels=(0, 1, 2), lesion_labels=(1,))
    assert kept is not None and kept.data.sum() == 8 and kept.data[5:7, 5:7, 5:7].sum() == 0
    _, every = load_inputs(image, seg, labels=(0, 1, 2))  # other data sets: every label > 0 stays
    assert every is not None and int((every.data > 0).sum()) == 16
    labels[0, 0, 0] = 3
    with pytest.raises(InputError, match="unexpected label"):
        load_inputs(image, _write(tmp_path / "bad.nii.gz", labels), labels=(0, 1, 2), lesion_labels=(1,))
