"""fw_errors: the three errors of a workload run (standard library only).

``BadInput``: one item is bad (recorded, the run goes on); ``UsageError``: the run cannot start (exit 2, one line);
``DestinationError``: the destination failed in the middle of the run (exit 3); ``MountLost``: the shared disk's
mount stopped answering (the runner waits for it, bounded, then exits ``unhealthy``: EXIT_UNHEALTHY).
"""
from __future__ import annotations


class BadInput(Exception):
    """One item cannot be processed (bad file, wrong format, ...); recorded, never fatal for the run.

    ``reason`` is a short stable word (``empty``, ``truncated``, ``not-an-image``, ``decompression-bomb``,
    ``not-a-regular-file``, ``broken-symlink``, ``unreadable``, ``output-collision``...); ``detail`` is free text.
    """

    _fleetwork_bad_input = True

    def __init__(self, reason: str, detail: str = ""):
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason
        self.detail = detail


class UsageError(Exception):
    """The run itself cannot proceed (exit 2, one line, no traceback)."""


class DestinationError(Exception):
    """The run cannot go on (destination full, read-only or gone; workers that keep dying): stop, exit 3."""


class MountLost(DestinationError):
    """The mount that holds the source or the destination stopped answering (sshfs: "Transport endpoint is not
    connected", or EIO while it reconnects).  Not the item's fault: never recorded as a failed item; the runner
    waits for the mount to come back (``fw_runner``) and exits ``unhealthy`` when it does not."""


EXIT_UNHEALTHY = 4      # the mount was lost and did not come back within the wait (fw_runner.mount_wait)


def is_bad_input(exc: BaseException) -> bool:
    """A ``BadInput``, also one of another copy of this module (the marker, not the class, is what counts)."""
    return any(getattr(k, "_fleetwork_bad_input", False) for k in type(exc).__mro__)
