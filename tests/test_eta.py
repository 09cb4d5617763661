"""The head's ETA (issue 13, item 5; playbooks/runs/eta.py): synthetic sequences for each rule, the window on the
shared disk shared by separate looks at a run, and sequences recorded on real 3-node runs
(bench/test_progress_eta.py with FLEETBOOK_ETA_RECORD) replayed poll by poll against their real finish."""
from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
from tests.support.fleet import invoke_cli, make_ctx

from playbooks import progress
from playbooks.runs import eta
from playbooks.runs import state as runstate
from playbooks.runs.disk import LocalDisk

RECORDED = sorted((Path(__file__).parent / "data" / "eta").glob("*.json"))


def window(*points):
    pts = []
    for p in points:
        pts = eta.add_point(pts, *p)
    return pts


# ------------------------------------------------------------------------------------------------ the rules
def test_known_from_the_first_poll_after_items_appear():
    """run's start point (nothing settled, 3 nodes starting) and one poll that saw outputs: a rate, the outputs
    made in the second half of that interval (their start in its middle: measured, the first look at 1,200
    features saw 80 outputs 1.5 s after the start, made in 0.9 s; over the whole interval the first ETA was
    60 % of the run long, with its half 14 % short)."""
    pts = window((0.0, 0, 3), (5.0, 30, 3))
    assert eta.estimate(pts, left=270, working=3) == pytest.approx((12.0, 22.5))
    assert eta.start_delay(pts, started_at=0.0) == pytest.approx(2.5)
    later = eta.add_point(pts, 6.0, 42, 3)                       # from the next look on, only whole intervals
    assert eta.per_node_rate(later) == pytest.approx(4.0)
    assert eta.start_delay(later, started_at=0.0) == pytest.approx(2.5)
    assert eta.start_delay(later[1:], started_at=0.0) == 0.0     # the window no longer holds the start


def test_a_flat_start_is_no_part_of_the_rate():
    pts = window((0.0, 0, 3), (1.0, 0, 3), (2.0, 0, 3), (3.0, 0, 3), (4.0, 6, 3))
    assert eta.per_node_rate(pts) == pytest.approx(4.0)     # 6 items in the half second 3 nodes worked (see above)


def test_nothing_settled_yet_falls_back_on_the_heartbeats():
    pts = window((0.0, 0, 3), (1.0, 0, 3))
    assert eta.estimate(pts, left=100, working=3) == (0.0, None)
    assert eta.estimate(pts, left=100, working=3, heartbeat_rate=4.0) == pytest.approx((4.0, 25.0))
    assert eta.estimate(pts, left=0, working=3) == (0.0, 0.0)


def steady(t0, t1, settled0, per_node, working, step=1.5):
    out, t, s = [], t0, settled0
    while t <= t1:
        out.append((t, s, working))
        t, s = t + step, s + per_node * working * step
    return out


def test_a_lost_node_lowers_the_rate_at_once_and_its_replacement_restores_it():
    pts = window(*steady(0, 60, 0, 2.0, 3))
    assert eta.estimate(pts, 300, working=3)[0] == pytest.approx(6.0)
    t, s = pts[-1][0], pts[-1][1]
    lost = eta.add_point(pts, t + 1.5, s + 6.0 * 1.5, 2)       # one node lost: 2 still work
    assert eta.estimate(lost, 300, working=2)[0] == pytest.approx(4.0, rel=0.02)
    more = window(*lost, *steady(t + 3, t + 12, s + 12.0, 2.0, 2), *steady(t + 13.5, t + 30, s + 12 + 4 * 10.5, 2.0, 3))
    assert eta.estimate(more, 300, working=3)[0] == pytest.approx(6.0, rel=0.05)   # the replacement reports


def test_the_whole_fleet_lost_keeps_the_rate_per_node_for_the_replacements():
    pts = steady(0, 60, 0, 2.0, 3)
    t, s = pts[-1][0], pts[-1][1]
    dead = [(t + 1.5 * k, s, 0) for k in range(1, 20)]        # no node works for 28 s, nothing settles
    pts = window(*pts, *dead)
    assert eta.estimate(pts, 200, working=0) == (0.0, None)   # no node: no ETA, rather than a wrong one
    back = eta.add_point(pts, dead[-1][0] + 1.5, s, 3)          # three replacements start
    assert eta.estimate(back, 200, working=3) == pytest.approx((6.0, 200 / 6.0), rel=0.05)


def test_finish_in_counts_each_slot_from_when_it_produces():
    assert eta.finish_in(2.0, 30, [0.0, 0.0, 0.0]) == pytest.approx(5.0)
    # two nodes now, the third in 5 s: 20 items by then, the last 10 at 6 items/s
    assert eta.finish_in(2.0, 30, [0.0, 0.0, 5.0]) == pytest.approx(5 + 10 / 6)
    assert eta.finish_in(2.0, 10, [0.0, 0.0, 5.0]) == pytest.approx(2.5)      # done before the third comes
    assert eta.finish_in(2.0, 12, [4.0, 4.0, 4.0]) == pytest.approx(6.0)      # the whole fleet replaced in 4 s
    assert eta.finish_in(2.0, 12, []) is None and eta.finish_in(0.0, 12, [0.0]) is None
    assert eta.finish_in(2.0, 0, []) == 0.0


def supervised(events=None, **extra):
    """A run record as the --until-done supervisor keeps it: n0..n2 started at 0, plus ``extra`` nodes."""
    nodes = [{"name": f"n{i}", "shard": i} for i in range(3)] + extra.pop("nodes", [])
    return {"started_at": 0.0, "shards": 3, "until_done": True, "nodes": nodes, "events": events or {}, **extra}


def test_a_lost_node_under_the_supervisor_is_counted_back_after_its_replacement_time():
    """Measured in the chaos test (3 nodes, 0.35 s per item, 9 losses): the old ETA took a lost node as gone
    for good until its replacement started, 30 % of the run too long while a preempted node waited out its
    grace; now it comes back as long after its loss as this run's replacements took."""
    running = [{"name": f"n{i}", "state": "running"} for i in range(3)]
    # n1 lost at t=10, seen by the supervisor; no replacement measured yet: as long again as it is gone already
    rec = supervised({"n1": {"cause": "lost", "detected_at": 10.0}})
    nodes = [dict(n, state="lost") if n["name"] == "n1" else n for n in running]
    assert eta.slots_ahead(rec, nodes, now=13.0, start_s=0.5) == pytest.approx([0.0, 0.0, 3.5])
    # an earlier loss of n0 (detected at 2) was replaced by n3 started at 3: 1 s; n1 is due back 1 s after 10
    rec = supervised({"n0": {"cause": "lost", "detected_at": 2.0, "replaced_by": "n3", "replaced_at": 3.2},
                      "n1": {"cause": "lost", "detected_at": 10.0}},
                     nodes=[{"name": "n3", "shard": 0, "started_at": 3.0, "replaces": "n0"}])
    rec["nodes"][0]["replaced_by"] = "n3"
    nodes = [{"name": "n0", "state": "lost"}, {"name": "n1", "state": "lost"}, {"name": "n2", "state": "running"},
             {"name": "n3", "state": "running"}]
    assert eta.slots_ahead(rec, nodes, now=10.4, start_s=0.5) == pytest.approx([0.0, 0.0, 1.1])
    assert eta.slots_ahead(rec, nodes, now=14.0, start_s=0.5) == pytest.approx([0.0, 0.0, 0.5])   # late: soon
    # a preempted node waits for its machine to end: the preempted ones' own time, not the lost ones'
    rec["events"]["n1"]["cause"] = "preempted"
    rec["events"]["n2"] = {"cause": "preempted", "detected_at": 4.0, "replaced_by": "n4", "replaced_at": 10.2}
    rec["nodes"][2]["replaced_by"] = "n4"
    rec["nodes"].append({"name": "n4", "shard": 2, "started_at": 10.0, "replaces": "n2"})
    nodes += [{"name": "n4", "state": "starting"}]
    assert eta.slots_ahead(rec, nodes, now=10.4, start_s=0.5) == pytest.approx([0.0, 0.1, 6.1])
    # without a supervisor nothing replaces it
    del rec["until_done"]
    assert eta.slots_ahead(rec, nodes, now=10.4, start_s=0.5) == pytest.approx([0.0, 0.1])


def test_the_whole_fleet_lost_under_the_supervisor_has_an_eta():
    pts = window(*steady(0, 30, 0, 2.0, 3), (31.5, 90, 0))
    rec = supervised({f"n{i}": {"cause": "lost", "detected_at": 31.5} for i in range(3)})
    nodes = [{"name": f"n{i}", "state": "lost"} for i in range(3)]
    ahead = eta.slots_ahead(rec, nodes, now=33.0, start_s=1.0)
    assert ahead == pytest.approx([2.5, 2.5, 2.5])
    assert eta.estimate(pts, 120, 0, ahead=ahead) == pytest.approx((0.0, 2.5 + 20.0))


def test_a_change_the_counts_did_not_see_is_no_part_of_the_rate():
    """The chaos test's whole fleet killed between two looks and replaced before the next: every point says 3
    nodes working, 1.1 s made nothing; the replacements' start and the seconds before the loss was seen are
    left out (the old rate fell 17 %, the ETA 10 % of the run too long once all three worked again)."""
    pts = steady(0, 9, 0, 2.8, 3, step=0.5)
    t, s = pts[-1][0], pts[-1][1]
    pts = window(*pts, (t + 0.5, s + 1, 3), (t + 1.6, s + 1, 3), *steady(t + 2.2, t + 5, s + 2.5, 2.8, 3, step=0.5))
    assert eta.per_node_rate(pts) < 2.55                                   # counted as worked: too slow
    rec = supervised({f"n{i}": {"cause": "lost", "detected_at": t + 0.5, "replaced_by": f"n{i + 3}",
                                "replaced_at": t + 1.6} for i in range(3)},
                     nodes=[{"name": f"n{i + 3}", "shard": i, "started_at": t + 1.5} for i in range(3)])
    skip = eta.changes(rec, start_s=0.5, lost_after=4.0)
    assert skip[0] == pytest.approx((t + 0.5 - 4.0, t + 0.5)) and skip[1] == pytest.approx((t + 1.5, t + 2.0))
    assert eta.per_node_rate(pts, skip) == pytest.approx(2.8, rel=0.01)


def test_a_steady_stretch_of_too_few_items_is_noise_not_a_rate():
    """Chaos test, 0.35 s items looked at every 0.5 s: 1 or 2 outputs per look.  Right after a change only one
    steady look is left; its 4 items would say 4/s per node: then all the intervals are taken."""
    pts = window((0.0, 0, 3), (2.0, 12, 3), (2.5, 14, 2), (3.0, 16, 2), (3.5, 20, 2))
    assert eta.per_node_rate(pts) == pytest.approx(8 / 3)                        # 2.67, not 4.0
    more = window(*pts, *steady(4.0, 12.0, 22, 2.0, 2, step=0.5))                # 34 more items, all steady
    assert eta.per_node_rate(more) == pytest.approx(38 / 18)                    # from the steady ones only


def test_a_loss_is_left_out_from_its_last_heartbeat_and_few_known_items_beat_many_wrong_ones():
    """The chaos test after replacements got fast (9 losses in 15 s): n0 and n1 beat at 5.0, died at 5.2, were
    seen lost by the look at 5.5 (which still counted them, and so did the interval after it, up to the look
    at 6.6 that saw their replacements starting, making outputs from 7.1).  Left out from their last heartbeat
    on, 16 known items give the rate per node; all the intervals as counted put it a sixth too low (the chaos
    recordings: the ETA 36 % of the run too long at worst, now within 9 %)."""
    def made(t):       # 3 nodes at 1 item/s each, 1 between the deaths and the replacements' first outputs
        return 3 * min(t, 5.2) + max(0.0, min(t, 7.1) - 5.2) + 3 * max(0.0, t - 7.1)
    times = [0.0] + [0.5 * k for k in range(1, 12)] + [6.6, 7.1, 7.6, 8.1]
    pts = window(*[(t, float(int(made(t))), 3) for t in times])
    rec = supervised({old: {"cause": "lost", "detected_at": 5.5, "seen_at": 5.0, "replaced_by": new,
                            "replaced_at": 6.7} for old, new in (("n0", "n3"), ("n1", "n4"))},
                     nodes=[{"name": n, "shard": i, "started_at": 6.6} for i, n in enumerate(("n3", "n4"))])
    rec["nodes"][0]["replaced_by"], rec["nodes"][1]["replaced_by"] = "n3", "n4"
    skip = eta.changes(rec, start_s=0.5, lost_after=4.0)
    assert sorted(set(skip)) == [(5.0, 5.5), (6.6, 7.1)]
    assert eta.per_node_rate(pts, skip) == pytest.approx(1.0, rel=0.05)     # 16 known items
    assert eta.per_node_rate(pts) < 0.85                                     # every interval, as counted
    del rec["events"]["n0"]["seen_at"]                                      # no heartbeat seen: lost_after
    assert eta.changes(rec, start_s=0.5, lost_after=4.0)[0] == (1.5, 5.5)


def test_an_interval_next_to_a_change_the_record_knows_is_not_steady():
    """The chaos test's whole fleet replaced at 10.0 (outputs expected from 10.5, as at the run's start): the
    three replacements, started at once on a busy machine, made outputs only from 11.0; the interval after
    their start's stretch and the look just after it (10.6-11.2) held one item where 3 nodes at 1/s make 1.8.
    Next to a change, it is not steady, and the few steady items before it give the rate per node."""
    pts = window(*[(0.5 * k, 1.5 * k, 3) for k in range(0, 8)],                   # 3 items/s up to 3.5
                 (4.0, 11.0, 3), (10.0, 11.0, 3), (10.5, 11.0, 3), (10.6, 11.0, 3), (11.2, 12.0, 3))
    rec = supervised({f"n{i}": {"cause": "lost", "detected_at": 4.0, "seen_at": 3.6, "replaced_by": f"n{i + 3}",
                                "replaced_at": 10.1} for i in range(3)},
                     nodes=[{"name": f"n{i + 3}", "shard": i, "started_at": 10.0} for i in range(3)])
    for i in range(3):
        rec["nodes"][i]["replaced_by"] = f"n{i + 3}"
    skip = eta.changes(rec, start_s=0.5, lost_after=4.0)
    assert eta.per_node_rate(pts, skip) == pytest.approx(1.0, rel=0.02)        # 9 steady items, 0.5-3.5


def test_a_node_whose_mount_dropped_is_left_out_until_it_works_again():
    """The mount test: the node's sshfs killed, its workload waiting, silent but counted working until the
    supervisor remounted it and it made an output again (``record["repairs"]``, playbooks/nodehealth.py)."""
    rec = supervised(repairs=[{"node": "n1", "detected_at": 10.0, "seen_at": 8.0, "working_at": 14.0},
                              {"node": "n2", "detected_at": 20.0, "open": True},
                              {"node": "n0", "detected_at": 30.0, "seen_at": 29.0}])     # replaced instead
    assert eta.changes(rec, start_s=0.5, lost_after=4.0) == [(8.0, 14.0), (16.0, float("inf")), (29.0, 30.0)]
    pts = window(*steady(0, 8, 0, 1.0, 3), *[(8.0 + 0.5 * k, 24 + k, 3) for k in range(1, 13)])   # 2/s: n1 silent
    assert eta.per_node_rate(pts, eta.changes(rec, start_s=0.5, lost_after=4.0)[:1]) == pytest.approx(1.0)


def test_the_window_follows_a_lasting_change():
    pts = window(*steady(0, 120, 0, 2.0, 3))
    pts = window(*pts, *steady(121.5, 121.5 + eta.MAX_WINDOW_S + 30, pts[-1][1] + 3, 1.0, 3))   # half as fast
    assert eta.per_node_rate(pts) == pytest.approx(1.0, rel=0.02)      # once the window holds only the new speed


def test_the_window_is_pruned_and_sorted():
    pts = window((5.0, 10, 3), (1.0, 0, 3), (5.0, 11, 3))
    assert pts == [(1.0, 0.0, 3.0), (5.0, 11.0, 3.0)]                  # one point per time, the newest wins
    many = window(*[(float(t), t, 3) for t in range(3000)])
    assert len(many) <= eta.MAX_POINTS and many[-1][0] - many[0][0] <= eta.KEEP_S


# ------------------------------------------------------------------------------------------------ the file
def a_run(c, nodes=("f-0", "f-1", "f-2")) -> dict:
    now = time.time()
    disk = runstate.local_disk(c)
    record = {"run_id": "resize-20250101-000000-ab12", "fleet": "f", "provider": "local", "workload": "resize",
              "src": "src", "dst": "out", "args": "", "started_at": now - 20,
              "nodes": [{"name": n, "shard": i} for i, n in enumerate(nodes)]}
    for i in range(40):
        disk.write_bytes(f"src/{i:02d}.jpg", b"x")
    disk.mkdirs("out")
    runstate.save_run(disk, record, latest=True)
    for n in nodes:
        runstate.write_node_file(c, record["run_id"], n, "heartbeat.json",
                                 {"node": n, "done": 0, "failed": 0, "rate_per_s": 0.0, "started_at": now - 20,
                                  "updated_at": now})
    return record


def test_separate_looks_share_the_window_on_the_shared_disk(tmp_path):
    """Two `invoke progress` calls (two processes) a while apart: the second has an ETA from the head's counts,
    though the nodes' heartbeats say 0 items/s."""
    c = make_ctx(tmp_path)
    record = a_run(c)
    first = invoke_cli(tmp_path, "progress", "--json")
    assert first.returncode == 0, first.stderr
    assert json.loads(first.stdout)["eta_s"] is None                 # nothing settled, heartbeats at 0/s
    time.sleep(1.0)
    for i in range(10):
        (tmp_path / "data" / "out" / f"{i:02d}.jpg").write_bytes(b"y")
    second = json.loads(invoke_cli(tmp_path, "progress", "--json").stdout)
    assert second["done"] == 10 and second["eta_s"] is not None
    # eta_s is rounded to 0.1 s, rate_per_s to 0.001/s
    assert second["eta_s"] == pytest.approx(30 / second["rate_per_s"], abs=0.06) and second["rate_per_s"] > 0
    saved = eta.load(LocalDisk(c), runstate.run_rel(record["run_id"]))
    assert [p[1] for p in saved] == [0.0, 10.0] and all(p[2] == 3 for p in saved)


def test_a_window_file_altered_by_a_node_is_data(tmp_path):
    c = make_ctx(tmp_path)
    record = a_run(c)
    rel = f"{runstate.run_rel(record['run_id'])}/{eta.WINDOW_FILE}"
    disk = LocalDisk(c)
    for junk in ("not json", '{"points": "x"}', '[1, 2]',
                 json.dumps({"points": [[1, "a", 3], [True, 1, 1], [1, 2], None, [time.time() - 5, 0, 3]]})):
        disk.write_text(rel, junk)
        snap = progress.snapshot(c, record)                           # no crash; the good point is kept
        assert snap["done"] == 0 and snap["eta_s"] is None
    assert len(eta.load(disk, runstate.run_rel(record["run_id"]))) == 2


# ------------------------------------------------------------------------------------------------ node counts
def test_preempted_nodes_are_counted_apart_from_lost_ones_and_their_items_are_not_failed(tmp_path):
    """f-0 had notice and stopped cleanly, f-1 went silent, f-2 failed, f-3 replaced f-0: `progress --json`
    counts each kind apart; the preempted node's items are not failed items; `run --wait` names it while
    items are left."""
    from invoke.exceptions import Exit
    c = make_ctx(tmp_path, job__lost_after=10.0)
    record = a_run(c, nodes=("f-0", "f-1", "f-2", "f-3"))
    record["nodes"][0]["replaced_by"] = "f-3"
    record["nodes"][3].update(replaces="f-0", started_at=time.time())
    record["shards"] = 3
    runstate.save_run(runstate.local_disk(c), record, latest=True)
    now = time.time()
    runstate.write_node_file(c, record["run_id"], "f-0", "heartbeat.json",
                             {"node": "f-0", "done": 4, "failed": 0, "state": "preempted", "updated_at": now - 1})
    runstate.write_node_file(c, record["run_id"], "f-0", "exit.json", {"code": 143, "preempted": True})
    runstate.write_node_file(c, record["run_id"], "f-1", "heartbeat.json",
                             {"node": "f-1", "done": 2, "failed": 0, "updated_at": now - 60})
    runstate.write_node_file(c, record["run_id"], "f-2", "exit.json", {"code": 3, "error": "boom"})
    result = invoke_cli(tmp_path, "progress", "--json")
    assert result.returncode == 0, result.stderr
    snap = json.loads(result.stdout)
    assert (snap["nodes_preempted"], snap["nodes_lost"], snap["nodes_failed"], snap["nodes_replaced"]) == (1, 1, 1, 1)
    assert snap["failed"] == 0 and not (tmp_path / "data" / "out" / ".failed").exists()
    assert {n["name"]: n["state"] for n in snap["nodes"]}["f-0"] == "preempted"
    for n in ("f-1", "f-3"):      # every node ended: --wait tells which left work undone
        runstate.write_node_file(c, record["run_id"], n, "exit.json", {"code": 0})
    with pytest.raises(Exit) as exc:
        progress.wait_until_finished(c, record)
    assert "f-0 (preempted)" in exc.value.message and "\n" not in exc.value.message


# ------------------------------------------------------------------------------------------------ recorded runs
def record_at(rec: dict, t: float) -> tuple[dict, list[dict]]:
    """The run record and the nodes' states as the head saw them at ``t``, rebuilt from a recording's final
    record (``nodes``: when each started; ``events``: when each loss was detected and replaced)."""
    events, entries, states = {}, [], []
    began_at = {n["name"]: n.get("started_at") or rec["started"] for n in rec["nodes"]}
    for n in rec["nodes"]:
        began = began_at[n["name"]]
        if began > t:
            continue
        entry, ev = {"name": n["name"], "started_at": began}, rec["events"].get(n["name"])
        state = "starting" if t - began < 1.0 else "running"     # heartbeats come within a second of the start
        if ev and ev["detected_at"] <= t:
            events[n["name"]], state = {k: ev[k] for k in ("cause", "detected_at", "seen_at") if k in ev}, ev["cause"]
            if ev.get("replaced_by") and began_at[ev["replaced_by"]] <= t:   # named as it is being started
                entry["replaced_by"] = ev["replaced_by"]
            if ev.get("replaced_at", float("inf")) <= t:                    # the event once it has started
                events[n["name"]].update(replaced_by=ev["replaced_by"], replaced_at=ev["replaced_at"])
        entries.append(entry)
        states.append({"name": n["name"], "state": state})
    return {"started_at": rec["started"], "shards": 3, "until_done": True, "nodes": entries, "events": events}, states


def replay(rec: dict, lost_after: float = 6.0) -> list[tuple[float, float, float]]:
    """(time, share settled, the ETA's error as a share of the run) at every recorded point from 10 % settled to
    the finish, each estimated from the points up to it only, as the head did at that moment (with the
    supervisor's record then, where the recording has it)."""
    total, finish, started = rec["total"], rec["finish"], rec["started"]
    errs, pts = [], []
    for t, settled, working in rec["points"]:
        pts = eta.add_point(pts, t, settled, working)
        if 0.1 * total <= settled < total and t < finish:
            ahead, skip = None, ()
            if "events" in rec:
                record, states = record_at(rec, t)
                start_s = eta.start_delay(pts, started)
                ahead, skip = eta.slots_ahead(record, states, t, start_s), eta.changes(record, start_s, lost_after)
            _rate, eta_s = eta.estimate(pts, int(total - settled), int(working), ahead=ahead, skip=skip)
            assert eta_s is not None, f"no ETA at {settled}/{total}"
            errs.append((t, settled / total, abs(t + eta_s - finish) / (finish - started)))
    return errs


BENCH = [p for p in RECORDED if not json.loads(p.read_text()).get("chaos")]


@pytest.mark.parametrize("path", BENCH, ids=[p.stem for p in BENCH])
def test_recorded_runs_stay_within_10_percent_of_the_run(path):
    """1,200 images of features on 3 local nodes, a look every 1.5 s: runs of ~40 s on this shared 2-core machine
    under other jobs that moved the rate, and of ~15 s on the quiet machine (``-quiet-``).  An ETA at every poll
    from 10 % done; steady, 5 % off on average and within 10 % of the run at every poll from 20 % done (at 10 %
    done the window holds 3 s of outputs, and under load the first seconds of a run were often faster than the
    rest); with a node killed at 30 % done and replaced, within 10 % from half done on (no estimate can know of
    a loss before it happens), and quiet, from 10 % on."""
    rec = json.loads(path.read_text())
    errs = replay(rec)
    assert len(errs) >= 5, "a recording of a real run has polls from 10 % on"
    if not rec["killed"]:
        assert sum(e for _t, _f, e in errs) / len(errs) <= 0.05
    since = 0.1 if "quiet" in path.stem else 0.5 if rec["killed"] else 0.2
    worst = max(e for _t, f, e in errs if f >= since)
    assert worst <= 0.10, f"worst from {since:.0%} done: {100 * worst:.1f} % of the run"


CHAOS = [p for p in RECORDED if json.loads(p.read_text()).get("chaos")]


def _fast_refill(rec: dict) -> bool:
    """Recorded by the supervisor that replaces a preempted node at its notice and keeps each loss's last
    heartbeat (``seen_at``); ``chaos-quiet-1`` came from the one before it, which waited for the preempted
    machine to end (7 s of the run's 57 per preemption)."""
    return any("seen_at" in ev for ev in rec["events"].values())


@pytest.mark.parametrize("path", CHAOS, ids=[p.stem for p in CHAOS])
def test_the_recorded_chaos_runs_are_right_but_for_the_losses_still_to_come(path):
    """The chaos test on the quiet machine (400 items, 0.35 s each, 3 nodes, 9 losses).  With a preempted node
    replaced at its notice, the 9 losses come in the first 17 s of a 55 s run, a change every 1.5-2 s: few
    intervals of the window are whole, and the rate rests on them (``per_node_rate``'s tiers).  Measured on 11
    recordings (``chaos-quiet-2`` to ``-12``; the first five were used to shape the tiers, the others were not):
    worst from 10 % done 5.4-9.3 % of the run in 8 of them, 12.8-14.4 % in three; 0.9-5.4 % on average; within
    10 % (8.4 % at worst) at every poll once the last loss was replaced.  What is left is early, by the cost of
    the losses still to come (at 10 % done 6-8 of the 9, 12-16 % of the run), which no estimate foresees (and,
    in ``-7``, 2.5 s of stragglers at the very end).  The older
    recording (its supervisor waited for a preempted machine to end, 7 s of the run's 57 per preemption): 3 %
    off on average, within 10 % once the last loss was replaced, within 20 % before."""
    rec = json.loads(path.read_text())
    errs = replay(rec, lost_after=4.0)
    assert len(errs) >= 50
    calm = max(ev.get("replaced_at", 0) for ev in rec["events"].values())
    assert max(e for t, _f, e in errs if t > calm) <= 0.10
    fast = _fast_refill(rec)
    assert sum(e for _t, _f, e in errs) / len(errs) <= (0.06 if fast else 0.05)
    assert max(e for _t, _f, e in errs) <= (0.15 if fast else 0.20)


def test_there_are_recorded_runs():
    assert sum(_fast_refill(json.loads(p.read_text())) for p in CHAOS) >= 11
    assert CHAOS and any(json.loads(p.read_text())["killed"] for p in BENCH)
    assert sum(not json.loads(p.read_text())["killed"] for p in RECORDED) >= 2


def test_a_node_the_supervisor_found_gone_no_longer_counts_as_working():
    record = {"shards": 3, "events": {"n1": {"cause": "lost"}},
              "nodes": [{"name": "n0"}, {"name": "n1"}, {"name": "n2", "replaced_by": "n3"}, {"name": "n3"}]}
    nodes = [{"name": n, "state": "running"} for n in ("n0", "n1", "n2")] + [{"name": "n3", "state": "starting"}]
    assert progress.working_nodes(record, nodes) == 2                 # n0 and the starting replacement n3
    record["events"] = {}
    nodes.append({"name": "n4", "state": "running"})
    record["nodes"].append({"name": "n4"})
    assert progress.working_nodes(record, nodes) == 3                 # never more than the run's shards
