"""The one function a Dask task runs on a worker: one chunk of items through ``fleetwork.run_items``.

Standard library only, and shipped to the workers BY VALUE (``cloudpickle.register_pickle_by_value``): a node
has ``<workdir>/workloads`` on its path (so ``fleetwork`` and the workloads import), but not ``playbooks``.
Paths are relative to the shared disk and resolved below the node's own mountpoint (``$FLEETBOOK_MOUNT``, set by
``dask.up``; else the mountpoint the head passed), so the inputs are read from the shared disk, never shipped.
"""
from __future__ import annotations

import os
import socket
import time


def run_chunk(workload: str, items: list, src_rel: str, dst_rel: str, args: list, mountpoint: str,
              collisions: dict | None = None, failures: dict | None = None) -> dict:
    """Process ``items`` (skip-if-done, atomic writes, failure records) and return fleetwork's summary.

    The head listed the destination once and sends only items not done (``failures``: the failure records of
    these items, when retrying them).  With ``known=(outputs, failures)`` the chunk does not walk the whole
    destination again over the mount (one stat per item instead)."""
    t0 = time.perf_counter()
    import fleetwork  # on the worker's path: <node workdir>/workloads

    mp = os.environ.get("FLEETBOOK_MOUNT") or mountpoint
    src = os.path.join(mp, src_rel)
    dst = os.path.join(mp, dst_rel)
    wl = fleetwork.load(workload)
    opts = wl.parse_args(["--src", src, "--dst", dst, "--workers", "1", "--quiet", *args])
    node = os.environ.get("FLEETBOOK_NODE_NAME") or socket.gethostname()
    summary = fleetwork.run_items(wl, items, src, dst, opts, node=node, collisions=collisions or {},
                                  progress_bar=False, known=(set(), dict(failures or {})))
    if summary.get("error"):  # the destination failed on this node (mount gone, disk full): let Dask retry
        raise RuntimeError(f"{node}: {summary['error']}")
    summary["node"] = node
    summary["pid"] = os.getpid()
    summary["items"] = len(items)
    summary["task_seconds"] = round(time.perf_counter() - t0, 6)
    return summary


def noop(x: int) -> int:
    """A task that does nothing: measures Dask's own per-task cost on this cluster."""
    return x
