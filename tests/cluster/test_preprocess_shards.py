"""``preprocess --shard i/n`` side by side into one OUT, then ``--merge``: the same files as one run."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
from conftest import environment, held_elsewhere, mriad_command, run_mriad

from mriad.infra.errors import LockError

FAST = ("-d", "brats21", "--no-n4")  # BraTS: no skull strip, no registration; N4 off: ~2 s a subject


def _contents(out: Path) -> dict[str, bytes]:
    """Every file under OUT by relative path; timings (wall-clock seconds) left out of the comparison."""
    files = {}
    for path in sorted(out.rglob("*")):
        if not path.is_file() or path.name == "timings.json":
            continue
        data = path.read_bytes()
        if path.name == "done.json":
            record = json.loads(data)
            record.pop("timings")
            record["files"].pop("timings.json")
            data = json.dumps(record, sort_keys=True).encode()
        files[str(path.relative_to(out))] = data
    return files


@pytest.mark.slow  # 35-55 s on 2 busy cores: three `python -m mriad` start-ups
def test_shards_in_parallel_then_merge_equal_one_run(tiny_raw: Path, tmp_path: Path) -> None:
    whole, sharded = tmp_path / "whole", tmp_path / "sharded"
    from mriad.preprocess import preprocess

    preprocess(tiny_raw, whole, dataset="brats21", n4=False)
    # Two shards at the same time, as a Slurm array runs them.
    shards = [
        subprocess.Popen(
            mriad_command("preprocess", str(tiny_raw), str(sharded), *FAST, "--shard", f"{i}/2"),
            env=environment(tmp_path),
            cwd=tmp_path,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for i in range(2)
    ]
    outputs = [p.communicate(timeout=300) for p in shards]
    # Shard 0 has case 00000 and the unreadable 09999 (it exits 1), shard 1 has 00001.
    assert [p.returncode for p in shards] == [1, 0], outputs
    assert not (sharded / "manifest.csv").exists()  # only the merge writes OUT's manifest
    partial = (sharded / "shards" / "brats" / "0-of-2" / "manifest.csv").read_text().splitlines()
    assert [line.split(",")[0] for line in partial[1:]] == ["BraTS2021_00000"]
    merged = run_mriad(tmp_path, "preprocess", str(tiny_raw), str(sharded), *FAST, "--merge")
    assert merged.returncode == 1 and "BraTS2021_09999" in merged.stderr  # the failure is still reported
    assert not (sharded / "shards").exists()  # merged: the partial lists are gone
    expected, got = _contents(whole), _contents(sharded)
    assert sorted(got) == sorted(expected)
    for name, data in expected.items():
        assert got[name] == data, name
    assert b"BraTS2021_09999" in got["failures.csv"] and len(got["manifest.csv"].splitlines()) == 3


def test_merge_lists_subjects_whose_shard_has_not_run(tiny_raw: Path, tmp_path: Path) -> None:
    from mriad.preprocess import preprocess
    from mriad.preprocess.shards import merge

    out = tmp_path / "out"
    first = preprocess(tiny_raw, out, dataset="brats21", n4=False, shard=(0, 2))
    assert first.done == ["BraTS2021_00000"] and [p.subject for p in first.failures] == ["BraTS2021_09999"]
    result = merge(tiny_raw, out, dataset="brats21", n4=False)
    assert result.skipped == ["BraTS2021_00000"]
    reasons = {p.subject: p.reason for p in result.failures}
    assert sorted(reasons) == ["BraTS2021_00001", "BraTS2021_09999"]
    assert "not preprocessed" in reasons["BraTS2021_00001"] and "gzip" in reasons["BraTS2021_09999"]
    assert (out / "shards" / "brats" / "0-of-2").is_dir()  # kept: the merge is not complete yet
    # Options other than the shards' do not count their subjects as finished.
    assert merge(tiny_raw, out, dataset="brats21", n4=True).skipped == []


def test_a_shard_refuses_a_whole_run_and_other_cuts(tiny_raw: Path, tmp_path: Path) -> None:
    from mriad.infra.locking import folder_lock, merge_lock, shard_lock
    from mriad.preprocess import preprocess

    out = tmp_path / "out"
    with held_elsewhere(f"shard_lock({str(out)!r}, 0, 2, 'preprocess brats shard 0/2', group='brats')", tmp_path):
        with pytest.raises(LockError, match="shard"):
            preprocess(tiny_raw, out, dataset="brats21", n4=False)
        with pytest.raises(LockError, match="in use"):
            preprocess(tiny_raw, out, dataset="brats21", n4=False, shard=(0, 2))
        with pytest.raises(LockError, match="same n"):
            preprocess(tiny_raw, out, dataset="brats21", n4=False, shard=(0, 3))
        with pytest.raises(LockError, match="still running"), merge_lock(out, "merge", group="brats"):
            pass
        with shard_lock(out, 1, 2, "the other shard", group="brats"), shard_lock(out, 0, 3, "mslub", group="mslub"):
            pass  # the same cut, and another data set: side by side
    with held_elsewhere(f"folder_lock({str(out)!r}, 'preprocess')", tmp_path):
        with pytest.raises(LockError, match="in use"), shard_lock(out, 1, 2, "shard", group="brats"):
            pass
    with folder_lock(out, "whole"):
        pass  # every holder has gone
    assert not list(out.glob(".mriad.lock*"))
