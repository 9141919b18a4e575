"""Step 7: x2 downsampling 192x192x160 -> 96x96x80, then 15 axial slices off each end -> 96x96x50.

The image is averaged over each 2x2x2 block (an exact box anti-aliasing filter whose output voxel
centres are those of :func:`mriad.atlas.downsampled_grid`). Only brain voxels enter the average, so the
brain edge does not darken from the zeros outside. Masks take the majority of each block (ties count as
inside), which keeps small lesions better than picking one of the eight voxels.
"""

from __future__ import annotations

import numpy as np

from mriad.atlas import DOWNSAMPLE, DROP_SLICES


def _blocks(array: np.ndarray, factor: int) -> np.ndarray:
    x, y, z = (s // factor for s in array.shape)
    trimmed = array[: x * factor, : y * factor, : z * factor]
    return trimmed.reshape(x, factor, y, factor, z, factor)


def block_mean(image: np.ndarray, weight: np.ndarray | None = None, factor: int = DOWNSAMPLE) -> np.ndarray:
    """Mean of each ``factor``^3 block, over the voxels where ``weight`` is set when given."""
    values = _blocks(image.astype(np.float64), factor)
    if weight is None:
        return values.mean(axis=(1, 3, 5)).astype(np.float32)
    w = _blocks(weight.astype(np.float64), factor)
    total = (values * w).sum(axis=(1, 3, 5))
    count = w.sum(axis=(1, 3, 5))
    return np.divide(total, count, out=np.zeros_like(total), where=count > 0).astype(np.float32)


def block_majority(mask: np.ndarray, factor: int = DOWNSAMPLE) -> np.ndarray:
    """A block is set when at least half its voxels are."""
    return _blocks(mask.astype(np.float32), factor).mean(axis=(1, 3, 5)) >= 0.5


def drop_slices(array: np.ndarray, count: int = DROP_SLICES) -> np.ndarray:
    """Remove ``count`` axial slices (last axis) at both ends."""
    return array[..., count : array.shape[-1] - count] if count else array


def downsample_labels(labels: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Another crop-grid label volume (e.g. the voxels no metric counts) to the final grid exactly as
    :func:`downsample` takes the segmentation there (majority, inside the brain, slices dropped)."""
    return drop_slices(block_majority(labels) & block_majority(mask))


def downsample(
    image: np.ndarray, mask: np.ndarray, seg: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """Crop-grid arrays -> final-grid arrays (image masked mean, masks majority, slices dropped)."""
    small_mask = block_majority(mask)
    small_image = np.where(small_mask, block_mean(image, weight=mask), 0.0).astype(np.float32)
    small_seg = block_majority(seg) & small_mask if seg is not None else None
    return (
        drop_slices(small_image),
        drop_slices(small_mask),
        drop_slices(small_seg) if small_seg is not None else None,
    )
