from __future__ import annotations

import gzip
import os
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from mriad.infra.errors import InputError
from mriad.infra.io import atomic_path, atomic_write_text, check_same_grid, read_nifti, write_nifti


def _affine() -> np.ndarray:
    affine = np.array([[-1.2, 0, 0, 90], [0, 0, 3.0, -120], [0, 1.1, 0, -70], [0, 0, 0, 1]], dtype=float)
    return affine


def test_round_trip_keeps_data_and_affine(tmp_path: Path) -> None:
    data = np.random.default_rng(0).random((7, 5, 4)).astype(np.float32)
    path = write_nifti(tmp_path / "a.nii.gz", data, _affine())
    volume = read_nifti(path)
    np.testing.assert_array_equal(volume.data, data)
    np.testing.assert_allclose(volume.affine, _affine(), atol=1e-5)
    assert volume.spacing == pytest.approx((1.2, 1.1, 3.0), abs=1e-5)
    assert not list(tmp_path.glob(".*tmp*")), "temporary file left behind"


def test_input_is_never_modified(tmp_path: Path) -> None:
    path = write_nifti(tmp_path / "a.nii.gz", np.ones((4, 4, 4)), np.eye(4))
    before = (path.read_bytes(), os.stat(path).st_mtime_ns)
    read_nifti(path)
    assert (path.read_bytes(), os.stat(path).st_mtime_ns) == before


def test_singleton_fourth_dimension_is_squeezed(tmp_path: Path) -> None:
    path = tmp_path / "a.nii.gz"
    nib.save(nib.Nifti1Image(np.ones((4, 5, 6, 1), np.float32), np.eye(4)), path)
    assert read_nifti(path).shape == (4, 5, 6)


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda p: p.write_bytes(b"not a nifti at all"), "not a readable NIfTI"),
        (lambda p: nib.save(nib.Nifti1Image(np.ones((4, 5, 6, 3), np.float32), np.eye(4)), p), "4D"),
        (lambda p: nib.save(nib.Nifti1Image(np.ones((4, 5), np.float32), np.eye(4)), p), "2D"),
        (lambda p: nib.save(nib.Nifti1Image(np.full((4, 4, 4), np.nan, np.float32), np.eye(4)), p), "NaN/Inf"),
        (lambda p: nib.save(nib.Nifti1Image(np.zeros((4, 4, 4), np.float32), np.eye(4)), p), "empty"),
    ],
)
def test_bad_images_are_refused_with_one_line_naming_the_file(tmp_path: Path, make, message: str) -> None:
    path = tmp_path / "bad.nii.gz"
    make(path)
    with pytest.raises(InputError) as info:
        read_nifti(path)
    text = str(info.value)
    assert text.startswith(str(path)) and message in text and "\n" not in text


def test_truncated_file_is_refused(tmp_path: Path) -> None:
    good = write_nifti(tmp_path / "good.nii.gz", np.ones((20, 20, 20)), np.eye(4))
    raw = gzip.decompress(good.read_bytes())
    bad = tmp_path / "bad.nii.gz"
    bad.write_bytes(gzip.compress(raw[: len(raw) // 2]))
    with pytest.raises(InputError, match="bad.nii.gz"):
        read_nifti(bad)


def test_sform_qform_disagreement_is_reported(tmp_path: Path) -> None:
    img = nib.Nifti1Image(np.ones((4, 4, 4), np.float32), np.eye(4))
    img.set_sform(np.diag([2.0, 2.0, 2.0, 1.0]), code=1)
    img.set_qform(np.eye(4), code=1)
    path = tmp_path / "a.nii.gz"
    nib.save(img, path)
    volume = read_nifti(path)
    assert "sform" in volume.note
    np.testing.assert_allclose(volume.affine, np.diag([2.0, 2.0, 2.0, 1.0]))


def test_segmentation_on_another_grid_is_refused(tmp_path: Path) -> None:
    image = read_nifti(write_nifti(tmp_path / "i.nii.gz", np.ones((4, 4, 4)), np.eye(4)))
    seg = read_nifti(write_nifti(tmp_path / "s.nii.gz", np.ones((4, 4, 5)), np.eye(4)))
    with pytest.raises(InputError, match="s.nii.gz"):
        check_same_grid(image, seg)


def test_atomic_write_leaves_old_file_on_failure(tmp_path: Path) -> None:
    target = atomic_write_text(tmp_path / "out.txt", "old")
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            tmp.write_text("half")
            raise RuntimeError("crash")
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["out.txt"]
