"""Helpers shared by the preprocessing tests (imported by name: pytest puts this folder on sys.path)."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

REALDATA = Path(__file__).resolve().parents[3] / "shared" / "realdata"


def dice(a: np.ndarray, b: np.ndarray) -> float:
    a, b = np.asarray(a, bool), np.asarray(b, bool)
    total = a.sum() + b.sum()
    return 1.0 if total == 0 else float(2.0 * (a & b).sum() / total)


def carried_truth(truth_path: Path, matrix: np.ndarray) -> np.ndarray:
    """A raw-grid ground-truth mask taken straight to the final grid through the subject's registration
    (one linear interpolation at 2 mm, threshold 0.5): an independent route from the pipeline's
    crop-then-majority one."""
    from mriad.atlas import final_grid
    from mriad.infra.io import read_nifti
    from mriad.preprocess.resample import resample_to_grid

    truth = read_nifti(truth_path, allow_empty=True)
    grid = final_grid()
    return (
        resample_to_grid((truth.data > 0).astype(np.float32), truth.affine, grid.shape, grid.affine, world=matrix)
        >= 0.5
    )


def copy_case(case: Path, target_root: Path, name: str) -> Path:
    """A renamed copy of a BraTS case folder (``<name>/<name>_t2.nii.gz`` ...)."""
    target = target_root / name
    target.mkdir(parents=True, exist_ok=True)
    for file in case.iterdir():
        shutil.copy(file, target / file.name.replace(case.name, name))
    return target


def realdata(*parts: str) -> Path:
    path = REALDATA.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"real data sample {path} not present")
    return path
