"""Exceptions for user mistakes, kept apart from our own invariants (which use `assert`).

Every user-facing error names what is wrong and how to fix it; the CLI prints the message
alone, without a traceback.
"""

from __future__ import annotations

__all__ = ["UserError", "ScenarioError", "ScheduleError"]


class UserError(ValueError):
    """Base of every error caused by user input; the CLI prints it as one message."""


class ScenarioError(UserError):
    """A scenario file is malformed or self-contradictory."""


class ScheduleError(UserError):
    """A pipeline schedule breaks a rule (order, matching, deadlock)."""
