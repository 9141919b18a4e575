"""`train --force` validates before it destroys (issue 14, defect 2), non-finite results are failures
(defect 4), and the train refusals of the "Also" list (a refused start, an edited config.json).
Every refusal is checked against a digest of the whole tree around it: nothing changes.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from reliability_helpers import TINY_PDDPM, TINY_SETS, assert_one_line_error, mriad_env, snapshot

TRAIN = ("--device", "cpu", "--hide-progress", "train", "--model", "pddpm", "--epochs", "1", *TINY_SETS)

_HOLD = (
    "import sys, time\n"
    "from mriad.infra.locking import folder_lock\n"
    "with folder_lock(sys.argv[1], 'evaluate brats-test'):\n"
    "    print('locked', flush=True)\n"
    "    time.sleep(120)\n"
)


@pytest.fixture
def hold() -> Iterator[Callable[[Path], int]]:
    """``hold(folder)``: a live process holds ``folder``'s lock (as a running evaluate would)."""
    processes: list[subprocess.Popen] = []

    def start(folder: Path) -> int:
        folder.mkdir(parents=True, exist_ok=True)
        process = subprocess.Popen(
            [sys.executable, "-c", _HOLD, str(folder)],
            stdout=subprocess.PIPE,
            text=True,
            env=mriad_env(folder.parent),
            cwd=folder.parent,
        )
        processes.append(process)
        assert process.stdout is not None and process.stdout.readline().strip() == "locked"
        return process.pid

    yield start
    for process in processes:
        process.kill()
        process.wait()


# ---- defect 2: --force ------------------------------------------------------------------------------
def test_force_with_a_mistyped_manifest_deletes_nothing(cli, run_copy, tmp_path: Path) -> None:
    run = run_copy()
    (run / "eval" / "brats-test").mkdir(parents=True)
    (run / "eval" / "brats-test" / "summary.json").write_text("{}")
    before = snapshot(tmp_path, ["*"])
    assert (run / "checkpoints" / "last.pt").is_file() and any((run / "recon" / "brats-test").iterdir())
    result = cli(*TRAIN, "--data", tmp_path / "data" / "manifst.csv", "--out", run, "--force")
    assert result.exit_code == 1, result.output
    assert_one_line_error(result.output, "manifst.csv", "manifest not found")
    assert snapshot(tmp_path, ["*"]) == before


def test_force_with_a_bad_option_deletes_nothing(run_copy, data_copy: Path, tmp_path: Path) -> None:
    """Through the Python API (the CLI refuses the option even earlier): the engine validates first."""
    from mriad.infra.errors import MriadError
    from mriad.train import fit

    run = run_copy()
    before = snapshot(tmp_path, ["*"])
    options = {**TINY_PDDPM, "epochs": 1, "no_such_option": 1}
    with pytest.raises(MriadError, match="unknown option"):
        fit("pddpm", data=data_copy, out=run, options=options, device="cpu", force=True)
    assert snapshot(tmp_path, ["*"]) == before


def test_force_refuses_while_a_live_process_holds_a_lock_inside_the_run(
    cli, run_copy, data_copy: Path, tmp_path: Path, hold
) -> None:
    run = run_copy()
    pid = hold(run / "eval" / "brats-test")
    before = snapshot(tmp_path, ["*"])
    result = cli(*TRAIN, "--data", data_copy, "--out", run, "--force")
    assert result.exit_code == 1, result.output
    assert_one_line_error(result.output, str(run / "eval" / "brats-test"), f"process {pid}", "train --force")
    assert snapshot(tmp_path, ["*"]) == before
    assert (run / "eval" / "brats-test" / ".mriad.lock").is_file()  # the holder's lock is untouched


def test_force_replaces_the_run_once_everything_is_valid(cli, run_copy, data_copy: Path) -> None:
    run = run_copy()
    old = (run / "checkpoints" / "last.pt").read_bytes()
    result = cli(*TRAIN, "--data", data_copy, "--out", run, "--force")
    assert result.exit_code == 0, result.output
    assert not (run / "recon").exists() and (run / "checkpoints" / "last.pt").read_bytes() != old


def test_a_refused_start_leaves_no_config_that_blocks_the_rerun(cli, data_copy: Path, tmp_path: Path) -> None:
    out = tmp_path / "runs" / "thresh"
    args = ("--device", "cpu", "--hide-progress", "train", "--model", "thresh", "--out", out)
    result = cli(*args, "--data", tmp_path / "missing.csv")
    assert result.exit_code == 1, result.output
    assert_one_line_error(result.output, "missing.csv", "manifest not found")
    assert not (tmp_path / "runs").exists()
    result = cli(*args, "--data", data_copy)  # the rerun needs neither --resume nor --force
    assert result.exit_code == 0, result.output


def test_resume_after_config_json_was_edited_is_one_line(cli, run_copy, data_copy: Path, tmp_path: Path) -> None:
    run = run_copy(recon=False)
    config = json.loads((run / "config.json").read_text())
    config["options"]["base_channels"] = 16
    (run / "config.json").write_text(json.dumps(config))
    before = snapshot(tmp_path, ["*"])
    result = cli(
        "--device",
        "cpu",
        "--hide-progress",
        "train",
        "--model",
        "pddpm",
        "--data",
        data_copy,
        "--out",
        run,
        "--resume",
        "--epochs",
        "3",
    )
    assert result.exit_code == 1, result.output
    assert_one_line_error(result.output, str(run / "checkpoints" / "last.pt"), "base_channels", "config.json")
    assert snapshot(tmp_path, ["*"]) == before


# ---- defect 4: non-finite results -------------------------------------------------------------------
def test_nan_weights_make_failed_subjects_not_maps(cli, run_copy, tmp_path: Path) -> None:
    run = run_copy(recon=False)
    for name in ("best.pt", "last.pt"):
        path = run / "checkpoints" / name
        state = torch.load(path, weights_only=True)
        state["state_dict"] = {
            k: torch.full_like(v, float("nan")) if v.is_floating_point() else v for k, v in state["state_dict"].items()
        }
        torch.save(state, path)
    result = cli("--device", "cpu", "--hide-progress", "reconstruct", "--run", run, "--split", "brats-test")
    assert result.exit_code == 1, result.output
    assert "0 reconstructed" in result.output and "6 failed" in result.output, result.output
    out = run / "recon" / "brats-test"
    assert sorted(p.name for p in out.iterdir()) == ["failures.csv"]  # no map, no record
    reasons = pd.read_csv(out / "failures.csv")["reason"]
    assert len(reasons) == 6 and all("NaN/Inf voxels" in r for r in reasons)


def test_diverging_training_stops_at_the_step_and_keeps_finite_weights(tiny_data: Path, tmp_path: Path) -> None:
    from mriad.infra.errors import MriadError
    from mriad.train import fit

    out = tmp_path / "run"
    options = {**TINY_PDDPM, "lr": 1e30, "batch_size": 1, "epochs": 10, "val_every": 10}
    with pytest.raises(MriadError, match=r"training loss became NaN/Inf at step \d+ \(epoch 1\)") as caught:
        fit("pddpm", data=tiny_data, out=out, options=options, device="cpu", seed=0)
    assert "\n" not in str(caught.value)
    state = torch.load(out / "checkpoints" / "last.pt", weights_only=True)
    assert all(torch.isfinite(v).all() for v in state["state_dict"].values() if v.is_floating_point())
    metrics = pd.read_csv(out / "metrics.csv")
    assert np.isfinite(metrics["val_loss"]).all() and not metrics["train_loss"].astype(str).str.contains("nan").any()


def test_inputs_outside_the_preprocessed_range_are_refused(cli, data_copy: Path, tmp_path: Path) -> None:
    from mriad.contracts.manifest import read_manifest
    from mriad.infra.io import read_nifti, write_nifti

    image = Path(read_manifest(data_copy).set_index("subject_id").loc["IXI001", "image"])
    volume = read_nifti(image)
    write_nifti(image, volume.data * 1000.0, volume.affine)
    before = snapshot(tmp_path, ["*"])
    result = cli(*TRAIN, "--data", data_copy, "--out", tmp_path / "runs" / "p")
    assert result.exit_code == 1, result.output
    assert_one_line_error(result.output, str(image), "outside the preprocessed range [0, 1]")
    assert snapshot(tmp_path, ["*"]) == before and not (tmp_path / "runs").exists()
