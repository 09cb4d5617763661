"""The one function a Dask task runs on a worker: one chunk of items through ``fleetwork.run_items``.

Standard library only, and shipped to the workers BY VALUE (``cloudpickle.register_pickle_by_value``): a node
has ``<workdir>/workloads`` on its path (so ``fleetwork`` and the workloads import), but not ``playbooks``.
Paths are relative to the shared disk and resolved below the node's own mountpoint (``$FLEETBOOK_MOUNT``, set by
``dask.up``; else the mountpoint the head passed), so the inputs are read from the shared disk, never shipped.

A chunk that finds the node's mount dead waits for it (``$FLEETBOOK_MOUNT_WAIT`` seconds, ``job.mount_wait``)
instead of failing at once: the head remounts such a node (``engines/dask/mounts.py``, which asks every worker
``mount_state``), and a chunk failing fast there would only use up Dask's retries on it.
"""
from __future__ import annotations

import os
import socket
import threading
import time

MOUNT_PROBE_S = 3.0          # a statfs on the mount that takes longer than this: no answer (a link that is down)


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
    node = os.environ.get("FLEETBOOK_NODE_NAME") or socket.gethostname()
    _wait_for_mount(mp, node)
    wl = fleetwork.load(workload)
    opts = wl.parse_args(["--src", src, "--dst", dst, "--workers", "1", "--quiet", *args])
    summary = fleetwork.run_items(wl, items, src, dst, opts, node=node, collisions=collisions or {},
                                  progress_bar=False, known=(set(), dict(failures or {})))
    if summary.get("error"):  # the destination failed on this node (mount gone, disk full): let Dask retry
        raise RuntimeError(f"{node}: {summary['error']}")
    summary["node"] = node
    summary["pid"] = os.getpid()
    summary["items"] = len(items)
    summary["task_seconds"] = round(time.perf_counter() - t0, 6)
    summary["ended_at"] = time.time()
    return summary


def _probe(mp: str, timeout: float = MOUNT_PROBE_S) -> str | None:
    """Why the mount at ``mp`` does not answer (None: it does).  ``statvfs`` reaches the server every time (FUSE
    caches no statfs); on a thread, so that a link that is down costs ``timeout`` seconds, not sshfs's own."""
    why: list = [f"no answer within {timeout:g} s"]

    def look() -> None:
        try:
            os.statvfs(mp)
            why[0] = None
        except OSError as e:
            why[0] = e.strerror or str(e)
    t = threading.Thread(target=look, daemon=True)
    t.start()
    t.join(timeout)
    return why[0]


def mount_state() -> dict:
    """This worker's node and whether its mount answers (``client.run`` on every worker, from the head)."""
    mp = os.environ.get("FLEETBOOK_MOUNT", "")
    why = _probe(mp) if mp else "no FLEETBOOK_MOUNT"
    return {"node": os.environ.get("FLEETBOOK_NODE_NAME") or socket.gethostname(), "ok": why is None,
            "error": why, "mountpoint": mp}


def _wait_for_mount(mp: str, node: str) -> None:
    """Return once the mount answers; raise (Dask retries the chunk, maybe elsewhere) if it does not within
    ``$FLEETBOOK_MOUNT_WAIT`` seconds (the bound and the pace of fleetwork's own ride-out)."""
    from fw_runner import MOUNT_PROBE_EVERY, mount_wait   # on the worker's path, like fleetwork
    wait, t0 = mount_wait(), time.monotonic()
    why = _probe(mp)
    while why is not None:
        if time.monotonic() - t0 >= wait:
            raise RuntimeError(f"{node}: the shared disk at {mp} does not answer ({why}) after {wait:g} s")
        time.sleep(MOUNT_PROBE_EVERY)
        why = _probe(mp)


def noop(x: int) -> int:
    """A task that does nothing: measures Dask's own per-task cost on this cluster."""
    return x
