"""examples/slurm through the stand-ins of examples/slurm/local (sbatch, srun, scontrol on this machine):
the chain of jobs writes what the unsharded commands write."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import ROOT, environment
from test_preprocess_shards import _contents
from tiny import tiny_dataset

from mriad.infra.io import read_nifti

EXAMPLES = ROOT / "examples" / "slurm"
TINY_TRAIN = (
    "--channels 8 --set channel_mult=1,2 --set num_res_blocks=1 --set groups=4 --set head_channels=16 "
    "--patch-size 16 --batch-size 4 --set octaves=3 --set frequency=16.0 --epochs 2 --val-every 1"
)


def _cluster(workspace: Path, **settings: str) -> dict[str, str]:
    """The environment of a login node whose sbatch/srun/scontrol are the local stand-ins."""
    env = environment(workspace)
    env.update({
        "PATH": f"{EXAMPLES / 'local'}{os.pathsep}{env['PATH']}", "SLURM_STANDIN_DIR": str(workspace / "slurm"),
        "PYTHON": sys.executable, **settings,
    })  # fmt: skip
    return env


def _protocol(workspace: Path, **settings: str) -> dict[str, str]:
    """Run protocol.sh; returns {what: job state}."""
    done = subprocess.run(
        ["bash", str(EXAMPLES / "protocol.sh")], env=_cluster(workspace, **settings), cwd=workspace,
        capture_output=True, text=True, timeout=900,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    jobs = dict(line.split(": ") for line in done.stderr.strip().splitlines())
    return {what: (workspace / "slurm" / f"job-{job}").read_text() for what, job in jobs.items()}


def test_the_stand_ins_behave_like_slurm(tmp_path: Path) -> None:
    script = tmp_path / "job.sbatch"
    script.write_text(
        "#!/bin/bash\n#SBATCH --output=logs/%x-%A_%a.out\n#SBATCH --nodes=2\n"
        'echo "task $SLURM_ARRAY_TASK_ID/$SLURM_ARRAY_TASK_COUNT of $SLURM_ARRAY_JOB_ID on $SLURM_NNODES nodes"\n'
        "srun bash -c 'echo \"proc $SLURM_PROCID node $SLURM_NODEID\"'\n"
        "scontrol show hostnames | head -n 1\n"
        '[ "$SLURM_ARRAY_TASK_ID" != 2 ]\n'
    )
    env = _cluster(tmp_path)
    submitted = subprocess.run(
        ["sbatch", "--parsable", "--array=0-2", "-J", "demo", str(script)], env=env, cwd=tmp_path,
        capture_output=True, text=True, check=True,
    ).stdout.strip()  # fmt: skip
    logs = [(tmp_path / "logs" / f"demo-{submitted}_{i}.out").read_text().splitlines() for i in range(3)]
    assert logs[1][0] == f"task 1/3 of {submitted} on 2 nodes"
    assert sorted(logs[1][1:3]) == ["proc 0 node 0", "proc 1 node 1"] and logs[1][3] == "127.0.0.1"
    assert (tmp_path / "slurm" / f"job-{submitted}").read_text() == "FAILED"  # task 2 failed
    after = subprocess.run(
        ["sbatch", "--parsable", f"--dependency=afterok:{submitted}", "-J", "after", str(script)], env=env,
        cwd=tmp_path, capture_output=True, text=True, check=True,
    ).stdout.strip()  # fmt: skip
    assert (tmp_path / "slurm" / f"job-{after}").read_text() == "CANCELLED"
    assert not list((tmp_path / "logs").glob("after-*"))


@pytest.mark.slow  # ~1-2 min on 2 busy cores
def test_preprocess_array_and_merge_equal_one_run(tiny_raw: Path, tmp_path: Path) -> None:
    from mriad.preprocess import preprocess

    preprocess(tiny_raw, tmp_path / "whole", dataset="brats21", n4=False)
    states = _protocol(tmp_path, OUT=str(tmp_path / "sharded"), DATASETS="brats21", RAW_brats21=str(tiny_raw),
                       OPTS_brats21="--no-n4", PREP_SHARDS="2", STAGES="preprocess")  # fmt: skip
    # A shard with the unreadable scan and the merge exit 1 (failures listed), as one run would.
    assert states == {"preprocess brats21": "FAILED", "merge brats21": "FAILED"}
    expected, got = _contents(tmp_path / "whole"), _contents(tmp_path / "sharded")
    assert sorted(got) == sorted(expected)
    for name, data in expected.items():
        assert got[name] == data, name


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow  # ~2-4 min on 2 busy cores
def test_train_reconstruct_evaluate_chain_equals_unsharded_commands(tmp_path: Path) -> None:
    from mriad.evaluate import evaluate
    from mriad.reconstruct import reconstruct

    manifest = tiny_dataset(tmp_path / "data", lesions=True)
    states = _protocol(
        tmp_path, OUT=str(tmp_path / "data"), DATA=str(manifest), MODELS="pddpm", FOLDS="0", NODES="2",
        GPUS_PER_NODE="1", RECON_SHARDS="2", RDZV_PORT_BASE=str(_port()), SPLITS="brats-val brats-test",
        EVAL_SPLITS="brats-test", VOLUMES_PER_BATCH="1", TRAIN_OPTS=TINY_TRAIN, STAGES="train reconstruct evaluate",
        EVAL_SHARDS="2",
    )  # fmt: skip
    assert set(states.values()) == {"COMPLETED"}, states
    assert "merge evaluation pddpm fold 0" in states  # the evaluate array's shards, then their merge
    run = tmp_path / "runs" / "pddpm-fold0"
    assert (run / "checkpoints" / "last.pt").is_file()
    # The same run folder, reconstructed and evaluated by unsharded commands in this process.
    reference = tmp_path / "reference"
    shutil.copytree(run, reference, ignore=shutil.ignore_patterns("recon", "eval"))
    for split in ("brats-val", "brats-test"):
        assert len(reconstruct(reference, split, volumes_per_batch=1).written) == 2
        for path in sorted((reference / "recon" / split).glob("*.nii.gz")):
            sharded = run / "recon" / split / path.name
            assert np.array_equal(read_nifti(sharded, allow_empty=True).data, read_nifti(path, allow_empty=True).data)
    evaluate(reference, "brats-test", figures=False)
    ours, theirs = (json.loads((r / "eval" / "brats-test" / "summary.json").read_text()) for r in (run, reference))
    shards = sorted(p.name for p in (run / "eval" / "brats-test" / "shards").glob("*.npz"))
    assert shards == ["0-of-2.npz", "1-of-2.npz"]
    # Two evaluate shards and their merge = one evaluate, but for the paths of the two run folders.
    for summary in (ours, theirs):
        summary.pop("run"), summary.pop("outputs")
    assert ours == theirs
    per_subject = [(r / "eval" / "brats-test" / "per_subject.csv").read_bytes() for r in (run, reference)]
    assert per_subject[0] == per_subject[1]
