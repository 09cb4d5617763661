"""Claim blocks that end as done markers (workloads/fw_claims.py, issue 13 item 3): the holder of a block needs no
stat per item over the mount, a helper skips a done block with one read, a dead holder's block is checked (and
only the item in flight redone), a stopped holder's partial marker says what it settled, a new run trusts no
marker of an old one."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from types import SimpleNamespace

import pytest

from tests.support.workloads import fleetwork

import fw_claims
import fw_items
import fw_notice
from fw_items import Job, Task

ITEMS = [f"d{k % 4}/i{k:03d}" for k in range(64)]


class Echo(fleetwork.Workload):
    name = "echo"
    needs_src = False

    def __init__(self):
        super().__init__()
        self.calls = []

    def output_for(self, item, opts):
        return item + ".out"

    def process(self, item, src, dst, opts):
        self.calls.append(item)
        fleetwork.atomic_write(os.path.join(dst, self.output_for(item, opts)), item.encode())


class StatCounter:
    """Counts os.stat / os.lstat (os.path.exists, isfile, ... go through them) on the items' output paths, and on
    any path below the destination, while active."""

    def __init__(self, monkeypatch, dst):
        self.dst = os.path.abspath(dst)
        self.outputs = {os.path.join(self.dst, it + ".out") for it in ITEMS}
        self.on_outputs = self.below_dst = 0
        for name in ("stat", "lstat"):
            real = getattr(os, name)
            monkeypatch.setattr(os, name, self._wrap(real))

    def _wrap(self, real):
        def counted(path, *a, **kw):
            if isinstance(path, (str, bytes, os.PathLike)) and not kw.get("dir_fd") and not a:
                p = os.path.abspath(os.fsdecode(os.fspath(path)))
                self.on_outputs += p in self.outputs
                self.below_dst += p.startswith(self.dst + os.sep)
            return real(path, *a, **kw)
        return counted


@pytest.fixture
def env(monkeypatch):
    monkeypatch.setenv("FLEETBOOK_CLAIM_BLOCK", "8")
    monkeypatch.setenv("FLEETBOOK_RUN", "run-1")
    monkeypatch.delenv("FLEETBOOK_CLAIMS", raising=False)
    monkeypatch.setenv("FLEETBOOK_PROFILE", "/nonexistent/profile.json")


def opts(dst, shard):
    return SimpleNamespace(shard=shard, workers=1, threads=1, quiet=True, state=None, retry_failed=False,
                           follow_links=False, dst=str(dst))


def mark(dst, key) -> dict:
    with open(fw_claims.path_for(str(dst), key)) as f:
        return json.load(f)


def outputs(dst):
    return sorted(os.path.relpath(os.path.join(r, f), dst)[:-4] for r, _d, fs in os.walk(dst)
                  if ".claims" not in r and ".failed" not in r for f in fs if f.endswith(".out"))


def test_the_holder_of_a_block_makes_no_stat_per_item_and_a_helper_skips_done_blocks(tmp_path, monkeypatch, env):
    dst = tmp_path / "dst"
    wl = Echo()
    count = StatCounter(monkeypatch, dst)
    owner = fleetwork.run_items(wl, ITEMS, "", str(dst), opts(dst, "0/2"), progress_bar=False)
    assert owner["done"] == len(ITEMS) and outputs(dst) == sorted(ITEMS)
    assert count.on_outputs == 0, count.on_outputs          # was one per item (os.path.exists before each)
    blocks = len({fw_claims.block_of(it, 2, len(ITEMS)) for it in ITEMS})
    assert fw_claims.unsettled(str(dst)) == [] and len(os.listdir(dst / ".claims")) == blocks
    # a helper of the same run whose start listing saw nothing done (known=): every block is a done marker,
    # skipped whole by one read of it, nothing done twice, still no stat of an output
    helper = fleetwork.run_items(wl, ITEMS, "", str(dst), opts(dst, "1/2"), progress_bar=False, known=(set(), {}))
    assert (helper["done"], helper["skipped"]) == (0, len(ITEMS))
    assert count.on_outputs == 0 and len(wl.calls) == len(ITEMS)
    print(f"\nSTATS: {count.on_outputs / (2 * len(ITEMS)):.2f} stats of outputs per item, "
          f"{count.below_dst / (2 * len(ITEMS)):.2f} stats below the destination per item (claims included)")


def test_a_dead_holders_block_is_checked_and_only_the_item_in_flight_redone(tmp_path, monkeypatch, env):
    dst = tmp_path / "dst"
    key = fw_claims.block_of(ITEMS[0], 1, len(ITEMS))
    block = [it for it in ITEMS if fw_claims.block_of(it, 1, len(ITEMS)) == key]
    assert len(block) >= 3
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    os.makedirs(dst / ".claims")
    path = fw_claims.path_for(str(dst), key)
    with open(path, "w") as f:                         # its holder did block[0] and block[1], died on block[2]
        json.dump({"item": key, "host": fw_claims.HOST, "pid": dead.pid, "runner": dead.pid, "run": "run-1",
                   "token": "run-1", "time": 0}, f)
    for it in block[:2]:
        fleetwork.atomic_write(str(dst / (it + ".out")), b"by the dead holder")
    wl = Echo()
    count = StatCounter(monkeypatch, dst)
    summary = fleetwork.run_items(wl, ITEMS, "", str(dst), opts(dst, None), progress_bar=False, known=(set(), {}))
    assert summary["skipped"] == 2 and summary["done"] == len(ITEMS) - 2
    assert sorted(wl.calls) == sorted(set(ITEMS) - set(block[:2]))
    assert count.on_outputs == len(block)              # the taken-over block only: one check per item
    assert fw_claims.unsettled(str(dst)) == []


def test_a_stopped_holder_leaves_a_partial_marker_that_the_next_holder_trusts(tmp_path, monkeypatch, env):
    """A preemption notice mid-block: the items not begun are busy (never failed), the claim names what was
    settled; the replacement (same run) skips those without a look, does the rest, marks the block done."""
    dst = tmp_path / "dst"
    j = Job(Echo(), "", str(dst), opts(dst, None), "n1", total=len(ITEMS), token="run-1")
    key = fw_claims.block_of(ITEMS[0], 1, len(ITEMS))
    tasks = fw_items.with_blocks(j, [Task(it) for it in ITEMS if fw_claims.block_of(it, 1, len(ITEMS)) == key])
    calls = []
    monkeypatch.setattr(fw_notice, "stopping", lambda *a: len(calls) >= 3)
    monkeypatch.setattr(fw_claims, "item_delay", lambda: calls.append(1))
    first = fw_items.do_block(j, key, tasks)
    assert [r.status for r in first] == ["done"] * 3 + ["busy"] * (len(tasks) - 3)
    assert not os.path.exists(dst / ".failed") or not os.listdir(dst / ".failed")
    rec = mark(dst, key)
    assert rec["mark"] == "partial" and rec["clean"] is True and rec["settled"] == sorted(t.item for t in tasks[:3])
    monkeypatch.setattr(fw_notice, "stopping", lambda *a: False)
    replacement = Job(Echo(), "", str(dst), opts(dst, None), "n2", total=len(ITEMS), token="run-1")
    count = StatCounter(monkeypatch, dst)
    again = fw_items.do_block(replacement, key, tasks)
    assert [r.status for r in again] == ["skipped"] * 3 + ["done"] * (len(tasks) - 3)
    assert count.on_outputs == 0                       # a clean partial marker: no output to check
    assert replacement.workload.calls == [t.item for t in tasks[3:]]
    assert mark(dst, key)["mark"] == "done"


def test_a_new_run_trusts_no_marker_of_an_old_one_so_deleted_outputs_are_redone(tmp_path, monkeypatch, env):
    dst = tmp_path / "dst"
    wl = Echo()
    assert fleetwork.run_items(wl, ITEMS, "", str(dst), opts(dst, None), progress_bar=False)["done"] == len(ITEMS)
    # the same run again (progress shows all done): nothing to do, not a claim touched
    before = sorted(os.listdir(dst / ".claims"))
    again = fleetwork.run_items(wl, ITEMS, "", str(dst), opts(dst, None), progress_bar=False)
    assert (again["done"], again["skipped"], again["todo"]) == (0, len(ITEMS), 0)
    assert sorted(os.listdir(dst / ".claims")) == before
    gone = ITEMS[::9]
    for it in gone:
        os.unlink(dst / (it + ".out"))
    # a new run (another id), and a CLI run without one, redo exactly what was deleted
    for run_id in ("run-2", ""):
        monkeypatch.setenv("FLEETBOOK_RUN", run_id)
        wl.calls.clear()
        redo = fleetwork.run_items(wl, ITEMS, "", str(dst), opts(dst, None), progress_bar=False, known=(set(), {}))
        assert sorted(wl.calls) == sorted(gone) and redo["done"] == len(gone)
        assert outputs(dst) == sorted(ITEMS)
        for it in gone[:2]:
            os.unlink(dst / (it + ".out"))
        gone = gone[:2]
    # the same run id after outputs vanished would trust its markers: a run id is never reused for a new run


def test_per_item_claims_keep_checking_each_output(tmp_path, monkeypatch, env):
    """Block size 1 (or an unknown item count): a claim per item, removed once done, each output checked."""
    monkeypatch.setenv("FLEETBOOK_CLAIM_BLOCK", "1")
    dst = tmp_path / "dst"
    wl = Echo()
    fleetwork.atomic_write(str(dst / (ITEMS[0] + ".out")), b"by another node")
    count = StatCounter(monkeypatch, dst)
    summary = fleetwork.run_items(wl, ITEMS, "", str(dst), opts(dst, None), progress_bar=False, known=(set(), {}))
    assert (summary["done"], summary["skipped"]) == (len(ITEMS) - 1, 1)
    assert count.on_outputs >= len(ITEMS)
    assert not os.path.exists(dst / ".claims") or not os.listdir(dst / ".claims")


def test_the_runners_sweep_leaves_block_markers_and_removes_stale_item_claims(tmp_path, env):
    dst = tmp_path / "dst"
    held = fw_claims.acquire_block(str(dst), "block:4:0:1", token="run-1")
    fw_claims.settle(held, token="run-1", done=True)
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    item_claim = fw_claims.path_for(str(dst), "x.jpg")
    with open(item_claim, "w") as f:
        json.dump({"item": "x.jpg", "host": fw_claims.HOST, "pid": dead.pid, "time": 0}, f)
    assert fw_claims.sweep(str(dst)) == 1
    assert os.listdir(dst / ".claims") == [os.path.basename(held.path)]
    assert fw_claims.acquire_block(str(dst), "block:4:0:1", token="run-1") == fw_claims.Done({})


def test_a_run_by_hand_leaves_no_claims_folder_but_keeps_another_runners_claim(tmp_path, monkeypatch, env):
    """Without $FLEETBOOK_RUN (a workload script run on its own) no other runner trusts this one's markers: it
    removes them at its end, so the output folder is as it was before claims per block.  Another runner's
    claim in the same folder (its block still in flight) stays."""
    monkeypatch.delenv("FLEETBOOK_RUN")
    dst = tmp_path / "dst"
    wl = Echo()
    done = fleetwork.run_items(wl, ITEMS, "", str(dst), opts(dst, None), progress_bar=False)
    assert done["done"] == len(ITEMS) and outputs(dst) == sorted(ITEMS)
    assert not (dst / ".claims").exists()
    other = fw_claims.acquire_block(str(dst), "block:4:0:1", token="someone-else")   # a live holder: this test
    wl2 = Echo()
    for it in ITEMS[:3]:
        os.unlink(dst / (it + ".out"))
    again = fleetwork.run_items(wl2, ITEMS, "", str(dst), opts(dst, None), progress_bar=False)
    assert again["done"] == 3 and outputs(dst) == sorted(ITEMS)
    assert os.listdir(dst / ".claims") == [os.path.basename(other.path)]
