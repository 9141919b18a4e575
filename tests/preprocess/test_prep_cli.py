"""`mriad preprocess` on the command line: help, exit codes, the bad-input matrix, refusals."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
from preprocess_helpers import copy_case

# BraTS-like inputs: no skull strip, no registration, and N4/QC off keep each good subject at ~2 s.
FAST = ("--skull-strip", "none", "--registration", "none", "--no-n4", "--no-qc")


def test_help_teaches_with_examples(cli) -> None:
    result = cli("preprocess", "--help")
    assert result.exit_code == 0
    for text in ("--dataset", "--skull-strip", "--jobs", "--force", "--fail-fast", "mriad preprocess data/"):
        assert text in result.output


def test_good_batch_exits_0_with_two_jobs(cli, brats_case: Path, tmp_path: Path, _isolated_workspace: Path) -> None:
    raw = tmp_path / "raw"
    for name in ("BraTS2021_10000", "BraTS2021_10001"):
        copy_case(brats_case, raw, name)
    out = tmp_path / "out"
    result = cli("--json", "preprocess", raw, out, "--dataset", "brats21", "--jobs", "2", "--no-n4")
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert sorted(summary["done"]) == ["BraTS2021_10000", "BraTS2021_10001"] and summary["failed"] == []
    assert summary["options"]["skull_strip"] == "none" and summary["options"]["registration"] == "none"
    frame = pd.read_csv(out / "manifest.csv", dtype=str, keep_default_na=False)
    assert list(frame["dataset"]) == ["brats", "brats"] and list(frame["label"]) == ["1", "1"]
    settings = json.loads((_isolated_workspace / ".mriad.json").read_text())
    assert settings["manifest"] == str((out / "manifest.csv").resolve())


def _bad_inputs(case: Path, folder: Path) -> dict[str, tuple[str, str]]:
    """subject -> (image, seg) file names in ``folder``: three good variants and every kind of bad one."""
    folder.mkdir(parents=True)
    image = nib.load(next(case.glob("*_t2.nii.gz")))
    seg = nib.load(next(case.glob("*_seg.nii.gz")))
    data = np.asarray(image.dataobj, dtype=np.float32)

    def save(name: str, array: np.ndarray, affine: np.ndarray = image.affine) -> str:
        nib.save(nib.Nifti1Image(array, affine), folder / name)
        return name

    save("good.nii.gz", data)
    nib.save(seg, folder / "good_seg.nii.gz")
    squeezable = save("singleton4d.nii.gz", data[..., None])
    disagree = nib.Nifti1Image(data, image.affine)
    shifted = image.affine.copy()
    shifted[:3, 3] += 7.0
    disagree.set_qform(shifted, code=1)
    disagree.set_sform(image.affine, code=1)
    nib.save(disagree, folder / "forms.nii.gz")
    raw = (folder / "good.nii.gz").read_bytes()
    (folder / "truncated.nii.gz").write_bytes(raw[: len(raw) // 3])
    (folder / "garbage.nii.gz").write_bytes(gzip.compress(b"not an image at all" * 10))
    save("fourd.nii.gz", np.stack([data[::4, ::4, ::4]] * 3, axis=-1))
    save("twod.nii.gz", data[:, :, 80])
    nan = data.copy()
    nan[100, 100, 70] = np.nan
    save("nan.nii.gz", nan)
    save("empty.nii.gz", np.zeros_like(data))
    blob = np.zeros_like(data)
    blob[100:104, 100:104, 70:74] = 500.0
    save("nobrain.nii.gz", blob)
    other = image.affine.copy()
    other[:3, 3] += 3.0
    save("othergrid_seg.nii.gz", np.asarray(seg.dataobj), other)
    return {
        "good": ("good.nii.gz", "good_seg.nii.gz"),
        "singleton4d": (squeezable, ""),
        "forms": ("forms.nii.gz", ""),
        "truncated": ("truncated.nii.gz", ""),
        "garbage": ("garbage.nii.gz", ""),
        "fourd": ("fourd.nii.gz", ""),
        "twod": ("twod.nii.gz", ""),
        "nan": ("nan.nii.gz", ""),
        "empty": ("empty.nii.gz", ""),
        "nobrain": ("nobrain.nii.gz", ""),
        "othergrid": ("good.nii.gz", "othergrid_seg.nii.gz"),
        "missing": ("nowhere.nii.gz", ""),
    }


def test_bad_subjects_fail_alone_with_one_line_reasons(cli, brats_case: Path, tmp_path: Path) -> None:
    files = _bad_inputs(brats_case, tmp_path / "raw")
    listing = tmp_path / "raw" / "list.csv"
    pd.DataFrame([{"subject_id": s, "image": i, "seg": g} for s, (i, g) in files.items()]).to_csv(listing, index=False)
    out = tmp_path / "out"
    result = cli("preprocess", listing, out, "--dataset", "generic", *FAST)
    assert result.exit_code == 1, result.output
    frame = pd.read_csv(out / "manifest.csv", dtype=str, keep_default_na=False)
    assert sorted(frame["subject_id"]) == ["forms", "good", "singleton4d"]
    assert "sform and qform disagree; using the sform" in frame.set_index("subject_id").loc["forms", "source"]
    failures = pd.read_csv(out / "failures.csv", dtype=str, keep_default_na=False).set_index("subject")
    expected = {
        "truncated": "truncated",
        "garbage": "not a readable NIfTI",
        "fourd": "4D image",
        "twod": "2D",
        "nan": "NaN/Inf",
        "empty": "empty",
        "nobrain": "no brain found",
        "othergrid": "different voxel grid",
        "missing": "not found",
    }
    assert sorted(failures.index) == sorted(expected)
    for subject, words in expected.items():
        reason = failures.loc[subject, "reason"]
        assert reason.startswith(failures.loc[subject, "file"] + ": ") and "\n" not in reason, reason
        assert words in reason, (subject, reason)
        assert Path(failures.loc[subject, "file"]).name in (files[subject][0], files[subject][1])


def test_fail_fast_stops_at_the_first_failure(cli, brats_case: Path, tmp_path: Path) -> None:
    raw = tmp_path / "raw"
    copy_case(brats_case, raw, "BraTS2021_20001")
    broken = copy_case(brats_case, raw, "BraTS2021_20000")
    (broken / "BraTS2021_20000_t2.nii.gz").write_bytes(b"\x1f\x8b broken")
    result = cli("preprocess", raw, tmp_path / "out", "--dataset", "brats21", "--fail-fast", *FAST)
    assert result.exit_code == 1
    assert not (tmp_path / "out" / "brats" / "BraTS2021_20001" / "done.json").exists()


def test_output_inside_raw_is_refused(cli, tmp_path: Path) -> None:
    (tmp_path / "raw").mkdir()
    result = cli("preprocess", tmp_path / "raw", tmp_path / "raw" / "out", "--dataset", "ixi")
    assert result.exit_code == 1
    assert "may not be inside the raw folder" in result.output
    assert not (tmp_path / "raw" / "out").exists()


@pytest.mark.parametrize("option", [("--skull-strip", "bet"), ("--registration", "elastic"), ("--dataset", "adni")])
def test_unknown_choices_are_refused(cli, tmp_path: Path, option: tuple[str, str]) -> None:
    (tmp_path / "raw").mkdir()
    args = ["preprocess", tmp_path / "raw", tmp_path / "out", "--dataset", "ixi", *option]
    result = cli(*args)
    # A usage error: exit code 2, as click and typer give every invalid option value.
    assert result.exit_code == 2 and option[1] in result.output
    assert len(result.output.strip().splitlines()) == 1


def test_python_api_for_one_subject(brats_case: Path, tmp_path: Path) -> None:
    from mriad.infra.errors import InputError
    from mriad.preprocess import preprocess_subject
    from mriad.preprocess.markers import read_done

    image = next(brats_case.glob("*_t2.nii.gz"))
    seg = next(brats_case.glob("*_seg.nii.gz"))
    outcome = preprocess_subject(image, tmp_path / "one", seg=seg, dataset="brats21", n4=False, qc=False)
    assert outcome.status == "done" and outcome.row["label"] == 1 and outcome.row["dataset"] == "brats"
    assert {p.name for p in (tmp_path / "one").iterdir()} == {
        "image.nii.gz",
        "mask.nii.gz",
        "seg.nii.gz",
        "timings.json",
        "transform.json",
        "transform.mat",
        "done.json",
    }
    assert read_done(tmp_path / "one") is not None
    with pytest.raises(InputError, match=r"nowhere\.nii\.gz: file not found"):
        preprocess_subject(tmp_path / "nowhere.nii.gz", tmp_path / "two", skull_strip="none", registration="none")
