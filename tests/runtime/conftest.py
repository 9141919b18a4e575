"""Runtime tests run on one thread (the machine is shared); a tiny training data set on disk."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
import torch


@pytest.fixture(autouse=True)
def _threads() -> None:
    torch.set_num_threads(1)


@pytest.fixture(scope="session")
def tiny_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The training tests' 32x32x8 data set (tests/train/tinydata.py); returns its manifest."""
    spec = importlib.util.spec_from_file_location("tinydata", Path(__file__).parents[1] / "train" / "tinydata.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    manifest: Path = module.write_tiny_dataset(tmp_path_factory.mktemp("tinydata"))
    return manifest
