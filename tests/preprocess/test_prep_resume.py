"""Resumability: kill -9 in the middle of a batch, corrupted outputs, leftovers, a live second writer."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from preprocess_helpers import copy_case

from mriad.infra.errors import LockError
from mriad.infra.locking import LOCK_NAME
from mriad.preprocess import markers, preprocess

NAMES = ("BraTS2021_30000", "BraTS2021_30001", "BraTS2021_30002")
FAST = {"skull_strip": "none", "registration": "none", "n4": False}


def _raw(brats_case: Path, root: Path, names=NAMES) -> Path:
    for name in names:
        copy_case(brats_case, root, name)
    return root


def _all_valid(out: Path, names=NAMES) -> None:
    for name in names:
        folder = out / "brats" / name
        assert markers.read_done(folder) is not None, name
    assert not [p for p in out.rglob("*") if ".tmp" in p.name]
    assert len((out / "manifest.csv").read_text().strip().splitlines()) == len(names) + 1


@pytest.mark.slow
def test_rerun_after_kill_9_completes_the_batch(brats_case: Path, tmp_path: Path) -> None:
    raw = _raw(brats_case, tmp_path / "raw")
    out = tmp_path / "out"
    root = Path(__file__).resolve().parents[2]
    env = {**os.environ, "MRIAD_WORKSPACE": str(tmp_path), "PYTHONPATH": str(root)}
    # Each subject takes ~2 s and the kill follows the first marker within 20 ms: it lands in the second.
    command = [
        sys.executable,
        "-m",
        "mriad",
        "--hide-progress",
        "preprocess",
        str(raw),
        str(out),
        "-d",
        "brats21",
        "--no-n4",
    ]
    process = subprocess.Popen(command, env=env, cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 120
    first = out / "brats" / NAMES[0] / "done.json"
    while not first.exists():
        assert process.poll() is None, process.stderr.read().decode()
        assert time.monotonic() < deadline, "the first subject never finished"
        time.sleep(0.02)
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    finished = [n for n in NAMES if markers.read_done(out / "brats" / n) is not None]
    assert NAMES[0] in finished and len(finished) < len(NAMES)
    assert (out / LOCK_NAME).exists()  # the killed run's lock file is left behind ...
    result = preprocess(raw, out, dataset="brats21", n4=False)  # ... and taken over: its owner is dead
    assert result.ok and sorted(result.skipped) == finished
    assert sorted(result.done + result.skipped) == list(NAMES)
    _all_valid(out)
    assert not (out / LOCK_NAME).exists()


def test_corrupted_or_half_written_subjects_are_redone(brats_case: Path, tmp_path: Path) -> None:
    raw = _raw(brats_case, tmp_path / "raw", NAMES[:2])
    out = tmp_path / "out"
    assert preprocess(raw, out, dataset="brats21", **FAST).ok
    first, second = (out / "brats" / n for n in NAMES[:2])
    image = first / "image.nii.gz"
    image.write_bytes(image.read_bytes()[:-10] + b"0123456789")  # same size, other bytes
    (second / "done.json").unlink()  # as if killed after the image, before the marker
    (second / ".image.abc123.tmp.nii.gz").write_bytes(b"partial")
    (out / ".manifest.xyz.tmp.csv").write_bytes(b"partial")
    result = preprocess(raw, out, dataset="brats21", **FAST)
    assert sorted(result.done) == list(NAMES[:2]) and result.skipped == []
    _all_valid(out, NAMES[:2])
    assert sorted(preprocess(raw, out, dataset="brats21", **FAST).skipped) == list(NAMES[:2])
    assert sorted(preprocess(raw, out, dataset="brats21", force=True, **FAST).done) == list(NAMES[:2])
    # Outputs made with other options are stale: not a skip (checked without paying for an N4 run).
    from mriad.preprocess.datasets import discover
    from mriad.preprocess.pipeline import completed, resolve_options

    subject = discover("brats21", raw).subjects[0]
    same = resolve_options("brats21", "t2", "none", "none", "cpu", n4=False, qc=True)
    other = resolve_options("brats21", "t2", "none", "none", "cpu", n4=True, qc=True)
    assert completed(subject, first, same) is not None and completed(subject, first, other) is None


def test_outputs_of_an_older_pipeline_are_redone(brats_case: Path, tmp_path: Path, monkeypatch) -> None:
    from mriad.preprocess import subject

    raw = _raw(brats_case, tmp_path / "raw", NAMES[:1])
    out = tmp_path / "out"
    assert preprocess(raw, out, dataset="brats21", **FAST).done == [NAMES[0]]
    assert preprocess(raw, out, dataset="brats21", **FAST).skipped == [NAMES[0]]
    # A later mriad whose steps give other numbers for the same options must not trust this folder.
    monkeypatch.setattr(subject, "PIPELINE_REVISION", subject.PIPELINE_REVISION + 1)
    result = preprocess(raw, out, dataset="brats21", **FAST)
    assert result.done == [NAMES[0]] and result.skipped == []


def test_a_live_second_writer_is_refused(brats_case: Path, tmp_path: Path) -> None:
    raw = _raw(brats_case, tmp_path / "raw", NAMES[:1])
    out = tmp_path / "out"
    hold = (
        "import sys, time\nfrom mriad.infra.locking import folder_lock\nwith folder_lock(sys.argv[1]):\n"
        "    print('locked', flush=True)\n    time.sleep(60)\n"
    )
    holder = subprocess.Popen([sys.executable, "-c", hold, str(out)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "locked"
        with pytest.raises(LockError, match=f"in use by process {holder.pid}"):
            preprocess(raw, out, dataset="brats21", **FAST)
        assert not (out / "brats").exists()
    finally:
        holder.kill()
        holder.wait()
