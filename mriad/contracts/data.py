"""Loading preprocessed volumes of a split into tensors, and the volume <-> slices convention.

A volume ``data[x, y, z]`` (axial = z) becomes slices ``(Z, 1, X, Y)``; a multi-channel image
``data[x, y, z, c]`` (e.g. T2 + FLAIR, written by ``preprocess --modality t2,flair``) becomes
``(Z, C, X, Y)``. Brain masks and segmentations stay 3D: one per subject, shared by its channels.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import torch

from mriad.contracts.manifest import blank
from mriad.infra.errors import InputError, MriadError
from mriad.infra.io import Volume, check_labels, check_same_grid, read_nifti

# float32 rounding of a value written as 0 or 1 stays far inside this.
_RANGE_SLACK = 1e-5


def volume_to_slices(volume: torch.Tensor) -> torch.Tensor:
    """``(X, Y, Z)`` -> ``(Z, 1, X, Y)``; ``(X, Y, Z, C)`` -> ``(Z, C, X, Y)``."""
    if volume.dim() == 4:
        return volume.permute(2, 3, 0, 1)
    return volume.permute(2, 0, 1).unsqueeze(1)


def slices_to_volume(slices: torch.Tensor) -> torch.Tensor:
    """``(Z, 1, X, Y)`` -> ``(X, Y, Z)``; ``(Z, C, X, Y)`` with C > 1 -> ``(X, Y, Z, C)``."""
    if slices.shape[1] > 1:
        return slices.permute(2, 3, 0, 1)
    return slices[:, 0].permute(1, 2, 0)


def image_channels(volume: Volume) -> int:
    """How many channels a preprocessed image holds: 1 for a 3D image, C for ``(X, Y, Z, C)``."""
    return 1 if volume.data.ndim == 3 else int(volume.data.shape[3])


def spatial(volume: Volume) -> Volume:
    """A 3D stand-in for ``volume`` on the same grid (its first channel): what masks are checked against."""
    if volume.data.ndim == 3:
        return volume
    return Volume(data=volume.data[..., 0], affine=volume.affine, path=volume.path, note=volume.note)


def read_image(path: Any, *, allow_empty: bool = False) -> Volume:
    """A preprocessed image, 3D or multi-channel ``(X, Y, Z, C)``, refused outside [0, 1]."""
    volume = read_nifti(path, allow_empty=allow_empty, channels=True)
    check_intensity_range(volume)
    return volume


def check_channels(path: Any, found: int, expected: int, what: str) -> None:
    """Refuse an image with another channel count than ``what`` (a model, a split) was made for.

    A :class:`MriadError`, not an :class:`InputError`: the data and the model (or the rest of the
    split) disagree, so it stops the stage instead of failing one subject after another.
    """
    if found != expected:
        raise MriadError(
            f"{path}: holds {found} channel(s) but {what} has {expected}: train and score on data "
            "preprocessed with the same --modality list"
        )


def read_masks(
    image: Volume, mask_path: Any, seg_path: Any = None, *, require_mask: bool = False
) -> tuple[np.ndarray, np.ndarray | None]:
    """The brain mask and the lesion mask of ``image`` as boolean arrays, checked against the contract.

    Both must lie on the image's grid and hold only 0/1 (BraTS labels 2/4 or a probability map are
    refused, not thresholded); the brain mask must not be empty. Without a ``mask_path`` the mask is
    ``image > 0`` (the preprocessed background is exactly 0), unless ``require_mask``. Without a
    ``seg_path`` the lesion mask is None.
    """
    image = spatial(image)  # masks are 3D, shared by every channel
    if not blank(mask_path):
        volume = read_nifti(mask_path, allow_empty=True)
        check_same_grid(image, volume)
        check_labels(volume, allowed=(0, 1), what="brain mask")
        mask = volume.data > 0.5
        if not mask.any():
            raise InputError(mask_path, "brain mask is empty")
    elif require_mask:
        raise InputError(image.path, "no brain mask in the manifest (the mask column is empty)")
    else:
        mask = image.data > 0
    seg = None
    if not blank(seg_path):
        volume = read_nifti(seg_path, allow_empty=True)
        check_same_grid(image, volume)
        check_labels(volume, allowed=(0, 1), what="segmentation")
        seg = volume.data > 0.5
    return mask, seg


def check_intensity_range(volume: Volume) -> None:
    """Refuse a scan outside the preprocessed contract [0, 1] (docs/CONTRACTS.md).

    Models are built for inputs in [0, 1] (diffusion rescales to [-1, 1]); a raw scan given where a
    preprocessed one belongs trains to NaN or scores nonsense instead of failing, so it is refused on load.
    """
    low, high = float(volume.data.min()), float(volume.data.max())
    if low < -_RANGE_SLACK or high > 1 + _RANGE_SLACK:
        raise InputError(
            volume.path,
            f"intensities span [{low:.4g}, {high:.4g}], outside the preprocessed range [0, 1]: "
            "give scans written by `mriad preprocess` (or normalised to [0, 1])",
        )


@dataclass
class SplitData:
    """Volumes of one split, stacked: images ``(V, X, Y, Z)`` float32 (``(V, X, Y, Z, C)`` for C > 1
    channels), masks/segs ``(V, X, Y, Z)`` uint8 or None."""

    subjects: list[str]
    images: torch.Tensor
    masks: torch.Tensor
    segs: torch.Tensor | None
    affines: list[np.ndarray]
    rows: pd.DataFrame

    @property
    def channels(self) -> int:
        return 1 if self.images.dim() == 4 else int(self.images.shape[4])


def load_volumes(rows: pd.DataFrame, *, with_seg: bool = False, device: Any = "cpu") -> SplitData:
    """Read every subject's image and mask (and seg) once; refuse volumes on different grids or with
    different channel counts."""
    images, masks, segs, affines = [], [], [], []
    reference_shape: Sequence[int] | None = None
    for row in rows.itertuples(index=False):
        image = read_image(row.image)
        if reference_shape is None:
            reference_shape = image.shape
        elif image.shape[3:] != tuple(reference_shape[3:]):
            check_channels(row.image, image_channels(image), (tuple(reference_shape[3:]) or (1,))[0], "the split")
        elif image.shape != tuple(reference_shape):
            raise InputError(row.image, f"shape {image.shape} differs from the split's {tuple(reference_shape)}")
        mask_array, seg_array = read_masks(image, row.mask, row.seg if with_seg else None)
        images.append(image.data)
        masks.append(mask_array)
        affines.append(image.affine)
        if with_seg:
            segs.append(seg_array if seg_array is not None else np.zeros(image.shape[:3], dtype=bool))
    pin = torch.device(device).type == "cuda"
    image_tensor = torch.from_numpy(np.stack(images).astype(np.float32))
    mask_tensor = torch.from_numpy(np.stack(masks).astype(np.uint8))
    seg_tensor = torch.from_numpy(np.stack(segs).astype(np.uint8)) if with_seg else None
    if pin:  # one pinned upload of the whole split
        image_tensor, mask_tensor = image_tensor.pin_memory(), mask_tensor.pin_memory()
        seg_tensor = seg_tensor.pin_memory() if seg_tensor is not None else None
    return SplitData(
        subjects=[str(s) for s in rows["subject_id"]],
        images=image_tensor.to(device, non_blocking=True),
        masks=mask_tensor.to(device, non_blocking=True),
        segs=seg_tensor.to(device, non_blocking=True) if seg_tensor is not None else None,
        affines=affines,
        rows=rows.reset_index(drop=True),
    )
