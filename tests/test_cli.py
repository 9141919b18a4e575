"""Every command teaches through --help; global options behave."""

from __future__ import annotations

import pytest

COMMANDS = ["synth", "split", "preprocess", "train", "reconstruct", "evaluate", "compare", "report"]


def test_top_level_help_lists_every_stage(cli) -> None:
    result = cli("--help")
    assert result.exit_code == 0
    for command in COMMANDS + ["atlas"]:
        assert command in result.output


@pytest.mark.parametrize("command", COMMANDS)
def test_command_help(cli, command: str) -> None:
    result = cli(command, "--help")
    assert result.exit_code == 0, result.output
    assert "Usage" in result.output and len(result.output) > 200


@pytest.mark.parametrize("sub", ["show", "check", "install"])
def test_atlas_help(cli, sub: str) -> None:
    assert cli("atlas", sub, "--help").exit_code == 0


def test_version(cli) -> None:
    result = cli("--version")
    assert result.exit_code == 0 and "mriad" in result.output


def test_bad_device_is_refused_with_a_clear_message() -> None:
    from mriad.infra.device import resolve_device
    from mriad.infra.errors import MriadError

    with pytest.raises(MriadError, match="--device tpu"):
        resolve_device("tpu")
    assert str(resolve_device("cpu")) == "cpu"
