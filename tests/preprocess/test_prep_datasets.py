"""Dataset adapters: file naming of every supported layout (empty files suffice: adapters never open
images), demographics, and the real samples' naming when present."""

from __future__ import annotations

from pathlib import Path

import pytest
from preprocess_helpers import realdata

from mriad.infra.errors import MriadError
from mriad.preprocess.datasets import dataset_name, discover


def _touch(root: Path, *names: str) -> None:
    for name in names:
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"")


def test_manifest_dataset_names() -> None:
    assert [dataset_name(d) for d in ("ixi", "brats21", "brats", "mslub", "bids", "generic")] == [
        "ixi",
        "brats",
        "brats",
        "mslub",
        "bids",
        "generic",
    ]
    with pytest.raises(MriadError, match="--dataset adni"):
        dataset_name("adni")


def test_ixi_both_namings_modalities_and_demographics(tmp_path: Path) -> None:
    _touch(
        tmp_path,
        "IXI012-HH-1211-T2.nii.gz",
        "IXI012-HH-1211-PD.nii.gz",
        "IXI002-Guys-0828_T1.nii.gz",
        "T1/IXI013-IOP-0001_T1.nii.gz",
        "IXI.xls.nii.gz.bak",
        "notes.txt",
    )
    (tmp_path / "IXI.csv").write_text('IXI_ID,"SEX_ID (1=m, 2=f)",AGE\n12,2,35.5\n12,2,\n2,1,70.1\n')
    t2 = discover("ixi", tmp_path, "t2", tmp_path / "IXI.csv")
    assert [(s.subject_id, s.age, s.sex, s.label) for s in t2.subjects] == [("IXI012", 35.5, "F", 0)]
    t1 = discover("ixi", tmp_path, "t1", tmp_path / "IXI.csv")
    assert [s.subject_id for s in t1.subjects] == ["IXI002", "IXI013"]
    assert t1.subjects[0].age == 70.1 and t1.subjects[1].age is None
    with pytest.raises(MriadError, match="--modality flair"):
        discover("ixi", tmp_path, "flair")


def test_brats_2018_2021_and_2023_naming(tmp_path: Path) -> None:
    _touch(
        tmp_path,
        "BraTS2021_00000/BraTS2021_00000_t2.nii.gz",
        "BraTS2021_00000/BraTS2021_00000_t1.nii.gz",
        "BraTS2021_00000/BraTS2021_00000_t1ce.nii.gz",
        "BraTS2021_00000/BraTS2021_00000_seg.nii.gz",
        "Brats18_TCIA01_201_1/Brats18_TCIA01_201_1_t2.nii.gz",
        "Brats18_TCIA01_201_1/Brats18_TCIA01_201_1_seg.nii.gz",
        "BraTS-GLI-00000-000/BraTS-GLI-00000-000-t2w.nii.gz",
        "BraTS-GLI-00000-000/BraTS-GLI-00000-000-seg.nii.gz",
        "BraTS2021_00001/BraTS2021_00001_flair.nii.gz",
    )
    found = discover("brats21", tmp_path, "t2")
    assert [s.subject_id for s in found.subjects] == ["BraTS-GLI-00000-000", "BraTS2021_00000", "Brats18_TCIA01_201_1"]
    assert all(s.label == 1 and s.seg is not None for s in found.subjects)
    assert [(p.subject, "no *_t2" in p.reason) for p in found.problems] == [("BraTS2021_00001", True)]
    t1 = discover("brats21", tmp_path, "t1")  # t1 must not pick t1ce
    assert [s.image.name for s in t1.subjects] == ["BraTS2021_00000_t1.nii.gz"]


def test_mslub_both_namings(tmp_path: Path) -> None:
    _touch(
        tmp_path,
        "patient01/T2W.nii.gz",
        "patient01/T1W.nii.gz",
        "patient01/consensus_gt.nii.gz",
        "patient07/T2.nii.gz",
        "patient07/FLAIR.nii.gz",
        "patient07/GOLD_STANDARD.nii.gz",
        "patient08/T1.nii.gz",
    )
    found = discover("mslub", tmp_path, "t2")
    assert [(s.subject_id, s.image.name, s.seg.name) for s in found.subjects] == [
        ("patient01", "T2W.nii.gz", "consensus_gt.nii.gz"),
        ("patient07", "T2.nii.gz", "GOLD_STANDARD.nii.gz"),
    ]
    assert [p.subject for p in found.problems] == ["patient08"]
    assert [s.image.name for s in discover("mslub", tmp_path, "flair").subjects] == ["FLAIR.nii.gz"]


def test_bids_sessions_and_participants(tmp_path: Path) -> None:
    _touch(
        tmp_path,
        "sub-01/anat/sub-01_T2w.nii.gz",
        "sub-01/anat/sub-01_T1w.nii.gz",
        "sub-02/ses-1/anat/sub-02_ses-1_T2w.nii.gz",
        "sub-02/ses-2/anat/sub-02_ses-2_T2w.nii.gz",
        "sub-02/ses-2/anat/sub-02_ses-2_label-lesion_mask.nii.gz",
        "sub-03/anat/sub-03_T1w.nii.gz",
    )
    (tmp_path / "participants.tsv").write_text("participant_id\tage\tsex\nsub-01\t41\tM\nsub-02\t29\tF\n")
    found = discover("bids", tmp_path, "t2")
    assert [(s.subject_id, s.age, s.sex, s.label) for s in found.subjects] == [
        ("sub-01", 41.0, "M", 0),
        ("sub-02_ses-1", 29.0, "F", 0),
        ("sub-02_ses-2", 29.0, "F", 1),
    ]
    assert [p.subject for p in found.problems] == ["sub-03"]


def test_generic_folder_and_csv(tmp_path: Path) -> None:
    _touch(tmp_path, "scans/a.nii.gz", "scans/b.nii", "scans/b_seg.nii.gz", "data/x.nii.gz", "data/x_les.nii.gz")
    folder = discover("generic", tmp_path / "scans")
    assert [(s.subject_id, s.seg.name if s.seg else "") for s in folder.subjects] == [("a", ""), ("b", "b_seg.nii.gz")]
    listing = tmp_path / "list.csv"
    listing.write_text("image,seg,age\ndata/x.nii.gz,data/x_les.nii.gz,50\nscans/a.nii.gz,,\n")
    rows = discover("generic", listing).subjects
    assert [(s.subject_id, s.label, s.age) for s in rows] == [("x", 1, 50.0), ("a", 0, None)]
    assert rows[0].image == (tmp_path / "data/x.nii.gz").resolve()
    bad = tmp_path / "bad.csv"
    bad.write_text("path\nx\n")
    with pytest.raises(MriadError, match="'image' column"):
        discover("generic", bad)


def test_real_brats18_and_mslub_naming() -> None:
    brats = discover("brats21", realdata("brats18"), "t2")
    assert len(brats.subjects) == 8 and not brats.problems
    assert all(s.subject_id.startswith("Brats18_") and s.seg.name.endswith("_seg.nii.gz") for s in brats.subjects)
    mslub = discover("mslub", realdata("mslub"), "t2")
    assert [(s.subject_id, s.image.name, s.seg.name) for s in mslub.subjects] == [
        ("patient07", "T2.nii.gz", "GOLD_STANDARD.nii.gz")
    ]


def test_real_ixi_t1_naming() -> None:
    found = discover("ixi", realdata("ixi_t1"), "t1")
    assert len(found.subjects) == 12 and found.subjects[0].subject_id == "IXI132"
    assert discover("ixi", realdata("ixi_t1"), "t2").subjects == []
