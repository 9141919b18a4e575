"""Terminal output shared by every stage: rich on a terminal, plain periodic log lines elsewhere.

Stages call :func:`track` for long loops and :func:`info` for messages; the CLI sets :data:`settings`
from the global options (``--quiet``, ``--verbose``, ``--json``, ``--hide-progress``).
"""

from __future__ import annotations

import sys
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import TypeVar

from rich.console import Console
from rich.text import Text

T = TypeVar("T")


@dataclass
class Settings:
    quiet: bool = False
    verbose: bool = False
    json: bool = False
    show_progress: bool = True
    device: str = "auto"
    seed: int = 0
    # Plain progress lines are printed at most this often, so batch logs never look frozen nor flood.
    log_interval_s: float = 10.0


settings = Settings()
# Human-readable output goes to stderr when --json is on, so stdout stays machine-readable.
# Markup and emoji codes are off: messages carry paths, subject IDs and options typed by users, and
# `runs/exp[/b]` or `cuda:x:` must print as themselves, never as a style or an emoji (or crash rich).
# mriad's own styling goes through ``style=`` or rich Text objects.
console = Console(stderr=False, highlight=False, soft_wrap=True, markup=False, emoji=False)
err_console = Console(stderr=True, highlight=False, soft_wrap=True, markup=False, emoji=False)


def _out() -> Console:
    return err_console if settings.json else console


def info(message: str | Text, style: str = "") -> None:
    """Print a message as it is (a plain string is never read as markup); ``style`` colours all of it."""
    if not settings.quiet:
        _out().print(message, style=style or None, markup=False, emoji=False)


def debug(message: str) -> None:
    if settings.verbose and not settings.quiet:
        _out().print(message, style="dim", markup=False, emoji=False)


def warn(message: str) -> None:
    err_console.print(Text("warning: ", style="yellow") + Text(str(message)), markup=False, emoji=False)


def using_default(option: str, value: object) -> None:
    """Say which default was taken, so a shell script's log shows exactly what ran."""
    info(f"{option} defaults to {value}", style="dim")


def is_interactive() -> bool:
    stream = sys.stderr if settings.json else sys.stdout
    return bool(getattr(stream, "isatty", lambda: False)())


def track(
    items: Iterable[T], *, total: int | None = None, description: str = "working", unit: str = "item"
) -> Iterator[T]:
    """Iterate with a rich progress bar on a terminal, or periodic plain log lines otherwise."""
    if total is None and hasattr(items, "__len__"):
        total = len(items)  # type: ignore[arg-type]
    if settings.quiet or not settings.show_progress:
        yield from items
        return
    if is_interactive():
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,
            TimeRemainingColumn,
        )

        columns = (
            TextColumn("{task.description}", style="progress.description", markup=False),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            TimeRemainingColumn(),
        )
        with Progress(*columns, console=_out(), transient=False) as progress:
            task = progress.add_task(description, total=total)
            for item in items:
                yield item
                progress.advance(task)
        return
    yield from _plain_progress(items, total, description, unit)


def _plain_progress(items: Iterable[T], total: int | None, description: str, unit: str) -> Iterator[T]:
    start = last = time.monotonic()
    done = 0
    out = _out()
    for item in items:
        yield item
        done += 1
        now = time.monotonic()
        if now - last >= settings.log_interval_s or (total is not None and done == total):
            rate = done / max(now - start, 1e-9)
            of = f"/{total}" if total is not None else ""
            out.print(f"{description}: {done}{of} {unit}s, {now - start:.0f} s elapsed, {rate:.2f} {unit}/s")
            last = now


class ProgressLine:
    """A progress reporter for loops that update a status (e.g. training loss) as they go."""

    def __init__(self, description: str, total: int):
        self.description = description
        self.total = total
        self.start = time.monotonic()
        self.last = 0.0
        self._progress = None
        self._task = None
        if settings.quiet or not settings.show_progress:
            self.mode = "off"
        elif is_interactive():
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

            self.mode = "rich"
            self._progress = Progress(
                TextColumn("{task.description}", style="progress.description", markup=False),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn("{task.fields[status]}", markup=False),
                TimeRemainingColumn(),
                console=_out(),
            )
            self._task = self._progress.add_task(description, total=total, status="")
            self._progress.start()
        else:
            self.mode = "plain"

    def update(self, completed: int, status: str = "") -> None:
        if self._progress is not None and self._task is not None:
            self._progress.update(self._task, completed=completed, status=status)
        elif self.mode == "plain":
            now = time.monotonic()
            if now - self.last >= settings.log_interval_s or completed >= self.total:
                _out().print(f"{self.description}: {completed}/{self.total} {status}")
                self.last = now

    def close(self) -> None:
        if self._progress is not None:
            self._progress.stop()

    def __enter__(self) -> ProgressLine:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
