"""Reading a run folder as `mriad train` leaves it (see docs/CONTRACTS.md): one reader for every stage."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from mriad.infra.errors import InputError


def read_run_config(run: str | Path) -> dict[str, Any]:
    """The run's ``config.json``; a folder without one, or a file that is not a JSON object with a
    ``model`` entry, is refused with one line naming it."""
    run = Path(run)
    path = run / "config.json"
    if not path.is_file():
        raise InputError(run, "not a run folder (no config.json); create one with `mriad train`")
    try:
        config = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(path, f"unreadable run config ({type(exc).__name__})") from None
    except json.JSONDecodeError as exc:
        raise InputError(path, f"not valid JSON (line {exc.lineno}: {exc.msg})") from None
    if not isinstance(config, dict):
        raise InputError(path, "expected a JSON object")
    if not config.get("model"):
        raise InputError(path, 'has no "model" entry')
    return config


def resolve_manifest(run: str | Path, config: dict[str, Any], data: str | Path | None) -> Path:
    """``--data`` if given, else the run's recorded manifest (relative to the cwd or the run), else the
    workspace's."""
    if data is not None:
        return Path(data)
    recorded = config.get("data")
    if not recorded:
        from mriad.infra.workspace import default_manifest

        return default_manifest()
    path = Path(recorded)
    if not path.is_absolute() and not path.is_file() and (Path(run) / path).is_file():
        path = Path(run) / path
    return path
