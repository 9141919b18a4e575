"""Identifiers used as paths (issue 14, defect 1), leaks by content (defect 6) and manifest cells that
must be named when refused (the issue's "Also" list). Every case digests the whole tree around the
run and the data before and after: a refusal changes nothing anywhere.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable
from pathlib import Path

import pandas as pd
import pytest
from reliability_helpers import TINY_SETS, assert_one_line_error, snapshot

TRAIN = ("--device", "cpu", "--hide-progress", "train", "--model", "pddpm", "--epochs", "1", *TINY_SETS)


def _edit(manifest: Path, change: Callable[[pd.DataFrame], pd.DataFrame | None]) -> None:
    frame = pd.read_csv(manifest, dtype=str, keep_default_na=False)
    changed = change(frame)
    (frame if changed is None else changed).to_csv(manifest, index=False)


def _first(frame: pd.DataFrame, dataset: str, split: str) -> int:
    return int(frame.index[(frame["dataset"] == dataset) & (frame["split"] == split)][0])


@pytest.mark.parametrize("bad_id", ["../../../../x", "sub/dir", "..", ".hidden"])
def test_reconstruct_refuses_a_subject_id_that_is_a_path(
    bad_id: str, cli, run_copy, data_copy: Path, tmp_path: Path
) -> None:
    run = run_copy(recon=False)

    def rename(frame: pd.DataFrame) -> None:
        frame.loc[_first(frame, "brats", "test"), "subject_id"] = bad_id

    _edit(data_copy, rename)
    before, beside = snapshot(tmp_path, ["*"]), sorted(os.listdir(tmp_path.parent))
    result = cli("--device", "cpu", "--hide-progress", "reconstruct", "--run", run, "--split", "brats-test")
    assert result.exit_code == 1, result.output
    assert_one_line_error(result.output, str(data_copy), "column subject_id", repr(bad_id), "cannot be used")
    # Nothing written, inside the run or outside it (../../../../x lands beside this test's folder).
    assert snapshot(tmp_path, ["*"]) == before and sorted(os.listdir(tmp_path.parent)) == beside


def test_train_refuses_a_dataset_name_that_is_a_path(cli, data_copy: Path, tmp_path: Path) -> None:
    _edit(data_copy, lambda frame: frame.replace({"dataset": {"brats": "../brats"}}))
    before = snapshot(tmp_path, ["*"])
    result = cli(*TRAIN, "--data", data_copy, "--out", tmp_path / "runs" / "p")
    assert result.exit_code == 1, result.output
    assert_one_line_error(result.output, str(data_copy), "column dataset", "'../brats'")
    assert snapshot(tmp_path, ["*"]) == before and not (tmp_path / "runs").exists()


def test_generic_csv_subject_id_cannot_reach_another_data_set(tmp_path: Path) -> None:
    """The reported attack: a generic CSV row named ../../../other/brats/BraTS2021_00000."""
    from mriad.preprocess.datasets import discover

    raw = tmp_path / "raw"
    raw.mkdir()
    for name in ("a.nii.gz", "b.nii.gz"):
        (raw / name).write_bytes(b"")  # discovery never opens the files
    listing = raw / "list.csv"
    pd.DataFrame(
        {"subject_id": ["good01", "../../../other/brats/BraTS2021_00000"], "image": ["a.nii.gz", "b.nii.gz"]}
    ).to_csv(listing, index=False)
    found = discover("generic", listing)
    assert [s.subject_id for s in found.subjects] == ["good01"]
    assert len(found.problems) == 1 and "cannot be used in a file name" in found.problems[0].reason


@pytest.mark.parametrize(("value", "shown"), [("inf", "'inf'"), ("0.9", "'0.9'"), ("yes", "'yes'")])
def test_a_label_that_is_not_a_whole_number_names_its_cell(
    value: str, shown: str, cli, data_copy: Path, tmp_path: Path
) -> None:
    def set_label(frame: pd.DataFrame) -> None:
        frame.loc[3, "label"] = value

    _edit(data_copy, set_label)
    result = cli(*TRAIN, "--data", data_copy, "--out", tmp_path / "runs" / "p")
    assert result.exit_code == 1, result.output
    assert_one_line_error(result.output, str(data_copy), "row 5, column label", shown, "not a whole number")
    assert not (tmp_path / "runs").exists()


@pytest.mark.parametrize("how", ["hard link", "copy"])
def test_a_test_scan_under_a_new_training_id_is_a_leak(how: str, cli, data_copy: Path, tmp_path: Path) -> None:
    frame = pd.read_csv(data_copy, dtype=str, keep_default_na=False)
    test_row = frame.loc[_first(frame, "ixi", "test")]
    folder = data_copy.parent / "ixi" / "NEW001"
    folder.mkdir()
    for column in ("image", "mask"):
        source = data_copy.parent / test_row[column]
        (os.link if how == "hard link" else shutil.copyfile)(source, folder / source.name)
    new = {**test_row.to_dict(), "subject_id": "NEW001", "split": "trainval", "fold": "1"}
    new.update(image="ixi/NEW001/image.nii.gz", mask="ixi/NEW001/mask.nii.gz")
    pd.concat([frame, pd.DataFrame([new])]).to_csv(data_copy, index=False)
    before = snapshot(tmp_path, ["*"])
    result = cli(*TRAIN, "--data", data_copy, "--out", tmp_path / "runs" / "p")
    assert result.exit_code == 1, result.output
    assert_one_line_error(result.output, str(data_copy), test_row["subject_id"], "NEW001", "identical", "leak")
    assert snapshot(tmp_path, ["*"]) == before and not (tmp_path / "runs").exists()


def test_identical_scans_within_one_split_are_not_a_leak(data_copy: Path) -> None:
    """Copies inside one split leak nothing into another: accepted (only a digest, no refusal)."""
    from mriad.contracts.manifest import read_manifest

    frame = pd.read_csv(data_copy, dtype=str, keep_default_na=False)
    tests = frame.index[(frame["dataset"] == "brats") & (frame["split"] == "test")]
    a, b = (data_copy.parent / frame.loc[i, "image"] for i in tests[:2])
    shutil.copyfile(a, b)
    assert len(read_manifest(data_copy)) == len(frame)


def test_a_leak_among_100000_subjects_stays_one_short_line() -> None:
    from mriad.contracts.manifest import validate_manifest
    from mriad.infra.errors import ManifestError

    n = 100_000
    frame = pd.DataFrame(
        {
            "subject_id": [f"S{i:06d}" for i in range(n)],
            "dataset": "ixi",
            "split": "test",
            "fold": -1,
            "label": 0,
            "image": "/data/same.nii.gz",
            "mask": "",
            "seg": "",
        }
    )
    with pytest.raises(ManifestError) as caught:
        validate_manifest(frame, source="m.csv", check_files=False)
    message = str(caught.value)
    assert "\n" not in message and len(message) < 300, message[:400]
    assert "100000 subjects (S000000, S000001, S000002, S000003, S000004, ...)" in message
