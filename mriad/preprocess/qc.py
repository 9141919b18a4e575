"""A quality-control picture per subject: three orthogonal slices with mask and lesion outlines.

Mid-slices for healthy subjects; through the lesion centre when there is a segmentation.

One glance shows a failed skull strip (outline off the brain), a wrong orientation (upside-down sagittal)
or a misregistered segmentation (red outline off the lesion). Written with the Agg backend (no display
needed) and atomically, like every output.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from mriad.infra.io import atomic_path


def _slices(volume: np.ndarray, centre: tuple[int, int, int]) -> list[np.ndarray]:
    """Axial, coronal, sagittal slices through ``centre``, transposed so anterior/superior point up."""
    x, y, z = centre
    return [volume[:, :, z].T, volume[:, y, :].T, volume[x, :, :].T]


def write_qc(
    path: str | Path,
    image: np.ndarray,
    mask: np.ndarray,
    seg: np.ndarray | None = None,
    *,
    title: str = "",
    spacing: tuple[float, float, float] = (2.0, 2.0, 2.0),
) -> Path:
    """Save ``qc.png``: image in grey, brain mask outline in cyan, lesion outline in red."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    centre = tuple(s // 2 for s in image.shape)
    names = ("axial", "coronal", "sagittal")
    if seg is not None and seg.any():
        # Mid-slices may miss every lesion: cut through the lesion voxels' centre instead, so the red
        # outline can be checked against the bright spot.
        centre = tuple(int(round(c)) for c in np.argwhere(seg).mean(axis=0))
        names = ("axial (lesion)", "coronal (lesion)", "sagittal (lesion)")
    # Aspect ratios from the voxel size, so a 2 mm grid looks like a brain, not a stretched one.
    aspects = (spacing[1] / spacing[0], spacing[2] / spacing[0], spacing[2] / spacing[1])
    fig, axes = plt.subplots(1, 3, figsize=(9, 3.4), dpi=100)
    image_slices = _slices(image, centre)
    mask_slices = _slices(mask.astype(float), centre)
    seg_slices = _slices(seg.astype(float), centre) if seg is not None else [None] * 3
    for ax, name, img, msk, les, aspect in zip(axes, names, image_slices, mask_slices, seg_slices, aspects):
        ax.imshow(img, cmap="gray", origin="lower", vmin=0.0, vmax=max(float(image.max()), 1e-6), aspect=aspect)
        if msk.any() and not msk.all():
            ax.contour(msk, levels=[0.5], colors="cyan", linewidths=0.7)
        if les is not None and les.any():
            ax.contour(les, levels=[0.5], colors="red", linewidths=0.8)
        ax.set_title(name, fontsize=9)
        ax.axis("off")
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    path = Path(path)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png")
    plt.close(fig)
    return path
