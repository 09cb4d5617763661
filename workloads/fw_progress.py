"""fw_progress: what a run tells while it runs (heartbeat.json every ~2 s with ``--state``, the TTY bar, the
log lines on stderr) and what a destination tells afterwards (``count_progress``).  Standard library only.
"""
from __future__ import annotations

import os
import sys
import threading
import time

from fw_failures import find_collisions, read_failures
from fw_outputs import HOST, scan_outputs, write_json

HEARTBEAT_EVERY = 2.0
CURRENT: list = []          # the run's Progress while run_items runs (fw_cli's notice hook marks its heartbeat)


def output_made() -> None:
    """An output was just written in this process (``fw_items``): its time goes into the heartbeat as
    ``last_output_at`` (with the next beat), the first one at once as ``first_output_at``, since ``done``
    counts a claim block only once it is settled (16 items, 5.6 s of the chaos test's), so the supervisor's
    "replacement working" or "working again" came that much late.  Nothing in a pool worker (its parent's
    Progress is not here: the pool reports per chunk)."""
    now = time.time()
    for prog in CURRENT:
        if prog.owner != os.getpid():           # a forked worker's copy
            continue
        prog.extra["last_output_at"] = now
        if "first_output_at" not in prog.extra:
            prog.extra["first_output_at"] = now
            prog.beat()


class Progress:
    """Counters shared by the run loop, the heartbeat thread and the TTY bar."""

    def __init__(self, total, node, state_dir, bar):
        self.total, self.node, self.state_dir, self.bar = total, node, state_dir, bar
        self.done = self.skipped = self.failed = 0
        self.busy: list[str] = []              # items another node held when this one came to them (claims)
        self.seen: set = set()                 # items done, skipped or failed so far (a resume skips them)
        self.extra: dict = {}                  # more heartbeat fields, e.g. {"state": "preempted"}
        self.error: str | None = None          # why the run stopped (the destination failed), once it did
        self.started = time.time()
        self.owner = os.getpid()
        self.t0 = time.perf_counter()
        self._last_bar = 0.0
        self._stop = threading.Event()
        self._thread = None

    def snapshot(self) -> dict:
        elapsed = max(1e-9, time.perf_counter() - self.t0)
        return {"node": self.node, "pid": os.getpid(), "host": HOST, "total": self.total, "done": self.done,
                "skipped": self.skipped, "failed": self.failed, "rate_per_s": round(self.done / elapsed, 3),
                "started_at": self.started, "updated_at": time.time(), **({"error": self.error} if self.error else {}),
                **self.extra}

    def beat(self):
        if self.state_dir:
            try:
                write_json(os.path.join(self.state_dir, "heartbeat.json"), self.snapshot())
            except OSError:
                pass

    def start(self):
        self.beat()

    def start_thread(self):
        """Heartbeats while items run (started after the pool has forked its workers)."""
        if self.state_dir and self._thread is None:
            self._thread = threading.Thread(target=self._loop, name="fleetwork-heartbeat", daemon=True)
            self._thread.start()

    def _loop(self):
        while not self._stop.wait(HEARTBEAT_EVERY):
            self.beat()

    def stop(self):
        self._stop.set()
        if self._thread:
            self._thread.join(5)
        self.beat()
        if self.bar:
            self.draw(force=True)
            sys.stdout.write("\n")
            sys.stdout.flush()

    def add(self, status, item=None):
        if status == "busy":                   # not counted: it comes back at the end of the pass
            if item not in self.busy:
                self.busy.append(item)
            return
        if item in self.busy:
            self.busy.remove(item)
        if item is not None:
            self.seen.add(item)
        setattr(self, status, getattr(self, status) + 1)
        if self.bar:
            self.draw()

    def draw(self, force=False):
        now = time.perf_counter()
        if not force and now - self._last_bar < 0.1:
            return
        self._last_bar = now
        n = self.done + self.skipped + self.failed
        width = 30
        fill = int(width * n / self.total) if self.total else width
        rate = self.done / max(1e-9, now - self.t0)
        sys.stdout.write(f"\r[{'#' * fill}{'.' * (width - fill)}] {n}/{self.total} done={self.done} "
                         f"skipped={self.skipped} failed={self.failed} {rate:.1f}/s ")
        sys.stdout.flush()


def log(opts, text):
    if not getattr(opts, "quiet", False):
        print(f"fleetwork: {text}", file=sys.stderr, flush=True)


def count_progress(workload, src: str, dst: str, opts, items: list[str] | None = None) -> dict:
    """{"total","done","failed","pending"} on a LOCAL disk: done = expected outputs present (collision losers
    never count as done), failed = failure records of items not done.  ``items``: the source's items when the
    caller listed them already (they do not change during a run; the outputs do)."""
    items = workload.list_items(src, opts) if items is None else items
    return tally(workload, items, opts, scan_outputs(dst), read_failures(dst))


def tally(workload, items, opts, outputs, failures) -> dict:
    """The count itself, wherever the outputs and failure records were listed (a disk, or a bucket:
    fw_objstore.count_progress): done = expected outputs present, collision losers never done."""
    losers = find_collisions(workload, items, opts)
    done = failed = 0
    for item in items:
        if item not in losers and workload.output_for(item, opts) in outputs:
            done += 1
        elif item in failures:
            failed += 1
    return {"total": len(items), "done": done, "failed": failed, "pending": len(items) - done - failed}
