"""Helpers of the reliability tests: a tiny lesion data set, subprocess kills, whole-file checks.

Imported by name (pytest puts this folder on ``sys.path``). Everything here is small on purpose: the
whole reliability suite must run in a couple of minutes on two shared CPU cores.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import re
import secrets
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[2]
SIZE, DEPTH = 32, 8
AFFINE = np.diag([2.0, 2.0, 2.0, 1.0])
TEMPORARY = re.compile(r"^\..*\.tmp")  # what mriad.infra.io.atomic_path names a file while it is written

# A pDDPM small enough that a CPU step takes milliseconds (32x32 slices, 16x16 boxes -> 4 boxes).
TINY_PDDPM = {
    "base_channels": 8,
    "channel_mult": "1,2",
    "num_res_blocks": 1,
    "groups": 4,
    "head_channels": 16,
    "patch_size": 16,
    "batch_size": 4,
    "octaves": 3,
    "frequency": 16.0,
    "lr": 1e-3,
}
TINY_SETS = [arg for key, value in TINY_PDDPM.items() for arg in ("--set", f"{key}={value}")]


def _volume(rng: np.random.Generator, lesion: bool) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """An ellipsoidal 'brain' of smooth intensities, 0 outside; lesion subjects get a bright blob."""
    x, y, z = np.meshgrid(*(np.linspace(-1, 1, n) for n in (SIZE, SIZE, DEPTH)), indexing="ij")
    a, b = rng.uniform(0.7, 0.85, 2)
    mask = (x / a) ** 2 + (y / b) ** 2 + (z / 1.3) ** 2 < 1
    mask[:, :, 0] = mask[:, :, -1] = False
    ring = np.sqrt(x**2 + y**2)
    image = 0.5 + 0.25 * np.cos(6 * ring + rng.uniform(0, 1)) + 0.03 * rng.standard_normal(x.shape)
    seg = None
    if lesion:
        cx, cy = rng.uniform(-0.3, 0.3, 2)
        seg = ((x - cx) ** 2 + (y - cy) ** 2 < 0.05) & (np.abs(z) < 0.6) & mask
        image = np.where(seg, 0.95, image)
    return (np.clip(image, 0, 1) * mask).astype(np.float32), mask.astype(np.uint8), seg


def write_tiny_dataset(root: Path, brats_test: int = 6) -> Path:
    """32x32x8 volumes: 8 IXI trainval (folds 0-3), 2 IXI test, 2 BraTS val, ``brats_test`` BraTS test."""
    from mriad.contracts.manifest import write_manifest
    from mriad.infra.io import write_nifti

    rng = np.random.default_rng(0)
    plan = [("ixi", "trainval", i % 4, 0) for i in range(8)] + [("ixi", "test", "", 0)] * 2
    plan += [("brats", "val", "", 1)] * 2 + [("brats", "test", "", 1)] * brats_test
    rows = []
    for i, (dataset, split, fold, label) in enumerate(plan):
        sid = f"{dataset.upper()}{i:03d}"
        image, mask, seg = _volume(rng, bool(label))
        folder = root / dataset / sid
        write_nifti(folder / "image.nii.gz", image, AFFINE)
        write_nifti(folder / "mask.nii.gz", mask, AFFINE, dtype=np.uint8)
        if seg is not None:
            write_nifti(folder / "seg.nii.gz", seg.astype(np.uint8), AFFINE, dtype=np.uint8)
        rows.append(
            {
                "subject_id": sid,
                "dataset": dataset,
                "split": split,
                "fold": fold,
                "label": label,
                "image": str(folder / "image.nii.gz"),
                "mask": str(folder / "mask.nii.gz"),
                "seg": str(folder / "seg.nii.gz") if seg is not None else "",
                "age": "",
                "sex": "",
                "source": "tiny",
            }
        )
    return write_manifest(pd.DataFrame(rows), root / "manifest.csv")


def tiny_fit(manifest: Path, out: Path, *, epochs: int = 2, val_every: int = 1, seed: int = 0, **kwargs) -> Path:
    """Train the tiny pDDPM in-process (no CLI start-up cost)."""
    from mriad.train import fit

    options = {**TINY_PDDPM, "epochs": epochs, "val_every": val_every}
    return fit("pddpm", data=manifest, out=out, options=options, device="cpu", seed=seed, **kwargs).out


# ---- subprocesses and kill -9 ----------------------------------------------------------------------
def mriad_env(workspace: Path) -> dict[str, str]:
    """Environment of a `python -m mriad` child: this checkout, its own workspace, one thread."""
    return {
        **os.environ,
        "MRIAD_WORKSPACE": str(workspace),
        "PYTHONPATH": str(ROOT),
        "OMP_NUM_THREADS": "1",
        "MKL_NUM_THREADS": "1",
    }


def mriad_command(*args: object) -> list[str]:
    return [sys.executable, "-m", "mriad", "--device", "cpu", "--hide-progress", *(str(a) for a in args)]


def kill_seed() -> int:
    """The seed of the random kill points: ``MRIAD_KILL_SEED`` to replay a failure, else fresh."""
    value = os.environ.get("MRIAD_KILL_SEED")
    return int(value) if value else secrets.randbelow(2**31)


@dataclass
class Killed:
    returncode: int
    delay: float  # seconds after the stage took its lock
    seed: int
    stderr: str

    @property
    def by_signal(self) -> bool:
        return self.returncode == -signal.SIGKILL

    def describe(self) -> str:
        return f"kill {self.delay:.2f} s after the lock (MRIAD_KILL_SEED={self.seed}); rc {self.returncode}"


def _run_until(
    command: list[str],
    *,
    started: Callable[[], bool],
    workspace: Path,
    kill_after: float | None,
    timeout_s: float,
) -> tuple[int, float, str]:
    """Run ``command``; once ``started()`` holds, wait ``kill_after`` seconds and SIGKILL it (None: let
    it finish). Returns (return code, seconds of work, stderr): without a kill, the work lasts from
    ``started()`` becoming true until it is false again (the lock released) or the process ends."""
    process = subprocess.Popen(
        command, env=mriad_env(workspace), cwd=workspace, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    deadline = time.monotonic() + timeout_s
    began: float | None = None
    ended = 0.0
    try:
        while not started():
            if process.poll() is not None:
                break
            if time.monotonic() > deadline:
                raise AssertionError(f"{command}: never started its work within {timeout_s} s")
            time.sleep(0.002)
        began = time.monotonic()
        if kill_after is not None and process.poll() is None:
            time.sleep(kill_after)
            if process.poll() is None:
                os.kill(process.pid, signal.SIGKILL)
        elif kill_after is None:
            while started() and process.poll() is None:  # the work ends when the lock is released
                time.sleep(0.002)
            ended = time.monotonic()
        process.wait(timeout=timeout_s)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    stderr = process.stderr.read().decode(errors="replace") if process.stderr else ""
    if began is None:
        return process.returncode, 0.0, stderr
    return process.returncode, (ended if kill_after is None else time.monotonic()) - began, stderr


def timed_run(command: list[str], *, started: Callable[[], bool], workspace: Path, timeout_s: float = 180.0) -> float:
    """Run ``command`` to the end (the reference run); returns the seconds of work after ``started()``."""
    returncode, seconds, stderr = _run_until(
        command, started=started, workspace=workspace, kill_after=None, timeout_s=timeout_s
    )
    assert returncode == 0, f"{command} failed:\n{stderr}"
    return seconds


def kill_at_random_point(
    command: list[str],
    *,
    started: Callable[[], bool],
    window: tuple[float, float],
    workspace: Path,
    seed: int,
    timeout_s: float = 180.0,
) -> Killed:
    """Start ``command``, wait until ``started()`` (the stage holds its lock: imports are over), then
    SIGKILL it after a random delay drawn uniformly from ``window`` (seconds); returns how it ended.
    """
    delay = random.Random(seed).uniform(*window)
    returncode, _, stderr = _run_until(
        command, started=started, workspace=workspace, kill_after=delay, timeout_s=timeout_s
    )
    return Killed(returncode, delay, seed, stderr)


# ---- what is on disk --------------------------------------------------------------------------------
def temporaries(folder: Path) -> list[Path]:
    return sorted(p for p in Path(folder).rglob("*") if p.is_file() and TEMPORARY.match(p.name))


def assert_whole_files(folder: Path) -> list[Path]:
    """Every file under its final name must be complete and readable; returns the temporaries.

    NIfTI files are read voxel by voxel (a truncated gzip fails), JSON and CSV parsed, checkpoints
    loaded (weights only), PNG decoded. Temporaries (``.name.XXXX.tmp...``) may be partial: that is
    what they are for.
    """
    import gzip

    import nibabel as nib

    from mriad.infra.io import safe_torch_load

    leftovers = []
    for path in sorted(Path(folder).rglob("*")):
        if not path.is_file():
            continue
        if TEMPORARY.match(path.name):
            leftovers.append(path)
            continue
        name = path.name
        try:
            if name.endswith(".nii.gz"):
                with gzip.open(path) as handle:
                    handle.read()  # CRC and length are checked at the end of the stream
                np.asarray(nib.load(str(path)).dataobj)
            elif name.endswith(".json"):
                json.loads(path.read_text())
            elif name.endswith(".csv"):
                pd.read_csv(path)
            elif name.endswith(".pt"):
                safe_torch_load(path)
            elif name.endswith(".png"):
                from PIL import Image

                with Image.open(path) as image:
                    image.load()
        except Exception as exc:  # noqa: BLE001 - any failure means a half-written file
            raise AssertionError(f"{path} is not whole: {type(exc).__name__}: {exc}") from None
    return leftovers


def snapshot(folder: Path, patterns: Iterable[str]) -> dict[str, str]:
    """Relative path -> SHA-256 of the files matching ``patterns`` (glob, recursive) under ``folder``.

    Digests, not bytes: equal digests mean equal bytes, and a failing comparison prints short strings
    instead of making pytest diff megabytes of gzip.
    """
    folder = Path(folder)
    files: dict[str, str] = {}
    for pattern in patterns:
        for path in folder.rglob(pattern):
            if path.is_file() and not TEMPORARY.match(path.name):
                files[path.relative_to(folder).as_posix()] = hashlib.sha256(path.read_bytes()).hexdigest()
    return dict(sorted(files.items()))


def error_lines(output: str) -> list[str]:
    return [line for line in output.splitlines() if line.startswith("error:")]


def assert_one_line_error(output: str, *fragments: str) -> str:
    """Exactly one ``error:`` line, holding every fragment (the file, the problem)."""
    lines = error_lines(output)
    assert len(lines) == 1, f"expected one error line, got {lines!r} in:\n{output}"
    for fragment in fragments:
        assert fragment in lines[0], f"{fragment!r} not in {lines[0]!r}"
    return lines[0]


def files_under(folder: Path) -> list[str]:
    folder = Path(folder)
    if not folder.exists():
        return []
    return sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file())
