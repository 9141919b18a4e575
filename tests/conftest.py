"""Shared fixtures: small volumes on disk, manifests, and a CLI runner in an isolated workspace."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch

# Two-core CI: one intra-op thread per test process keeps timings predictable.
torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))

REALDATA = Path(__file__).resolve().parents[2] / "shared" / "realdata"


@pytest.fixture(autouse=True)
def _isolated_workspace(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Every test gets its own workspace, so remembered manifests/runs never leak between tests."""
    workspace = tmp_path_factory.mktemp("workspace")
    monkeypatch.setenv("MRIAD_WORKSPACE", str(workspace))
    from mriad.infra.console import settings

    saved = dict(vars(settings))
    yield workspace
    for key, value in saved.items():
        setattr(settings, key, value)


@pytest.fixture
def cli():
    """Invoke the mriad CLI in-process; returns typer's Result."""
    from typer.testing import CliRunner

    from mriad.cli import app

    runner = CliRunner()

    def invoke(*args: str, **kwargs):
        return runner.invoke(app, [str(a) for a in args], catch_exceptions=False, **kwargs)

    return invoke


def write_small_subject(folder: Path, subject: str, *, lesion: bool = False, shape=(16, 16, 8), seed: int = 0):
    """A tiny image/mask(/seg) triple on disk; returns the paths."""
    from mriad.infra.io import write_nifti

    rng = np.random.default_rng(seed)
    affine = np.diag([2.0, 2.0, 2.0, 1.0])
    mask = np.zeros(shape, np.uint8)
    mask[2:-2, 2:-2, 1:-1] = 1
    image = (rng.random(shape).astype(np.float32) * 0.5 + 0.2) * mask
    folder.mkdir(parents=True, exist_ok=True)
    paths = {"image": folder / f"{subject}_image.nii.gz", "mask": folder / f"{subject}_mask.nii.gz"}
    write_nifti(paths["image"], image, affine)
    write_nifti(paths["mask"], mask, affine, dtype=np.uint8)
    if lesion:
        seg = np.zeros(shape, np.uint8)
        seg[6:9, 6:9, 3:5] = 1
        paths["seg"] = folder / f"{subject}_seg.nii.gz"
        write_nifti(paths["seg"], seg, affine, dtype=np.uint8)
    return paths


@pytest.fixture
def small_manifest(tmp_path: Path) -> Path:
    """A valid manifest of 10 healthy (ixi) and 4 lesion (brats) tiny subjects, unsplit."""
    import pandas as pd

    from mriad.contracts.manifest import write_manifest

    rows = []
    for i in range(10):
        paths = write_small_subject(tmp_path / "ixi", f"IXI{i:03d}", seed=i)
        rows.append(
            dict(
                subject_id=f"IXI{i:03d}",
                dataset="ixi",
                split="",
                fold="",
                label=0,
                image=paths["image"],
                mask=paths["mask"],
                seg="",
                age=20 + 6 * i,
                sex="F",
                source="test",
            )
        )
    for i in range(4):
        paths = write_small_subject(tmp_path / "brats", f"B{i:03d}", lesion=True, seed=100 + i)
        rows.append(
            dict(
                subject_id=f"B{i:03d}",
                dataset="brats",
                split="",
                fold="",
                label=1,
                image=paths["image"],
                mask=paths["mask"],
                seg=paths["seg"],
                age="",
                sex="",
                source="test",
            )
        )
    path = tmp_path / "manifest.csv"
    write_manifest(pd.DataFrame(rows), path)
    return path
