"""Skull stripping on a real raw head (IXI T1, 2 mm, uint8 with a scale factor): every method's brain
mask against an atlas-registration one. HD-BET runs exactly once here (CPU fast mode, ~30-45 s)."""

from __future__ import annotations

import numpy as np
import pytest
from preprocess_helpers import dice, realdata

from mriad.infra.errors import InputError
from mriad.infra.io import Volume, read_nifti
from mriad.preprocess.reorient import reorient_canonical
from mriad.preprocess.resample import resample_isotropic
from mriad.preprocess.skullstrip import skull_strip

pytestmark = [pytest.mark.slow, pytest.mark.realdata]


@pytest.fixture(scope="module")
def head() -> Volume:
    path = realdata("ixi_t1", "IXI132-HH-1415_T1.nii.gz")
    return resample_isotropic(reorient_canonical(read_nifti(path)), 1.0)


@pytest.fixture(scope="module")
def atlas_reference(head: Volume) -> np.ndarray:
    return skull_strip(head.data, head.affine, "atlas", modality="t1", path=head.path).mask


@pytest.fixture(scope="module")
def hdbet(head: Volume) -> np.ndarray:
    import torch

    torch.set_num_threads(2)
    return skull_strip(head.data, head.affine, "hd-bet", device="cpu", path=head.path).mask


def test_atlas_mask_is_a_plausible_brain(head: Volume, atlas_reference: np.ndarray) -> None:
    volume_ml = atlas_reference.sum() * abs(np.linalg.det(head.affine[:3, :3])) / 1000
    assert 900 < volume_ml < 1900


def test_hdbet_agrees_with_the_atlas_mask(hdbet: np.ndarray, atlas_reference: np.ndarray) -> None:
    assert dice(hdbet, atlas_reference) >= 0.85


def test_none_on_a_stripped_head_and_refused_on_a_raw_head(
    head: Volume, hdbet: np.ndarray, atlas_reference: np.ndarray
) -> None:
    stripped = np.where(hdbet, head.data, 0.0)
    mask = skull_strip(stripped, head.affine, "none", path="stripped").mask
    assert dice(mask, atlas_reference) >= 0.85
    with pytest.raises(InputError, match="does not look skull-stripped"):
        skull_strip(head.data + 1.0, head.affine, "none", path=head.path)  # a raw head: noise everywhere


def test_deepbet_when_installed(head: Volume, atlas_reference: np.ndarray) -> None:
    pytest.importorskip("deepbet", reason="optional extra mriad[deepbet] not installed")
    mask = skull_strip(head.data, head.affine, "deepbet", path=head.path).mask
    assert dice(mask, atlas_reference) >= 0.85


def test_no_brain_found_is_a_one_line_error(head: Volume) -> None:
    blob = np.zeros_like(head.data)
    blob[50:55, 50:55, 50:55] = 100.0
    with pytest.raises(InputError, match=r"^x\.nii\.gz: no brain found"):
        skull_strip(blob, head.affine, "none", path="x.nii.gz")
