"""`mriad evaluate` (placeholder until its issue lands)."""

from __future__ import annotations

from mriad.commands.common import handle_errors, not_landed


@handle_errors
def evaluate_command() -> None:
    """Not implemented yet: exits with code 2."""
    not_landed("evaluate", "see the open issues")
