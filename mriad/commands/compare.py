"""`mriad compare` and `mriad report` (placeholders until their issue lands)."""

from __future__ import annotations

from mriad.commands.common import handle_errors, not_landed


@handle_errors
def compare_command() -> None:
    """Not implemented yet: exits with code 2."""
    not_landed("compare", "see the open issues")


@handle_errors
def report_command() -> None:
    """Not implemented yet: exits with code 2."""
    not_landed("report", "see the open issues")
