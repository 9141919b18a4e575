"""Step 1: reorient a volume to canonical RAS voxel order.

Every later step (resampling, registration, the fixed output grids) reasons in RAS world coordinates;
putting the voxel axes in R, A, S order first means flips and axis swaps never reach them. Only the
voxel order changes: no interpolation, so the step is exact and cheap.
"""

from __future__ import annotations

import numpy as np
from nibabel import orientations

from mriad.infra.io import Volume


def reorient_canonical(volume: Volume) -> Volume:
    """Return ``volume`` with voxel axes ordered R, A, S (the affine updated to match, world unchanged)."""
    current = orientations.io_orientation(volume.affine)
    target = orientations.axcodes2ornt(("R", "A", "S"))
    transform = orientations.ornt_transform(current, target)
    if np.array_equal(transform, orientations.axcodes2ornt(("R", "A", "S"))):
        return volume
    data = np.ascontiguousarray(orientations.apply_orientation(volume.data, transform))
    affine = volume.affine @ orientations.inv_ornt_aff(transform, volume.shape)
    return Volume(data=data, affine=affine, path=volume.path, note=volume.note)


def axis_codes(affine: np.ndarray) -> str:
    """The orientation of a voxel grid as a short string (``"LPS"``, ``"RAS"``...) for messages."""
    import nibabel as nib

    return "".join(nib.aff2axcodes(affine))
