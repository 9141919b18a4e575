"""Errors that mriad reports to users as one line naming the file and what is wrong."""

from __future__ import annotations

from pathlib import Path


class MriadError(Exception):
    """A problem the user can fix; the CLI prints it as one line and exits with code 1."""

    exit_code = 1


class InputError(MriadError):
    """A bad input file: the message always starts with the file's path."""

    def __init__(self, path: str | Path, reason: str):
        self.path = str(path)
        self.reason = reason
        super().__init__(f"{self.path}: {reason}")


class ManifestError(MriadError):
    """A manifest that breaks the contract (duplicate IDs, split leaks, missing files...)."""


class LockError(MriadError):
    """Another live process holds the output folder."""
