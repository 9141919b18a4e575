"""mriad.contracts.data.read_masks: the one place where a subject's brain and lesion masks are read and checked."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from mriad.contracts.data import read_masks
from mriad.infra.errors import InputError
from mriad.infra.io import read_nifti, write_nifti


def _write(path: Path, data: np.ndarray) -> Path:
    write_nifti(path, data.astype(np.float32), np.eye(4))
    return path


@pytest.fixture
def image(tmp_path: Path):
    data = np.zeros((8, 8, 4), dtype=np.float32)
    data[2:6, 2:6] = 0.5
    return read_nifti(_write(tmp_path / "image.nii.gz", data))


def test_masks_are_read_as_booleans(tmp_path: Path, image) -> None:
    brain = _write(tmp_path / "mask.nii.gz", image.data > 0)
    lesion = np.zeros(image.shape)
    lesion[3, 3, 1] = 1
    mask, seg = read_masks(image, brain, _write(tmp_path / "seg.nii.gz", lesion))
    assert mask.dtype == bool and mask.sum() == 64 and seg.sum() == 1
    # An empty seg column means "no lesion mask"; no mask path falls back to the non-zero voxels.
    mask, seg = read_masks(image, "", float("nan"))
    assert seg is None and np.array_equal(mask, image.data > 0)


def test_contract_violations_are_refused_naming_the_file(tmp_path: Path, image) -> None:
    brats = np.zeros(image.shape)
    brats[3, 3, 1], brats[4, 4, 1] = 2, 4
    seg = _write(tmp_path / "brats_seg.nii.gz", brats)
    with pytest.raises(InputError, match=r"brats_seg.nii.gz.*unexpected label\(s\) 2, 4"):
        read_masks(image, None, seg)
    soft = _write(tmp_path / "soft.nii.gz", (image.data > 0) * 0.7)
    with pytest.raises(InputError, match="soft.nii.gz.*not probabilities"):
        read_masks(image, soft)
    empty = _write(tmp_path / "empty.nii.gz", np.zeros(image.shape))
    with pytest.raises(InputError, match="empty.nii.gz.*brain mask is empty"):
        read_masks(image, empty)
    with pytest.raises(InputError, match="image.nii.gz.*no brain mask"):
        read_masks(image, "", require_mask=True)
