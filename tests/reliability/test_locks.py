"""Two writers on one folder: every stage that writes a folder holds a lock file in it.

A second process is refused with one line naming the holder's pid; a lock left by a dead process
(kill -9, power loss) is detected (the flock on its lock file died with it) and taken over. Checked for the five
writing stages: train (the run folder), reconstruct (recon/<split>), evaluate (eval/<split>),
preprocess (OUT) and synth (OUT); and once with two real concurrent `mriad train` processes.
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from reliability_helpers import TINY_SETS, assert_one_line_error, files_under, mriad_command, mriad_env

from mriad.infra.locking import LOCK_NAME

HOLD = (
    "import os, sys, time\n"
    "from mriad.infra.locking import folder_lock\n"
    "with folder_lock(sys.argv[1], 'test holder'):\n"
    "    print('locked', flush=True)\n"
    "    if sys.argv[2] == 'die':\n"
    "        os.kill(os.getpid(), 9)  # dies holding the lock, as a kill -9 would leave it\n"
    "    time.sleep(120)\n"
)


def _holder(folder: Path, mode: str) -> subprocess.Popen:
    """A real process that takes ``folder``'s lock and keeps it (``hold``) or dies with it (``die``)."""
    process = subprocess.Popen(
        [sys.executable, "-c", HOLD, str(folder), mode],
        stdout=subprocess.PIPE,
        text=True,
        env=mriad_env(folder.parent),
        cwd=folder.parent,
    )
    assert process.stdout is not None and process.stdout.readline().strip() == "locked"
    if mode == "die":
        process.wait(timeout=30)
    return process


@pytest.fixture
def hold() -> Iterator[Callable[[Path], int]]:
    """``hold(folder)``: a live process holds the folder's lock; returns its pid."""
    processes: list[subprocess.Popen] = []

    def start(folder: Path) -> int:
        folder.mkdir(parents=True, exist_ok=True)
        processes.append(_holder(folder, "hold"))
        return processes[-1].pid

    yield start
    for process in processes:
        process.kill()
        process.wait()


def _dead_lock(folder: Path) -> Path:
    """The lock file a process killed with -9 while holding ``folder`` leaves behind."""
    folder.mkdir(parents=True, exist_ok=True)
    _holder(folder, "die")
    assert (folder / LOCK_NAME).exists()
    return folder / LOCK_NAME


def _train(run_copy, data_copy: Path, tmp_path: Path, source: Path | None) -> tuple[Path, list[str]]:
    run = tmp_path / "run"
    args = [
        "--device",
        "cpu",
        "train",
        "--model",
        "pddpm",
        "--data",
        data_copy,
        "--out",
        run,
        "--epochs",
        "1",
        *TINY_SETS,
    ]
    return run, args


def _reconstruct(run_copy, data_copy: Path, tmp_path: Path, source: Path | None) -> tuple[Path, list[str]]:
    run = run_copy(recon=False)
    return run / "recon" / "brats-test", ["--device", "cpu", "reconstruct", "--run", run, "--split", "brats-test"]


def _evaluate(run_copy, data_copy: Path, tmp_path: Path, source: Path | None) -> tuple[Path, list[str]]:
    run = run_copy(recon=True)
    return run / "eval" / "brats-test", [
        "--device",
        "cpu",
        "evaluate",
        "--run",
        run,
        "--split",
        "brats-test",
        "--no-figures",
    ]


def _preprocess(run_copy, data_copy: Path, tmp_path: Path, source: Path | None) -> tuple[Path, list[str]]:
    assert source is not None
    out = tmp_path / "out"
    return out, ["preprocess", source, out, "-d", "brats21", "--no-n4", "--no-qc"]


def _synth(run_copy, data_copy: Path, tmp_path: Path, source: Path | None) -> tuple[Path, list[str]]:
    out = tmp_path / "synth"
    return out, ["synth", out, "--healthy", "0", "--lesions", "1", "--preprocessed"]


# Stage -> how to run it on a fresh target: (the folder it locks, its command line).
STAGES: dict[str, Callable[..., tuple[Path, list[str]]]] = {
    "train": _train,
    "reconstruct": _reconstruct,
    "evaluate": _evaluate,
    "preprocess": _preprocess,
    "synth": _synth,
}


@pytest.fixture
def raw_case(raw_brats: Path, tmp_path: Path) -> Path:
    """A raw folder with one BraTS case (for the preprocess rows)."""
    import shutil

    case = sorted(p for p in raw_brats.iterdir() if p.is_dir())[0]
    shutil.copytree(case, tmp_path / "raw" / case.name)
    return tmp_path / "raw"


@pytest.mark.parametrize("name", list(STAGES))
def test_a_live_holder_refuses_the_second_writer(
    name: str, cli, run_copy, data_copy: Path, tmp_path: Path, hold, request: pytest.FixtureRequest
) -> None:
    source = request.getfixturevalue("raw_case") if name == "preprocess" else None
    folder, args = STAGES[name](run_copy, data_copy, tmp_path, source)
    before = files_under(folder)
    live_pid = hold(folder)
    lock = folder / LOCK_NAME
    result = cli(*args)
    assert result.exit_code == 1, result.output
    assert_one_line_error(result.output, str(folder), str(live_pid))
    assert lock.exists() and str(live_pid) in lock.read_text()  # the holder's lock is left alone
    assert set(files_under(folder)) - set(before) <= {LOCK_NAME}, "the refused writer wrote something"


@pytest.mark.parametrize("name", list(STAGES))
def test_a_dead_holders_lock_is_taken_over(
    name: str, cli, run_copy, data_copy: Path, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    source = request.getfixturevalue("raw_case") if name == "preprocess" else None
    folder, args = STAGES[name](run_copy, data_copy, tmp_path, source)
    lock = _dead_lock(folder)
    (folder / ".summary.x1y2.tmp.json").write_text('{"half')  # what the dead writer was writing
    result = cli(*args)
    assert result.exit_code == 0, result.output
    assert not lock.exists()
    assert not (folder / ".summary.x1y2.tmp.json").exists(), "the dead writer's temporary was left"


def test_two_real_train_processes_on_one_run_folder(cli, tiny_data: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    args = ["train", "--model", "pddpm", "--data", tiny_data, "--out", run, "--epochs", "6", *TINY_SETS]
    first = subprocess.Popen(
        mriad_command(*args), env=mriad_env(tmp_path), cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    try:
        deadline = time.monotonic() + 60
        while not (run / LOCK_NAME).exists():
            assert first.poll() is None, first.stderr.read().decode() if first.stderr else ""
            assert time.monotonic() < deadline
            time.sleep(0.01)
        second = cli("--device", "cpu", *args)
        assert second.exit_code == 1
        assert_one_line_error(second.output, str(run), f"in use by process {first.pid}")
    finally:
        first.wait(timeout=120)
    assert first.returncode == 0, first.stderr.read().decode() if first.stderr else ""
    assert (run / "checkpoints" / "last.pt").is_file() and not (run / LOCK_NAME).exists()


RACE = (
    "import sys, time\n"
    "from pathlib import Path\n"
    "from mriad.infra.errors import LockError\n"
    "from mriad.infra.locking import folder_lock\n"
    "go = Path(sys.argv[2])\n"
    "print('ready', flush=True)\n"
    "while not go.exists():\n"
    "    time.sleep(0.001)\n"
    "try:\n"
    "    with folder_lock(sys.argv[1], 'racer'):\n"
    "        print('got', flush=True)\n"
    "        time.sleep(3)\n"
    "except LockError:\n"
    "    print('refused', flush=True)\n"
)


def test_racing_for_a_stale_lock_lets_exactly_one_through(tmp_path: Path) -> None:
    """Several processes find the same dead lock at the same moment: one takes it over, the others are
    refused (taking over is not 'delete, then create', which would let two through)."""
    folder = tmp_path / "out"
    _dead_lock(folder)
    go = tmp_path / "go"
    racers = [
        subprocess.Popen(
            [sys.executable, "-c", RACE, str(folder), str(go)],
            stdout=subprocess.PIPE,
            text=True,
            env=mriad_env(tmp_path),
            cwd=tmp_path,
        )
        for _ in range(5)
    ]
    for process in racers:  # every racer has imported and waits at the start line
        assert process.stdout is not None and process.stdout.readline().strip() == "ready"
    go.touch()
    outcomes = sorted(process.communicate(timeout=60)[0].strip() for process in racers)
    assert outcomes == ["got", "refused", "refused", "refused", "refused"], outcomes
    assert not (folder / LOCK_NAME).exists()


def test_a_dead_lock_whose_pid_was_reused_is_still_taken_over(tmp_path: Path) -> None:
    """After a crash the dead holder's pid may belong to an unrelated live process (pids are reused).
    Liveness comes from the lock's flock, which died with its holder, so the lock is still free."""
    from mriad.infra.locking import folder_lock

    unrelated = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        folder = tmp_path / "out"
        folder.mkdir()
        stale = {"pid": unrelated.pid, "host": socket.gethostname(), "purpose": "train", "since": 0}
        (folder / LOCK_NAME).write_text(json.dumps(stale))
        with folder_lock(folder, "test") as path:
            assert json.loads(path.read_text())["pid"] != unrelated.pid
    finally:
        unrelated.kill()
        unrelated.wait()
    assert not (folder / LOCK_NAME).exists()
