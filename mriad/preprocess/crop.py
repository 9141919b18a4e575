"""Step 5: bring image, brain mask and segmentation onto the 192x192x160 crop grid around the atlas brain.

The grid is :func:`mriad.atlas.crop_grid`; every array is sampled through world coordinates (and the
registration, when there is one) in one interpolation. BraTS, already in SRI24 space, therefore lands on
the grid exactly (an identity registration), whatever its voxel order on disk.

The image is resampled unmasked and masked afterwards: masking first would mix the zeros outside the
brain into the edge voxels and leave a dark rim.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from mriad.atlas import Grid, crop_grid
from mriad.preprocess.register import Registration, apply_registration


@dataclass
class Cropped:
    image: np.ndarray  # float32, 0 outside the mask
    mask: np.ndarray  # bool
    seg: np.ndarray | None  # bool
    grid: Grid


def to_crop_grid(
    registration: Registration,
    image: np.ndarray,
    mask: np.ndarray,
    affine: np.ndarray,
    seg: np.ndarray | None = None,
    seg_affine: np.ndarray | None = None,
    grid: Grid | None = None,
) -> Cropped:
    """Resample subject arrays (sharing ``affine``; the seg may have its own) onto the crop grid."""
    grid = grid or crop_grid()
    mask_u8 = mask.astype(np.uint8)
    warped_mask = apply_registration(registration, mask_u8, affine, grid.shape, grid.affine, label=True) > 0
    warped = apply_registration(registration, image.astype(np.float32), affine, grid.shape, grid.affine)
    warped = np.where(warped_mask, np.maximum(warped, 0.0), 0.0).astype(np.float32)
    warped_seg = None
    if seg is not None:
        seg_affine = affine if seg_affine is None else seg_affine
        warped_seg = (
            apply_registration(registration, seg.astype(np.uint8), seg_affine, grid.shape, grid.affine, label=True) > 0
        )
    return Cropped(image=warped, mask=warped_mask, seg=warped_seg, grid=grid)


def labels_to_crop_grid(registration: Registration, labels: np.ndarray, affine: np.ndarray, grid: Grid) -> np.ndarray:
    """Another binary label volume (e.g. the voxels no metric counts) onto ``grid`` as the segmentation
    goes there: one nearest-neighbour interpolation through the same registration."""
    warped = apply_registration(registration, labels.astype(np.uint8), affine, grid.shape, grid.affine, label=True)
    return warped > 0
