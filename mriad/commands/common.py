"""What every command shares: error handling, JSON summaries, the not-landed refusal."""

from __future__ import annotations

import functools
import json
import sys
from collections.abc import Callable
from typing import Any, TypeVar

import typer
from rich.text import Text
from typer.core import TyperGroup

from mriad.infra.console import err_console, settings
from mriad.infra.errors import MriadError

F = TypeVar("F", bound=Callable[..., Any])


def handle_errors(func: F) -> F:
    """Turn a :class:`MriadError` into one line on stderr and its exit code (1, or 2 for not-landed)."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except MriadError as exc:
            _print_error(str(exc))
            raise typer.Exit(exc.exit_code) from None
        except OSError as exc:  # disk full, read-only file system, permission denied, symlink loop...
            _print_error(os_error_line(exc))
            raise typer.Exit(1) from None
        except KeyboardInterrupt:
            err_console.print("interrupted; finished outputs are kept, rerun to resume")
            raise typer.Exit(130) from None

    return wrapper  # type: ignore[return-value]


class OneLineErrors(TyperGroup):
    """The top-level command group: option values are checked (:mod:`mriad.commands.options`), and a
    usage error (a bad value, an unknown option) is one line like every other error.

    Typer draws usage errors as a multi-line box; a script's log (and a Slurm job's) then holds a
    frame instead of the message. Here they print like every other error: ``error: <what>`` naming
    the option, with the command's --help as the hint.
    """

    def main(self, *args: Any, **kwargs: Any) -> Any:
        from mriad.commands.options import guard

        guard(self)  # every option's value checked before its command runs
        standalone = kwargs.get("standalone_mode", True)
        kwargs["standalone_mode"] = False  # errors come back here, to be printed as one line
        if not standalone:
            return super().main(*args, **kwargs)
        from typer import _click

        try:
            outcome = super().main(*args, **kwargs)
        except _click.exceptions.ClickException as exc:
            if type(exc).__name__ != "NoArgsIsHelpError":  # that one has printed the help already
                context = getattr(exc, "ctx", None)
                hint = f" (see `{context.command_path} --help`)" if context is not None else ""
                _print_error(f"{exc.format_message()}{hint}")
            sys.exit(exc.exit_code)
        except typer.Abort:
            _print_error("aborted")
            sys.exit(1)
        sys.exit(outcome if isinstance(outcome, int) else 0)


def _print_error(message: str) -> None:
    # The message names files and values the user gave: printed as text, never as markup, on one line.
    line = Text("error:", style="red") + Text(" " + " ".join(message.splitlines()))
    err_console.print(line, soft_wrap=True, markup=False, emoji=False, highlight=False)


def os_error_line(exc: OSError) -> str:
    """``PATH: No space left on device (ENOSPC)``: what the system refused, naming the path first."""
    import errno

    reason = exc.strerror or type(exc).__name__
    code = errno.errorcode.get(exc.errno or 0)
    reason = f"{reason} ({code})" if code else reason
    paths = [str(p) for p in (exc.filename, exc.filename2) if p is not None]
    return f"{' -> '.join(paths)}: {reason}" if paths else reason


def emit(summary: dict[str, Any]) -> None:
    """With ``--json``, print the summary of what was written on stdout (one JSON document)."""
    if settings.json:
        sys.stdout.write(json.dumps(summary, indent=2, default=str) + "\n")
        sys.stdout.flush()


def parse_sets(pairs: list[str] | None) -> dict[str, str]:
    """``--set key=value`` pairs as a dict (``-`` in keys read as ``_``); a pair without ``=`` is one line."""
    options: dict[str, str] = {}
    for pair in pairs or []:
        if "=" not in pair:
            raise MriadError(f"--set {pair!r}: expected key=value, e.g. --set octaves=4")
        key, value = pair.split("=", 1)
        options[key.strip().replace("-", "_")] = value.strip()
    return options
