"""The overhead classifier, table-tested on sample series recorded on this machine (tests/data/overhead/).

Every series in tests/data/overhead/*.json was recorded by tests/data/overhead/record.py with the real sampler
against a real workload held back by a real kernel limit (see each file's meta.how).
"""
from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest

from playbooks.measure.verdicts import (COMPUTE, DISK, IDLE, MEMORY, NETWORK, UNDER, VERDICTS, Verdict, classify,
                                        fleet_line, summarize, timeline)

DATA = Path(__file__).parent / "data" / "overhead"


def fixture(name: str) -> dict:
    return json.loads((DATA / f"{name}.json").read_text())


def verdict_of(name: str, **kw) -> Verdict:
    d = fixture(name)
    m = d["meta"]
    args = {"node": name, "cores": m["cores"], "shared": m["shared"], "heartbeat": m["heartbeat"]} | kw
    return classify(d["series"], **args)


# recorded series -> expected verdict and what its one-line lever must say
TABLE = [
    ("compute", COMPUTE, ["1 of 1 cores busy", "add nodes or a bigger machine type"]),
    ("under_used", UNDER, ["1 of 2 cores busy", "raise --workers or the chunk size"]),
    ("disk", DISK, ["CPU 0%, iowait 9", "read inputs from local disk or memory, or use a faster disk"]),
    ("network", NETWORK, ["waiting on network", "use threads for I/O (bench shows where threads win)"]),
    ("memory", MEMORY, ["major faults/s", "memory stalls", "run fewer workers per node"]),
    ("idle", IDLE, ["nothing running", "invoke teardown"]),
    ("idle_finished", IDLE, ["run finished", "480 done, 20 skipped, 0 failed of 500"]),
]


@pytest.mark.parametrize(("name", "expected", "says"), TABLE, ids=[t[0] for t in TABLE])
def test_recorded_series_get_their_verdict(name, expected, says):
    v = verdict_of(name)
    assert fixture(name)["meta"]["verdict"] == expected
    assert v.verdict == expected, v.lever
    assert v.lever.startswith(f"{expected}: ")
    assert "\n" not in v.lever
    for text in says:
        assert text in v.lever


def test_every_verdict_has_a_recorded_series():
    assert {t[1] for t in TABLE} == set(VERDICTS)
    assert {p.stem for p in DATA.glob("*.json")} == {t[0] for t in TABLE}


def test_the_same_busy_process_is_compute_bound_on_one_core_and_under_used_on_two():
    assert verdict_of("compute", cores=1).verdict == COMPUTE
    assert verdict_of("compute", cores=2).verdict == UNDER
    assert verdict_of("under_used", cores=1).verdict == COMPUTE


def test_a_finished_run_is_idle_even_while_a_process_lingers():
    assert verdict_of("idle_finished").lever.startswith("idle: run finished")
    asleep = verdict_of("idle_finished", heartbeat=None)
    assert asleep.verdict == IDLE and "all asleep" in asleep.lever
    lost = verdict_of("idle", heartbeat=None, run_status="lost")
    assert lost.verdict == IDLE and "no heartbeat" in lost.lever
    done = verdict_of("idle", heartbeat=None, run_status="done")
    assert "run finished" in done.lever


def test_shared_figures_are_named_only_on_a_shared_machine():
    v = verdict_of("compute")
    assert "net_mb_s" in v.shared and "mem_used_pct" in v.shared and "cpu_pct" not in v.shared
    assert verdict_of("compute", shared=False).shared == ()


def test_a_local_node_with_its_own_link_owns_its_network_figure():
    series = copy.deepcopy(fixture("network")["series"])
    for s in series["samples"]:
        s["machine"]["lo_mb_s"] = 50.0  # other nodes talking to the head over loopback
    shared = classify(series, cores=1, shared=True)
    own = classify(series, cores=1, shared=True, own_net=True)
    assert shared.figures["net_mb_s"] > 50 and "net_mb_s" in shared.shared
    assert own.figures["net_mb_s"] < 2 and "net_mb_s" not in own.shared and "mem_used_pct" in own.shared
    assert own.verdict == NETWORK


def test_on_a_shared_machine_only_the_node_own_processes_count():
    """Another node burning the machine does not make an idle node busy (its machine figures are shared)."""
    busy = fixture("compute")["series"]
    idle = fixture("idle")["series"]
    mixed = copy.deepcopy(idle)
    for s, b in zip(mixed["samples"], busy["samples"]):
        s["machine"] = copy.deepcopy(b["machine"])  # the machine is busy ...
    assert classify(mixed, cores=1, shared=True).verdict == IDLE  # ... but not because of this node
    assert classify(mixed, cores=None, shared=False).verdict != IDLE  # a cloud node's machine is its own


def test_cpu_starved_compute_bound_says_the_machine_is_oversubscribed():
    series = copy.deepcopy(fixture("compute")["series"])
    for s in series["samples"]:
        s["procs"]["threads_run"] = 3.0  # three runnable threads ...
        s["procs"]["cpu_cores"] = 1.0    # ... that got one core between them
    v = classify(series, cores=3, shared=True)
    assert v.verdict == COMPUTE
    assert "CPU-starved: 3 threads runnable but CPU 33% of 3 cores" in v.lever
    assert "run fewer nodes per machine" in v.lever
    for s in series["samples"]:  # a cloud node: the machine itself is mostly idle, yet 3 threads wait for CPU
        s["machine"]["cpu"] = [core(20, 13), core(20, 13), core(20, 14)]
    assert "dedicated cores" in classify(series, cores=3, shared=False).lever


# ---------------------------------------------------------------------------------------- cloud mode
def machine_only(cpu, *, disk=0.0, net=0.0, swap=0.0, mem=20.0, n=3) -> dict:
    """A series as a cloud node without a matched workload would give: machine-wide figures only."""
    sample = {"t": 0.0, "dt": 1.0, "procs": {"count": 0},
              "machine": {"cpu": [dict(c) for c in cpu], "load1": 1.0, "mem_used_pct": mem, "swap_in_mb_s": swap,
                          "swap_out_mb_s": 0.0, "disk_read_mb_s": disk, "disk_write_mb_s": 0.0,
                          "disk_read_iops": 10.0, "disk_write_iops": 0.0, "net_rx_mb_s": net, "net_tx_mb_s": 0.0}}
    samples = []
    for i in range(n):
        s = copy.deepcopy(sample)
        s["t"] = float(i + 1)
        samples.append(s)
    return {"cpu_count": len(cpu), "started_at": 0.0, "samples": samples}


def core(user=0.0, system=0.0, iowait=0.0):
    return {"user": user, "system": system, "iowait": iowait, "steal": 0.0,
            "idle": 100.0 - user - system - iowait}


CLOUD = [
    ("all cores busy", [core(95, 3), core(90, 5)], {}, COMPUTE),
    ("one of four busy", [core(97, 2), core(1), core(1), core(1)], {}, UNDER),
    ("iowait", [core(20, 8, 61), core(10, 5, 70)], {"disk": 80.0}, DISK),
    ("swapping", [core(30, 20, 10), core(20, 10, 5)], {"swap": 25.0, "mem": 97.0}, MEMORY),
    ("quiet", [core(0.5), core(0.3)], {}, IDLE),
]


@pytest.mark.parametrize(("why", "cpu", "kw", "expected"), CLOUD, ids=[c[0] for c in CLOUD])
def test_cloud_nodes_use_machine_wide_figures(why, cpu, kw, expected):
    assert classify(machine_only(cpu, **kw), node="n", shared=False).verdict == expected


def test_disk_bound_lever_reads_like_the_issue():
    v = classify(machine_only([core(20, 8, 61), core(20, 8, 61)], disk=80.0), shared=False)
    assert v.lever.startswith("disk-bound: CPU 28%, iowait 61%; read inputs from local disk or memory")


def test_summarize_refuses_an_empty_series():
    with pytest.raises(ValueError):
        summarize({"samples": []})


# ---------------------------------------------------------------------------------------- fleet line, plot data
def test_fleet_line_totals_items_and_names_the_slowest_working_node():
    vs = [verdict_of("compute", items_per_s=40.0), verdict_of("disk", items_per_s=4.0),
          verdict_of("idle", items_per_s=0.0)]
    line = fleet_line(vs)
    assert line["items_per_s"] == 44.0
    assert line["slowest"]["node"] == "disk" and line["slowest"]["verdict"] == DISK
    assert line["verdicts"] == {COMPUTE: 1, DISK: 1, IDLE: 1}


def test_fleet_line_when_nothing_works():
    line = fleet_line([verdict_of("idle"), verdict_of("idle_finished")])
    assert line["slowest"] is None and line["verdicts"] == {IDLE: 2}


def test_fleet_line_without_heartbeats():
    line = fleet_line([verdict_of("compute"), verdict_of("under_used")])
    assert line["items_per_s"] is None
    assert line["slowest"]["node"] == "under_used"  # gets the least out of its cores


def test_timeline_has_one_point_per_sample():
    d = fixture("disk")
    tl = timeline(d["series"], cores=1, shared=True)
    n = len(d["series"]["samples"])
    assert all(len(tl[k]) == n for k in ("t", "cpu_pct", "iowait_pct", "disk_mb_s", "net_mb_s"))
    assert min(tl["iowait_pct"]) > 50 and min(tl["disk_mb_s"]) > 1
