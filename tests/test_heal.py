"""Issue 13 without a fleet: per-item claims, preemption notices (a loopback fake metadata server), the head's
ETA error of the final report (the rate window: tests/test_eta.py), the head's sweep of an ended run."""
from __future__ import annotations

import json
import os
import subprocess
import time
from pathlib import Path

import pytest
from tests.support.metadata import Metadata as _Metadata, metadata  # noqa: F401 - metadata: a fixture
from tests.support.workloads import PY, check_jpeg_outputs, many_jpegs, run, script, summary_of, temp_files

import fw_claims as claims
import fw_notice as notice
from playbooks import supervise


# ------------------------------------------------------------------------------------------------ claims
def test_a_claim_is_held_once_and_released(tmp_path):
    first = claims.acquire(str(tmp_path), "a.jpg", node="n0")
    assert first and os.path.exists(first)
    assert claims.acquire(str(tmp_path), "a.jpg", node="n1") is None        # this live process holds it
    claims.release(first)
    assert not os.path.exists(first)
    assert claims.acquire(str(tmp_path), "a.jpg", node="n1") == first


def test_a_claim_of_a_dead_process_is_taken_over(tmp_path):
    dead = subprocess.Popen([PY, "-c", "pass"])
    dead.wait()
    path = claims.path_for(str(tmp_path), "b.jpg")
    os.makedirs(os.path.dirname(path))
    Path(path).write_text(json.dumps({"item": "b.jpg", "host": claims.HOST, "pid": dead.pid, "time": time.time()}))
    assert claims.acquire(str(tmp_path), "b.jpg") == path
    assert json.loads(Path(path).read_text())["pid"] == os.getpid()
    assert not [n for n in os.listdir(os.path.dirname(path)) if claims.STALE_MARK in n]


def test_a_claim_of_another_host_lives_as_long_as_its_heartbeat(tmp_path, monkeypatch):
    monkeypatch.setenv("FLEETBOOK_RUN", "r1")
    monkeypatch.setenv("FLEETBOOK_LOST_AFTER", "5")
    nodes = tmp_path / "nodes"
    (nodes / "other").mkdir(parents=True)
    beat = nodes / "other" / "heartbeat.json"
    rec = {"item": "c", "host": "elsewhere", "pid": 1, "node": "other", "run": "r1", "time": time.time()}
    beat.write_text(json.dumps({"updated_at": time.time()}))
    assert not claims.stale(rec, time.time(), str(nodes / "me"))
    beat.write_text(json.dumps({"updated_at": time.time() - 60}))
    assert claims.stale(rec, time.time(), str(nodes / "me"))


def test_helpers_and_owners_never_do_an_item_twice(tmp_path):
    """Three shards of one folder at once, each node helping the others: every output is renamed into place
    exactly once (the nodes' own counts add up to the items)."""
    src, dst = tmp_path / "src", tmp_path / "dst"
    names = many_jpegs(src, 60, side=96)
    env = {**os.environ, "FLEETBOOK_PROFILE": "/nonexistent", "FLEETBOOK_ITEM_DELAY": "0.02"}
    procs = [subprocess.Popen([PY, script("resize"), "--src", str(src), "--dst", str(dst), "--shard", f"{i}/3",
                               "--workers", "1", "--quiet"], stdout=subprocess.PIPE, text=True, env=env)
             for i in range(3)]
    done = [summary_of(p.communicate(timeout=120)[0])["done"] for p in procs]
    assert all(p.returncode == 0 for p in procs)
    assert sum(done) == len(names), done
    check_jpeg_outputs(dst, names)
    assert not temp_files(dst) and claims.unsettled(str(dst)) == []        # only done markers (the head sweeps them)


# ------------------------------------------------------------------------------------------------ notices
@pytest.mark.parametrize("kind", ["gcp", "aws"])
def test_a_cloud_notice_is_seen_on_the_metadata_server(metadata, kind):
    assert notice.check_once(kind, metadata.endpoint) is None
    _Metadata.preempted = True
    assert notice.check_once(kind, metadata.endpoint) == notice.GRACE[kind]


def test_a_notice_mid_run_stops_cleanly_preempted(metadata, tmp_path):
    """The runner sees the notice on the (fake) metadata server, claims nothing new, lets the item in flight
    finish, writes its last heartbeat and exit as preempted; no partial output, no claim left but stale ones."""
    src, dst, state = tmp_path / "src", tmp_path / "dst", tmp_path / "state"
    names = many_jpegs(src, 40, side=96)
    env = {"FLEETBOOK_METADATA_KIND": "gcp", "FLEETBOOK_METADATA_URL": metadata.endpoint,
           "FLEETBOOK_ITEM_DELAY": "0.2", "FLEETBOOK_GRACE": "5"}
    proc = subprocess.Popen([PY, script("resize"), "--src", str(src), "--dst", str(dst), "--workers", "2",
                             "--state", str(state), "--quiet"], stdout=subprocess.PIPE, text=True,
                            env={**os.environ, "FLEETBOOK_PROFILE": "/nonexistent", **env})
    deadline = time.monotonic() + 60
    while len([p for p in dst.rglob("*.jpg") if not p.name.startswith(".")]) < 3:
        assert time.monotonic() < deadline and proc.poll() is None
        time.sleep(0.05)
    _Metadata.preempted = True
    out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 143
    exit_ = json.loads((state / "exit.json").read_text())
    beat = json.loads((state / "heartbeat.json").read_text())
    assert exit_["preempted"] is True and beat["state"] == "preempted"
    made = [p for p in dst.rglob("*.jpg") if not p.name.startswith(".")]
    assert 3 <= len(made) < len(names)
    assert not temp_files(dst)
    # a later run finishes the set, taking over the dead runner's claims
    r = run("resize", "--src", src, "--dst", dst, "--workers", 2)
    assert r.returncode == 0, r.stderr
    check_jpeg_outputs(dst, names)
    assert claims.unsettled(str(dst)) == []                   # only done markers (the head sweeps them)


# ------------------------------------------------------------------------------------------------ the head
def test_eta_error_is_the_worst_poll_between_10_and_90_percent():
    polls = [{"t": 10.0, "done": 5, "failed": 0, "total": 100, "eta_s": None},
             {"t": 20.0, "done": 20, "failed": 0, "total": 100, "eta_s": 80.0},
             {"t": 50.0, "done": 50, "failed": 0, "total": 100, "eta_s": 45.0}]
    assert supervise.eta_error(polls, finish=100.0, started=0.0) == 5.0
    polls[1]["eta_s"] = None
    assert supervise.eta_error(polls, finish=100.0, started=0.0) is None


def test_the_first_output_is_in_the_heartbeat_before_its_block_is_counted(tmp_path):
    """``done`` counts a claim block once it is settled (16 items); the supervisor's "replacement working"
    reads ``first_output_at``, written with the first output (it came up to a block's time late: the chaos
    test's 5.4-10.4 s from a loss to its replacement working), and "working again" after a mount repair reads
    ``last_output_at``."""
    src, dst, state = tmp_path / "src", tmp_path / "dst", tmp_path / "state"
    many_jpegs(src, 40, side=64)
    proc = subprocess.Popen([PY, script("resize"), "--src", str(src), "--dst", str(dst), "--workers", "1",
                             "--state", str(state), "--quiet"], stdout=subprocess.DEVNULL,
                            env={**os.environ, "FLEETBOOK_PROFILE": "/nonexistent", "FLEETBOOK_ITEM_DELAY": "0.3"})
    try:
        deadline, beat = time.monotonic() + 60, {}
        while "first_output_at" not in beat:
            assert time.monotonic() < deadline and proc.poll() is None, beat
            try:
                beat = json.loads((state / "heartbeat.json").read_text())
            except (OSError, ValueError):
                pass
            time.sleep(0.05)
        made = [p for p in dst.rglob("*.jpg") if not p.name.startswith(".")]
        assert made and beat["done"] < len(made) + 16 and beat["done"] == 0
        assert abs(beat["first_output_at"] - min(p.stat().st_mtime for p in made)) < 1.0
        assert proc.wait(timeout=60) == 0
        last = json.loads((state / "heartbeat.json").read_text())          # its newest output, for a repair
        made = [p for p in dst.rglob("*.jpg") if not p.name.startswith(".")]
        assert abs(last["last_output_at"] - max(p.stat().st_mtime for p in made)) < 1.0
        assert last["first_output_at"] == beat["first_output_at"]
    finally:
        if proc.poll() is None:
            proc.kill()
