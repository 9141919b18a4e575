"""The report renders in a real browser (headless Chromium); skipped where no chromium is installed."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from compare_runs import standard_runs

CHROMIUM = shutil.which("chromium")


@pytest.mark.skipif(CHROMIUM is None, reason="no chromium binary (apt-get install -y chromium)")
def test_report_renders_in_headless_chromium(cli, tmp_path: Path) -> None:
    from matplotlib.image import imread

    runs, _, _ = standard_runs(tmp_path, n=6, recon=0)
    assert cli("report", runs[0]).exit_code == 0
    report = runs[0] / "report.html"
    shot = tmp_path / "shot.png"
    command = [
        CHROMIUM,
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        f"--user-data-dir={tmp_path / 'profile'}",
        f"--screenshot={shot}",
        "--window-size=1200,2000",
        report.resolve().as_uri(),
    ]
    completed = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert shot.is_file(), f"no screenshot; chromium said: {completed.stderr[-800:]}"
    pixels = imread(shot)
    assert pixels.shape[:2] == (2000, 1200)
    gray = pixels[..., :3].mean(axis=-1)
    # A blank page is one colour; text, tables and embedded plots give many distinct grey levels.
    assert gray.std() > 0.05 and np.unique(np.round(gray, 2)).size > 20
