"""Every command teaches through --help; global options behave.

The commands are enumerated from the typer app itself, so a new command is covered the day it lands.
"""

from __future__ import annotations

import pytest
import typer
from typer.core import TyperGroup

from mriad.cli import app


def _commands(group: TyperGroup, prefix: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    found: list[tuple[str, ...]] = []
    for name, command in sorted(group.commands.items()):
        path = (*prefix, name)
        found.append(path)
        if isinstance(command, TyperGroup):
            found.extend(_commands(command, path))
    return found


ROOT = typer.main.get_command(app)
assert isinstance(ROOT, TyperGroup)
COMMANDS = _commands(ROOT)
STAGES = ["preprocess", "split", "train", "reconstruct", "evaluate", "compare", "report", "synth"]


def test_every_stage_is_a_command() -> None:
    assert {path[0] for path in COMMANDS} >= set(STAGES)


def test_top_level_help_lists_every_command(cli) -> None:
    result = cli("--help")
    assert result.exit_code == 0
    for path in COMMANDS:
        if len(path) == 1:
            assert path[0] in result.output


@pytest.mark.parametrize("path", COMMANDS, ids=" ".join)
def test_command_help(cli, path: tuple[str, ...]) -> None:
    result = cli(*path, "--help")
    assert result.exit_code == 0, result.output
    assert "Usage" in result.output and len(result.output) > 150


def test_version(cli) -> None:
    result = cli("--version")
    assert result.exit_code == 0 and "mriad" in result.output


def test_bad_device_is_refused_with_a_clear_message() -> None:
    from mriad.infra.device import resolve_device
    from mriad.infra.errors import MriadError

    with pytest.raises(MriadError, match="--device tpu"):
        resolve_device("tpu")
    assert str(resolve_device("cpu")) == "cpu"
