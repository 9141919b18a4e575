"""`mriad train` (placeholder until its issue lands)."""

from __future__ import annotations

from mriad.commands.common import handle_errors, not_landed

COMMAND_SETTINGS: dict = {}


@handle_errors
def train_command() -> None:
    """Not implemented yet: exits with code 2."""
    not_landed("train", "see the open issues")
