"""End to end on synthetic raw scans of all three layouts (non-RAS, anisotropic, with skull for IXI and
MSLUB): the outputs honour docs/CONTRACTS.md and the lesions survive where the ground truth says."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from preprocess_helpers import carried_truth, dice

from mriad.atlas import final_grid
from mriad.infra.io import read_nifti

pytestmark = pytest.mark.slow


def _subject_dirs(out):
    return sorted(p.parent for p in out.glob("*/*/done.json"))


def test_every_layout_processed_without_failures(synth_out) -> None:
    out, results = synth_out
    for name, result in results.items():
        assert result.failures == [], (name, result.failures)
        assert len(result.done) == 1, name
    assert {p.parent.name for p in _subject_dirs(out)} == {"ixi", "brats", "mslub"}


def test_outputs_follow_the_contract(synth_out) -> None:
    out, _ = synth_out
    grid = final_grid()
    for folder in _subject_dirs(out):
        image = read_nifti(folder / "image.nii.gz")
        mask = read_nifti(folder / "mask.nii.gz")
        assert image.shape == mask.shape == (96, 96, 50)
        assert np.allclose(image.affine, grid.affine) and np.allclose(mask.affine, grid.affine)
        assert image.data.min() >= 0.0 and image.data.max() <= 1.0
        assert set(np.unique(mask.data)) <= {0.0, 1.0}
        assert np.all(image.data[mask.data == 0] == 0)
        assert mask.data.sum() > 50_000 / 8  # more than 50 ml of brain at 2 mm
        # The 1-99 % scaling: about 1 % of the brain at 0 and 1 % at 1.
        assert 0.005 < np.mean(image.data[mask.data > 0] >= 1.0) < 0.03
        import nibabel as nib

        assert nib.load(folder / "mask.nii.gz").get_data_dtype() == np.uint8
        assert nib.load(folder / "image.nii.gz").get_data_dtype() == np.float32
        timings = json.loads((folder / "timings.json").read_text())
        assert {"read", "skull_strip", "register", "crop", "n4", "downsample", "normalise", "total"} <= set(timings)
        assert (folder / "qc.png").stat().st_size > 5_000


def test_brain_and_lesion_masks_match_the_ground_truth(synth_out, synth_raw) -> None:
    out, _ = synth_out
    for name, raw in synth_raw.items():
        truth = pd.read_csv(raw / "_truth" / "subjects.csv", dtype=str, keep_default_na=False)
        for row in truth.itertuples(index=False):
            assert row.orientation != "RAS" and (name == "brats" or len(set(row.spacing.split("x"))) > 1)
            folder = next(out.glob(f"*/{row.subject_id}"))
            record = json.loads((folder / "done.json").read_text())
            matrix = np.asarray(record["template_to_subject"])
            mask = read_nifti(folder / "mask.nii.gz").data > 0
            assert dice(mask, carried_truth(raw / row.brainmask_gt, matrix)) >= 0.9, (name, row.subject_id)
            if row.seg_gt:
                seg = read_nifti(folder / "seg.nii.gz", allow_empty=True).data > 0
                truth_seg = carried_truth(raw / row.seg_gt, matrix)
                assert truth_seg.sum() > 0
                assert dice(seg, truth_seg) >= 0.8, (name, row.subject_id, dice(seg, truth_seg))
                image = read_nifti(folder / "image.nii.gz").data
                assert image[seg].mean() > image[mask & ~seg].mean()  # T2 lesions are bright


def test_manifest_lists_all_data_sets_with_labels_and_demographics(synth_out, synth_raw) -> None:
    from mriad.contracts.manifest import read_manifest

    out, _ = synth_out
    frame = read_manifest(out / "manifest.csv")
    assert sorted(frame["dataset"]) == ["brats", "ixi", "mslub"]
    assert set(frame["split"]) == {""}
    by_dataset = frame.set_index("dataset")
    assert by_dataset.loc["ixi", "label"] == 0 and by_dataset.loc["ixi", "seg"] == ""
    assert by_dataset.loc["brats", "label"] == 1 and by_dataset.loc["mslub", "label"] == 1
    truth = pd.read_csv(synth_raw["ixi"] / "_truth" / "subjects.csv", dtype=str)
    assert float(by_dataset.loc["ixi", "age"]) == pytest.approx(float(truth["age"].iloc[0]), abs=0.01)
    assert by_dataset.loc["ixi", "sex"] == truth["sex"].iloc[0]
    assert (out / "failures.csv").read_text().strip() == "subject,file,reason,dataset"


def test_rerun_skips_finished_subjects(synth_out, synth_raw) -> None:
    from mriad.preprocess import preprocess

    out, _ = synth_out
    result = preprocess(synth_raw["mslub"] / "MSLUB", out, dataset="mslub", skull_strip="atlas")
    assert result.done == [] and len(result.skipped) == 1 and result.ok
    # The manifest still has every data set after a rerun of one of them.
    assert len(pd.read_csv(out / "manifest.csv")) == 3
