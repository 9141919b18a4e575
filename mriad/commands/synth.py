"""`mriad synth` (placeholder until its issue lands)."""

from __future__ import annotations

from mriad.commands.common import handle_errors, not_landed


@handle_errors
def synth_command() -> None:
    """Not implemented yet: exits with code 2."""
    not_landed("synth", "see the open issues")
