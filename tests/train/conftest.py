"""Fixtures of the training tests: one tiny data set per session, one thread per test."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from tinydata import write_tiny_dataset


@pytest.fixture(scope="session")
def tiny_manifest(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_tiny_dataset(tmp_path_factory.mktemp("tinydata"))


@pytest.fixture(autouse=True)
def _threads() -> None:
    torch.set_num_threads(1)
