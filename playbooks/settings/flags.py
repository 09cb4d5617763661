"""How a task option may be spelled, in one place: every one-letter option also with two dashes (`--n 20` as
well as `-n 20`), and ``long_only`` for options that must not get Invoke's automatic short flag.

Invoke gives a one-letter parameter only its short flag.  ``allow_double_dash_short_options`` adds, for each
one-letter argument, the alias ``--x`` for ``-x`` when a task's parser context is built; nothing else of Invoke's
parsing changes.  ``long_only(task, "head")`` drops the automatic ``-h`` of ``--head`` (so ``-h`` stays help);
``long_only(task)`` drops every automatic short flag of the task.
"""
from __future__ import annotations

from invoke.parser import ParserContext

_add_arg = ParserContext.add_arg


def _add_arg_with_long_alias(self, *args, **kwargs):
    _add_arg(self, *args, **kwargs)
    for flag in list(self.flags.keys()):
        if len(flag) == 2 and flag.startswith("-") and ("-" + flag) not in self.flags:
            self.flags.alias("-" + flag, to=flag)


def allow_double_dash_short_options() -> None:
    if ParserContext.add_arg is _add_arg:
        ParserContext.add_arg = _add_arg_with_long_alias


def long_only(task, *names: str):
    """Give the task's options ``names`` (default: all of them) no automatic short flag; returns the task."""
    get_arguments = task.get_arguments

    def arguments(*args, **kwargs):
        found = get_arguments(*args, **kwargs)
        for arg in found:
            if (not names or arg.name in names) and len(arg.name) > 1:
                arg.names = tuple(n for n in arg.names if len(n) > 1)
        return found

    task.get_arguments = arguments
    return task
