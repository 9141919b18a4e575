"""The way back on real scans: preprocessed masks mapped onto each raw scan's grid match the native ones.

BraTS 2018 (SRI24 already, skull-stripped: brain = non-zero voxels) and one IXI T1 head (affine
registration to SRI24, atlas skull strip; its native brain mask is the skull-strip step's own mask,
recomputed and put on the raw grid). Dice is reported over the whole scan and inside the field of view
the 96x96x50 grid keeps (the paper's pipeline drops 15 axial slices at each end, so brain above or
below them cannot come back). Run with ``-s`` to print the numbers (bench/RESULTS.md records them).
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "preprocess"))
from preprocess_helpers import realdata  # noqa: E402

from mriad.evaluate.metrics import dice_score  # noqa: E402
from mriad.infra.io import read_nifti  # noqa: E402
from mriad.preprocess.transform import read_transform, to_native  # noqa: E402

pytestmark = [pytest.mark.slow, pytest.mark.realdata]

BRATS = ("Brats18_CBICA_ABM_1", "Brats18_TCIA01_499_1")
IXI = "IXI132-HH-1415_T1.nii.gz"


def _kept(transform, shape: tuple[int, ...]) -> np.ndarray:
    """Native voxels whose position falls inside the final grid (what a mapped-back map can cover)."""
    voxels = np.indices(shape).reshape(3, -1)
    coords = transform.final_to_native_voxels() @ np.vstack([voxels, np.ones(voxels.shape[1])])
    final = np.array(transform.final_shape)[:, None]
    return np.all((coords[:3] >= -0.5) & (coords[:3] < final - 0.5), axis=0).reshape(shape)


def _dice(folder: Path, name: str, native: np.ndarray) -> tuple[float, float]:
    transform = read_transform(folder)
    mapped = to_native(read_nifti(folder / name, allow_empty=True).data.astype(np.uint8), transform, order=0) > 0
    kept = _kept(transform, native.shape)
    return dice_score(mapped, native), dice_score(mapped & kept, native & kept)


def test_brats_masks_and_segmentations_come_back(tmp_path: Path) -> None:
    from mriad.preprocess import preprocess

    raw = tmp_path / "brats18"
    raw.mkdir()
    for case in BRATS:
        (raw / case).symlink_to(realdata("brats18", case), target_is_directory=True)
    result = preprocess(raw, tmp_path / "out", dataset="brats21", qc=False)
    assert result.failures == []
    for case in BRATS:
        folder = tmp_path / "out" / "brats" / case
        brain = read_nifti(raw / case / f"{case}_t2.nii.gz").data > 0
        seg = read_nifti(raw / case / f"{case}_seg.nii.gz", allow_empty=True).data > 0
        brain_all, brain_kept = _dice(folder, "mask.nii.gz", brain)
        seg_all, seg_kept = _dice(folder, "seg.nii.gz", seg)
        print(
            f"\n{case}: brain Dice {brain_all:.4f} (in the kept field of view {brain_kept:.4f}); "
            f"segmentation Dice {seg_all:.4f} (kept {seg_kept:.4f})"
        )
        assert brain_kept >= 0.95 and seg_all >= 0.85


def test_ixi_brain_mask_comes_back_through_the_registration(tmp_path: Path) -> None:
    from mriad.preprocess import preprocess, skullstrip
    from mriad.preprocess.reorient import reorient_canonical
    from mriad.preprocess.resample import resample_isotropic, resample_to_grid

    scan = realdata("ixi_t1", IXI)
    raw = tmp_path / "ixi"
    raw.mkdir()
    (raw / IXI).symlink_to(scan)
    result = preprocess(raw, tmp_path / "out", dataset="generic", modality="t1", skull_strip="atlas", qc=False)
    assert result.failures == [], result.failures
    native = read_nifti(scan)
    iso = resample_isotropic(reorient_canonical(native), 1.0)
    stripped = skullstrip.skull_strip(iso.data, iso.affine, "atlas", device="cpu", path=str(scan), modality="t1")
    brain = resample_to_grid(stripped.mask.astype(np.uint8), iso.affine, native.shape, native.affine, order=0) > 0
    folder = tmp_path / "out" / "generic" / result.done[0]
    brain_all, brain_kept = _dice(folder, "mask.nii.gz", brain)
    print(f"\n{IXI}: brain Dice {brain_all:.4f} (in the kept field of view {brain_kept:.4f})")
    assert brain_kept >= 0.9
