"""Every option of every command, fed invalid values (issue 14, defect 7).

The commands and their options are enumerated from the typer app itself, so a new option is covered
the day it is added. Each invalid value must end the command with a non-zero exit, exactly one
``error:`` line that names the option or the value, no traceback, and no file changed anywhere in
the test's folder. Validation happens before any heavy work, so the whole matrix takes seconds.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pytest
import typer
from reliability_helpers import error_lines, snapshot

from mriad.cli import app

# Values no option accepts, by the option's Python type (bool flags, paths and lists are not values).
BAD_VALUES: dict[type, tuple[str, ...]] = {int: ("-3",), float: ("nan", "inf"), str: ("bogus/value",)}
# Options that take any text (checked where used, e.g. a run name), with why they are left out here.
FREE_TEXT = {
    "atlas install": "the positional NAME (only sri24) is checked by the stage",
}


def _commands() -> list[tuple[str, Any]]:
    found: list[tuple[str, Any]] = []

    def walk(command: Any, path: list[str]) -> None:
        found.append((" ".join(path), command))
        for name, sub in (getattr(command, "commands", None) or {}).items():
            walk(sub, [*path, name])

    walk(typer.main.get_command(app), [])
    return found


def _cases() -> list[tuple[str, str, str]]:
    cases = []
    for path, command in _commands():
        for param in command.params:
            names = [n for n in getattr(param, "opts", []) if n.startswith("--")]
            annotation = getattr(getattr(param, "type_descriptor", None), "annotation", None)
            if not names or annotation not in BAD_VALUES or names[0] in ("--help",):
                continue
            for value in BAD_VALUES[annotation]:
                cases.append((path, names[0], value))
    return cases


CASES = _cases()


def test_the_matrix_covers_every_command() -> None:
    commands = {path for path, _, _ in CASES}
    for expected in ("", "train", "reconstruct", "evaluate", "split", "preprocess", "synth", "compare"):
        assert expected in commands, sorted(commands)
    assert len(CASES) > 40


@pytest.fixture
def inputs(tiny_run: Path, tiny_data: Path, tmp_path: Path) -> dict[str, Path]:
    """Copies of the tiny data and run, so that a command that wrongly runs changes only copies."""
    data = tmp_path / "data"
    shutil.copytree(tiny_data.parent, data)
    run = tmp_path / "run"
    shutil.copytree(tiny_run, run)
    raw = tmp_path / "raw"
    raw.mkdir()
    return {"manifest": data / "manifest.csv", "run": run, "raw": raw, "out": tmp_path / "out"}


def _required(command: str, inputs: dict[str, Path]) -> list[str]:
    """Plausible values of a command's required arguments, so that only the option under test is wrong."""
    run, manifest, out = str(inputs["run"]), str(inputs["manifest"]), str(inputs["out"])
    return {
        "": ["split", manifest, "--out", out + ".csv"],
        "synth": [out],
        "split": [manifest, "--out", out + ".csv"],
        "preprocess": [str(inputs["raw"]), out, "--dataset", "ixi"],
        "train": ["--model", "pddpm", "--data", manifest, "--out", out],
        "reconstruct": ["--run", run, "--split", "brats-test"],
        "evaluate": ["--run", run, "--split", "brats-test"],
        "compare": [run, "--split", "brats-test", "--out", out],
        "report": [run, "--out", out + ".html"],
        "detect": [str(inputs["manifest"].parent / "brats" / "BRATS012" / "image.nii.gz"), "--out", out, "--run", run],
        "bundle export": [run, out + ".zip"],
        "bundle import": [out + ".zip", "--to", out],
        "atlas install": ["sri24"],
    }.get(command, [])


def _argv(command: str, option: str, value: str, inputs: dict[str, Path]) -> list[str]:
    base = _required(command, inputs)
    device = [] if option == "--device" else ["--device", "cpu"]
    if command == "":  # a global option goes before the command
        return [*device, "--hide-progress", option, value, *base]
    if option in base:  # the option under test is one of the required ones: replace its value
        base[base.index(option) + 1] = value
    else:
        base += [option, value]
    return [*device, "--hide-progress", *command.split(), *base]


@pytest.mark.parametrize(("command", "option", "value"), CASES, ids=[f"{c or 'mriad'} {o} {v}" for c, o, v in CASES])
def test_an_invalid_value_is_one_line_and_changes_nothing(
    command: str, option: str, value: str, cli, inputs: dict[str, Path], tmp_path: Path
) -> None:
    before = snapshot(tmp_path, ["*"])
    result = cli(*_argv(command, option, value, inputs))
    output = result.output
    assert result.exit_code != 0, f"{option} {value} was accepted:\n{output}"
    assert "Traceback" not in output, output
    lines = error_lines(output)
    assert len(lines) == 1, f"expected one error line, got {lines!r} in:\n{output}"
    assert option in lines[0] or value in lines[0], lines[0]
    assert snapshot(tmp_path, ["*"]) == before


# ---- values that are wrong only in context -----------------------------------------------------------
def _one_line_refusal(cli, tmp_path: Path, args: list[str], *fragments: str) -> None:
    before = snapshot(tmp_path, ["*"])
    result = cli("--device", "cpu", "--hide-progress", *args)
    assert result.exit_code != 0, result.output
    lines = error_lines(result.output)
    assert len(lines) == 1 and "Traceback" not in result.output, result.output
    for fragment in fragments:
        assert fragment in lines[0], lines[0]
    assert snapshot(tmp_path, ["*"]) == before


def test_a_fold_the_manifest_lacks_is_refused(cli, inputs: dict[str, Path], tmp_path: Path) -> None:
    args = ["train", "--model", "pddpm", "--data", str(inputs["manifest"]), "--out", str(inputs["out"])]
    _one_line_refusal(cli, tmp_path, [*args, "--fold", "7"], "--fold 7", "folds 0, 1, 2, 3 only")


def test_val_split_equal_to_split_is_refused(cli, inputs: dict[str, Path], tmp_path: Path) -> None:
    args = ["evaluate", "--run", str(inputs["run"]), "--split", "brats-test", "--val-split", "brats-test"]
    _one_line_refusal(cli, tmp_path, args, "--val-split brats-test", "another split")


@pytest.mark.parametrize("victim", ["manifest", "html"])
def test_report_out_never_replaces_a_file_it_did_not_write(
    victim: str, cli, inputs: dict[str, Path], tmp_path: Path
) -> None:
    target = inputs["manifest"]
    if victim == "html":
        target = tmp_path / "notes.html"
        target.write_text("<html><body>my notes</body></html>")
    _one_line_refusal(cli, tmp_path, ["report", str(inputs["run"]), "--out", str(target)], str(target), "not a report")


def test_report_out_must_be_html_and_may_replace_its_own_report(cli, inputs: dict[str, Path], tmp_path: Path) -> None:
    _one_line_refusal(cli, tmp_path, ["report", str(inputs["run"]), "--out", str(tmp_path / "r.txt")], ".html")
    target = tmp_path / "r.html"
    for _ in range(2):  # the second run replaces the report the first wrote
        result = cli("--hide-progress", "report", str(inputs["run"]), "--out", str(target))
        assert result.exit_code == 0, result.output
    assert "mriad report" in target.read_text()


def test_mslub_val_0_puts_no_subject_in_val() -> None:
    import pandas as pd

    from mriad.split import SplitSettings, split_frame

    frame = pd.DataFrame(
        {
            "subject_id": ["M1", "M2"],
            "dataset": "mslub",
            "split": "",
            "fold": -1,
            "label": 1,
            "image": ["/a.nii.gz", "/b.nii.gz"],
            "mask": "",
            "seg": ["/sa.nii.gz", "/sb.nii.gz"],
            "age": "",
        }
    )
    zero = split_frame(frame, SplitSettings(lesion_val_fraction={"mslub": 0.0}))
    assert list(zero["split"]) == ["test", "test"]
    default = split_frame(frame, SplitSettings())
    assert sorted(default["split"]) == ["test", "val"]  # a positive fraction still gives one
