"""Shards of ``reconstruct`` on one run folder at the same time write what one unsharded run writes."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import environment, held_elsewhere, mriad_command
from tiny import tiny_dataset
from torch import nn

from mriad.infra.errors import LockError
from mriad.infra.io import read_nifti

TINY = {"base_channels": 8, "channel_mult": "1,2", "num_res_blocks": 1, "groups": 4, "head_channels": 16}
SPLIT = "ixi-val"  # fold 0 of the tiny data set: 3 subjects, groups of 2: shard 0 has 2, shard 1 has 1


def tiny_run(root: Path, manifest: Path) -> Path:
    """A run folder holding a tiny pDDPM with random weights (what `mriad train` would leave)."""
    from mriad.models.registry import build_model

    torch.manual_seed(0)
    model = build_model("pddpm", **TINY, patch_size=16)
    for p in model.parameters():  # zero-initialised output layers would make every map equal
        if p.dim() > 1:
            nn.init.normal_(p, std=0.2)
    run = root / "run"
    (run / "checkpoints").mkdir(parents=True)
    state = {"model": "pddpm", "config": model.config, "state_dict": model.state_dict()}
    torch.save(state, run / "checkpoints" / "best.pt")
    config = {"model": "pddpm", "fold": 0, "data": str(manifest), "options": model.config, "seed": 0}
    (run / "config.json").write_text(json.dumps(config, default=list))
    return run


@pytest.fixture(scope="module")
def run_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("recon")
    return tiny_run(root, tiny_dataset(root / "data"))


def _maps(run: Path) -> dict[str, np.ndarray]:
    folder = run / "recon" / SPLIT
    return {p.name: read_nifti(p, allow_empty=True).data for p in sorted(folder.glob("*.nii.gz"))}


def test_shard_positions_take_whole_groups() -> None:
    from mriad.reconstruct.run import shard_positions

    assert shard_positions(9, 2, (0, 2)) == [0, 1, 4, 5, 8]
    assert shard_positions(9, 2, (1, 2)) == [2, 3, 6, 7]
    assert sorted(shard_positions(9, 4, (0, 3)) + shard_positions(9, 4, (1, 3)) + shard_positions(9, 4, (2, 3))) == [
        *range(9)
    ]


def test_two_shards_at_once_equal_one_run(run_folder: Path, tmp_path: Path) -> None:
    from mriad.reconstruct import reconstruct

    whole = shutil.copytree(run_folder, tmp_path / "whole")
    sharded = shutil.copytree(run_folder, tmp_path / "sharded")
    assert len(reconstruct(whole, SPLIT, volumes_per_batch=2).written) == 3
    args = ("reconstruct", "--run", str(sharded), "--split", SPLIT, "--volumes-per-batch", "2")
    shards = [
        subprocess.Popen(
            mriad_command(*args, "--shard", f"{i}/2"),
            env=environment(tmp_path),
            cwd=tmp_path,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for i in range(2)
    ]
    outputs = [p.communicate(timeout=300) for p in shards]
    assert [p.returncode for p in shards] == [0, 0], outputs
    expected, got = _maps(whole), _maps(sharded)
    assert sorted(got) == sorted(expected) and len(got) == 6  # rec and score of 3 subjects
    for name, data in expected.items():
        assert np.array_equal(got[name], data), name  # the same noise: each group keeps its seed
    assert not list((sharded / "recon" / SPLIT).glob(".mriad.lock*"))
    # Every shard's subjects are finished now: a rerun of one skips them all.
    assert len(reconstruct(sharded, SPLIT, volumes_per_batch=2, shard="1/2").skipped) == 1


def test_shard_locks_refuse_a_whole_run_and_another_cut(run_folder: Path, tmp_path: Path) -> None:
    from mriad.reconstruct import reconstruct

    run = shutil.copytree(run_folder, tmp_path / "run")
    folder = run / "recon" / SPLIT
    with held_elsewhere(f"shard_lock({str(folder)!r}, 0, 2, 'reconstruct {SPLIT} shard 0/2')", tmp_path):
        with pytest.raises(LockError, match="shard"):
            reconstruct(run, SPLIT, volumes_per_batch=2)
        with pytest.raises(LockError, match="same n"):
            reconstruct(run, SPLIT, volumes_per_batch=2, shard="1/3")
        # The other shard of the same cut runs beside it.
        assert len(reconstruct(run, SPLIT, volumes_per_batch=2, shard="1/2").written) == 1


@pytest.mark.parametrize("value", ["3/2", "abc", "0/0", "-1/2"])
@pytest.mark.parametrize("stage", ["reconstruct", "preprocess"])
def test_a_malformed_shard_is_a_usage_error(stage: str, value: str, tmp_path: Path, cli) -> None:
    """Like evaluate's: exit 2, one line naming --shard, nothing written."""
    (tmp_path / "raw").mkdir()
    where = (
        ["--split", "brats-test", "--run", tmp_path / "out"]
        if stage == "reconstruct"
        else [tmp_path / "raw", tmp_path / "out"]
    )
    result = cli(stage, *where, "--shard", value)
    assert result.exit_code == 2, result.output
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and "--shard" in lines[0] and "Traceback" not in result.output
    assert not (tmp_path / "out").exists()
