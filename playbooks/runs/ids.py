"""Run ids: ``<workload>-<YYYYmmdd>-<HHMMSS>-<4 hex>`` (the run state's folders and records), or without the
workload (a Batch run, whose job names carry the workload beside the id: ``fb-<id>-<workload>-<shard>``)."""
from __future__ import annotations

import secrets
import time


def new_run_id(workload: str = "") -> str:
    """A new run id: the time it starts (sorts by age) and 4 random hex digits (two runs in one second)."""
    stamp = f"{time.strftime('%Y%m%d-%H%M%S')}-{secrets.token_hex(2)}"
    return f"{workload}-{stamp}" if workload else stamp


STAMP_PARTS = 3    # date, time, hex: the dash-separated parts of an id made without a workload
