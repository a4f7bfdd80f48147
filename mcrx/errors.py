"""Errors meant for users: the CLI prints them without a traceback."""

from __future__ import annotations


class McrxError(Exception):
    """A problem the user can fix (bad recipe, missing file, unknown name, ...)."""


class RecipeError(McrxError):
    """A recipe failed validation; ``errors`` holds every problem as (location, message)."""

    def __init__(self, source: str, errors: list[tuple[str, str]]) -> None:
        self.source = source
        self.errors = errors
        lines = [f"{loc}: {msg}" if loc else msg for loc, msg in errors]
        super().__init__(f"{source} is not a valid recipe:\n  " + "\n  ".join(lines))
