"""Fixtures of the detect tests: one raw synthetic scan and one preprocessed copy, made once per session."""

from __future__ import annotations

from pathlib import Path

import pytest
from detect_helpers import FAST_PREPROCESS, synth_brats


@pytest.fixture(scope="session")
def raw_scan(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return synth_brats(tmp_path_factory.mktemp("raw"))


@pytest.fixture(scope="session")
def training_data(raw_scan: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A manifest whose subject was preprocessed with FAST_PREPROCESS: the record `detect` should follow."""
    from mriad.preprocess.pipeline import preprocess

    out = tmp_path_factory.mktemp("prep")
    result = preprocess(raw_scan["scan"].parents[1], out, dataset="brats21", qc=False, **FAST_PREPROCESS)
    assert result.ok, result.failures
    return result.manifest
