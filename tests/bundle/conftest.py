"""The bundle tests share the detect tests' helpers (tests/detect/detect_helpers.py)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "detect"))


@pytest.fixture(scope="session")
def bundle_scan(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    from detect_helpers import synth_brats

    return synth_brats(tmp_path_factory.mktemp("raw"))
