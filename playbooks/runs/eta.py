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
MIN_ITEMS = 20         # a rate from fewer items is noise (0.35 s items seen every 0.5 s: 1 or 2 in each look)
MIN_KNOWN = 5          # ... but less noise than intervals known to be wrong (per_node_rate)


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


def per_node_rate(points: list, skip: list[tuple[float, float]] = ()) -> float | None:
    """Items settled per node-second over the recent window, or None when the window shows no progress.
    ``skip``: stretches of time (``changes``) whose intervals are left out when steady ones remain."""
    pts = _clean(points)
    if len(pts) < 2:
        return None
    rose = next((i for i in range(1, len(pts)) if pts[i][1] > pts[0][1]), None)
    if rose is None:
        return None
    # the start (nodes booting, importing, their first items in flight) is no part of the rate: begin at the
    # first point that saw outputs once a later one exists, else at the last point before them ...
    begin = rose if rose < len(pts) - 1 else rose - 1
    # ... and keep the last window_s seconds of it, plus the point just before (the window's start)
    newest = pts[-1][0]
    window = min(MAX_WINDOW_S, max(MIN_WINDOW_S, WINDOW_SHARE * (newest - pts[begin][0])))
    first = max(begin, next(i for i in range(begin, len(pts)) if newest - pts[i][0] <= window) - 1)
    # tiers: all intervals; those outside the fleet's changes known from the record (``skip``); of these, the
    # steady ones (the same count at both ends and at the point before, and the interval before known too: an
    # interval next to a change, whether the counts or the record saw it, holds node-seconds that made nothing:
    # a node dead before it was seen lost, one starting)
    sums = {"all": [0.0, 0.0], "known": [0.0, 0.0], "steady": [0.0, 0.0]}
    known_before = True
    for i in range(first + 1, len(pts)):
        a, b = pts[i - 1], pts[i]
        worked = (b[0] - a[0]) * min(a[2], b[2])
        if i == rose:
            # the interval in which the first outputs appeared: they began in its middle, as measured (the first
            # look at 1,200 features on 3 nodes: 80 outputs 1.5 s after the start, made in 0.9 s of it)
            worked /= 2
        tiers = ["all"]
        known = not any(a[0] <= t1 and b[0] >= t0 for t0, t1 in skip)    # a look at t1 still counted it
        if known:
            tiers.append("known")
            if known_before and a[2] == b[2] == pts[i - 2 if i >= 2 else 0][2]:
                tiers.append("steady")
        known_before = known
        for k in tiers:
            sums[k][0] += worked
            sums[k][1] += b[1] - a[1]
    # the first tier with enough items, then the same with few: a fleet that changes every few seconds (the
    # chaos test) leaves few whole intervals, and all of them together counted its dead and starting nodes as
    # working and put the rate per node a third too low, while 5 known items were within a tenth of it
    for k, least in (("steady", MIN_ITEMS), ("known", MIN_ITEMS), ("steady", MIN_KNOWN), ("known", MIN_KNOWN),
                     ("all", 1)):
        if sums[k][0] > 0 and sums[k][1] >= least:
            return sums[k][1] / sums[k][0]
    return None


def finish_in(per_node: float, left: float, ahead: list[float]) -> float | None:
    """Seconds until ``left`` items are done at ``per_node`` items/s per node, each slot of the run producing
    from ``ahead[i]`` seconds on (0: now); None when no slot ever produces."""
    if left <= 0:
        return 0.0
    starts = sorted(max(0.0, float(d)) for d in ahead)
    if per_node <= 0 or not starts:
        return None
    need = left / per_node          # node-seconds of work left
    for j, d in enumerate(starts, 1):
        # with j slots producing from max(starts[:j]) = d on: the node-seconds done by time d, then j per second
        done_by_d = sum(d - s for s in starts[:j])
        nxt = starts[j] if j < len(starts) else float("inf")
        if done_by_d + j * (nxt - d) >= need:
            return d + (need - done_by_d) / j
    return None     # not reached: the last segment is open-ended


def estimate(points: list, left: int, working: int, heartbeat_rate: float = 0.0,
             ahead: list[float] | None = None, skip: list[tuple[float, float]] = ()) -> tuple[float, float | None]:
    """(rate per second now, ETA in seconds or None): the per-node rate (``skip``: ``changes``) times the nodes
    working now, and the time ``finish_in`` needs with the slots producing from ``ahead`` (``slots_ahead``; by
    default ``working`` slots producing now); the nodes' summed heartbeat rates when the window shows no
    progress yet."""
    if left <= 0:
        return 0.0, 0.0
    per_node = per_node_rate(points, skip)
    if per_node is None:
        rate = heartbeat_rate
        return rate, (left / rate if rate > 0 else None)
    return per_node * working, finish_in(per_node, left, [0.0] * int(working) if ahead is None else ahead)


GONE = ("lost", "preempted", "failed", "unhealthy")   # a node that does no more work (supervise.GONE)


def start_delay(points: list, started_at: float) -> float:
    """Seconds from the run's start to its first outputs, as the window saw them (the middle of the interval in
    which they appeared, after ``run``'s first point at the start); 0 once the window no longer holds the start."""
    pts = _clean(points)
    if len(pts) < 2 or abs(pts[0][0] - started_at) > 1e-3:
        return 0.0
    rose = next((i for i in range(1, len(pts)) if pts[i][1] > pts[0][1]), None)
    if rose is None:
        return 0.0
    return max(0.0, (pts[rose - 1][0] + pts[rose][0]) / 2 - started_at)


def _median(xs: list[float]) -> float | None:
    xs = sorted(xs)
    return None if not xs else (xs[(len(xs) - 1) // 2] + xs[len(xs) // 2]) / 2


def _silent_since(change: dict, lost_after: float) -> float:
    """From when a node found lost (an event) or with its mount dropped (a repair) may have made nothing: its
    last heartbeat (``seen_at``), else ``lost_after`` before it was found."""
    detected, seen = change["detected_at"], change.get("seen_at")
    if isinstance(seen, (int, float)) and detected - lost_after < seen <= detected:
        return seen
    return detected - lost_after


def changes(record: dict, start_s: float, lost_after: float) -> list[tuple[float, float]]:
    """Stretches in which the fleet changed unseen by the window's counts, for ``per_node_rate``'s ``skip``:
    before a loss was detected, from the node's last heartbeat (the event's ``seen_at``; else the ``lost_after``
    seconds before), as the node may have been dead while counted working, up to the look that detected it
    (which still counted it, and so did the interval after it); a replacement's start (from its start to
    ``start_s`` after it, counted working, making nothing yet); and a node whose mount dropped
    (``record["repairs"]``, nodehealth), from its last heartbeat until it works again.  Between them the counts
    are right (a gone node is not working).  Measured on the chaos test (9 losses in 15 s, a whole-fleet loss
    among them): with ``lost_after`` alone every interval was left out, the fallback on all of them put the
    rate per node at 1.9 instead of 2.8, and the ETA ran 31 % of the run too long."""
    by_name = {e.get("name"): e for e in record.get("nodes") or []}
    out = []
    for name, ev in (record.get("events") or {}).items():
        if not isinstance(ev.get("detected_at"), (int, float)):
            continue
        # the entry names its replacement as soon as it is being started (the event once it has started)
        new = by_name.get(ev.get("replaced_by") or (by_name.get(name) or {}).get("replaced_by")) or {}
        began = new.get("started_at") or ev.get("replaced_at")
        out.append((_silent_since(ev, lost_after), ev["detected_at"]))
        if isinstance(began, (int, float)):
            out.append((began, began + start_s))
    for rep in record.get("repairs") or []:     # a dropped mount: silent, counted working, until it works again
        if not isinstance(rep.get("detected_at"), (int, float)):
            continue
        back = rep.get("working_at")
        end = back if isinstance(back, (int, float)) else float("inf") if rep.get("open") else rep["detected_at"]
        out.append((_silent_since(rep, lost_after), end))
    return out


def slots_ahead(record: dict, nodes: list[dict], now: float, start_s: float) -> list[float]:
    """When each slot (shard) of the run produces, in seconds from now, for ``finish_in``:

    * a node running: now (0);
    * a node starting (no heartbeat yet): ``start_s`` after it was started (the run's own start delay);
    * a node gone (lost, preempted, failed: the supervisor's events, or its state) while the supervisor carries
      the run (``record["until_done"]``): its replacement, as long after the loss as this run's replacements
      took (their start less the loss's detection; of the same cause when there are such), plus ``start_s``;
      before any replacement was measured, as long again as the node has been gone already (the more it is
      late, the less it is near);
    * without a supervisor, a gone node and a finished one never produce again (left out).
    At most the run's shard count of slots, the soonest."""
    events = record.get("events") or {}
    by_name = {e.get("name"): e for e in record.get("nodes") or []}
    state = {n["name"]: n.get("state") for n in nodes}
    took: dict[str, list[float]] = {}
    for name, ev in events.items():
        new = by_name.get(ev.get("replaced_by"))
        began = (new or {}).get("started_at") or ev.get("replaced_at")
        if new is not None and isinstance(began, (int, float)) and isinstance(ev.get("detected_at"), (int, float)):
            took.setdefault(str(ev.get("cause")), []).append(max(0.0, began - ev["detected_at"]))
    supervised = bool(record.get("until_done"))
    out = []
    for e in record.get("nodes") or []:
        if e.get("replaced_by"):
            continue
        name, st, ev = e.get("name"), state.get(e.get("name")), events.get(e.get("name"))
        if ev is not None or st in GONE:
            if not supervised:
                continue
            ev = ev or {}
            detected = ev.get("detected_at") if isinstance(ev.get("detected_at"), (int, float)) else now
            gone_s = max(0.0, now - detected)
            typical = _median(took.get(str(ev.get("cause") or st), []) or [x for v in took.values() for x in v])
            out.append((gone_s if typical is None else max(0.0, typical - gone_s)) + start_s)
        elif st == "running":
            out.append(0.0)
        elif st == "starting":
            began = e.get("started_at") if isinstance(e.get("started_at"), (int, float)) else record.get("started_at")
            out.append(max(0.0, float(began or now) + start_s - now))
    shards = int(record.get("shards") or len(record.get("nodes") or []))
    return sorted(out)[:shards]


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


def look(disk, run_rel: str, record: dict, nodes: list[dict], now: float, settled: int, left: int, working: int,
         lost_after: float, heartbeat_rate: float = 0.0) -> tuple[float, float | None]:
    """One look at a running run (``progress.snapshot``): its point added to the window on the shared disk,
    then ``estimate`` with the run's own start delay, the fleet's changes left out of the rate and each slot's
    time ahead (``nodes``: the snapshot's, with name and state)."""
    points = observe(disk, run_rel, now, settled, working)
    start_s = start_delay(points, float(record["started_at"]))
    return estimate(points, left, working, heartbeat_rate, ahead=slots_ahead(record, nodes, now, start_s),
                    skip=changes(record, start_s, lost_after))


def error_figures(polls: list, finish: float, started: float, since: float = 0.1, upto: float = 1.0,
                  changes: list[float] = (), calm_s: float = 0.0) -> dict:
    """How far off an ETA was (the measurements: bench/test_progress_eta.py, the chaos test): ``polls`` are
    (time, share settled, ETA in seconds or None); the error of one is ``|time + ETA - finish|`` as a share of
    the run (``finish - started``).  Worst and mean in percent over the polls from ``since`` to ``upto``
    settled before the finish, ``unknown``: polls there without an ETA.  ``changes`` (times a node was lost or
    a replacement started) with ``calm_s``: only the polls with no change in the ``calm_s`` seconds before."""
    length = finish - started
    errs, unknown = [], 0
    for t, share, eta_s in polls:
        if not (since <= share < 1.0 and share <= upto and t < finish):
            continue
        if any(0.0 <= t - c < calm_s for c in changes):
            continue
        if eta_s is None:
            unknown += 1
        else:
            errs.append(100 * abs(t + eta_s - finish) / length)
    return {"max": round(max(errs), 1) if errs else None, "mean": round(sum(errs) / len(errs), 1) if errs else None,
            "unknown": unknown, "polls": len(errs) + unknown}
