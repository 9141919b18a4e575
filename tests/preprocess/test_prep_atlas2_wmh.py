"""ATLAS v2 and WMH adapters: the release layouts, subject IDs as MHD's splits name them, and WMH's
label 2 ("other pathology") kept out of the lesion mask and written, for evaluate to leave out, to
``ignore.nii.gz`` and the manifest's ``ignore`` column."""

from __future__ import annotations

import json
import shutil
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
    _, kept, ignored = load_inputs(image, seg, labels=(0, 1, 2), lesion_labels=(1,), ignore_labels=(2,))
    assert kept is not None and kept.data.sum() == 8 and kept.data[5:7, 5:7, 5:7].sum() == 0
    assert ignored is not None and ignored.data.sum() == 8 and ignored.data[5:7, 5:7, 5:7].all()
    _, every, none = load_inputs(image, seg, labels=(0, 1, 2))  # other data sets: every label > 0 stays
    assert every is not None and int((every.data > 0).sum()) == 16 and none is None
    labels[0, 0, 0] = 3
    with pytest.raises(InputError, match="unexpected label"):
        load_inputs(image, _write(tmp_path / "bad.nii.gz", labels), labels=(0, 1, 2), lesion_labels=(1,))


FAST = {"modality": "flair", "skull_strip": "none", "registration": "none", "n4": False, "qc": False}


def _wmh_raw(brats_case: Path, root: Path) -> Path:
    """A WMH-layout raw folder made of the synthetic BraTS case (stripped, on the SRI24 grid):
    ``Utrecht/0`` with the oedema as WMH (1) and the tumour core as other pathology (2), ``Utrecht/1``
    with label 1 only."""
    brats = nib.load(next(brats_case.glob("*_seg.nii.gz")))
    labels = np.asarray(brats.dataobj)
    cases = {"0": np.where(labels == 2, 1, np.where(labels > 0, 2, 0)), "1": labels > 0}
    for case, wmh in cases.items():
        folder = root / "Utrecht" / case
        (folder / "pre").mkdir(parents=True)
        shutil.copy(next(brats_case.glob("*_t2.nii.gz")), folder / "pre" / "FLAIR.nii.gz")
        nib.save(nib.Nifti1Image(wmh.astype(np.uint8), brats.affine), folder / "wmh.nii.gz")
    return root


def test_wmh_preprocess_writes_the_ignored_voxels(brats_case: Path, tmp_path: Path) -> None:
    from mriad.contracts.manifest import read_manifest, write_manifest
    from mriad.contracts.subject_folder import SubjectFolder
    from mriad.infra.io import read_nifti
    from mriad.preprocess import preprocess, preprocess_subject

    raw = _wmh_raw(brats_case, tmp_path / "raw")
    out = tmp_path / "out"
    result = preprocess(raw, out, dataset="wmh", **FAST)
    assert result.done == ["Utrecht_0", "Utrecht_1"] and not result.failures
    first, second = SubjectFolder.of(out, "wmh", "Utrecht_0"), SubjectFolder.of(out, "wmh", "Utrecht_1")
    rows = read_manifest(result.manifest).set_index("subject_id")
    assert rows.loc["Utrecht_0", "ignore"] == str(first.ignore) and rows.loc["Utrecht_1", "ignore"] == ""
    assert not second.ignore.exists()  # nothing ignored: no file, an empty cell
    assert nib.load(first.ignore).get_data_dtype() == np.uint8
    ignore = read_nifti(first.ignore).data > 0
    seg = read_nifti(first.seg).data > 0
    # Disjoint on the scan; on the final grid they share only blocks split half and half (majority
    # ties count as inside for both; evaluate then leaves such a voxel out).
    assert ignore.any() and seg.any() and (ignore & seg).sum() < 0.2 * min(ignore.sum(), seg.sum())
    # Carried exactly as a segmentation is: label 2 alone, preprocessed as a generic subject's lesion mask.
    wmh = nib.load(raw / "Utrecht/0/wmh.nii.gz")
    other = tmp_path / "label2.nii.gz"
    nib.save(nib.Nifti1Image((np.asarray(wmh.dataobj) == 2).astype(np.uint8), wmh.affine), other)
    preprocess_subject(raw / "Utrecht/0/pre/FLAIR.nii.gz", tmp_path / "as_seg", seg=other, dataset="generic", **FAST)
    np.testing.assert_array_equal(ignore, read_nifti(tmp_path / "as_seg" / "seg.nii.gz").data > 0)
    # A rerun keeps both; a result made before the adapter ignored labels is redone (it has no ignore file).
    assert preprocess(raw, out, dataset="wmh", **FAST).skipped == ["Utrecht_0", "Utrecht_1"]
    record = json.loads(first.done.read_text())
    assert record.pop("ignore_labels") == [2]
    first.done.write_text(json.dumps(record))
    again = preprocess(raw, out, dataset="wmh", **FAST)
    assert again.done == ["Utrecht_0"] and again.skipped == ["Utrecht_1"]
    assert read_manifest(again.manifest).set_index("subject_id").loc["Utrecht_0", "ignore"] == str(first.ignore)
    # A manifest whose subjects have no ignore volume has no ignore column.
    alone = rows.reset_index().query("subject_id == 'Utrecht_1'")
    header = write_manifest(alone, tmp_path / "alone.csv").read_text().splitlines()[0]
    assert header == "subject_id,dataset,split,fold,label,image,mask,seg,age,sex,source"
