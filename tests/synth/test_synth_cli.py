"""`mriad synth` on the command line, and its hand-over to `mriad split` and the workspace."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd


def test_synth_help_teaches(cli) -> None:
    result = cli("synth", "--help")
    assert result.exit_code == 0
    for word in ("--healthy", "--lesions", "--layout", "--preprocessed", "--modality", "Example", "BraTS2021"):
        assert word in result.output


def test_synth_preprocessed_then_split(cli, tmp_path: Path, _isolated_workspace: Path) -> None:
    out = tmp_path / "demo"
    result = cli("--seed", "4", "--json", "synth", out, "--preprocessed", "--healthy", "12", "--lesions", "2")
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert summary["datasets"] == {"brats": 2, "ixi": 12} and summary["seed"] == 4
    manifest = Path(summary["manifest"])
    assert manifest == out / "manifest.csv" and manifest.is_file()

    from mriad.infra.workspace import default_manifest

    assert default_manifest() == manifest.resolve()  # `mriad train` finds it without --data

    resplit = tmp_path / "resplit.csv"
    result = cli("--seed", "9", "split", manifest, "--out", resplit)
    assert result.exit_code == 0, result.output

    from mriad.contracts.manifest import read_manifest, select_split

    frame = read_manifest(resplit)
    assert frame["subject_id"].is_unique
    ixi = frame[frame["dataset"] == "ixi"].assign(age=lambda f: pd.to_numeric(f["age"]))
    trainval = ixi[ixi["split"] == "trainval"].sort_values("age")
    assert len(ixi[ixi["split"] == "test"]) == 3 and set(trainval["fold"]) == set(range(5))
    for start in range(0, len(trainval), 5):  # age strata: each block of 5 by age spans distinct folds
        block = trainval["fold"].iloc[start : start + 5]
        assert block.is_unique
    for fold in range(5):
        train = set(select_split(frame, "ixi-train", fold)["subject_id"])
        val = set(select_split(frame, "ixi-val", fold)["subject_id"])
        test = set(select_split(frame, "ixi-test", fold)["subject_id"])
        assert not (train & val) and not (train & test) and not (val & test)
    assert len(select_split(frame, "brats-test")) >= 1


def test_synth_raw_default_layout(cli, tmp_path: Path) -> None:
    out = tmp_path / "raw"
    result = cli("synth", out, "--healthy", "0", "--lesions", "1", "--layout", "mslub")
    assert result.exit_code == 0, result.output
    assert (out / "MSLUB" / "patient01" / "T2W.nii.gz").is_file()
    assert (out / "_truth" / "subjects.csv").is_file()
    assert not (out / "manifest.csv").exists()


def test_synth_refusals_are_one_line(cli, tmp_path: Path) -> None:
    result = cli("synth", tmp_path / "x", "--layout", "ixi", "--lesions", "2")
    assert result.exit_code == 1 and "healthy scans only" in result.output
    result = cli("synth", tmp_path / "x", "--layout", "nope")
    assert result.exit_code == 1 and "unknown layout" in result.output
    result = cli("synth", tmp_path / "x", "--preprocessed", "--healthy", "2")
    assert result.exit_code == 1 and "too few" in result.output


def test_ixi_layout_defaults_to_no_lesions(cli, tmp_path: Path) -> None:
    out = tmp_path / "ixi"
    result = cli("synth", out, "--layout", "ixi", "--healthy", "1")
    assert result.exit_code == 0, result.output
    assert len(list((out / "IXI").glob("IXI*-T2.nii.gz"))) == 1
    demographics = pd.read_csv(out / "IXI.csv")
    assert list(demographics["IXI_ID"]) == [2] and np.isfinite(demographics["AGE"]).all()
