"""The one overhead plan of the scale-out engines: how much of each task (Dask) or job (Batch) is the engine's own
cost, as the line the engine prints before it starts and the share that decides its warning."""
from __future__ import annotations

import math

WARN_SHARE = 0.10    # an engine warns when its own cost would be more than this share of the work


def overhead_share(overhead_s: float, work_s: float | None) -> float | None:
    """``overhead / (overhead + work)`` of one task or job; None when the work is unknown."""
    if work_s is None:
        return None
    total = overhead_s + work_s
    return overhead_s / total if total > 0 else None


def chunk_line(engine: str, items: int, tasks: int, chunk: int, overhead_s: float, item_s: float | None,
               what: str = "task") -> tuple[str, float | None]:
    """Items cut into ``tasks`` chunks of up to ``chunk`` items, each paying ``overhead_s`` (Dask)."""
    share = overhead_share(overhead_s, None if item_s is None else chunk * item_s)
    line = (f"{engine}: {items} item(s) -> {tasks} {what}(s) of up to {chunk} item(s); per-{what} overhead "
            f"{overhead_s * 1e3:.1f} ms, item {'unknown' if item_s is None else f'{item_s * 1e3:.1f} ms'}; "
            f"expected overhead share {'unknown' if share is None else f'{share:.1%}'}")
    return line, share


def job_line(items: int | None, shards: int, start_s: float, item_s: float, threads: int) -> tuple[str, float | None]:
    """One job per shard, each paying ``start_s`` before ``threads`` threads work through its items (Batch)."""
    per_job = None if items is None else math.ceil(items / shards)
    work = None if per_job is None or not item_s else per_job * item_s / max(1, threads)
    share = overhead_share(start_s, work)
    line = (f"batch: {shards} job(s) per stage, "
            f"{'? items' if per_job is None else f'~{per_job} item(s)'} per job ({items if items is not None else '?'}"
            f" in all); per-job start {start_s:.0f} s; expected overhead share "
            f"{'unknown (set batch.item_seconds)' if share is None else f'{share:.1%}'}")
    return line, share
