"""Fault injection: a real `python -m mriad` process is killed with SIGKILL at a random point of its
work in each of the four long stages (preprocess, train, reconstruct, evaluate).

For each stage the same command first runs uninterrupted (the reference, timed from the moment the
stage takes its folder lock, i.e. after the imports, to its exit); its outputs are kept and removed.
Then the command runs again into the same folder and is killed after a delay drawn uniformly from
5-95 % of the reference's work time. The killed run must leave only whole files under their final
names (temporaries may remain: that is what atomic writes use); the rerun must finish and write
exactly what the reference wrote, byte for byte (CPU, where every stage is deterministic); no lock and
no temporary survive the rerun.

The kill points come from ``MRIAD_KILL_SEED`` (shown with ``-s`` and on failure, to replay one). A
run that finished before its kill is retried with an earlier kill point.
"""

from __future__ import annotations

import csv
import shutil
from collections.abc import Callable
from pathlib import Path

import torch
from reliability_helpers import (
    TINY_PDDPM,
    TINY_SETS,
    Killed,
    assert_whole_files,
    files_under,
    kill_at_random_point,
    kill_seed,
    mriad_command,
    snapshot,
    temporaries,
    timed_run,
)

from mriad.infra.io import safe_torch_load
from mriad.infra.locking import LOCK_NAME

ATTEMPTS = 3


def _reference_then_kill(
    command: list[str], *, lock: Path, workspace: Path, reset: Callable[[], None], keep: Callable[[], object]
) -> tuple[object, Killed]:
    """Run ``command`` uninterrupted (``keep()`` records its outputs, ``reset()`` removes them), then run
    it again and kill it at a random point of its work; returns (the kept outputs, how the kill went)."""
    seconds = timed_run(command, started=lock.exists, workspace=workspace)
    reference = keep()
    reset()
    seed = kill_seed()
    window = (0.05 * seconds, 0.95 * seconds)
    killed = None
    for attempt in range(ATTEMPTS):
        killed = kill_at_random_point(
            command, started=lock.exists, window=window, workspace=workspace, seed=seed + attempt
        )
        if killed.by_signal:
            # Shown with -s (and on failure): where the kill landed, and what it left.
            left = files_under(lock.parent)
            print(
                f"\n{lock.parent.name}: {killed.describe()} of {seconds:.2f} s; left {len(left)} file(s): "
                f"{', '.join(left[:6])}{' ...' if len(left) > 6 else ''}"
            )
            return reference, killed
        assert killed.returncode == 0, f"{killed.describe()}\n{killed.stderr}"
        reset()
        window = (0.0, killed.delay / 2)
    raise AssertionError(f"the stage always finished before the kill: {killed.describe() if killed else ''}")


# ---- train ---------------------------------------------------------------------------------------------
EPOCHS, VAL_EVERY = 8, 2


def _checkpoint_state(path: Path) -> dict:
    state = safe_torch_load(path)
    state.pop("seconds", None)  # wall-clock time: the only thing allowed to differ
    return state


def _assert_same(a: object, b: object, where: str) -> None:
    if isinstance(a, torch.Tensor):
        assert isinstance(b, torch.Tensor) and a.dtype == b.dtype and torch.equal(a, b), where
    elif isinstance(a, dict):
        assert isinstance(b, dict) and a.keys() == b.keys(), where
        for key in a:
            _assert_same(a[key], b[key], f"{where}.{key}")
    elif isinstance(a, list | tuple):
        assert isinstance(b, list | tuple) and len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b)):
            _assert_same(x, y, f"{where}[{i}]")
    else:
        assert a == b, f"{where}: {a!r} != {b!r}"


def _metrics(run: Path) -> list[dict[str, str]]:
    with open(run / "metrics.csv", newline="") as handle:
        return [{k: v for k, v in row.items() if k != "seconds"} for row in csv.DictReader(handle)]


def _train_outputs(run: Path) -> dict[str, object]:
    return {
        "last": _checkpoint_state(run / "checkpoints" / "last.pt"),
        "best": _checkpoint_state(run / "checkpoints" / "best.pt"),
        "metrics": _metrics(run),
    }


def test_train_killed_then_resumed_equals_the_uninterrupted_run(tiny_data: Path, tmp_path: Path) -> None:
    from mriad.train import fit

    run = tmp_path / "run"
    command = mriad_command(
        "--seed", 5, "train", "--model", "pddpm", "--data", tiny_data, "--out", run,
        "--epochs", EPOCHS, "--val-every", VAL_EVERY, *TINY_SETS,
    )  # fmt: skip
    reference, killed = _reference_then_kill(
        command,
        lock=run / LOCK_NAME,
        workspace=tmp_path,
        reset=lambda: shutil.rmtree(run, ignore_errors=True),
        keep=lambda: _train_outputs(run),
    )
    assert_whole_files(run)
    # The rerun: what a user types after the crash.
    options = {**TINY_PDDPM, "epochs": EPOCHS, "val_every": VAL_EVERY}
    result = fit("pddpm", data=tiny_data, out=run, options=options, device="cpu", seed=5, resume=True)
    assert result.finished, killed.describe()
    _assert_same(reference, _train_outputs(run), f"run ({killed.describe()})")
    assert not (run / LOCK_NAME).exists() and temporaries(run) == [], killed.describe()


# ---- reconstruct ---------------------------------------------------------------------------------------
def test_reconstruct_killed_then_rerun_equals_the_uninterrupted_run(run_copy, tmp_path: Path) -> None:
    from mriad.reconstruct import reconstruct

    run = run_copy(recon=False)
    out = run / "recon" / "brats-test"
    # Two volumes per batch: a kill between the two subjects of a group leaves the group half done.
    command = mriad_command("reconstruct", "--run", run, "--split", "brats-test", "--volumes-per-batch", 2)
    reference, killed = _reference_then_kill(
        command,
        lock=out / LOCK_NAME,
        workspace=tmp_path,
        reset=lambda: shutil.rmtree(run / "recon", ignore_errors=True),
        keep=lambda: snapshot(out, ["*.nii.gz"]),
    )
    assert len(reference) == 12  # type: ignore[arg-type]
    assert_whole_files(run / "recon")
    result = reconstruct(run, "brats-test", volumes_per_batch=2)
    assert not result.failures, killed.describe()
    assert snapshot(out, ["*.nii.gz"]) == reference, killed.describe()
    assert not (out / LOCK_NAME).exists() and temporaries(out) == [], killed.describe()


def test_a_half_done_group_is_recomputed_whole(run_copy) -> None:
    """Deterministic companion of the kill test: a group of two with one subject done is redone with the
    group's noise, so the missing subject gets the bytes an uninterrupted run gives it."""
    from mriad.reconstruct import reconstruct

    run = run_copy(recon=False)
    out = run / "recon" / "brats-test"
    reconstruct(run, "brats-test", volumes_per_batch=2)
    reference = snapshot(out, ["*.nii.gz"])
    (out / "BRATS013_score.nii.gz").unlink()  # BRATS012 + BRATS013 form group 0
    (out / "BRATS016_rec.nii.gz").unlink()  # BRATS016 + BRATS017 form group 2
    result = reconstruct(run, "brats-test", volumes_per_batch=2)
    assert sorted(result.written) == ["BRATS013", "BRATS016"]
    assert snapshot(out, ["*.nii.gz"]) == reference


# ---- evaluate ------------------------------------------------------------------------------------------
def test_evaluate_killed_then_rerun_equals_the_uninterrupted_run(run_copy, tmp_path: Path) -> None:
    from mriad.evaluate import evaluate

    run = run_copy(recon=True)
    out = run / "eval" / "brats-test"
    command = mriad_command("evaluate", "--run", run, "--split", "brats-test")
    reference, killed = _reference_then_kill(
        command,
        lock=out / LOCK_NAME,
        workspace=tmp_path,
        reset=lambda: shutil.rmtree(run / "eval", ignore_errors=True),
        keep=lambda: snapshot(out, ["*.csv", "*.json"]),
    )
    assert set(reference) == {"per_subject.csv", "summary.json"}  # type: ignore[arg-type]
    assert_whole_files(run / "eval")
    evaluate(run, "brats-test", device="cpu")
    assert snapshot(out, ["*.csv", "*.json"]) == reference, killed.describe()
    assert sorted(p.name for p in (out / "figures").iterdir()) == ["examples.png", "pr_curve.png"]
    assert_whole_files(out)
    assert not (out / LOCK_NAME).exists() and temporaries(out) == [], killed.describe()


# ---- preprocess ----------------------------------------------------------------------------------------
def test_preprocess_killed_then_rerun_equals_the_uninterrupted_run(raw_brats: Path, tmp_path: Path) -> None:
    from mriad.preprocess import preprocess

    out = tmp_path / "out"
    patterns = ["*.nii.gz", "manifest.csv", "failures.csv"]
    command = mriad_command("preprocess", raw_brats, out, "-d", "brats21", "--no-n4")
    reference, killed = _reference_then_kill(
        command,
        lock=out / LOCK_NAME,
        workspace=tmp_path,
        reset=lambda: shutil.rmtree(out, ignore_errors=True),
        keep=lambda: snapshot(out, patterns),
    )
    assert len(reference) == 2 * 3 + 2  # type: ignore[arg-type]
    assert_whole_files(out)
    result = preprocess(raw_brats, out, dataset="brats21", n4=False)
    assert result.ok and len(result.done) + len(result.skipped) == 2, killed.describe()
    assert snapshot(out, patterns) == reference, killed.describe()
    assert_whole_files(out)
    assert not (out / LOCK_NAME).exists() and temporaries(out) == [], killed.describe()
