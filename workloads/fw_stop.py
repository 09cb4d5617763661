"""fw_stop: stopping a run on a signal: SIGTERM/SIGHUP/SIGINT finish the items in progress, then the run stops
and writes exit.json (code 128+N); a second signal leaves at once.  Standard library only."""
from __future__ import annotations

import contextlib
import os
import signal

STOP_SIGNALS = (signal.SIGTERM, signal.SIGHUP, signal.SIGINT)
_STOP: dict = {"signal": None}


class Stopped(Exception):
    """Raised by ``check_stop`` in the run loops once a stop signal came."""


def stop_signal() -> int | None:
    """The signal that asked this run to stop, or None."""
    return _STOP["signal"]


def _on_stop_signal(signum, frame):
    """No exception is raised into arbitrary code: an import or a write is never cut half-way; the run loops
    call ``check_stop`` between items."""
    if _STOP["signal"] is not None:
        os._exit(128 + signum)
    _STOP["signal"] = signum


def preempted() -> bool:
    """True once a preemption notice stopped this run (fw_cli's notice hook)."""
    return bool(_STOP.get("preempted"))


def check_stop() -> None:
    if _STOP["signal"] is not None:
        raise Stopped()


@contextlib.contextmanager
def stop_on_signals():
    """While inside: the stop signals set the stop flag (cleared on entry) instead of killing the process;
    the old handlers come back on exit."""
    old = {}
    _STOP["signal"] = None
    _STOP.pop("preempted", None)
    for sig in STOP_SIGNALS:
        try:
            old[sig] = signal.signal(sig, _on_stop_signal)
        except (ValueError, OSError):            # not the main thread
            pass
    try:
        yield
    finally:
        for sig, handler in old.items():
            signal.signal(sig, handler)
