"""Fixtures of the cluster tests: tiny raw BraTS-like scans (one unreadable) and a subprocess runner."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(autouse=True)
def _one_thread() -> None:
    """One thread here as in the children (OMP_NUM_THREADS=1): float sums then agree to the bit."""
    import torch

    torch.set_num_threads(1)


@pytest.fixture(scope="session")
def tiny_raw(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A raw BraTS 2021 folder: 2 synthetic cases (skull-stripped, SRI24 grid) and one unreadable scan."""
    from mriad.infra.console import settings
    from mriad.synth import synthesize

    root = tmp_path_factory.mktemp("raw")
    quiet, settings.quiet = settings.quiet, True
    try:
        synthesize(root, 0, 2, layout="brats", seed=1)
    finally:
        settings.quiet = quiet
    bad = root / "BraTS2021" / "BraTS2021_09999"
    bad.mkdir()
    (bad / "BraTS2021_09999_t2.nii.gz").write_bytes(b"not a gzip file")
    return root / "BraTS2021"


def environment(workspace: Path) -> dict[str, str]:
    """What a child `python -m mriad` needs: this checkout on the path, its own workspace, one thread."""
    return {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        "MRIAD_WORKSPACE": str(workspace),
        "OMP_NUM_THREADS": "1",
        "MKL_NUM_THREADS": "1",
    }


def mriad_command(*args: str) -> list[str]:
    return [sys.executable, "-m", "mriad", "--hide-progress", *args]


def run_mriad(workspace: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(
        mriad_command(*args), env=environment(workspace), cwd=workspace, capture_output=True, text=True, timeout=300
    )
    if check and done.returncode not in (0, 1):
        raise AssertionError(f"mriad {' '.join(args)} exited {done.returncode}:\n{done.stderr[-3000:]}")
    return done


@contextlib.contextmanager
def held_elsewhere(code: str, workspace: Path) -> Iterator[None]:
    """Run ``with <code>:`` in another process (a rival writer) while the block runs."""
    body = "    print('held', flush=True)\n    sys.stdin.read()\n"
    script = f"import sys\nfrom mriad.infra.locking import *\nwith {code}:\n{body}"
    holder = subprocess.Popen(
        [sys.executable, "-c", script],
        env=environment(workspace),
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        yield
    finally:
        holder.communicate(timeout=30)
    assert holder.returncode == 0
