"""Let a one-letter task option be written with two dashes too: `--n 20` as well as `-n 20`.

Invoke gives a one-letter parameter only its short flag.  This adds, for each one-letter argument, the alias
``--x`` for ``-x`` when a task's parser context is built; nothing else of Invoke's parsing changes.
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
