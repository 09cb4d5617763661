"""The library's one error type, and where it becomes invoke's ``Exit``.

A library module (engines, measurement, run launch checks) raises a ``FleetbookError`` (or a subclass) whose
message is the one line the user reads, with the fix.  Only a task turns it into ``Exit`` (one line, exit code 1,
no traceback): ``@exit_on_error`` under ``@task``, or ``with exit_on_error():`` around the library call.
"""
from __future__ import annotations

from contextlib import contextmanager

from invoke.exceptions import Exit


class FleetbookError(Exception):
    """A user error raised in the library: ``str(err)`` is the one-line message (with the fix)."""

    @property
    def message(self) -> str:
        """The one-line message (the name ``Exit`` gives it, so a caller reads both alike)."""
        return str(self)


@contextmanager
def exit_on_error():
    """At a task boundary: a ``FleetbookError`` from the library leaves as ``Exit`` with the same message.

    Usable as ``with exit_on_error():`` or as a decorator below ``@task`` (the task keeps its signature)."""
    try:
        yield
    except FleetbookError as exc:
        raise Exit(str(exc)) from None
