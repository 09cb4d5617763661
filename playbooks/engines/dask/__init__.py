"""The Dask engine: a ``dask scheduler`` on the head, ``dask worker`` processes on every node, chunks of items.

``cluster``: ``up`` / ``down`` (the scheduler, the workers, their record in ``<fleet state>/dask.json``);
``runner``: ``run``, one run in chunks (what is left, the plan, the tasks in flight, the heartbeat).  The
function a task runs on a worker is ``engines/dask_chunk.py`` (standard library only, shipped by value).
"""
from __future__ import annotations

from playbooks.engines.dask.cluster import (connect_client, dashboard_available, down, node_cores, read_state,
                                            scheduler_alive, scheduler_command, scheduler_host, state_file,
                                            stop_group_command, up, wait_port, worker_command)
from playbooks.engines.dask.runner import measure_overhead_us, plan, plan_line, run, time_one_item
from playbooks.engines.plan import WARN_SHARE, overhead_share
from playbooks.settings.engines import ENGINE_DEFAULTS

DASK_DEFAULTS = ENGINE_DEFAULTS["dask"]

__all__ = ["DASK_DEFAULTS", "WARN_SHARE", "connect_client", "dashboard_available", "down", "measure_overhead_us",
           "node_cores", "overhead_share", "plan", "plan_line", "read_state", "run", "scheduler_alive",
           "scheduler_command", "scheduler_host", "state_file", "stop_group_command", "time_one_item", "up",
           "wait_port", "worker_command"]
