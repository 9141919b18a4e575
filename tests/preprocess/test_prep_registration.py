"""Registration quality: an atlas moved by a known affine onto a non-RAS, anisotropic grid is
registered back; the carried brain mask must cover the atlas mask again."""

from __future__ import annotations

import numpy as np
import pytest
from preprocess_helpers import dice

from mriad.atlas import load_template

pytestmark = pytest.mark.slow


def _rotation(degrees: tuple[float, float, float]) -> np.ndarray:
    ax, ay, az = np.deg2rad(degrees)
    rx = np.array([[1, 0, 0], [0, np.cos(ax), -np.sin(ax)], [0, np.sin(ax), np.cos(ax)]])
    ry = np.array([[np.cos(ay), 0, np.sin(ay)], [0, 1, 0], [-np.sin(ay), 0, np.cos(ay)]])
    rz = np.array([[np.cos(az), -np.sin(az), 0], [np.sin(az), np.cos(az), 0], [0, 0, 1]])
    return rz @ ry @ rx


def test_known_affine_is_recovered() -> None:
    from mriad.preprocess.register import register
    from mriad.preprocess.resample import resample_to_grid

    brain = load_template("t1_brain")
    atlas_mask = load_template("brain_mask")
    centre = brain.affine @ np.append((np.array(brain.shape) - 1) / 2.0, 1.0)
    # Subject = atlas moved: rotated 12/-8/6 degrees, scaled 1.08/0.95/1.02, shifted (15, -10, 20) mm.
    known = np.eye(4)
    known[:3, :3] = _rotation((12.0, -8.0, 6.0)) @ np.diag([1.08, 0.95, 1.02])
    known[:3, 3] = centre[:3] - known[:3, :3] @ centre[:3] + np.array([15.0, -10.0, 20.0])
    # Subject grid: LPS voxel order, 1.2 x 1.2 x 2.5 mm (scanner-like, anisotropic, not RAS).
    grid = np.diag([-1.2, -1.2, 2.5, 1.0])
    shape = (200, 200, 90)
    grid[:3, 3] = (known @ centre)[:3] - grid[:3, :3] @ ((np.array(shape) - 1) / 2.0)
    to_atlas = np.linalg.inv(known)  # a subject world point -> the atlas point it shows
    subject = resample_to_grid(brain.data, brain.affine, shape, grid, world=to_atlas)
    subject_mask = resample_to_grid(atlas_mask.data, atlas_mask.affine, shape, grid, world=to_atlas) >= 0.5

    from mriad.infra.io import Volume
    from mriad.preprocess.reorient import reorient_canonical
    from mriad.preprocess.resample import resample_isotropic

    one_mm = resample_isotropic(reorient_canonical(Volume(subject, grid)), 1.0)
    mask_1mm = resample_to_grid(subject_mask.astype(np.float32), grid, one_mm.shape, one_mm.affine) >= 0.5
    result = register(one_mm.data, one_mm.affine, brain.data, brain.affine, method="affine-fast")
    back = (
        resample_to_grid(mask_1mm.astype(np.float32), one_mm.affine, brain.shape, brain.affine, world=result.matrix)
        >= 0.5
    )
    assert dice(back, atlas_mask.data > 0) >= 0.9
    # And the transform itself: brain points land within 2 mm of where the known affine puts them.
    points = np.argwhere(atlas_mask.data > 0)[::500]
    world = brain.affine @ np.c_[points, np.ones(len(points))].T
    error = np.linalg.norm((result.matrix @ world - known @ world)[:3], axis=0)
    assert np.mean(error) < 2.0, np.mean(error)
