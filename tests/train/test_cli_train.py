"""`mriad train` on the command line: model help, a tiny run, refusals."""

from __future__ import annotations

import json
from pathlib import Path

TINY_FLAGS = [
    "--channels", "8", "--patch-size", "16", "--batch-size", "4", "--epochs", "2", "--val-every", "1",
    "--set", "channel_mult=1,2", "--set", "num_res_blocks=1", "--set", "groups=4", "--set", "head_channels=16",
    "--set", "octaves=3", "--set", "frequency=16",
]  # fmt: skip


def test_help_with_model_shows_its_defaults(cli) -> None:
    result = cli("train", "--model", "pddpm", "--help")
    assert result.exit_code == 0
    for text in ("Model pddpm", "patch_size", "48", "Behrendt", "1e-05", "reference code"):
        assert text in result.output, text
    plain = cli("train", "--help")
    assert plain.exit_code == 0 and "--model NAME" in plain.output and "Model pddpm" not in plain.output


def test_tiny_run_writes_a_run_folder(cli, tiny_manifest: Path, tmp_path: Path) -> None:
    out = tmp_path / "runs" / "tiny"
    result = cli("--device", "cpu", "train", "--model", "pddpm", "--data", tiny_manifest, "--out", out, *TINY_FLAGS)
    assert result.exit_code == 0, result.output
    assert "--fold defaults to 0" in result.output
    assert (out / "config.json").is_file() and (out / "metrics.csv").is_file()
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["best.pt", "last.pt"]
    options = json.loads((out / "config.json").read_text())["options"]
    assert options["base_channels"] == 8 and options["channel_mult"] == [1, 2] and options["frequency"] == 16.0
    # the workspace remembers the run for later stages
    from mriad.infra.workspace import latest_run

    assert latest_run() == out.resolve()
    # running again without --resume is refused; with --resume the finished run is left as it is
    again = cli("--device", "cpu", "train", "--model", "pddpm", "--data", tiny_manifest, "--out", out, *TINY_FLAGS)
    assert again.exit_code == 1 and "--resume" in again.output
    resumed = cli(
        "--device", "cpu", "train", "--model", "pddpm", "--data", tiny_manifest, "--out", out, "--resume", *TINY_FLAGS
    )
    assert resumed.exit_code == 0 and "already finished" in resumed.output


def test_run_of_another_model_is_refused(cli, tiny_manifest: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    out.mkdir()
    (out / "config.json").write_text(json.dumps({"model": "ae", "options": {}}))
    result = cli("--device", "cpu", "train", "--model", "pddpm", "--data", tiny_manifest, "--out", out)
    assert result.exit_code == 1
    assert "holds a run of model 'ae'" in result.output
    assert sorted(p.name for p in out.iterdir()) == ["config.json"]


def test_bad_options_are_one_line_errors(cli, tiny_manifest: Path, tmp_path: Path) -> None:
    base = ["--device", "cpu", "train", "--model", "pddpm", "--data", tiny_manifest, "--out", tmp_path / "r"]
    # Values the option parser refuses are usage errors (exit 2); conflicts found later exit 1.
    result = cli(*base, "--set", "nonsense=1")
    assert result.exit_code == 2 and "pddpm has no option 'nonsense'" in result.output
    result = cli(*base, "--set", "patch_size=3", "--patch-size", "4")
    assert result.exit_code == 1 and "already given" in result.output
    result = cli(*base, "--loss", "l2")
    assert result.exit_code == 2 and "'l2' is not one of patch, full" in result.output
