"""The bad-input matrix, part 2: manifests, run folders, checkpoints and preprocessed volumes, each fed
through the command line of the stage that reads it first (`train`, `reconstruct`, `evaluate`).

Every case checks: one line naming the file (or manifest and subject) and the problem, exit code 1,
the other subjects finished where the stage works subject by subject, and no partial output.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
import torch
from reliability_helpers import TINY_SETS, assert_one_line_error, files_under

from mriad.contracts.manifest import read_manifest
from mriad.infra.io import write_nifti

TRAIN = ("--device", "cpu", "--hide-progress", "train", "--model", "pddpm", "--epochs", "1", *TINY_SETS)


def _edit_manifest(manifest: Path, change: Callable[[pd.DataFrame], pd.DataFrame | None]) -> None:
    frame = pd.read_csv(manifest, dtype=str, keep_default_na=False)
    changed = change(frame)
    (frame if changed is None else changed).to_csv(manifest, index=False)


def _row(manifest: Path, subject: str) -> pd.Series:
    frame = read_manifest(manifest, check_files=False)
    return frame.set_index("subject_id").loc[subject]


# ---- train: the manifest and what it points to ------------------------------------------------------
def _duplicate_id(frame: pd.DataFrame) -> None:
    frame.loc[1, "subject_id"] = frame.loc[0, "subject_id"]


def _split_leak(frame: pd.DataFrame) -> None:
    # IXI000 is also listed as a test subject (an IXI test row renamed): train and test share it.
    test = frame.index[frame["split"] == "test"][0]
    frame.loc[test, "subject_id"] = frame.loc[0, "subject_id"]


def _same_scan_twice(frame: pd.DataFrame) -> None:
    test = frame.index[frame["split"] == "test"][0]
    frame.loc[test, "image"] = frame.loc[0, "image"]


def _missing_column(frame: pd.DataFrame) -> pd.DataFrame:
    return frame.drop(columns=["label"])


MANIFEST_CASES = {
    "duplicate subject IDs": (_duplicate_id, ["duplicate subject_id IXI000"]),
    "split leak (one subject in train and test)": (_split_leak, ["subject IXI000 appears in two splits", "leak"]),
    "split leak (one scan under two IDs)": (_same_scan_twice, ["IXI000", "share image", "leak"]),
    "manifest with missing columns": (_missing_column, ["missing column(s) label"]),
}


@pytest.mark.parametrize("case", list(MANIFEST_CASES))
def test_train_refuses_a_broken_manifest(case: str, cli, data_copy: Path, tmp_path: Path) -> None:
    change, fragments = MANIFEST_CASES[case]
    _edit_manifest(data_copy, change)
    run = tmp_path / "runs" / "pddpm"
    result = cli(*TRAIN, "--data", data_copy, "--out", run)
    assert result.exit_code == 1, result.output
    assert_one_line_error(result.output, str(data_copy), *fragments)
    assert not run.exists() and not run.parent.exists(), files_under(tmp_path / "runs")  # no partial output


def test_train_refuses_a_missing_file_named_in_the_manifest(cli, data_copy: Path, tmp_path: Path) -> None:
    image = Path(_row(data_copy, "IXI003")["image"])
    image.unlink()
    run = tmp_path / "run"
    result = cli(*TRAIN, "--data", data_copy, "--out", run)
    assert result.exit_code == 1
    assert_one_line_error(result.output, str(data_copy), "subject IXI003", str(image), "does not exist")
    assert not run.exists()


def test_train_refuses_an_empty_brain_mask(cli, data_copy: Path, tmp_path: Path) -> None:
    mask = Path(_row(data_copy, "IXI001")["mask"])  # fold 1: in ixi-train of fold 0
    write_nifti(mask, np.zeros((32, 32, 8)), np.diag([2.0, 2.0, 2.0, 1.0]), dtype=np.uint8)
    run = tmp_path / "run"
    result = cli(*TRAIN, "--data", data_copy, "--out", run)
    assert result.exit_code == 1
    assert_one_line_error(result.output, str(mask), "brain mask is empty")
    assert not run.exists()


def test_train_refuses_a_run_folder_of_another_model(cli, run_copy, data_copy: Path) -> None:
    run = run_copy(recon=False)
    before = {p: p.read_bytes() for p in run.rglob("*") if p.is_file()}
    result = cli("--device", "cpu", "train", "--model", "ae", "--data", data_copy, "--out", run, "--resume")
    assert result.exit_code == 1
    assert_one_line_error(result.output, str(run), "holds a run of model 'pddpm', not 'ae'")
    assert {p: p.read_bytes() for p in run.rglob("*") if p.is_file()} == before  # untouched


# ---- checkpoints --------------------------------------------------------------------------------------
class _Payload:
    """Unpickling this calls ``open(marker, "w")``: the file appears if the pickle is ever executed."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self) -> tuple:
        return (open, (self.marker, "w"))


def _malicious_checkpoint(path: Path, marker: Path) -> None:
    """A checkpoint that looks like mriad's (model, config, state_dict) with a code-running payload."""
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"model": "pddpm", "config": {}, "state_dict": {}, "payload": _Payload(marker)}, path)


def test_the_malicious_pickle_is_live(tmp_path: Path) -> None:
    """Control: loading the file the unsafe way really does run the payload (so the tests below that
    find no marker prove that mriad never executed it)."""
    path, marker = tmp_path / "evil.pt", tmp_path / "PWNED"
    _malicious_checkpoint(path, marker)
    code = f"import torch; torch.load({str(path)!r}, weights_only=False)"
    subprocess.run([sys.executable, "-c", code], check=True, capture_output=True)
    assert marker.exists()


def test_reconstruct_refuses_a_malicious_pickle_without_running_it(cli, run_copy, tmp_path: Path) -> None:
    run = run_copy(recon=False)
    marker = tmp_path / "PWNED"
    best = run / "checkpoints" / "best.pt"
    _malicious_checkpoint(best, marker)
    result = cli("--device", "cpu", "reconstruct", "--run", run, "--split", "brats-test")
    assert result.exit_code == 1
    assert_one_line_error(result.output, str(best), "refused: not a plain weights checkpoint")
    assert not marker.exists(), "the payload ran"
    assert not (run / "recon").exists()  # not even an empty folder


def test_train_resume_refuses_a_malicious_pickle_without_running_it(
    cli, run_copy, data_copy: Path, tmp_path: Path
) -> None:
    run = run_copy(recon=False)
    marker = tmp_path / "PWNED"
    last = run / "checkpoints" / "last.pt"
    _malicious_checkpoint(last, marker)
    payload = last.read_bytes()
    result = cli(*TRAIN, "--data", data_copy, "--out", run, "--resume", "--epochs", "3")
    assert result.exit_code == 1
    assert_one_line_error(result.output, str(last), "refused")
    assert not marker.exists(), "the payload ran"
    assert last.read_bytes() == payload  # refused, not overwritten by a fresh run


@pytest.mark.parametrize(
    ("content", "problem"),
    [
        (b"this is not a checkpoint at all\n" * 10, "not a readable checkpoint"),
        ("tensor", "not an mriad checkpoint"),
    ],
    ids=["garbage bytes", "a plain tensor file"],
)
def test_reconstruct_refuses_a_checkpoint_that_is_not_one(cli, run_copy, content: object, problem: str) -> None:
    run = run_copy(recon=False)
    best = run / "checkpoints" / "best.pt"
    if content == "tensor":
        torch.save(torch.zeros(3), best)
    else:
        best.write_bytes(content)  # type: ignore[arg-type]
    result = cli("--device", "cpu", "reconstruct", "--run", run, "--split", "brats-test")
    assert result.exit_code == 1
    assert_one_line_error(result.output, str(best), problem)
    assert not (run / "recon").exists()  # not even an empty folder


def test_reconstruct_refuses_a_checkpoint_of_another_model(cli, run_copy) -> None:
    run = run_copy(recon=False)
    config = json.loads((run / "config.json").read_text())
    config["model"] = "ddpm"  # the folder claims ddpm; its checkpoint holds a pddpm
    (run / "config.json").write_text(json.dumps(config))
    result = cli("--device", "cpu", "reconstruct", "--run", run, "--split", "brats-test")
    assert result.exit_code == 1
    assert_one_line_error(result.output, "best.pt", "checkpoint holds model 'pddpm', expected 'ddpm'")
    assert not (run / "recon").exists()  # not even an empty folder


# ---- reconstruct: one bad scan among good ones --------------------------------------------------------
def test_reconstruct_reports_a_corrupt_scan_and_finishes_the_others(cli, run_copy, data_copy: Path) -> None:
    run = run_copy(recon=False)
    bad = Path(_row(data_copy, "BRATS013")["image"])
    bad.write_bytes(bad.read_bytes()[: len(bad.read_bytes()) // 2])  # truncated gzip stream
    result = cli("--device", "cpu", "reconstruct", "--run", run, "--split", "brats-test")
    assert result.exit_code == 1, result.output
    out = run / "recon" / "brats-test"
    failures = pd.read_csv(out / "failures.csv")
    assert list(failures["subject_id"]) == ["BRATS013"]
    reason = failures.loc[0, "reason"]
    assert reason.startswith(str(bad)) and "\n" not in reason and "corrupt" in reason
    written = sorted(p.name.split("_")[0] for p in out.glob("*_score.nii.gz"))
    assert written == ["BRATS012", "BRATS014", "BRATS015", "BRATS016", "BRATS017"]
    assert not list(out.glob("BRATS013*"))


# ---- evaluate: preprocessed volumes that break the contract ----------------------------------------
def _zero_mask(row: pd.Series) -> tuple[Path, str]:
    mask = Path(row["mask"])
    write_nifti(mask, np.zeros((32, 32, 8)), np.diag([2.0, 2.0, 2.0, 1.0]), dtype=np.uint8)
    return mask, "brain mask is empty"


def _brats_labels(row: pd.Series) -> tuple[Path, str]:
    seg = Path(row["seg"])
    image = nib.load(seg)
    data = np.asarray(image.dataobj).astype(np.uint8)
    data[data > 0] = 4  # raw BraTS labels where the contract wants a 0/1 lesion mask
    data[0, 0, 0] = 2
    write_nifti(seg, data, image.affine, dtype=np.uint8)
    return seg, "unexpected label(s) 2, 4"


def _seg_other_grid(row: pd.Series) -> tuple[Path, str]:
    seg = Path(row["seg"])
    image = nib.load(seg)
    shifted = image.affine.copy()
    shifted[0, 3] += 3.0  # same shape, 3 mm apart: voxel (i, j, k) is another place in the head
    write_nifti(seg, np.asarray(image.dataobj), shifted, dtype=np.uint8)
    return seg, "different voxel grid"


def _seg_other_shape(row: pd.Series) -> tuple[Path, str]:
    seg = Path(row["seg"])
    write_nifti(seg, np.zeros((32, 32, 6), np.uint8), np.diag([2.0, 2.0, 2.0, 1.0]), dtype=np.uint8)
    return seg, "differs from its image's (32, 32, 8)"


EVAL_CASES = {
    "empty brain mask": _zero_mask,
    "segmentation with unexpected labels": _brats_labels,
    "segmentation on a different grid (affine)": _seg_other_grid,
    "segmentation on a different grid (shape)": _seg_other_shape,
}


@pytest.mark.parametrize("case", list(EVAL_CASES))
def test_evaluate_reports_a_bad_subject_and_evaluates_the_others(case: str, cli, run_copy, data_copy: Path) -> None:
    run = run_copy(recon=True)
    path, problem = EVAL_CASES[case](_row(data_copy, "BRATS014"))
    result = cli("--device", "cpu", "evaluate", "--run", run, "--split", "brats-test", "--no-figures")
    assert result.exit_code == 1, result.output
    out = run / "eval" / "brats-test"
    failures = pd.read_csv(out / "failures.csv")
    assert list(failures["subject_id"]) == ["BRATS014"]
    reason = failures.loc[0, "reason"]
    assert reason.startswith(str(path)) and problem in reason and "\n" not in reason, reason
    assert f"BRATS014: {reason}" in result.output.replace("\n", " ")
    table = pd.read_csv(out / "per_subject.csv")
    assert sorted(table["subject_id"]) == ["BRATS012", "BRATS013", "BRATS015", "BRATS016", "BRATS017"]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["n_subjects"] == 5 and summary["failures"][0]["subject_id"] == "BRATS014"
    assert np.isfinite(summary["metrics"]["dice"]["mean"])


def test_evaluate_after_the_fix_clears_the_failures(cli, run_copy, data_copy: Path) -> None:
    run = run_copy(recon=True)
    mask = Path(_row(data_copy, "BRATS014")["mask"])
    good = mask.read_bytes()
    _zero_mask(_row(data_copy, "BRATS014"))
    assert cli("--device", "cpu", "evaluate", "--run", run, "--split", "brats-test", "--no-figures").exit_code == 1
    mask.write_bytes(good)
    result = cli("--device", "cpu", "evaluate", "--run", run, "--split", "brats-test", "--no-figures")
    assert result.exit_code == 0, result.output
    out = run / "eval" / "brats-test"
    assert not (out / "failures.csv").exists()
    assert json.loads((out / "summary.json").read_text())["n_subjects"] == 6
