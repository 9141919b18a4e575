"""torchrun across nodes on localhost: 2 "nodes" of 1 process each train what 2 processes on one node
train, resume under DDP, and a missing peer or a broken environment ends in one line, in bounded time."""

from __future__ import annotations

import csv
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from conftest import environment
from tiny import tiny_dataset

from mriad.infra.errors import MriadError

TINY = (
    "--channels", "8", "--set", "channel_mult=1,2", "--set", "num_res_blocks=1", "--set", "groups=4",
    "--set", "head_channels=16", "--patch-size", "16", "--batch-size", "4", "--set", "octaves=3",
    "--set", "frequency=16.0", "--epochs", "2", "--val-every", "1",
)  # fmt: skip
TORCHRUN = [sys.executable, "-m", "torch.distributed.run"]
LAUNCH = [sys.executable, "-m", "mriad.train.launch"]


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _train(manifest: Path, out: Path, *extra: str) -> list[str]:
    return ["-m", "mriad", "--hide-progress", "train", "--model", "pddpm", "--data", str(manifest), "--fold", "0",
            "--out", str(out), *TINY, *extra]  # fmt: skip


def _start(command: list[str], workspace: Path, **env: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        command, env={**environment(workspace), **env}, cwd=workspace, stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, text=True,
    )  # fmt: skip


def _wait(*processes: subprocess.Popen[str]) -> None:
    outputs = [p.communicate(timeout=400) for p in processes]
    assert [p.returncode for p in processes] == [0] * len(processes), [o[1][-2000:] for o in outputs]


def _two_nodes(launcher: list[str], manifest: Path, out: Path, workspace: Path, *extra: str) -> None:
    endpoint = f"127.0.0.1:{_port()}"
    nodes = [
        _start([*launcher, "--nnodes", "2", "--node-rank", str(k), "--nproc-per-node", "1", "--rdzv-backend", "c10d",
                "--rdzv-endpoint", endpoint, "--rdzv-id", "test", *_train(manifest, out, *extra)], workspace)
        for k in range(2)
    ]  # fmt: skip
    _wait(*nodes)


def _losses(run: Path) -> list[tuple[str, ...]]:
    with open(run / "metrics.csv") as handle:
        return [(r["epoch"], r["step"], r["train_loss"], r["val_loss"]) for r in csv.DictReader(handle)]


def _weights(run: Path) -> dict[str, torch.Tensor]:
    return torch.load(run / "checkpoints" / "last.pt", weights_only=True)["state_dict"]


@pytest.fixture(scope="module")
def manifest(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tiny_dataset(tmp_path_factory.mktemp("tiny"))


@pytest.mark.slow  # ~2 min on 2 busy cores: four torchrun launches of two processes each
def test_two_nodes_train_like_one_node_and_resume(manifest: Path, tmp_path: Path) -> None:
    one_node, two_nodes, resumed = tmp_path / "one", tmp_path / "two", tmp_path / "resumed"
    _wait(_start([*TORCHRUN, "--nnodes", "1", "--nproc-per-node", "2", "--rdzv-backend", "c10d",
                  "--rdzv-endpoint", f"127.0.0.1:{_port()}", *_train(manifest, one_node)], tmp_path))  # fmt: skip
    _two_nodes(TORCHRUN, manifest, two_nodes, tmp_path)
    assert _losses(two_nodes) == _losses(one_node) and len(_losses(one_node)) == 3  # epochs 0 (val), 1, 2
    for key, value in _weights(one_node).items():
        assert torch.equal(value, _weights(two_nodes)[key]), key
    # Interrupted after one epoch (2 steps), then resumed, both across the two nodes.
    _two_nodes(LAUNCH, manifest, resumed, tmp_path, "--max-steps", "2")
    assert len(_losses(resumed)) == 2
    _two_nodes(LAUNCH, manifest, resumed, tmp_path, "--resume")
    assert _losses(resumed) == _losses(two_nodes)
    for key, value in _weights(two_nodes).items():
        assert torch.equal(value, _weights(resumed)[key]), key


def test_a_missing_node_is_one_line_within_the_timeout(manifest: Path, tmp_path: Path) -> None:
    start = time.monotonic()
    alone = _start([*LAUNCH, "--nnodes", "2", "--node-rank", "0", "--nproc-per-node", "1", "--rdzv-backend", "c10d",
                    "--rdzv-endpoint", f"127.0.0.1:{_port()}", *_train(manifest, tmp_path / "run")],
                   tmp_path, MRIAD_DIST_TIMEOUT="3")  # fmt: skip
    _, stderr = alone.communicate(timeout=120)
    assert alone.returncode == 1 and time.monotonic() - start < 100
    lines = stderr.strip().splitlines()
    assert len(lines) == 1 and "rendezvous" in lines[0] and "MRIAD_DIST_TIMEOUT (now 3 s)" in lines[0], stderr
    assert not (tmp_path / "run").exists()


def test_a_worker_without_its_peer_is_one_line(tmp_path: Path) -> None:
    """What srun starting one process per task (no torchrun) gives when rank 0 never comes."""
    code = "from mriad.train import distributed as d; import torch; d.setup(d.detect(), torch.device('cpu'))"
    env = {"RANK": "1", "WORLD_SIZE": "2", "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(_port())}
    worker = _start([sys.executable, "-c", code], tmp_path, MRIAD_DIST_TIMEOUT="2", **env)
    _, stderr = worker.communicate(timeout=120)
    assert worker.returncode == 1
    last = stderr.strip().splitlines()[-1]
    assert "rank 1 of 2 could not join the others at 127.0.0.1" in last and "within 2 s" in last, stderr
    assert "frame #" not in stderr  # c10d's retry messages were held back


def test_a_broken_environment_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    from mriad.train import distributed

    for env, message in (
        ({"WORLD_SIZE": "two"}, "WORLD_SIZE='two'"),
        ({"WORLD_SIZE": "2"}, "RANK: not set"),
        ({"WORLD_SIZE": "2", "RANK": "2"}, "RANK=2: must be in 0..1"),
        ({"MRIAD_DIST_TIMEOUT": "soon"}, "MRIAD_DIST_TIMEOUT='soon'"),
        ({"MRIAD_DIST_TIMEOUT": "-1"}, "MRIAD_DIST_TIMEOUT='-1'"),
    ):
        for name in ("WORLD_SIZE", "RANK", "MRIAD_DIST_TIMEOUT"):
            monkeypatch.delenv(name, raising=False)
        for name, value in env.items():
            monkeypatch.setenv(name, value)
        with pytest.raises(MriadError, match=message):
            distributed.detect()
            distributed.timeout_seconds()
    monkeypatch.delenv("MRIAD_DIST_TIMEOUT")
    monkeypatch.setenv("WORLD_SIZE", "1")
    assert distributed.detect().world_size == 1 and distributed.timeout_seconds() == distributed.DEFAULT_TIMEOUT
