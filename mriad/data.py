"""Loading preprocessed volumes of a split into tensors, and the volume <-> slices convention.

A volume ``data[x, y, z]`` (axial = z) becomes slices ``(Z, 1, X, Y)``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import torch

from mriad.errors import InputError
from mriad.io import check_same_grid, read_nifti


def volume_to_slices(volume: torch.Tensor) -> torch.Tensor:
    """``(X, Y, Z)`` -> ``(Z, 1, X, Y)``."""
    return volume.permute(2, 0, 1).unsqueeze(1)


def slices_to_volume(slices: torch.Tensor) -> torch.Tensor:
    """``(Z, 1, X, Y)`` -> ``(X, Y, Z)``."""
    return slices[:, 0].permute(1, 2, 0)


@dataclass
class SplitData:
    """Volumes of one split, stacked: images ``(V, X, Y, Z)`` float32, masks/segs uint8 or None."""

    subjects: list[str]
    images: torch.Tensor
    masks: torch.Tensor
    segs: torch.Tensor | None
    affines: list[np.ndarray]
    rows: pd.DataFrame


def load_volumes(rows: pd.DataFrame, *, with_seg: bool = False, device: Any = "cpu") -> SplitData:
    """Read every subject's image and mask (and seg) once; refuse volumes on different grids."""
    images, masks, segs, affines = [], [], [], []
    reference_shape: Sequence[int] | None = None
    for row in rows.itertuples(index=False):
        image = read_nifti(row.image)
        if reference_shape is None:
            reference_shape = image.shape
        elif image.shape != tuple(reference_shape):
            raise InputError(row.image, f"shape {image.shape} differs from the split's {tuple(reference_shape)}")
        if row.mask:
            mask = read_nifti(row.mask, allow_empty=True)
            check_same_grid(image, mask)
            if not mask.data.any():
                raise InputError(row.mask, "brain mask is empty")
            mask_array = mask.data > 0.5
        else:
            mask_array = image.data > 0
        images.append(image.data)
        masks.append(mask_array)
        affines.append(image.affine)
        if with_seg:
            if row.seg:
                seg = read_nifti(row.seg, allow_empty=True)
                check_same_grid(image, seg)
                segs.append(seg.data > 0.5)
            else:
                segs.append(np.zeros(image.shape, dtype=bool))
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
