"""Stale results (issue 14, defect 3): a map is reused only when it was made from the same scan, mask
and checkpoint; anything else is made again, and what is current is not rewritten.

Before the record beside each map, "already reconstructed" meant "the file exists": `evaluate --data
other.csv` with the same subject IDs but other scans scored the new scans against the old maps.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from mriad.contracts.recon_records import read_recon_record
from mriad.contracts.run_folder import RunFolder
from mriad.infra.digests import file_sha256
from mriad.infra.io import read_nifti, write_nifti

SPLIT = "brats-test"


def _subjects(manifest: Path, split: str = SPLIT) -> pd.DataFrame:
    from mriad.contracts.manifest import read_manifest, select_split

    return select_split(read_manifest(manifest), split, 0)


def _other_scans(manifest: Path, root: Path) -> Path:
    """A copy of the data set whose test scans differ (same subject IDs, other voxels)."""
    target = root / "other"
    shutil.copytree(manifest.parent, target)
    for row in _subjects(target / manifest.name).itertuples(index=False):
        volume = read_nifti(row.image)
        brighter = np.clip(volume.data * 1.0 + 0.2 * (volume.data > 0), 0, 1).astype(np.float32)
        write_nifti(row.image, np.flip(brighter, axis=0).copy(), volume.affine)
    return target / manifest.name


def _maps(run: Path) -> dict[str, tuple[int, str]]:
    """mtime_ns and digest of every map and record of the split."""
    folder = RunFolder(run).recon_dir(SPLIT)
    return {p.name: (p.stat().st_mtime_ns, file_sha256(p)) for p in sorted(folder.glob("*")) if p.suffix != ".lock"}


def _evaluate(cli, run: Path, data: Path) -> bytes:
    result = cli("--device", "cpu", "evaluate", "--run", run, "--split", SPLIT, "--data", data, "--no-figures")
    assert result.exit_code == 0, result.output
    return RunFolder(run).per_subject(SPLIT).read_bytes()


def test_same_ids_other_scans_are_reconstructed_again(cli, run_copy: Callable[..., Path], data_copy: Path) -> None:
    reused = run_copy(recon=True, name="reused")
    before = _evaluate(cli, reused, data_copy)
    maps = _maps(reused)
    other = _other_scans(data_copy, data_copy.parent.parent)

    after = _evaluate(cli, reused, other)
    fresh = run_copy(recon=False, name="fresh")  # never saw the old scans
    assert after == _evaluate(cli, fresh, other)  # scored against maps of the new scans...
    assert after != before  # ...which changed the metrics
    redone = _maps(reused)
    for row in _subjects(other).itertuples(index=False):
        rec, score = (f"{row.subject_id}_rec.nii.gz", f"{row.subject_id}_score.nii.gz")
        assert redone[rec] != maps[rec] and redone[score] != maps[score]
        record = read_recon_record(reused, SPLIT, row.subject_id)
        assert record is not None and record["inputs"]["image"] == file_sha256(row.image)


def test_another_checkpoint_makes_the_maps_again(run_copy: Callable[..., Path]) -> None:
    from mriad.reconstruct import reconstruct

    run = run_copy(recon=True)
    maps = _maps(run)
    best = RunFolder(run).model_checkpoint("best")
    assert best is not None
    state = torch.load(best, weights_only=True)
    name = next(k for k, v in state["state_dict"].items() if v.is_floating_point() and v.numel() > 1)
    state["state_dict"][name] = state["state_dict"][name] + 0.05
    torch.save(state, best)

    result = reconstruct(run, SPLIT)
    assert result.skipped == [] and sorted(result.written) == sorted(_subjects_of(run))
    redone = _maps(run)
    assert all(redone[name] != maps[name] for name in maps if name.endswith("_score.nii.gz"))


def _subjects_of(run: Path) -> list[str]:
    return RunFolder(run).reconstructed_subjects(SPLIT)


def test_current_maps_are_reused_not_rewritten(cli, run_copy: Callable[..., Path], data_copy: Path) -> None:
    from mriad.reconstruct import reconstruct

    run = run_copy(recon=True)
    maps = _maps(run)
    assert len(maps) == 3 * len(_subjects(data_copy))  # rec, score and the record of each subject
    result = reconstruct(run, SPLIT)
    assert result.written == [] and len(result.skipped) == len(_subjects(data_copy))
    _evaluate(cli, run, data_copy)
    assert _maps(run) == maps  # same bytes and the same mtime: nothing was written again


def test_a_scan_that_became_unreadable_leaves_no_old_maps(run_copy: Callable[..., Path], data_copy: Path) -> None:
    from mriad.reconstruct import reconstruct

    run = run_copy(recon=True)
    row = next(_subjects(data_copy).itertuples(index=False))
    Path(row.image).write_bytes(b"not a nifti file")
    result = reconstruct(run, SPLIT)
    assert [subject for subject, _ in result.failures] == [row.subject_id]
    rec, score = RunFolder(run).recon_files(SPLIT, row.subject_id)
    assert not rec.exists() and not score.exists()
    assert not RunFolder(run).recon_record(SPLIT, row.subject_id).exists()
