from __future__ import annotations

import json
from pathlib import Path

import pytest

from mriad.infra import workspace
from mriad.infra.errors import MriadError


def test_workspace_remembers_manifest_and_runs(tmp_path: Path, _isolated_workspace: Path) -> None:
    with pytest.raises(MriadError, match="mriad preprocess"):
        workspace.default_manifest()
    manifest = tmp_path / "m.csv"
    manifest.write_text("x")
    workspace.remember_manifest(manifest)
    assert workspace.default_manifest() == manifest.resolve()
    with pytest.raises(MriadError, match="mriad train"):
        workspace.latest_run()
    for name in ("a", "b"):
        run = _isolated_workspace / "runs" / name
        run.mkdir(parents=True)
        (run / "config.json").write_text(json.dumps({"model": "thresh"}))
    assert workspace.latest_run().name in {"a", "b"}
    workspace.remember_run(_isolated_workspace / "runs" / "a")
    assert workspace.latest_run().name == "a"
