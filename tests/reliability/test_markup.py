"""Markup from data (issue 14, defect 8): paths, names and values typed by users or read from files
print as themselves. Rich markup (`[/red]`, `[b]`) and emoji codes (`:x:`) are never interpreted.
"""

from __future__ import annotations

from pathlib import Path

from reliability_helpers import TINY_SETS, assert_one_line_error, error_lines, snapshot


def test_a_path_with_a_closing_tag_is_printed_not_parsed(cli, tmp_path: Path) -> None:
    missing = tmp_path / "data[/red]" / "manifest[b].csv"
    result = cli("--device", "cpu", "train", "--model", "pddpm", "--data", missing, "--out", tmp_path / "r")
    assert result.exit_code == 1, result.output
    assert "Traceback" not in result.output and "MarkupError" not in result.output
    assert_one_line_error(result.output, str(missing), "manifest not found")


def test_a_run_folder_with_markup_in_its_name_trains_and_says_so(cli, data_copy: Path, tmp_path: Path) -> None:
    out = tmp_path / "runs" / "exp[/b]"
    result = cli(
        "--device",
        "cpu",
        "--hide-progress",
        "train",
        "--model",
        "pddpm",
        "--epochs",
        "1",
        *TINY_SETS,
        "--data",
        data_copy,
        "--out",
        out,
    )
    assert result.exit_code == 0, result.output
    assert f"run folder: {out}" in result.output
    assert (out / "checkpoints" / "last.pt").is_file()


def test_an_emoji_code_in_a_value_stays_text(cli, tmp_path: Path) -> None:
    before = snapshot(tmp_path, ["*"])
    result = cli("--device", "cuda:x:", "split", tmp_path / "m.csv")
    assert result.exit_code != 0
    line = error_lines(result.output)
    assert len(line) == 1 and "cuda:x:" in line[0] and "\u274c" not in result.output, result.output
    assert snapshot(tmp_path, ["*"]) == before


def test_messages_and_warnings_print_brackets_literally(capsys) -> None:
    from mriad.infra.console import info, using_default, warn

    info("subject [bold]IXI[/bold] at :x: [/red]")
    warn("mask of sub[/i] not used")
    using_default("--out", "runs/exp[/b]")
    captured = capsys.readouterr()
    assert "subject [bold]IXI[/bold] at :x: [/red]" in captured.out
    assert "runs/exp[/b]" in captured.out
    assert "warning: mask of sub[/i] not used" in captured.err
