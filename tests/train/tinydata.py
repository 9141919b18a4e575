"""A tiny preprocessed data set for CPU training tests (imported by conftest.py and the tests).

Volumes are 32x32x8 with an ellipsoidal "brain" of smooth intensities (0 outside the mask), laid out
as a manifest with IXI trainval folds, like `mriad synth --preprocessed` but a hundred times smaller.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from mriad.contracts.manifest import write_manifest
from mriad.infra.io import write_nifti

SIZE, DEPTH = 32, 8


def _volume(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    x, y, z = np.meshgrid(*(np.linspace(-1, 1, n) for n in (SIZE, SIZE, DEPTH)), indexing="ij")
    a, b = rng.uniform(0.65, 0.85, 2)
    mask = (x / a) ** 2 + (y / b) ** 2 + (z / 1.3) ** 2 < 1
    mask[:, :, 0] = False  # an empty slice at each end, like the border of a real scan
    mask[:, :, -1] = False
    ring = np.sqrt(x**2 + y**2)
    image = 0.55 + 0.3 * np.cos(6 * ring + rng.uniform(0, 1)) * (ring < 0.6) + 0.03 * rng.standard_normal(x.shape)
    image = np.clip(image, 0, 1) * mask
    return image.astype(np.float32), mask.astype(np.uint8)


def write_tiny_dataset(root: Path) -> Path:
    """14 subjects: 12 IXI trainval (folds 0-3) and 2 IXI test; returns the manifest path."""
    rng = np.random.default_rng(0)
    affine = np.diag([2.0, 2.0, 2.0, 1.0])
    rows = []
    for i in range(14):
        image, mask = _volume(rng)
        sid = f"IXI{i:03d}"
        write_nifti(root / "ixi" / sid / "image.nii.gz", image, affine)
        write_nifti(root / "ixi" / sid / "mask.nii.gz", mask, affine, dtype=np.uint8)
        split, fold = ("test", "") if i >= 12 else ("trainval", i % 4)
        rows.append(
            {
                "subject_id": sid,
                "dataset": "ixi",
                "split": split,
                "fold": fold,
                "label": 0,
                "image": str(root / "ixi" / sid / "image.nii.gz"),
                "mask": str(root / "ixi" / sid / "mask.nii.gz"),
                "seg": "",
                "age": "",
                "sex": "",
                "source": "tiny",
            }
        )
    return write_manifest(pd.DataFrame(rows), root / "manifest.csv")


# Small enough that a CPU step takes milliseconds.
TINY_PDDPM = {
    "base_channels": 8,
    "channel_mult": "1,2",
    "num_res_blocks": 1,
    "groups": 4,
    "head_channels": 16,
    "patch_size": 16,
    "batch_size": 4,
    "octaves": 3,
    "frequency": 16.0,
}
