"""mriad.synth: realistic synthetic scans, raw layouts and the ready preprocessed layout."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pytest

from mriad.infra.errors import MriadError
from mriad.synth import min_healthy_for_splits, synthesize


def _load(path: Path) -> tuple[np.ndarray, nib.Nifti1Image]:
    img = nib.load(str(path))
    return np.asarray(img.dataobj), img


@pytest.fixture(scope="module")
def preprocessed(tmp_path_factory: pytest.TempPathFactory):
    out = tmp_path_factory.mktemp("synth_pre")
    return synthesize(out, healthy=8, lesions=3, layout="brats", preprocessed=True, seed=5)


@pytest.fixture(scope="module")
def raw_brats(tmp_path_factory: pytest.TempPathFactory):
    out = tmp_path_factory.mktemp("synth_raw_brats")
    return synthesize(out, healthy=2, lesions=1, layout="brats", seed=2)


@pytest.fixture(scope="module")
def raw_mslub(tmp_path_factory: pytest.TempPathFactory):
    out = tmp_path_factory.mktemp("synth_raw_mslub")
    return synthesize(out, healthy=0, lesions=1, layout="mslub", seed=3)


def _files(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_same_seed_same_bytes_other_seed_differs(tmp_path: Path) -> None:
    a = synthesize(tmp_path / "a", healthy=0, lesions=2, layout="mslub", preprocessed=True, seed=11)
    b = synthesize(tmp_path / "b", healthy=0, lesions=2, layout="mslub", preprocessed=True, seed=11)
    c = synthesize(tmp_path / "c", healthy=0, lesions=2, layout="mslub", preprocessed=True, seed=12)
    files_a, files_b, files_c = _files(a.out), _files(b.out), _files(c.out)
    assert files_a == files_b and len(files_a) == 7  # 2 x (image, mask, seg) + manifest
    assert files_a.keys() == files_c.keys()
    assert files_a["mslub/patient01/image.nii.gz"] != files_c["mslub/patient01/image.nii.gz"]


def test_raw_layout_is_deterministic(tmp_path: Path, raw_mslub) -> None:
    again = synthesize(tmp_path / "again", healthy=0, lesions=1, layout="mslub", seed=3)
    assert _files(again.out) == _files(raw_mslub.out)


def test_preprocessed_volumes_follow_the_contract(preprocessed) -> None:
    from mriad.atlas import final_grid

    grid = final_grid()
    for subject in preprocessed.subjects:
        dataset = "ixi" if subject.startswith("IXI") else "brats"
        folder = preprocessed.out / dataset / subject
        image, img = _load(folder / "image.nii.gz")
        mask, mask_img = _load(folder / "mask.nii.gz")
        assert image.shape == (96, 96, 50) and image.dtype == np.float32
        assert mask.dtype == np.uint8 and set(np.unique(mask)) <= {0, 1}
        assert np.allclose(img.affine, grid.affine) and np.allclose(mask_img.affine, grid.affine)
        assert image.min() >= 0.0 and image.max() <= 1.0
        assert not np.any(image[mask == 0])
        assert mask.sum() > 50_000  # a whole brain at 2 mm
        if dataset == "brats":
            seg, _ = _load(folder / "seg.nii.gz")
            assert seg.dtype == np.uint8 and seg.any()
            assert not np.any(seg[mask == 0]), "lesion outside the brain mask"
            # Clearly hyperintense on T2: what a model trained on healthy scans must find.
            assert image[seg > 0].mean() > image[(mask > 0) & (seg == 0)].mean() + 0.15
        else:
            assert not (folder / "seg.nii.gz").exists()


def test_healthy_subjects_vary(preprocessed) -> None:
    images = [_load(preprocessed.out / "ixi" / s / "image.nii.gz")[0] for s in preprocessed.subjects[:3]]
    masks = [_load(preprocessed.out / "ixi" / s / "mask.nii.gz")[0] for s in preprocessed.subjects[:3]]
    assert np.abs(images[0] - images[1]).mean() > 0.02
    assert masks[0].sum() != masks[1].sum()  # pose and warp change the brain, not only the noise


def test_preprocessed_manifest_is_split_and_usable(preprocessed) -> None:
    from mriad.contracts.manifest import read_manifest, select_split

    frame = read_manifest(preprocessed.manifest)
    assert list(frame["subject_id"]) == preprocessed.subjects
    ixi = frame[frame["dataset"] == "ixi"]
    assert set(ixi["split"]) == {"test", "trainval"}
    assert set(frame.loc[frame["dataset"] == "brats", "split"]) <= {"val", "test"}
    assert (frame.loc[frame["label"] == 1, "seg"] != "").all()
    ages = pd.to_numeric(frame["age"])
    assert ages.between(20, 86).all() and set(frame["sex"]) <= {"M", "F"}
    assert len(select_split(frame, "ixi-train", 0)) and len(select_split(frame, "ixi-val", 0))
    assert len(select_split(frame, "brats-test"))


def test_raw_file_names_and_folders(raw_brats, raw_mslub) -> None:
    out = raw_brats.out
    ixi = sorted(p.name for p in (out / "IXI").iterdir())
    assert len(ixi) == 2
    for name in ixi:
        assert pd.Series([name]).str.fullmatch(r"IXI\d{3}-(HH|Guys|IOP)-\d{4}-T2\.nii\.gz").all(), name
    case = out / "BraTS2021" / "BraTS2021_00000"
    assert sorted(p.name for p in case.iterdir()) == ["BraTS2021_00000_seg.nii.gz", "BraTS2021_00000_t2.nii.gz"]
    patient = raw_mslub.out / "MSLUB" / "patient01"
    assert sorted(p.name for p in patient.iterdir()) == ["T2W.nii.gz", "consensus_gt.nii.gz"]
    assert not (raw_mslub.out / "IXI.csv").exists()  # no healthy subjects, no demographics
    truth = out / "_truth" / "BraTS2021_00000"
    assert sorted(p.name for p in truth.iterdir()) == [
        "BraTS2021_00000_brainmask_gt.nii.gz",
        "BraTS2021_00000_seg_gt.nii.gz",
    ]
    assert raw_brats.manifest is None and not (out / "manifest.csv").exists()


def test_raw_scanner_grids_are_not_ras_and_anisotropic(raw_brats, raw_mslub) -> None:
    checked = 0
    for result in (raw_brats, raw_mslub):
        table = pd.read_csv(result.out / "_truth" / "subjects.csv", keep_default_na=False)
        for row in table[table["dataset"] != "brats"].itertuples():
            data, img = _load(result.out / row.image)
            assert nib.aff2axcodes(img.affine) != ("R", "A", "S"), row.image
            spacing = np.array(img.header.get_zooms()[:3])
            assert spacing.max() / spacing.min() > 1.1, row.image
            assert data.dtype == np.int16 and data.min() >= 0
            brain, brain_img = _load(result.out / row.brainmask_gt)
            assert brain.shape == data.shape and np.allclose(brain_img.affine, img.affine)
            # Raw scans keep the skull: plenty of bright signal outside the brain.
            outside = data[brain == 0]
            assert (outside > np.percentile(data[brain > 0], 25)).sum() > 20_000
            checked += 1
    assert checked == 3


def test_raw_brats_is_stripped_lps_on_the_sri24_grid(raw_brats) -> None:
    case = raw_brats.out / "BraTS2021" / "BraTS2021_00000"
    image, img = _load(case / "BraTS2021_00000_t2.nii.gz")
    seg, seg_img = _load(case / "BraTS2021_00000_seg.nii.gz")
    assert image.shape == (240, 240, 155) and nib.aff2axcodes(img.affine) == ("L", "P", "S")
    assert np.allclose(img.affine[:3, :3], np.diag([-1.0, -1.0, 1.0]))
    assert np.allclose(img.affine[:3, 3], [0.0, 239.0, 0.0])  # like the real BraTS files
    assert np.allclose(seg_img.affine, img.affine)
    assert set(np.unique(seg)) <= {0, 1, 2, 4} and 2 in set(np.unique(seg))
    brain, _ = _load(raw_brats.out / "_truth" / "BraTS2021_00000" / "BraTS2021_00000_brainmask_gt.nii.gz")
    assert not np.any(image[brain == 0]), "BraTS raw scans are skull-stripped"
    assert not np.any(seg[brain == 0])
    assert image[seg > 0].mean() > image[(brain > 0) & (seg == 0)].mean() * 1.2


def test_raw_lesion_truth_lies_inside_the_brain(raw_mslub) -> None:
    truth = raw_mslub.out / "_truth" / "patient01"
    seg, _ = _load(truth / "patient01_seg_gt.nii.gz")
    brain, _ = _load(truth / "patient01_brainmask_gt.nii.gz")
    consensus, _ = _load(raw_mslub.out / "MSLUB" / "patient01" / "consensus_gt.nii.gz")
    assert seg.any() and not np.any(seg[brain == 0])
    assert np.array_equal(consensus, seg)


def test_demographics_and_truth_table(raw_brats) -> None:
    demographics = pd.read_csv(raw_brats.out / "IXI.csv")
    assert list(demographics.columns) == ["IXI_ID", "SEX_ID", "AGE"]
    assert set(demographics["SEX_ID"]) <= {1, 2} and demographics["AGE"].between(20, 86).all()
    names = sorted(p.name for p in (raw_brats.out / "IXI").iterdir())
    assert [int(n[3:6]) for n in names] == sorted(demographics["IXI_ID"])
    table = pd.read_csv(raw_brats.out / "_truth" / "subjects.csv", keep_default_na=False)
    assert list(table["subject_id"]) == raw_brats.subjects
    for row in table.itertuples():
        assert (raw_brats.out / row.image).is_file() and (raw_brats.out / row.brainmask_gt).is_file()


def test_other_modalities(tmp_path: Path) -> None:
    flair = synthesize(tmp_path / "f", healthy=0, lesions=1, layout="mslub", preprocessed=True, modality="flair")
    folder = flair.out / "mslub" / "patient01"
    image, _ = _load(folder / "image.nii.gz")
    seg, _ = _load(folder / "seg.nii.gz")
    mask, _ = _load(folder / "mask.nii.gz")
    assert image[seg > 0].mean() > image[(mask > 0) & (seg == 0)].mean() + 0.15  # bright on FLAIR too
    t1 = synthesize(tmp_path / "t", healthy=0, lesions=1, layout="brats", preprocessed=True, modality="t1")
    assert (t1.out / "brats" / "BraTS2021_00000" / "image.nii.gz").is_file()


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"layout": "ixi", "lesions": 2}, "healthy scans only"),
        ({"layout": "oasis"}, "unknown layout"),
        ({"modality": "dwi"}, "unknown modality"),
        ({"healthy": 3, "preprocessed": True}, "too few"),
        ({"healthy": 0, "lesions": 0}, "at least one subject"),
        ({"modality": "flair"}, "IXI has no FLAIR"),
    ],
)
def test_impossible_requests_are_refused(tmp_path: Path, kwargs: dict, message: str) -> None:
    arguments = {"healthy": 1, "lesions": 1, **kwargs}
    with pytest.raises(MriadError, match=message):
        synthesize(tmp_path / "x", **arguments)
    assert not (tmp_path / "x").exists()


def test_min_healthy_matches_the_split_rule() -> None:
    from mriad.split import split_frame

    n = min_healthy_for_splits()
    frame = pd.DataFrame(
        {
            "subject_id": [f"S{i}" for i in range(n)],
            "dataset": "ixi",
            "label": 0,
            "age": np.linspace(20, 80, n),
            "split": "",
            "fold": -1,
            "seg": "",
            "image": [f"i{i}" for i in range(n)],
        }
    )
    assert len(split_frame(frame)) == n
