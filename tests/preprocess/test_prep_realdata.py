"""The pipeline on the shared real samples: BraTS 2018 cases through ``--dataset brats21`` (2018 naming,
LPS on disk, int16, saturated voxels) and the MSLUB case (MNI space, LAS, stripped)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from preprocess_helpers import realdata

from mriad.atlas import final_grid
from mriad.infra.io import read_nifti
from mriad.preprocess import preprocess

pytestmark = [pytest.mark.slow, pytest.mark.realdata]

CASES = ("Brats18_CBICA_ABM_1", "Brats18_TCIA01_499_1")


def _check_lesion_outputs(folder: Path) -> tuple[float, float]:
    image = read_nifti(folder / "image.nii.gz")
    mask = read_nifti(folder / "mask.nii.gz").data > 0
    seg = read_nifti(folder / "seg.nii.gz", allow_empty=True).data > 0
    assert image.shape == (96, 96, 50) and np.allclose(image.affine, final_grid().affine)
    assert 0.0 <= image.data.min() and image.data.max() <= 1.0 and np.all(image.data[~mask] == 0)
    assert seg.sum() > 0 and np.all(mask[seg])
    return float(image.data[seg].mean()), float(image.data[mask & ~seg].mean())


def test_real_brats_outputs_align_with_their_segmentation(tmp_path: Path) -> None:
    raw = tmp_path / "brats18"
    raw.mkdir()
    for case in CASES:  # two of the eight cases keep the test short
        (raw / case).symlink_to(realdata("brats18", case), target_is_directory=True)
    result = preprocess(raw, tmp_path / "out", dataset="brats21")
    assert result.failures == [] and sorted(result.done) == list(CASES)
    assert result.options.skull_strip == "none" and result.options.registration == "none"
    for case in CASES:
        tumour, brain = _check_lesion_outputs(tmp_path / "out" / "brats" / case)
        assert tumour > brain + 0.05, (case, tumour, brain)  # T2: the tumour (oedema) is bright


def test_real_mslub_case(tmp_path: Path) -> None:
    result = preprocess(realdata("mslub"), tmp_path / "out", dataset="mslub", skull_strip="none")
    assert result.failures == [] and result.done == ["patient07"]
    lesion, brain = _check_lesion_outputs(tmp_path / "out" / "mslub" / "patient07")
    assert lesion > brain
