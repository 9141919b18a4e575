"""Fixtures of the reliability tests: one tiny data set and one tiny trained run per session.

Tests that damage something work on copies (``run_copy``, ``data_copy``), so the session fixtures
stay pristine and the expensive steps (training, reconstruction) happen once.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from reliability_helpers import tiny_fit, write_tiny_dataset


@pytest.fixture(autouse=True)
def _one_thread() -> None:
    torch.set_num_threads(1)


@pytest.fixture(scope="session")
def tiny_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The manifest of the tiny lesion data set (read only: copy it with ``data_copy`` to damage it)."""
    return write_tiny_dataset(tmp_path_factory.mktemp("tiny_data"))


@pytest.fixture(scope="session")
def tiny_run(tiny_data: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A trained tiny pDDPM run with brats-val and brats-test reconstructed (read only)."""
    from mriad.reconstruct import reconstruct

    run = tiny_fit(tiny_data, tmp_path_factory.mktemp("tiny_run") / "pddpm-fold0", epochs=2)
    for split in ("brats-val", "brats-test"):
        reconstruct(run, split)
    return run


@pytest.fixture(scope="session")
def raw_brats(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Two synthetic raw BraTS 2021 cases (skull-stripped, SRI24 grid: `preprocess` needs neither
    skull stripping nor registration, ~1.5 s per case); returns the ``BraTS2021`` folder (read only)."""
    from mriad.synth import synthesize

    root = tmp_path_factory.mktemp("raw_brats")
    synthesize(root, 0, 2, layout="brats", seed=2)
    return root / "BraTS2021"


@pytest.fixture
def data_copy(tiny_data: Path, tmp_path: Path) -> Path:
    """A private copy of the tiny data set; returns its manifest (paths stored relative)."""
    target = tmp_path / "data"
    shutil.copytree(tiny_data.parent, target)
    return target / "manifest.csv"


@pytest.fixture
def run_copy(tiny_run: Path, data_copy: Path, tmp_path: Path) -> Callable[..., Path]:
    """``run_copy(recon=True)``: a private copy of the tiny run that points at ``data_copy``."""
    import json

    def make(recon: bool = True, name: str = "run") -> Path:
        target = tmp_path / name
        shutil.copytree(tiny_run, target, ignore=None if recon else shutil.ignore_patterns("recon"))
        config = json.loads((target / "config.json").read_text())
        config["data"] = str(data_copy.resolve())
        (target / "config.json").write_text(json.dumps(config))
        return target

    return make
