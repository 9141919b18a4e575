from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from mriad.contracts.manifest import read_manifest, select_split, write_manifest
from mriad.infra.errors import ManifestError


def _edit(path: Path, change) -> Path:
    frame = pd.read_csv(path, dtype=str, keep_default_na=False)
    change(frame)
    frame.to_csv(path, index=False)
    return path


def test_round_trip_resolves_relative_paths(small_manifest: Path) -> None:
    stored = pd.read_csv(small_manifest, dtype=str, keep_default_na=False)
    assert not stored["image"].str.startswith("/").any(), "paths must be stored relative"
    frame = read_manifest(small_manifest)
    assert all(Path(p).is_absolute() and Path(p).is_file() for p in frame["image"])
    assert len(frame) == 14


def _assert_one_line(exc: pytest.ExceptionInfo, *needles: str) -> None:
    text = str(exc.value)
    assert "\n" not in text
    for needle in needles:
        assert needle in text, (needle, text)


def test_duplicate_ids_are_refused(small_manifest: Path) -> None:
    _edit(small_manifest, lambda f: f.__setitem__("subject_id", ["IXI000"] * 2 + list(f["subject_id"][2:])))
    with pytest.raises(ManifestError) as exc:
        read_manifest(small_manifest)
    _assert_one_line(exc, "IXI000", "duplicate")


def test_subject_in_two_splits_is_refused_as_a_leak(small_manifest: Path) -> None:
    def leak(frame: pd.DataFrame) -> None:
        frame.loc[1, "subject_id"] = frame.loc[0, "subject_id"]
        frame.loc[0, "split"], frame.loc[1, "split"] = "test", "trainval"
        frame.loc[1, "fold"] = "0"

    _edit(small_manifest, leak)
    with pytest.raises(ManifestError) as exc:
        read_manifest(small_manifest)
    _assert_one_line(exc, "IXI000", "leak")


def test_same_scan_under_two_ids_is_refused_as_a_leak(small_manifest: Path) -> None:
    _edit(small_manifest, lambda f: f.__setitem__("image", [f["image"][0]] * 2 + list(f["image"][2:])))
    with pytest.raises(ManifestError) as exc:
        read_manifest(small_manifest)
    _assert_one_line(exc, "IXI000", "IXI001", "leak")


def test_missing_file_is_refused_naming_subject_and_file(small_manifest: Path) -> None:
    frame = read_manifest(small_manifest)
    Path(frame.loc[3, "image"]).unlink()
    with pytest.raises(ManifestError) as exc:
        read_manifest(small_manifest)
    _assert_one_line(exc, "IXI003", "IXI003_image.nii.gz", "does not exist")


def test_label_one_without_seg_is_refused(small_manifest: Path) -> None:
    _edit(small_manifest, lambda f: f.__setitem__("seg", [""] * len(f)))
    with pytest.raises(ManifestError) as exc:
        read_manifest(small_manifest)
    _assert_one_line(exc, "B000", "no seg")


def test_missing_columns_are_refused(small_manifest: Path) -> None:
    frame = pd.read_csv(small_manifest, dtype=str, keep_default_na=False).drop(columns=["label"])
    frame.to_csv(small_manifest, index=False)
    with pytest.raises(ManifestError) as exc:
        read_manifest(small_manifest)
    _assert_one_line(exc, "missing column", "label")


def test_named_splits_follow_the_fold(tmp_path: Path, small_manifest: Path) -> None:
    frame = read_manifest(small_manifest)
    frame.loc[:9, "split"] = "trainval"
    frame.loc[:9, "fold"] = [0, 1, 2, 3, 4, 0, 1, 2, 3, 4]
    frame.loc[10:, "split"] = ["val", "test", "test", "test"]
    write_manifest(frame, small_manifest)
    frame = read_manifest(small_manifest)
    assert set(select_split(frame, "ixi-val", fold=1)["subject_id"]) == {"IXI001", "IXI006"}
    assert len(select_split(frame, "ixi-train", fold=1)) == 8
    assert len(select_split(frame, "brats-test")) == 3
    with pytest.raises(ManifestError, match="mslub-test"):
        select_split(frame, "mslub-test")


def test_relative_paths_in_memory_are_relative_to_the_working_directory(
    tmp_path: Path, small_manifest: Path, monkeypatch
) -> None:
    frame = read_manifest(small_manifest)
    monkeypatch.chdir(tmp_path)
    frame["image"] = [str(Path(p).relative_to(tmp_path)) for p in frame["image"]]
    target = tmp_path / "sub" / "m.csv"
    write_manifest(frame, target)
    again = read_manifest(target)
    assert list(again["image"]) == [str(tmp_path / p) for p in frame["image"]]
