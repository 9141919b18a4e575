"""The preprocessed subject folder (mriad.contracts.subject_folder): its files and refused names."""

from __future__ import annotations

from pathlib import Path

import pytest

from mriad.contracts.subject_folder import DONE, OUTPUTS, SubjectFolder, finished_markers, subject_dir
from mriad.infra.errors import InputError


def test_files_of_a_subject(tmp_path: Path) -> None:
    folder = SubjectFolder.of(tmp_path, "brats", "BraTS2021_00000")
    assert folder.root == tmp_path / "brats" / "BraTS2021_00000" == subject_dir(tmp_path, "brats", "BraTS2021_00000")
    assert (folder.image.name, folder.mask.name, folder.seg.name) == ("image.nii.gz", "mask.nii.gz", "seg.nii.gz")
    assert {folder.qc.name, folder.timings.name, folder.done.name, "transform.json"} <= set(OUTPUTS)


@pytest.mark.parametrize(("dataset", "subject"), [("brats", "../../other/brats/x"), ("brats", "a/b"), ("..", "s")])
def test_names_that_are_paths_are_refused(tmp_path: Path, dataset: str, subject: str) -> None:
    with pytest.raises(InputError, match="cannot be used in a file name"):
        SubjectFolder.of(tmp_path / "out", dataset, subject)


def test_finished_markers_are_two_levels_down(tmp_path: Path) -> None:
    for parts in (("ixi", "IXI002"), ("brats", "B1")):
        folder = SubjectFolder.of(tmp_path, *parts)
        folder.root.mkdir(parents=True)
        folder.done.write_text("{}")
    (tmp_path / DONE).write_text("{}")  # not a subject's
    assert finished_markers(tmp_path) == [tmp_path / "brats" / "B1" / DONE, tmp_path / "ixi" / "IXI002" / DONE]
