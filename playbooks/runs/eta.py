"""A run's rate and ETA from what the head counts over time (issue 13, item 5).

Every look at a run (``invoke progress``, ``--watch``, ``run --wait``, the ``--until-done`` supervisor) adds one
point to a small window kept in the run's folder on the shared disk, ``<run>/rate.json``::

    {"points": [[t, settled, working], ...]}     settled = items done + failed, as the head counted them;
                                                 working = nodes running or starting at that moment
                                                 (progress.working_nodes: not one the supervisor replaced,
                                                 at most the run's shard count)

so separate ``invoke progress`` calls, a ``--watch`` in another terminal and the supervisor all share one
history.  ``run`` writes the first point when it starts the run (what was already there counts as settled).

The estimate is the rate **per working node** over the recent window, times the nodes working now:

* items settled in the window / node-seconds worked in it (each interval between two points counts the nodes
  working at both its ends), so a lost node lowers the ETA's rate once it is seen lost, its replacement
  raises it back as soon as it is starting (the ETA looks ahead: a starting node will work), and a stretch
  with no node working (the whole fleet lost) adds no node-seconds and
  leaves the per-node rate as it was;
* the window is the last ``window_s`` seconds of points, ``window_s`` growing with the run
  (``WINDOW_SHARE`` of the time since outputs began, between ``MIN_WINDOW_S`` and ``MAX_WINDOW_S``): the rate per
  node hardly changes when nodes come and go, so a long window is steady without being slow to follow them;
* the start (nodes booting, imports, the first items in flight) is no part of the rate: the window begins at
  the first point that saw outputs (at the point before it while it is the newest).

When no point in the window shows progress yet, the nodes' own heartbeat rates are the fallback (a run started
by an older ``run``, or a first look at a run with no history).  What the file holds is read as data: a point
that is not three numbers is dropped (nodes can write below the shared root).
"""
from __future__ import annotations

import json

WINDOW_FILE = "rate.json"
KEEP_S = 600.0          # points older than this (behind the newest) are dropped
MAX_POINTS = 1200
MIN_WINDOW_S = 10.0
MAX_WINDOW_S = 300.0
WINDOW_SHARE = 1.0


def _clean(points) -> list[tuple[float, float, float]]:
    out = []
    for p in points if isinstance(points, list) else []:
        if isinstance(p, (list, tuple)) and len(p) == 3 and all(isinstance(x, (int, float)) and not isinstance(x, bool)
                                                       for x in p):
            out.append((float(p[0]), float(p[1]), max(0.0, float(p[2]))))
    return out


def add_point(points: list, t: float, settled: float, working: float) -> list[tuple[float, float, float]]:
    """``points`` with (t, settled, working) added: sorted by time, one point per time, pruned."""
    pts = {p[0]: p for p in _clean(points)}
    pts[float(t)] = (float(t), float(settled), float(working))
    out = sorted(pts.values())
    newest = out[-1][0]
    out = [p for p in out if newest - p[0] <= KEEP_S]
    return out[-MAX_POINTS:]


def per_node_rate(points: list) -> float | None:
    """Items settled per node-second over the recent window, or None when the window shows no progress."""
    pts = _clean(points)
    if len(pts) < 2:
        return None
    rose = next((i for i in range(1, len(pts)) if pts[i][1] > pts[0][1]), None)
    if rose is None:
        return None
    # the start (nodes booting, importing, their first items in flight) is no part of the rate: begin at the
    # first point that saw outputs once a later one exists, else at the last point before them ...
    active = pts[rose:] if rose < len(pts) - 1 else pts[rose - 1:]
    # ... and keep the last window_s seconds of it, plus the point just before (the window's start)
    newest = active[-1][0]
    window = min(MAX_WINDOW_S, max(MIN_WINDOW_S, WINDOW_SHARE * (newest - active[0][0])))
    start = next(i for i, p in enumerate(active) if newest - p[0] <= window)
    span = active[max(0, start - 1):]
    node_s = sum((b[0] - a[0]) * min(a[2], b[2]) for a, b in zip(span, span[1:]))
    gained = span[-1][1] - span[0][1]
    if node_s <= 0 or gained <= 0:
        return None
    return gained / node_s


def estimate(points: list, left: int, working: int, heartbeat_rate: float = 0.0) -> tuple[float, float | None]:
    """(rate per second now, ETA in seconds or None): per-node rate x nodes working now; the nodes' summed
    heartbeat rates when the window shows no progress yet."""
    if left <= 0:
        return 0.0, 0.0
    per_node = per_node_rate(points)
    rate = per_node * working if per_node is not None else heartbeat_rate
    return rate, (left / rate if rate > 0 else None)


def load(disk, run_rel: str) -> list[tuple[float, float, float]]:
    text = disk.read_text(f"{run_rel}/{WINDOW_FILE}")
    try:
        data = json.loads(text) if text else {}
    except ValueError:
        data = {}
    return _clean(data.get("points") if isinstance(data, dict) else None)


def observe(disk, run_rel: str, t: float, settled: int, working: int) -> list[tuple[float, float, float]]:
    """Add this look at the run to its window on the shared disk and return the window.  A write that fails
    (a read-only or full disk) costs the history, never the look."""
    points = add_point(load(disk, run_rel), t, settled, working)
    try:
        disk.write_text(f"{run_rel}/{WINDOW_FILE}", json.dumps({"points": [list(p) for p in points]}))
    except OSError:
        pass
    return points
