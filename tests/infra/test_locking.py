from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from mriad.infra.errors import LockError
from mriad.infra.locking import LOCK_NAME, folder_lock


def test_second_live_writer_is_refused_and_stale_lock_taken_over(tmp_path: Path) -> None:
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys,time; from mriad.infra.locking import folder_lock\n"
            f"with folder_lock({str(tmp_path)!r}, 'test'):\n    print('locked', flush=True); time.sleep(30)",
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(LockError, match=f"in use by process {holder.pid}"):
            with folder_lock(tmp_path):
                pass
    finally:
        holder.kill()
        holder.wait()
    # The holder died without cleaning up (kill -9): its lock is stale and taken over.
    assert (tmp_path / LOCK_NAME).exists()
    with folder_lock(tmp_path) as path:
        assert json.loads(path.read_text())["pid"] != holder.pid
    assert not (tmp_path / LOCK_NAME).exists()


def test_lock_is_reentrant_and_released(tmp_path: Path) -> None:
    with folder_lock(tmp_path):
        with folder_lock(tmp_path):
            pass
        assert (tmp_path / LOCK_NAME).exists()
    assert not (tmp_path / LOCK_NAME).exists()
