"""Determinism: the same seed on CPU gives identical checkpoints, metrics, maps and scores; a different
seed gives different ones; `--deterministic` sets the flags that make CUDA runs repeatable too.

(The kill -9 tests compare interrupted runs with uninterrupted ones byte for byte, which needs this.)
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch
from reliability_helpers import TINY_SETS, snapshot, tiny_fit

from mriad.infra.io import safe_torch_load


def _weights(run: Path, name: str = "last.pt") -> dict[str, torch.Tensor]:
    return safe_torch_load(run / "checkpoints" / name)["state_dict"]


def _metric_rows(run: Path) -> list[list[str]]:
    rows = [line.split(",") for line in (run / "metrics.csv").read_text().splitlines()]
    seconds = rows[0].index("seconds")
    return [row[:seconds] + row[seconds + 1 :] for row in rows]  # without the wall-clock seconds


def test_same_seed_same_checkpoints_metrics_maps_and_scores(tiny_data: Path, tmp_path: Path) -> None:
    from mriad.evaluate import evaluate
    from mriad.reconstruct import reconstruct

    runs = [tiny_fit(tiny_data, tmp_path / name, epochs=2, seed=11) for name in ("a", "b")]
    for name in ("last.pt", "best.pt"):
        first, second = _weights(runs[0], name), _weights(runs[1], name)
        assert first.keys() == second.keys()
        assert all(torch.equal(first[k], second[k]) for k in first), name
    assert _metric_rows(runs[0]) == _metric_rows(runs[1])
    summaries = []
    for run in runs:
        reconstruct(run, "brats-val")
        reconstruct(run, "brats-test")
        summaries.append(evaluate(run, "brats-test", device="cpu", figures=False))
    assert snapshot(runs[0] / "recon", ["*.nii.gz"]) == snapshot(runs[1] / "recon", ["*.nii.gz"])
    assert (runs[0] / "eval" / "brats-test" / "per_subject.csv").read_bytes() == (
        runs[1] / "eval" / "brats-test" / "per_subject.csv"
    ).read_bytes()
    for summary in summaries:
        summary.pop("run"), summary.pop("outputs")
        # Which files were scored: the checkpoint files also hold wall-clock seconds, so their digests
        # differ between two runs whose weights are identical (compared above).
        summary.pop("provenance")
    assert json.dumps(summaries[0], sort_keys=True) == json.dumps(summaries[1], sort_keys=True)


def test_another_seed_gives_another_model(tiny_data: Path, tmp_path: Path) -> None:
    first = _weights(tiny_fit(tiny_data, tmp_path / "a", epochs=1, seed=1))
    second = _weights(tiny_fit(tiny_data, tmp_path / "b", epochs=1, seed=2))
    assert any(not torch.equal(first[k], second[k]) for k in first)


@pytest.fixture
def _restore_determinism_flags():
    """`--deterministic` changes process-wide torch settings: put them back after the test."""
    saved = (
        torch.are_deterministic_algorithms_enabled(),
        torch.is_deterministic_algorithms_warn_only_enabled(),
        torch.backends.cudnn.deterministic,
        torch.backends.cudnn.benchmark,
        os.environ.get("CUBLAS_WORKSPACE_CONFIG"),
    )
    torch.use_deterministic_algorithms(False)
    torch.backends.cudnn.deterministic = False
    torch.backends.cudnn.benchmark = True
    os.environ.pop("CUBLAS_WORKSPACE_CONFIG", None)
    yield
    torch.use_deterministic_algorithms(saved[0], warn_only=saved[1])
    torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = saved[2], saved[3]
    if saved[4] is None:
        os.environ.pop("CUBLAS_WORKSPACE_CONFIG", None)
    else:
        os.environ["CUBLAS_WORKSPACE_CONFIG"] = saved[4]


@pytest.mark.usefixtures("_restore_determinism_flags")
def test_the_deterministic_flag_reaches_torch(cli, tiny_data: Path, tmp_path: Path) -> None:
    """`mriad train --deterministic` sets deterministic algorithms, deterministic cuDNN without
    benchmarking, and the cuBLAS workspace that deterministic CUDA matmuls need (checked on CPU: the
    settings are process-wide flags; no GPU is needed to see them set)."""
    result = cli(
        "--device", "cpu", "train", "--model", "pddpm", "--data", tiny_data, "--out", tmp_path / "run",
        "--epochs", "1", "--deterministic", *TINY_SETS,
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert torch.are_deterministic_algorithms_enabled()
    assert torch.backends.cudnn.deterministic and not torch.backends.cudnn.benchmark
    assert os.environ.get("CUBLAS_WORKSPACE_CONFIG") in (":4096:8", ":16:8")


@pytest.mark.usefixtures("_restore_determinism_flags")
def test_without_the_flag_nothing_is_forced(cli, tiny_data: Path, tmp_path: Path) -> None:
    result = cli(
        "--device", "cpu", "train", "--model", "pddpm", "--data", tiny_data, "--out", tmp_path / "run",
        "--epochs", "1", *TINY_SETS,
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert not torch.are_deterministic_algorithms_enabled()
