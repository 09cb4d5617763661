"""Chaos on a real 3-node local fleet (issue 13): `invoke run --until-done` finishes a run by itself while a seeded
killer preempts (with notice) or kills (without) its nodes, two at once, and the whole fleet once.

Robust under load: the killer acts on observed progress (outputs on the head's disk, heartbeats in the run
record), never on sleeps; the workload is slow per item by a sleep (``job.item_delay``), not by CPU; every wait
has a generous deadline; the assertions are on outcomes (outputs, counts), never on timings.
"""
from __future__ import annotations

import json
import os
import random
import secrets
import shutil
import subprocess
import time
from pathlib import Path

import pytest
from tests.support.fleet import INVOKE, bring_up, check_resized, outputs, sampled_ctx

from playbooks.providers import local, preempt
from playbooks.runs import state as runstate
from playbooks.settings.defaults import REPO

pytestmark = [pytest.mark.fleet, pytest.mark.chaos, pytest.mark.timeout(900)]
NAME = "chaos" + secrets.token_hex(2)
IMAGES = 400
DELAY = 0.35            # seconds of sleep per item: about 2.5 items/s per node, whatever the CPU load
GRACE = 6.0             # seconds between a preemption notice and the kill
# (what, how many nodes at once): >= 5 events, two nodes at once, the whole fleet once
EVENTS = [("preempt", 1), ("kill", 1), ("kill", 2), ("preempt", 1), ("kill", 3), ("kill", 1)]
GAP = 12                # outputs made between two events (observed, not timed)


@pytest.fixture(scope="module")
def ctx(fleet_base):
    yield from sampled_ctx(fleet_base, NAME, IMAGES, (160, 120), job__lost_after=4.0, job__poll=0.5,
                           local__cores_per_node=1)


@pytest.fixture(scope="module")
def up(ctx):
    bring_up(ctx, NAME, n=3)
    return ctx


def _done(c) -> int:
    return sum(1 for k in outputs(c) if k.endswith(".jpg") and not os.path.basename(k).startswith("."))


def _record(c) -> dict | None:
    try:
        return runstate.load_run(c)
    except Exception:  # noqa: BLE001 - not written yet, or being rewritten
        return None


def _running_active(c, record: dict) -> list[str]:
    """Active nodes (not replaced) whose workload has a fresh heartbeat and no exit."""
    names = []
    for e in record["nodes"]:
        if e.get("replaced_by"):
            continue
        beat, exit_ = runstate.node_files(c, record["run_id"], e["name"])
        if exit_ is None and beat and beat.get("state") != "preempted" and time.time() - beat["updated_at"] < 4:
            names.append(e["name"])
    return names


def _until(what, check, deadline_s: float, proc=None):
    deadline = time.monotonic() + deadline_s
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        if proc is not None and proc.poll() is not None:
            raise AssertionError(f"the supervisor ended before {what}: {proc.stdout.read()}")
        time.sleep(0.2)
    raise AssertionError(f"not within {deadline_s:.0f} s: {what}")


class _Renames:
    """Counts outputs renamed into place below a folder (inotify IN_MOVED_TO of non-dot names): exact duplicate
    work, independent of what the nodes report."""

    def __init__(self, root: Path):
        import ctypes
        import threading
        self.libc = ctypes.CDLL(None, use_errno=True)
        self.fd = self.libc.inotify_init1(os.O_NONBLOCK)
        self.root, self.count, self.wds, self.stop = root, 0, {}, False
        self.thread = threading.Thread(target=self._loop, daemon=True)

    def watch(self, folder: Path):
        wd = self.libc.inotify_add_watch(self.fd, str(folder).encode(), 0x80 | 0x100)  # MOVED_TO | CREATE
        self.wds[wd] = folder

    def _loop(self):
        import select
        import struct
        while not self.stop:
            r, _, _ = select.select([self.fd], [], [], 0.2)
            if not r:
                continue
            data = os.read(self.fd, 65536)
            pos = 0
            while pos < len(data):
                wd, mask, _cookie, size = struct.unpack_from("iIII", data, pos)
                name = data[pos + 16:pos + 16 + size].rstrip(b"\0").decode()
                pos += 16 + size
                if mask & 0x80 and name.endswith(".jpg") and not name.startswith("."):
                    self.count += 1

    def start(self):
        self.thread.start()
        return self

    def close(self):
        self.stop = True
        self.thread.join(2)
        os.close(self.fd)


def test_until_done_finishes_a_run_through_preemptions_kills_and_the_whole_fleet_lost(up, fleet_base):
    src = fleet_base / "data" / "src"
    out = fleet_base / "data" / "out"
    for sub in sorted({p.parent.relative_to(src) for p in src.rglob("*.jpg")}):
        (out / sub).mkdir(parents=True, exist_ok=True)
    renames = _Renames(out)
    for sub in sorted({p.parent.relative_to(src) for p in src.rglob("*.jpg")}):
        renames.watch(out / sub)
    renames.start()
    env = {**os.environ, "INVOKE_FLEET_STATE_DIR": str(fleet_base / "state"),
           "INVOKE_SHARED_ROOT": str(fleet_base / "data"), "INVOKE_JOB_LOST_AFTER": "4",
           "INVOKE_JOB_POLL": "0.5", "INVOKE_JOB_ITEM_DELAY": str(DELAY), "INVOKE_LOCAL_CORES_PER_NODE": "1",
           "COLUMNS": "200"}
    proc = subprocess.Popen([INVOKE, "run", "--workload", "resize", "--args", "--size 64", "--name", NAME,
                             "--until-done", "--max-replacements", "20"], cwd=REPO, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    rng = random.Random(13)
    injected = {"preempt": 0, "kill": 0}
    noticed: dict[str, float] = {}
    timers = []
    try:
        record = _until("the run starts", lambda: _record(up) if _done(up) > 0 else None, 120, proc)
        run_id = record["run_id"]
        last = _done(up)
        victims: list[str] = []
        for what, count in EVENTS:
            def ready():
                rec = _record(up)
                if rec is None or rec["run_id"] != run_id or _done(up) < last + GAP:
                    return None
                by_name = {e["name"]: e for e in rec["nodes"]}
                if any(not by_name.get(v, {}).get("replaced_by") for v in victims):
                    return None        # the previous event's nodes are not replaced yet
                alive = _running_active(up, rec)
                return alive if len(alive) >= count else None
            alive = _until(f"{count} running node(s) for the {what}", ready, 240, proc)
            victims = rng.sample(sorted(alive), count)
            for v in victims:
                if what == "kill":
                    local.kill_node(up, NAME, v)
                else:
                    noticed[v] = time.time()
                    timers.append(preempt.preempt(up, NAME, v, GRACE, wait=False))
                injected[what] += 1
            last = _done(up)
        try:
            stdout, _ = proc.communicate(timeout=600)
        except subprocess.TimeoutExpired:
            proc.kill()
            raise
    finally:
        renames.close()
        if proc.poll() is None:
            proc.kill()
    for t in timers:
        t.join(30)
    assert proc.returncode == 0, stdout
    assert _done(up) == IMAGES
    # every output present and valid, none partial (no temp file left), no claim left
    check_resized(up, size=64)
    assert not [k for k in outputs(up) if os.path.basename(k).startswith(".")], outputs(up)
    assert not (out / ".failed").exists() or not list((out / ".failed").iterdir())
    report = json.loads((Path(up.config.shared.root) / runstate.run_rel(run_id) / "report.json").read_text())
    # the ETA (issue 13 item 5): from 10 % done, and only where no node was lost or replaced in the 5 s before
    from playbooks.runs.eta import error_figures
    final, finish = _record(up) or {}, max(p.stat().st_mtime for p in out.rglob("[!.]*.jpg"))
    changes = [t for ev in (final.get("events") or {}).values() for t in (ev.get("detected_at"), ev.get("replaced_at"))
               if t]
    polls = [(p["t"], (p["done"] + p["failed"]) / IMAGES, p["eta_s"]) for p in report["eta_polls"]]
    print(f"\nCHAOS ETA from 10 %: {error_figures(polls, finish, record['started_at'])}; no loss or replacement in the "
          f"5 s before: {error_figures(polls, finish, record['started_at'], changes=changes, calm_s=5.0)}")
    if os.environ.get("FLEETBOOK_ETA_RECORD"):     # a folder: the run's ETA polls and window (tests/test_eta.py)
        Path(os.environ["FLEETBOOK_ETA_RECORD"]).mkdir(parents=True, exist_ok=True)
        (Path(os.environ["FLEETBOOK_ETA_RECORD"]) / "chaos.json").write_text(json.dumps(
            {"started": record["started_at"], "finish": finish, "total": IMAGES, "events": final.get("events"),
             "nodes": final.get("nodes"), "report": report, "points": json.loads(
                 (Path(up.config.shared.root) / runstate.run_rel(run_id) / "rate.json").read_text())["points"]}))
        # the run's folder too (node logs, heartbeats), to read what a slow poll saw
        shutil.copytree(Path(up.config.shared.root) / runstate.run_rel(run_id),
                        Path(os.environ["FLEETBOOK_ETA_RECORD"]) / "chaos-run", dirs_exist_ok=True)
    assert report["done"] == IMAGES and report["failed"] == 0 and report["bound"] is None
    assert report["nodes_preempted"] == injected["preempt"]
    assert report["nodes_lost"] == injected["kill"]
    assert report["nodes_replaced"] == injected["preempt"] + injected["kill"]
    assert "duplicate" in stdout and f"replaced {report['nodes_replaced']}" in stdout
    # a preempted node's replacement is started during its notice, beside the machine on its way out
    started = {e["replaces"]: e["started_at"] for e in final["nodes"] if e.get("replaces")}
    assert all(started[v] < at + GRACE for v, at in noticed.items()), (noticed, started)
    duplicate = (renames.count - IMAGES) / IMAGES
    print(f"\nCHAOS: renames={renames.count} for {IMAGES} items (duplicate {100 * duplicate:.1f} %), "
          f"report={ {k: v for k, v in report.items() if k != 'eta_polls'} }")
    assert duplicate <= 0.05


def test_until_done_repairs_a_node_whose_mount_died(up, fleet_base):
    """One node's sshfs is killed mid-run: its workload waits for the mount (no item failed), the supervisor finds
    it silent, reads why on the node itself ("mount lost: Transport endpoint is not connected"), remounts it and
    the workload goes on, on its shard; nothing replaced; every item done once."""
    from tests.support.fleet import cmdline
    out = fleet_base / "data" / "out-mount"
    env = {**os.environ, "INVOKE_FLEET_STATE_DIR": str(fleet_base / "state"),
           "INVOKE_SHARED_ROOT": str(fleet_base / "data"), "INVOKE_JOB_LOST_AFTER": "4",
           "INVOKE_JOB_POLL": "0.5", "INVOKE_JOB_ITEM_DELAY": str(DELAY), "INVOKE_LOCAL_CORES_PER_NODE": "1",
           "COLUMNS": "200"}
    before = _record(up)
    proc = subprocess.Popen([INVOKE, "run", "--workload", "resize", "--dst", "out-mount", "--args", "--size 64",
                             "--name", NAME, "--until-done"], cwd=REPO, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        def started():
            rec = _record(up)
            if rec is None or (before and rec["run_id"] == before["run_id"]):
                return None
            made = [p for p in out.rglob("*.jpg") if not p.name.startswith(".")] if out.exists() else []
            alive = _running_active(up, rec)
            return (rec, alive) if len(made) >= 20 and len(alive) == 3 else None
        record, alive = _until("the run is under way", started, 240, proc)
        victim = sorted(alive)[0]
        mounts = [p for p in local.node_processes(NAME, victim) if "sshfs" in cmdline(p)]
        assert mounts, "no sshfs process on the victim"
        for p in mounts:
            p.kill()
        killed_at = time.time()
        stdout, _ = proc.communicate(timeout=600)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, stdout
    made = sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file() and ".failed" not in p.parts)
    src = fleet_base / "data" / "src"
    assert made == sorted(p.relative_to(src).with_suffix(".jpg").as_posix() for p in src.rglob("*.jpg"))
    report = json.loads((Path(up.config.shared.root) / runstate.run_rel(record["run_id"]) / "report.json")
                        .read_text())
    assert report["done"] == IMAGES and report["failed"] == 0
    assert report["nodes_lost"] == 0 and report["nodes_replaced"] == 0 and report["nodes_preempted"] == 0
    assert report["mounts_repaired"] == 1
    [repair] = report["repairs"]
    assert repair["node"] == victim and repair["cause"] == "mount lost: Transport endpoint is not connected"
    said = " ".join(stdout.split())
    assert f"mounts repaired 1 ({victim}: mount lost: Transport endpoint is not connected)" in said, said
    assert report["duplicate_pct"] <= 5
    log = (Path(up.config.shared.root) / runstate.node_state_rel(record["run_id"], victim) / "log.txt").read_text()
    assert "the mount answers again" in log and "Traceback" not in log, log
    print(f"\nMOUNT: loss to working again {repair['working_at'] - killed_at:.1f} s; "
          f"{ {k: v for k, v in report.items() if k != 'eta_polls'} }")
