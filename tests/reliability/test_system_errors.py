"""What the file system refuses, and what a checkpoint carries, is one line naming the path (issue 14,
"Also"): a symlink loop, a full disk, a read-only file system, a denied permission; a checkpoint whose
stored config cannot build its model. Failures the tests cannot cause for real on a shared machine
(a full disk; permissions, since tests may run as root) are raised by the system call they would
come from.
"""

from __future__ import annotations

import errno
import os
from pathlib import Path

import pytest
import torch
from reliability_helpers import assert_one_line_error, snapshot

THRESH = ("--device", "cpu", "--hide-progress", "train", "--model", "thresh")


def test_a_symlink_loop_as_output_folder_is_one_line(cli, data_copy: Path, tmp_path: Path) -> None:
    loop = tmp_path / "loop"
    loop.symlink_to(loop)
    before = snapshot(tmp_path, ["*"])
    result = cli(*THRESH, "--data", data_copy, "--out", loop / "run")
    assert result.exit_code == 1, result.output
    assert_one_line_error(result.output, str(loop / "run"), "Too many levels of symbolic links")
    assert snapshot(tmp_path, ["*"]) == before


@pytest.mark.parametrize(
    ("call", "code", "text"),
    [
        ("fsync", errno.ENOSPC, "No space left on device"),
        ("replace", errno.EROFS, "Read-only file system"),
        ("mkstemp", errno.EACCES, "Permission denied"),
    ],
)
def test_a_refused_write_is_one_line_naming_the_file(
    call: str, code: int, text: str, cli, data_copy: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import tempfile

    def refuse(*args: object, **kwargs: object) -> None:
        raise OSError(code, text)

    target = {"fsync": (os, "fsync"), "replace": (os, "replace"), "mkstemp": (tempfile, "mkstemp")}[call]
    monkeypatch.setattr(*target, refuse)
    out = tmp_path / "runs" / "thresh"
    result = cli(*THRESH, "--data", data_copy, "--out", out)
    monkeypatch.undo()
    assert result.exit_code == 1, result.output
    assert_one_line_error(result.output, str(out / "config.json"), text, errno.errorcode[code])
    leftovers = [p for p in out.rglob("*") if p.is_file() and p.name != ".mriad.lock"] if out.exists() else []
    assert leftovers == [], leftovers  # no half-written file under any name


def test_a_checkpoint_whose_config_cannot_build_its_model_is_one_line(cli, run_copy, tmp_path: Path) -> None:
    run = run_copy(recon=False)
    for name in ("best.pt", "last.pt"):
        path = run / "checkpoints" / name
        state = torch.load(path, weights_only=True)
        state["config"] = {**state["config"], "base_channels": -5}
        torch.save(state, path)
    before = snapshot(tmp_path, ["*"])
    result = cli("--device", "cpu", "--hide-progress", "reconstruct", "--run", run, "--split", "brats-test")
    assert result.exit_code == 1, result.output
    assert_one_line_error(result.output, str(run / "checkpoints" / "best.pt"), "stored config")
    assert snapshot(tmp_path, ["*"]) == before
