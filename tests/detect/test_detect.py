"""`mriad detect`: outputs on the scan's own grid, recorded preprocessing, thresholds, failures."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from detect_helpers import FAST_PREPROCESS, nifti, write_run

FAST_FLAGS = ["--skull-strip", "none", "--registration", "none", "--no-n4"]


@pytest.fixture(scope="module")
def thresh_run(tmp_path_factory: pytest.TempPathFactory, training_data: Path) -> Path:
    """Thresh (score = intensity) trained on the FAST_PREPROCESS data set, threshold 0.75 calibrated."""
    return write_run(
        tmp_path_factory.mktemp("runs") / "thresh", model="thresh", threshold=0.75, data=training_data, dataset="brats"
    )


@pytest.fixture(scope="module")
def detected(thresh_run: Path, raw_scan: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One detect call on a CSV (scan + its ground truth) with the training data's recorded settings."""
    from mriad.detect import detect

    folder = tmp_path_factory.mktemp("detect")
    listing = folder / "scans.csv"
    pd.DataFrame([{"image": raw_scan["scan"], "seg": raw_scan["seg"], "subject_id": "case1"}]).to_csv(listing)
    result = detect([listing], folder / "out", run=thresh_run, viewer=False)
    assert result.ok, result.failures
    return folder / "out"


def test_outputs_have_the_scans_shape_affine_and_types(detected: Path, raw_scan: dict[str, Path]) -> None:
    data, affine, _ = nifti(raw_scan["scan"])
    anomaly, anomaly_affine, anomaly_type = nifti(detected / "case1_anomaly.nii.gz")
    lesion, lesion_affine, lesion_type = nifti(detected / "case1_lesion.nii.gz")
    assert anomaly.shape == lesion.shape == data.shape
    np.testing.assert_allclose(anomaly_affine, affine, atol=1e-5)
    np.testing.assert_allclose(lesion_affine, affine, atol=1e-5)
    assert anomaly_type == np.float32 and lesion_type == np.uint8
    assert set(np.unique(lesion)) == {0, 1}
    assert (detected / "case1_overview.png").stat().st_size > 10_000


def test_summary_describes_the_lesion_and_what_made_it(detected: Path, raw_scan: dict[str, Path]) -> None:
    summary = json.loads((detected / "case1_summary.json").read_text())
    lesion, affine, _ = nifti(detected / "case1_lesion.nii.gz")
    voxel_ml = abs(np.linalg.det(affine[:3, :3])) / 1000
    assert summary["lesion_voxels"] == int(lesion.sum())
    assert summary["lesion_volume_ml"] == pytest.approx(lesion.sum() * voxel_ml, rel=1e-3)
    assert 1 <= summary["n_components"] and summary["largest_component_voxels"] <= summary["lesion_voxels"]
    assert summary["threshold"] == 0.75 and summary["threshold_source"]["val_split"] == "brats-val"
    assert summary["protocol"] == "brain" and summary["connectivity"] == 6  # a summary without a protocol
    assert summary["score_max"] >= summary["threshold"] > summary["score_mean"]
    assert len(summary["model"]["weights_sha256"]) == 64 and summary["model"]["name"] == "thresh"
    # The training data's recorded settings were used (nothing was given on the command line).
    assert {k: summary["preprocessing"][k] for k in FAST_PREPROCESS} == FAST_PREPROCESS
    assert set(summary["preprocessing"]["origin"].values()) == {"training data"}
    # Intensity thresholding finds the synthetic (hyperintense) lesion on the scan's own grid.
    assert summary["ground_truth"]["dice"] > 0.3, summary["ground_truth"]
    assert (detected / "failures.csv").is_file() and pd.read_csv(detected / "failures.csv").empty


def test_a_bad_scan_does_not_stop_the_others(cli, thresh_run: Path, detected: Path, raw_scan, tmp_path: Path) -> None:
    out = tmp_path / "out"
    # Reuse the preprocessed subject of the module's detect call (verified by checksum, not redone).
    import shutil

    shutil.copytree(detected / "preprocessed", out / "preprocessed")
    (out / "preprocessed" / "case1").rename(out / "preprocessed" / raw_scan["scan"].name.split(".")[0])
    broken = tmp_path / "inputs" / "broken.nii.gz"
    broken.parent.mkdir()
    broken.write_bytes(b"not a nifti file at all")
    result = cli("--json", "detect", raw_scan["scan"], broken, "--run", thresh_run, "--out", out, "--no-viewer")
    assert result.exit_code == 1
    report = json.loads(result.stdout)
    assert report["failed"] == ["broken"] and len(report["scans"]) == 1
    failures = pd.read_csv(out / "failures.csv")
    assert list(failures["subject"]) == ["broken"] and "broken.nii.gz" in failures["reason"].iloc[0]
    assert Path(report["scans"][0]["lesion"]).is_file()


def test_a_run_without_a_calibrated_threshold_is_refused(cli, raw_scan, tmp_path: Path) -> None:
    run = write_run(tmp_path / "run", model="thresh", threshold=None)
    result = cli("detect", raw_scan["scan"], "--run", run, "--out", tmp_path / "out", *FAST_FLAGS)
    assert result.exit_code == 1
    assert "no calibrated threshold" in result.stderr and "--threshold" in result.stderr
    assert not (tmp_path / "out").exists()


def test_command_line_options_override_and_defaults_fill_in() -> None:
    from mriad.detect.run import preprocessing_options

    recorded = {"modality": "t2", "skull_strip": "atlas", "registration": "affine-fast", "n4": True, "revision": 3}
    options, origin = preprocessing_options(recorded, {"skull_strip": "none", "n4": None}, "cpu")
    assert (options.skull_strip, options.registration, options.n4) == ("none", "affine-fast", True)
    assert origin == {
        "modality": "training data",
        "skull_strip": "command line",
        "registration": "training data",
        "n4": "training data",
    }
    options, origin = preprocessing_options(None, {}, "cpu")  # synth --preprocessed data: no record
    assert (options.skull_strip, options.registration, options.n4) == ("hd-bet", "affine-fast", True)
    assert set(origin.values()) == {"preprocess default"}


def test_inputs_folders_and_bad_names(tmp_path: Path, raw_scan) -> None:
    import shutil

    from mriad.detect.inputs import find_scans

    folder = tmp_path / "scans"
    folder.mkdir()
    shutil.copy(raw_scan["scan"], folder / "a.nii.gz")
    shutil.copy(raw_scan["seg"], folder / "a_seg.nii.gz")
    shutil.copy(raw_scan["scan"], folder / "b c.nii.gz")
    subjects, problems = find_scans([folder, folder / "a.nii.gz", tmp_path / "missing.nii.gz"])
    assert [s.subject_id for s in subjects] == ["a"] and subjects[0].seg == folder / "a_seg.nii.gz"
    reasons = " | ".join(p.reason for p in problems)
    assert "'b c'" in reasons and "a second scan named a" in reasons and "not found" in reasons


def test_bids_data_sets_are_found(tmp_path: Path, raw_scan) -> None:
    import shutil

    from mriad.detect.inputs import find_scans

    anat = tmp_path / "bids" / "sub-01" / "anat"
    anat.mkdir(parents=True)
    (tmp_path / "bids" / "dataset_description.json").write_text('{"Name": "x", "BIDSVersion": "1.8.0"}')
    shutil.copy(raw_scan["scan"], anat / "sub-01_T2w.nii.gz")
    shutil.copy(raw_scan["seg"], anat / "sub-01_label-lesion_mask.nii.gz")
    subjects, problems = find_scans([tmp_path / "bids"])
    assert problems == [] and [s.subject_id for s in subjects] == ["sub-01"]
    assert subjects[0].seg == anat / "sub-01_label-lesion_mask.nii.gz"


def test_a_fixed_threshold_keeps_the_calibrated_protocol(tmp_path: Path) -> None:
    from mriad.detect.run import choose_threshold
    from mriad.detect.source import from_run

    run = write_run(tmp_path / "run", model="thresh", threshold=0.3, protocol="reference")
    value, source = choose_threshold(from_run(run), 0.9, None)
    assert value == 0.9 and source["method"].startswith("fixed") and source["protocol"] == "reference"
    value, source = choose_threshold(from_run(run), None, None)
    assert value == 0.3 and source["val_split"] == "brats-val" and source["protocol"] == "reference"
    bare = write_run(tmp_path / "bare", model="thresh", threshold=None)
    assert choose_threshold(from_run(bare), 0.5, None)[1]["protocol"] == "reference"  # the default protocol
