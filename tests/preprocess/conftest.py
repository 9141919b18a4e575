"""Fixtures for the preprocessing tests: synthetic raw data sets (made once per session), their
preprocessed outputs and a cheap BraTS case (helpers live in preprocess_helpers.py)."""

from __future__ import annotations

from pathlib import Path

import pytest


def _synth(tmp_path_factory: pytest.TempPathFactory, layout: str, healthy: int, lesions: int, seed: int) -> Path:
    from mriad import synth

    root = tmp_path_factory.mktemp(f"synth_{layout}")
    synth.synthesize(root, healthy, lesions, layout=layout, seed=seed)
    return root


@pytest.fixture(scope="session")
def synth_brats(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A raw BraTS 2021 layout with one case: skull-stripped, SRI24 grid stored LPS, labels 1/2/4."""
    return _synth(tmp_path_factory, "brats", 0, 1, seed=1)


@pytest.fixture(scope="session")
def synth_raw(tmp_path_factory: pytest.TempPathFactory, synth_brats: Path) -> dict[str, Path]:
    """One raw subject per layout: IXI (with skull), BraTS 2021 (stripped, LPS), MSLUB (with skull).

    The synthetic heads use non-RAS voxel orders and anisotropic voxels (see mriad.synth.layouts).
    """
    return {
        "ixi": _synth(tmp_path_factory, "ixi", 1, 0, seed=3),
        "brats": synth_brats,
        "mslub": _synth(tmp_path_factory, "mslub", 0, 1, seed=2),
    }


@pytest.fixture(scope="session")
def synth_out(synth_raw: dict[str, Path], tmp_path_factory: pytest.TempPathFactory):
    """All three synthetic data sets preprocessed into ONE output folder (atlas strip: synthetic skulls)."""
    from mriad.preprocess import preprocess

    out = tmp_path_factory.mktemp("synth_out")
    results = {
        "ixi": preprocess(
            synth_raw["ixi"] / "IXI", out, dataset="ixi", skull_strip="atlas", demographics=synth_raw["ixi"] / "IXI.csv"
        ),
        "brats": preprocess(synth_raw["brats"] / "BraTS2021", out, dataset="brats21"),
        "mslub": preprocess(synth_raw["mslub"] / "MSLUB", out, dataset="mslub", skull_strip="atlas"),
    }
    return out, results


@pytest.fixture(scope="session")
def brats_case(synth_brats: Path) -> Path:
    """The synthetic BraTS case folder (skull-stripped, SRI24 grid): the cheapest subject to process."""
    return next(p for p in (synth_brats / "BraTS2021").iterdir() if p.is_dir())
