"""The engines' error: a run that cannot start or finish, in one line with the fix (the task makes it ``Exit``)."""
from __future__ import annotations

from playbooks.settings.errors import FleetbookError


class EngineError(FleetbookError):
    """A run, a cluster or a queue that cannot do what was asked (bad workload arguments, a taken port, no
    cluster, nodes not mounted or not deployed, chunks that failed)."""
