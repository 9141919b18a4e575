"""Tiny preprocessed data for the cluster tests: tests/train/tinydata.py's 14 IXI subjects (32x32x8)
plus 4 BraTS-like lesion subjects (2 val, 2 test) with a bright blob and its segmentation."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pandas as pd

from mriad.contracts.manifest import read_manifest, write_manifest
from mriad.infra.io import write_nifti


def _tinydata():  # loaded by path: test folders are not packages
    spec = importlib.util.spec_from_file_location("tinydata", Path(__file__).parents[1] / "train" / "tinydata.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def tiny_dataset(root: Path, lesions: bool = False) -> Path:
    """The manifest of the IXI subjects (trainval folds 0-3, test), with ``lesions`` also brats-val/test."""
    module = _tinydata()
    manifest = module.write_tiny_dataset(root)
    if not lesions:
        return manifest
    rng = np.random.default_rng(7)
    affine = np.diag([2.0, 2.0, 2.0, 1.0])
    x, y, z = np.meshgrid(*(np.arange(n) for n in (module.SIZE, module.SIZE, module.DEPTH)), indexing="ij")
    rows = []
    for i in range(4):
        image, mask = module._volume(rng)
        cx, cy = rng.integers(11, 21, 2)
        seg = (((x - cx) ** 2 + (y - cy) ** 2) < 12) & (np.abs(z - 4) <= 1) & (mask > 0)
        image = np.where(seg, 0.95, image).astype(np.float32)
        sid = f"BraTS{i:03d}"
        folder = root / "brats" / sid
        write_nifti(folder / "image.nii.gz", image, affine)
        write_nifti(folder / "mask.nii.gz", mask, affine, dtype=np.uint8)
        write_nifti(folder / "seg.nii.gz", seg.astype(np.uint8), affine, dtype=np.uint8)
        rows.append({
            "subject_id": sid, "dataset": "brats", "split": "val" if i < 2 else "test", "fold": "", "label": 1,
            "image": str(folder / "image.nii.gz"), "mask": str(folder / "mask.nii.gz"),
            "seg": str(folder / "seg.nii.gz"), "age": "", "sex": "", "source": "tiny",
        })  # fmt: skip
    frame = pd.concat([read_manifest(manifest), pd.DataFrame(rows)], ignore_index=True)
    return write_manifest(frame, manifest)
