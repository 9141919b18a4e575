"""What every command shares: error handling, JSON summaries, the not-landed refusal."""

from __future__ import annotations

import functools
import json
import sys
from collections.abc import Callable
from typing import Any, TypeVar

import typer

from mriad.infra.console import err_console, settings
from mriad.infra.errors import MriadError, NotLandedError

F = TypeVar("F", bound=Callable[..., Any])


def handle_errors(func: F) -> F:
    """Turn a :class:`MriadError` into one line on stderr and its exit code (1, or 2 for not-landed)."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except MriadError as exc:
            err_console.print(f"[red]error:[/red] {exc}", soft_wrap=True, markup=True, highlight=False)
            raise typer.Exit(exc.exit_code) from None
        except KeyboardInterrupt:
            err_console.print("interrupted; finished outputs are kept, rerun to resume")
            raise typer.Exit(130) from None

    return wrapper  # type: ignore[return-value]


def emit(summary: dict[str, Any]) -> None:
    """With ``--json``, print the summary of what was written on stdout (one JSON document)."""
    if settings.json:
        sys.stdout.write(json.dumps(summary, indent=2, default=str) + "\n")
        sys.stdout.flush()


def not_landed(stage: str, issue: str) -> None:
    raise NotLandedError(f"`mriad {stage}` is not implemented yet ({issue}); nothing was done")
