"""The planner's pure functions (playbooks/planning.py), on round numbers and on a recorded node profile."""
from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from playbooks.measure import planning
from playbooks.engines.batch import plan_line
from playbooks.measure.planning import Link, Model

RECORDED = Path(__file__).parent / "data" / "profile-local-1cpu.json"   # `invoke bench --node` on a local node


def test_a_node_bound_option_by_hand():
    m = Model(items=10_000, item_s=0.008, cores=2, efficiency=0.75, node_disk_s=0.002, head_disk_s=0.001,
              head_cores=4, boot_s=60, ssh_s=0.5, max_parallel=16, run_start_s=0.4, pool_start_s=0.01, poll_s=1.0,
              node_price_h=0.02)
    o = planning.option(m, 5)
    rate = 5 * 2 * 0.75 / 0.010                                    # 750 items/s, the head allows 4,000
    assert o["bottleneck"] == planning.NODE_CPU and o["items_per_s"] == pytest.approx(rate)
    run_s = 2 * 0.5 + 0.4 + 0.01 + 10_000 / rate + 0.010 + planning.CLAIM_RECHECK_S + 0.5
    boot_s = 60 + 3 * 0.5
    assert o["run_s"] == pytest.approx(run_s, abs=0.01) and o["boot_s"] == pytest.approx(boot_s)
    assert o["wall_s"] == pytest.approx(run_s + boot_s, abs=0.01)
    assert o["cost_usd"] == pytest.approx(5 * 0.02 * (run_s + boot_s) / 3600, abs=1e-4)
    assert o["node_cpu_share"] == 1.0 and "more nodes" in o["lever"]


def test_the_head_saturates_and_more_nodes_stop_helping():
    m = Model(items=100_000, item_s=0.004, cores=2, node_disk_s=0.001, head_disk_s=0.002, head_cores=2,
              node_price_h=0.1)
    opts = [planning.option(m, n) for n in (1, 2, 5, 10, 20)]
    assert [o["bottleneck"] for o in opts] == ["node CPU", "node CPU", "head CPU", "head CPU", "head CPU"]
    assert opts[2]["items_per_s"] == opts[4]["items_per_s"] == pytest.approx(2 / 0.002)
    assert opts[0]["wall_s"] > opts[1]["wall_s"] > opts[2]["wall_s"]
    assert opts[4]["cost_usd"] > 3 * opts[2]["cost_usd"]          # 4x the nodes, same wall time
    best, why = planning.recommend(opts)
    assert best["nodes"] == 5 and "within 10 %" in why


def test_the_tunnel_heads_uplink_carries_every_input():
    m = Model(items=1000, item_s=0.005, cores=8, links=(
        Link(planning.UPLINK, 20e6 / 8, 500_000), Link(planning.DOWNLINK, 100e6 / 8, 5_000)))
    o = planning.option(m, 10)
    assert o["bottleneck"] == planning.UPLINK and o["items_per_s"] == pytest.approx(5.0)
    assert "head instance" in o["lever"]
    # no bytes known: the link is no limit
    assert planning.option(Model(items=1000, item_s=0.005, links=(Link(planning.UPLINK, 1.0, 0.0),)),
                           1)["bottleneck"] == planning.NODE_CPU


def test_minimum_billing_and_the_head_instance():
    m = Model(items=10, item_s=0.001, node_price_h=0.36, head_price_h=0.72, min_billed_s=60)
    o = planning.option(m, 2)
    assert o["wall_s"] < 60 and o["cost_usd"] == pytest.approx((2 * 0.36 + 0.72) * 60 / 3600)
    assert planning.option(Model(items=10, item_s=0.001), 2)["cost_usd"] is None   # no price: unknown


@pytest.mark.parametrize("kw, nodes, why", [
    ({"deadline_s": 400}, 5, "cheapest that meets the deadline"),
    ({"deadline_s": 1}, 20, "no size meets the deadline"),
    ({"budget_usd": 0.018}, 2, "fastest within the budget"),
    ({"budget_usd": 0.0001}, 1, "no size fits the budget"),
    ({}, 20, "within 10 %"),
])
def test_recommend(kw, nodes, why):
    m = Model(items=200_000, item_s=0.01, cores=2, head_disk_s=0.0, boot_s=30, node_price_h=0.05)
    opts = [planning.option(m, n) for n in (1, 2, 5, 10, 20)]
    best, reason = planning.recommend(opts, **kw)
    assert best["nodes"] == nodes and why in reason, (best, reason, opts)


def test_budget_without_prices_says_so():
    opts = [planning.option(Model(items=10_000, item_s=0.01), n) for n in (1, 2)]
    best, why = planning.recommend(opts, budget_usd=5)
    assert best["nodes"] == 2 and "no price known" in why


def test_recorded_local_profile_a_local_fleet_cannot_beat_its_machine():
    p = json.loads(RECORDED.read_text())
    item_s = p["item_seconds"]["resize"]
    m = Model(items=6000, item_s=item_s, cores=p["cores"], efficiency=p["parallel_efficiency"], machine_cores=2,
              machine_efficiency=0.8, run_start_s=p["run_start_s"]["resize"], poll_s=0.2)
    opts = {o["nodes"]: o for o in (planning.option(m, n) for n in (1, 2, 3, 4))}
    assert opts[1]["bottleneck"] == planning.NODE_CPU
    machine = 2 * 0.8 / (item_s + planning.DEFAULT_NODE_DISK_S + planning.DEFAULT_HEAD_DISK_S)
    assert opts[3]["bottleneck"] == planning.MACHINE_CPU and opts[3]["items_per_s"] == pytest.approx(machine, abs=0.01)
    assert opts[3]["run_s"] == opts[4]["run_s"] < opts[1]["run_s"]
    plan = planning.plan(m, [3, 1, 2, 2])
    assert [o["nodes"] for o in plan["options"]] == [1, 2, 3]
    json.dumps(plan)
    for o in plan["options"] + [plan["recommended"]]:
        assert {"nodes", "wall_s", "cost_usd", "bottleneck"} <= set(o)


def test_batch_shards_the_65536_4096_256_lesson():
    """330,000 items of 0.5 s, 60 s to start a job: 65,536 jobs are mostly start-up, 256 are mostly work."""
    items, item_s = 330_000, 0.5

    def share(n, shards):
        return plan_line(n, shards, 60.0, item_s, 2)[1]

    rows = planning.batch_options(items, [65_536, 4_096, 256], job_start_s=60.0, vcpus=2, max_vcpus=256,
                                  vcpu_price_h=0.017, share_of=share)
    by = {r["shards"]: r for r in rows}
    assert [r["shards"] for r in rows] == [256, 4_096, 65_536] and all(r["jobs"] == r["shards"] for r in rows)
    assert by[256]["items_per_job"] == math.ceil(items / 256) and by[65_536]["items_per_job"] == 6
    assert by[65_536]["overhead_share"] == pytest.approx(60 / (60 + 6 * 0.5 / 2))
    assert by[65_536]["overhead_share"] > 0.9 > by[4_096]["overhead_share"] > 0.5 > by[256]["overhead_share"]
    assert by[65_536]["cost_usd"] > 10 * by[256]["cost_usd"]     # paying for 65,536 job starts
    assert by[256]["jobs_at_once"] == 128 and by[256]["wall_s"] == pytest.approx(2 * (60 + 1290 * 0.5 / 2), abs=0.1)


def test_workers_waiting_on_the_mount_and_a_local_nodes_disk_cpu():
    """One worker that waits 3 ms per input is bound by the wait; a local node's sshfs is not on its cores."""
    cloud = Model(items=1000, item_s=0.002, cores=1, node_disk_s=0.001, io_s=0.003)
    o = planning.option(cloud, 1)
    assert o["bottleneck"] == planning.NODE_WAIT and o["items_per_s"] == pytest.approx(200)
    assert "--threads" in o["lever"]
    local = Model(items=1000, item_s=0.002, cores=1, node_disk_s=0.004, disk_on_node_cores=False)
    assert planning.caps(local, 1)[planning.NODE_CPU] == pytest.approx(500)      # 1 / 2 ms: sshfs elsewhere
    assert planning.caps(Model(items=1, item_s=0.002, node_disk_s=0.004), 1)[planning.NODE_CPU] == \
        pytest.approx(1 / 0.006)


def test_helpers_wait_one_claim_recheck_at_the_end():
    """More than one node: the last of them may look at the others' claims once more (fw_runner.CLAIM_RECHECK)."""
    import tests.support.workloads  # noqa: F401 - puts workloads/ on sys.path
    import fw_runner
    assert planning.CLAIM_RECHECK_S == fw_runner.CLAIM_RECHECK
    m = Model(items=100, item_s=0.01, cores=1, node_disk_s=0.0, head_disk_s=0.0)
    one, two = planning.option(m, 1), planning.option(m, 2)
    assert two["run_s"] - one["run_s"] == pytest.approx(planning.CLAIM_RECHECK_S - 0.5, abs=0.02)
    assert (one["claim_recheck_s"], two["claim_recheck_s"]) == (0.0, planning.CLAIM_RECHECK_S)   # said apart


def test_a_local_machine_pays_for_every_process_of_the_run():
    """A local fleet's machine runs the runners (their CPU through the mount, not only the work's), the nodes'
    sshfs and the head's sshd: 2 cores, 3 + 1.5 + 1.5 ms per item = 6 ms: 333 items/s, not the 2 / 5 ms the
    work alone (2 ms) would give."""
    m = Model(items=600, item_s=0.002, cores=1, node_disk_s=0.0015, head_disk_s=0.0015, disk_on_node_cores=False,
              machine_cores=2, run_cpu_s=0.003, run_start_s=0.1, ssh_s=0.15, poll_s=0.2, claim_recheck_s=1.0)
    assert planning.machine_item_s(m) == pytest.approx(0.006)
    assert planning.caps(m, 3)[planning.MACHINE_CPU] == pytest.approx(2 / 0.006)
    o = planning.option(m, 3)
    assert o["bottleneck"] == planning.MACHINE_CPU and o["items_per_s"] == pytest.approx(333.33, abs=0.01)
    assert o["run_s"] == pytest.approx(0.3 + 0.1 + 600 * 0.006 / 2 + 0.002 + 0.0015 + 1.0 + 0.1, abs=0.01)
    # not measured: the work's own time per item, as before
    assert planning.machine_item_s(Model(items=1, item_s=0.002, node_disk_s=0.001, head_disk_s=0.001)) == \
        pytest.approx(0.004)


def test_more_local_nodes_than_cores_start_one_after_the_other():
    """Each runner's start costs 0.3 s of CPU: 2 nodes on 2 cores start in 0.3 s (run_start_s), 4 take 0.6 s,
    and that time is not spent on items."""
    m = Model(items=600, item_s=0.002, cores=1, node_disk_s=0.001, head_disk_s=0.001, disk_on_node_cores=False,
              machine_cores=2, run_cpu_s=0.002, start_cpu_s=0.3, run_start_s=0.3, ssh_s=0.0, poll_s=0.0,
              claim_recheck_s=0.0)
    assert planning.start_s(m, 1) == planning.start_s(m, 2) == pytest.approx(0.3)
    assert planning.start_s(m, 4) == pytest.approx(4 * 0.3 / 2)
    two, four = planning.option(m, 2), planning.option(m, 4)
    assert two["bottleneck"] == four["bottleneck"] == planning.MACHINE_CPU
    assert four["run_s"] - two["run_s"] == pytest.approx(0.3, abs=0.01)    # the same items, two more starts
    # a cloud fleet: every node starts on its own cores
    cloud = Model(items=600, item_s=0.002, start_cpu_s=0.3, run_start_s=0.3)
    assert planning.start_s(cloud, 50) == pytest.approx(0.3)


def test_a_local_node_bound_run_is_not_shortened_by_the_machine_term():
    """One worker waiting on the mount (node I/O wait) binds before the machine does: the machine phase
    (start + items at the machine's rate) is shorter than start + items at the wait-bound rate."""
    m = Model(items=600, item_s=0.0026, cores=1, node_disk_s=0.0015, head_disk_s=0.0013, io_s=0.0023,
              disk_on_node_cores=False, machine_cores=2, run_cpu_s=0.003, start_cpu_s=0.2, run_start_s=0.1,
              ssh_s=0.15, poll_s=0.2)
    o = planning.option(m, 1)
    assert o["bottleneck"] == planning.NODE_WAIT and o["items_per_s"] == pytest.approx(1 / 0.0049, abs=0.01)
    assert o["run_s"] == pytest.approx(0.3 + 0.1 + 600 * 0.0049 + 0.0026 + 0.0023 + 0.1, abs=0.01)


def test_each_local_node_beyond_the_first_adds_what_helping_costs():
    """Helping costs 1 ms per item for each node beyond the first: 3 nodes pay 6 + 2 ms per item on 2 cores."""
    m = Model(items=600, item_s=0.002, cores=1, node_disk_s=0.0015, head_disk_s=0.0015, disk_on_node_cores=False,
              machine_cores=2, run_cpu_s=0.003, help_cpu_s=0.001, run_start_s=0.1, ssh_s=0.15, poll_s=0.2)
    assert [planning.machine_item_s(m, n) for n in (1, 2, 3)] == pytest.approx([0.006, 0.007, 0.008])
    assert planning.caps(m, 3)[planning.MACHINE_CPU] == pytest.approx(2 / 0.008)
    three = planning.option(m, 3)
    assert three["run_s"] == pytest.approx(0.3 + 0.1 + 600 * 0.008 / 2 + 0.002 + 0.0015 + 1.0 + 0.1, abs=0.01)
    assert three["run_s"] > planning.option(m, 2)["run_s"]       # a third node only adds cost on 2 cores
