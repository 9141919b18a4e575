"""The workspace remembers the last manifest and where runs live, so short commands work.

The workspace is the current folder, or ``$MRIAD_WORKSPACE``; its settings live in ``.mriad.json``.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from mriad.infra.errors import MriadError
from mriad.infra.io import atomic_write_json

SETTINGS_FILE = ".mriad.json"


def workspace_dir() -> Path:
    return Path(os.environ.get("MRIAD_WORKSPACE", ".")).resolve()


def _settings_path() -> Path:
    return workspace_dir() / SETTINGS_FILE


def load_settings() -> dict:
    path = _settings_path()
    if not path.is_file():
        return {}
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return {}


def remember(**values: object) -> None:
    current = load_settings()
    current.update({k: str(v) if isinstance(v, Path) else v for k, v in values.items()})
    atomic_write_json(_settings_path(), current)


def remember_manifest(path: str | Path) -> None:
    remember(manifest=str(Path(path).resolve()))


def default_manifest() -> Path:
    value = load_settings().get("manifest")
    if not value:
        raise MriadError(
            f"no --data given and the workspace {workspace_dir()} remembers no manifest: "
            "run `mriad preprocess RAW OUT` or `mriad synth OUT` first, or pass --data MANIFEST"
        )
    return Path(value)


def runs_dir() -> Path:
    return Path(load_settings().get("runs_dir") or workspace_dir() / "runs")


def remember_run(path: str | Path) -> None:
    remember(last_run=str(Path(path).resolve()))


def latest_run() -> Path:
    """The run last written by `mriad train`, else the one under runs/ whose config changed last."""
    from mriad.contracts.run_folder import RunFolder

    remembered = load_settings().get("last_run")
    if remembered and RunFolder(remembered).is_run():
        return Path(remembered)
    root = runs_dir()
    candidates = [RunFolder(p) for p in root.glob("*/")] if root.is_dir() else []
    candidates = [run for run in candidates if run.is_run()]
    if not candidates:
        raise MriadError(f"no --run given and no run found under {root}: run `mriad train` first")
    return max(candidates, key=lambda run: run.config.stat().st_mtime).root
