"""The library's typed errors become Invoke's one-line ``Exit`` here, and only here: at the task boundary.

Every library layer (providers, runs, engines ...) raises a subclass of ``FleetbookError`` whose message is the
one-line user message (what went wrong and the fix).  A task function (the runbook steps in ``playbooks/*.py``)
is wrapped in ``user_errors``, as a decorator below ``@task`` or as a ``with`` block::

    @task(help={...})
    @user_errors
    def create(c, n=0): ...

and the error ends the task as ``Exit(message)``: the same line, exit code 1, no traceback.
"""
from __future__ import annotations

from contextlib import ContextDecorator

from invoke.exceptions import Exit


class FleetbookError(Exception):
    """A user-facing error of the library; ``str(err)`` is the one-line message."""

    @property
    def message(self) -> str:
        return str(self)


class _Boundary(ContextDecorator):
    """Turn a ``FleetbookError`` raised inside into ``Exit`` with the same message."""

    def __enter__(self):
        return self

    def __exit__(self, kind, exc, tb):
        if exc is not None and isinstance(exc, FleetbookError):
            raise Exit(str(exc)) from None
        return False


def user_errors(fn=None):
    """``@user_errors`` on a task function, or ``with user_errors():`` around a few lines of one."""
    if fn is None:
        return _Boundary()
    if getattr(fn, "_user_errors", False):
        return fn
    wrapped = _Boundary()(fn)
    wrapped._user_errors = True
    return wrapped


def at_task_boundary(collection) -> None:
    """Wrap the body of every task in ``collection`` (and its sub-collections) in ``user_errors``: the one place
    ``tasks.py`` makes every step end a library error as a one-line Exit.  Idempotent."""
    for t in collection.tasks.values():
        t.body = user_errors(t.body)
    for sub in collection.collections.values():
        at_task_boundary(sub)
