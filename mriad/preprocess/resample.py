"""Step 2 and the resampling used by later steps: everything goes through world coordinates.

One primitive, :func:`resample_to_grid`, maps every output voxel to a world point, optionally through a
world-to-world transform (a registration), then to a voxel of the source, and interpolates there. Images
use linear interpolation (no overshoot on saturated scans), masks nearest neighbour so they stay binary.
Chaining registration and cropping into one call means an image is interpolated once, not twice.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from mriad.infra.io import Volume


def voxel_sizes(affine: np.ndarray) -> np.ndarray:
    return np.sqrt((np.asarray(affine)[:3, :3] ** 2).sum(axis=0))


def isotropic_grid(
    shape: tuple[int, ...], affine: np.ndarray, spacing: float = 1.0
) -> tuple[tuple[int, ...], np.ndarray]:
    """A grid of ``spacing`` mm voxels covering the same field of view (same direction cosines).

    The edges of the field of view are kept: the first new voxel centre lies half a new voxel inside the
    old edge, so the image does not shift by half a voxel.
    """
    old = voxel_sizes(affine)
    extent = np.asarray(shape[:3], dtype=float) * old
    new_shape = tuple(int(max(1, round(e / spacing))) for e in extent)
    directions = affine[:3, :3] / old
    new_affine = np.eye(4)
    new_affine[:3, :3] = directions * spacing
    # Voxel centre 0 of the old grid sits at old/2 from the edge; of the new grid at spacing/2.
    edge = affine[:3, :3] @ np.full(3, -0.5) + affine[:3, 3]
    new_affine[:3, 3] = edge + new_affine[:3, :3] @ np.full(3, 0.5)
    return new_shape, new_affine


def resample_to_grid(
    data: np.ndarray,
    affine: np.ndarray,
    shape: tuple[int, ...],
    grid_affine: np.ndarray,
    *,
    order: int = 1,
    world: np.ndarray | None = None,
    cval: float = 0.0,
) -> np.ndarray:
    """Sample ``data`` (voxel-to-world ``affine``) on the grid (``shape``, ``grid_affine``).

    ``world`` (4x4, optional) maps a world point of the output grid to the world point of the source to
    read, i.e. the "fixed to moving" direction a registration produces.
    """
    world = np.eye(4) if world is None else np.asarray(world, dtype=float)
    voxel_map = np.linalg.inv(affine) @ world @ grid_affine
    source = np.asarray(data, dtype=np.float32 if order > 0 else data.dtype)
    shift = np.round(voxel_map[:3, 3])
    if np.allclose(voxel_map[:3, :3], np.eye(3), atol=1e-6) and np.allclose(voxel_map[:3, 3], shift, atol=1e-4):
        # Same voxel size and axes, whole-voxel offset (BraTS onto the crop grid): interpolation would
        # return the voxels themselves, so copy them (exact, and ~10x faster).
        return _shifted_copy(source, tuple(int(v) for v in shift), tuple(shape), cval)
    return ndimage.affine_transform(
        source,
        voxel_map[:3, :3],
        offset=voxel_map[:3, 3],
        output_shape=tuple(shape),
        order=order,
        mode="constant",
        cval=cval,
        prefilter=False,
    )


def _shifted_copy(source: np.ndarray, start: tuple[int, ...], shape: tuple[int, ...], cval: float) -> np.ndarray:
    """``out[i] = source[i + start]`` where that exists, ``cval`` elsewhere."""
    out = np.full(shape, cval, dtype=source.dtype)
    src, dst = [], []
    for begin, size, length in zip(start, shape, source.shape):
        lo, hi = max(begin, 0), min(begin + size, length)
        if hi <= lo:
            return out
        src.append(slice(lo, hi))
        dst.append(slice(lo - begin, hi - begin))
    out[tuple(dst)] = source[tuple(src)]
    return out


def resample_isotropic(volume: Volume, spacing: float = 1.0, *, order: int = 1) -> Volume:
    """Resample a volume to ``spacing`` mm isotropic voxels over the same field of view.

    A grid that is already isotropic at ``spacing`` (within 1 %) is returned unchanged, so 1 mm inputs
    (BraTS, MSLUB) are not interpolated for nothing.
    """
    sizes = voxel_sizes(volume.affine)
    if np.allclose(sizes, spacing, rtol=0.01):
        return volume
    shape, grid_affine = isotropic_grid(volume.shape, volume.affine, spacing)
    if order > 0 and np.any(sizes < spacing * 0.75):
        data = _smooth_for_downsampling(volume.data, sizes, spacing)
    else:
        data = volume.data
    out = resample_to_grid(data, volume.affine, shape, grid_affine, order=order)
    return Volume(data=out, affine=grid_affine, path=volume.path, note=volume.note)


def _smooth_for_downsampling(data: np.ndarray, sizes: np.ndarray, spacing: float) -> np.ndarray:
    """Gaussian anti-aliasing along axes whose voxels are much finer than the target (e.g. 0.5 mm inputs)."""
    sigma = [max(0.0, (spacing / s - 1.0) / 2.0) for s in sizes]
    return ndimage.gaussian_filter(np.asarray(data, dtype=np.float32), sigma=sigma)
