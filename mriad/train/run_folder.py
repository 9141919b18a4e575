"""The run folder a training writes: config.json, metrics.csv, checkpoints/{last,best}.pt.

Everything is written atomically (a crash leaves the previous version, never half a file), and an
existing run is never silently overwritten: continuing it needs ``--resume``, replacing it ``--force``.
"""

from __future__ import annotations

import csv
import datetime as _dt
import json
import platform
import shutil
import subprocess
from pathlib import Path
from typing import Any

import torch

from mriad.infra.errors import MriadError
from mriad.infra.io import atomic_torch_save, atomic_write_json, atomic_write_text, safe_torch_load

METRIC_COLUMNS = ["epoch", "step", "train_loss", "val_loss", "seconds"]
# Files a run owns; --force removes exactly these (and the outputs derived from the old weights).
_RUN_FILES = ("config.json", "metrics.csv")
_RUN_DIRS = ("checkpoints", "recon", "eval")
_IGNORED = {".mriad.lock"}


class RunFolder:
    def __init__(self, root: Path):
        self.root = Path(root)
        self.config = self.root / "config.json"
        self.metrics = self.root / "metrics.csv"
        self.checkpoints = self.root / "checkpoints"
        self.last = self.checkpoints / "last.pt"
        self.best = self.checkpoints / "best.pt"

    def read_config(self) -> dict[str, Any] | None:
        if not self.config.is_file():
            return None
        try:
            return json.loads(self.config.read_text())
        except (OSError, json.JSONDecodeError):
            raise MriadError(f"{self.config}: unreadable run configuration; use --force to start over") from None

    def describe(self) -> str:
        """ "finished at epoch 1600" / "stopped at epoch 12, step 140" / "without a checkpoint"."""
        if not self.last.is_file():
            return "without a checkpoint"
        state = safe_torch_load(self.last)
        epochs = int(state.get("config", {}).get("epochs", 0))
        if int(state.get("epoch", 0)) >= epochs > 0:
            return f"finished at epoch {state['epoch']}"
        return f"stopped at epoch {state.get('epoch')}, step {state.get('step')}"

    def clear(self) -> None:
        for name in _RUN_FILES:
            (self.root / name).unlink(missing_ok=True)
        for name in _RUN_DIRS:
            shutil.rmtree(self.root / name, ignore_errors=True)


def check_out_folder(run: RunFolder, model: str, *, resume: bool, force: bool) -> dict[str, Any] | None:
    """Decide what may happen to ``run``; returns the existing config when resuming, else None.

    Refused: a run of another model (always), an existing run without --resume/--force, a non-empty
    folder that is not a run folder (it may be anything, e.g. data).
    """
    if not run.root.exists():
        return None
    if not run.root.is_dir():
        raise MriadError(f"{run.root}: exists and is not a folder; choose another --out")
    config = run.read_config()
    if config is None:
        others = [p.name for p in run.root.iterdir() if p.name not in _IGNORED]
        if others:
            raise MriadError(f"{run.root}: not empty and not a run folder (no config.json); choose another --out")
        return None
    if config.get("model") != model:
        raise MriadError(
            f"{run.root}: holds a run of model {config.get('model')!r}, not {model!r}; choose another --out"
        )
    if force:
        run.clear()
        return None
    if resume:
        return config
    raise MriadError(
        f"{run.root}: already holds a {model} run ({run.describe()}); pass --resume to continue it, "
        "--force to start over, or choose another --out"
    )


def git_commit() -> str | None:
    """The commit of mriad's source tree, if it is a git checkout (best effort, never fails)."""
    source = Path(__file__).resolve().parents[2]
    try:
        result = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=source, capture_output=True, text=True, timeout=5, check=False
        )
    except (OSError, subprocess.SubprocessError):
        return None
    commit = result.stdout.strip()
    return commit if result.returncode == 0 and len(commit) == 40 else None


def versions() -> dict[str, str]:
    from mriad import __version__

    return {"mriad": __version__, "torch": torch.__version__, "python": platform.python_version()}


def write_config(
    run: RunFolder,
    *,
    model: str,
    fold: int,
    data: Path,
    options: dict[str, Any],
    seed: int,
    dataset: str,
    created: str | None = None,
    extra: dict[str, Any] | None = None,
) -> dict[str, Any]:
    config = {
        "model": model,
        "fold": fold,
        "data": str(Path(data).resolve()),
        "options": options,
        "versions": versions(),
        "git_commit": git_commit(),
        "created": created or _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
        "seed": seed,
        "dataset": dataset,
        **(extra or {}),
    }
    atomic_write_json(run.config, config)
    return config


def read_metrics(run: RunFolder) -> list[dict[str, str]]:
    if not run.metrics.is_file():
        return []
    with open(run.metrics, newline="") as handle:
        return list(csv.DictReader(handle))


def write_metrics(run: RunFolder, rows: list[dict[str, Any]]) -> None:
    lines = [",".join(METRIC_COLUMNS)]
    for row in rows:
        lines.append(",".join(_cell(row.get(column)) for column in METRIC_COLUMNS))
    atomic_write_text(run.metrics, "\n".join(lines) + "\n")


def _cell(value: Any) -> str:
    if value is None or value == "":
        return ""
    if isinstance(value, float):
        return repr(value)  # shortest exact form: resumed and uninterrupted runs compare equal
    return str(value)


def save_checkpoint(path: Path, payload: dict[str, Any]) -> None:
    atomic_torch_save(path, payload)
