"""The shared disk's per-item figures from one probe run (pure functions of its JSON line)."""
from __future__ import annotations

import pytest

from playbooks.measure import disk_cost


def test_figures_per_item_and_nothing_from_a_failed_probe():
    probe = {"workload": "resize", "items": 200, "done": 200, "seconds": 2.0, "node_cpu_s": 0.5,
             "work_cpu_s": 0.9, "mount_processes": 2, "exit": 0}
    f = disk_cost.figures(probe, 0.4)
    assert f == {"items": 200, "node_cpu_s_per_item": 0.0025, "head_cpu_s_per_item": 0.002,
                 "item_wall_s": 0.01, "work_cpu_s_per_item": 0.0045, "mount_processes": 2,
                 "start_cpu_s": None, "run_cpu_s_per_item": 0.0045,    # no start measured: all of it
                 "help_cpu_s_per_item": None}                          # no two-shard run
    assert disk_cost.figures(probe, None)["head_cpu_s_per_item"] is None       # a head instance
    assert disk_cost.figures({**probe, "done": 0}, 0.4) is None
    assert disk_cost.figures({**probe, "exit": 2}, 0.4) is None


def test_the_start_of_the_run_is_taken_out_of_its_cpu_per_item():
    """0.9 s of the runner's CPU over 200 items, 0.3 s of which a run with nothing to do also costs: 3 ms per
    item and 0.3 s per node."""
    probe = {"done": 200, "seconds": 2.0, "node_cpu_s": 0.5, "work_cpu_s": 0.9, "start_cpu_s": 0.3, "exit": 0}
    f = disk_cost.figures(probe, 0.4)
    assert f["start_cpu_s"] == 0.3 and f["run_cpu_s_per_item"] == 0.003 and f["work_cpu_s_per_item"] == 0.0045
    assert disk_cost.figures({**probe, "start_cpu_s": 2.0}, 0.4)["run_cpu_s_per_item"] == 0.0   # never below 0
    assert disk_cost.figures({**probe, "start_cpu_s": -1}, 0.4)["start_cpu_s"] is None
    line = disk_cost.summary({"resize": f})
    assert "its CPU 3.00 ms + 0.30 s to start" in line


def test_what_one_more_node_costs_from_the_two_shard_run():
    """One runner: 0.9 + 0.5 + 0.4 = 1.8 s of CPU for 200 items; two shards at once: 1.2 + 0.7 + 0.6 = 2.5 s, one
    more start (0.3 s) of it: the other 0.4 s are helping, 2 ms per item."""
    probe = {"done": 200, "seconds": 2.0, "node_cpu_s": 0.5, "work_cpu_s": 0.9, "start_cpu_s": 0.3, "exit": 0}
    helped = {"done": 200, "node_cpu_s": 0.7, "work_cpu_s": 1.2, "exit": 0}
    assert disk_cost.figures(probe, 0.4, helped, 0.6)["help_cpu_s_per_item"] == 0.002
    assert disk_cost.figures(probe, 0.4, {**helped, "work_cpu_s": 0.5}, 0.6)["help_cpu_s_per_item"] == 0.0
    for bad in ({**helped, "done": 190}, {**helped, "exit": 1}, {}):       # not every item once: unknown
        assert disk_cost.figures(probe, 0.4, bad, 0.6)["help_cpu_s_per_item"] is None
    assert disk_cost.figures(probe, 0.4, helped, None)["help_cpu_s_per_item"] is None   # head in one run only
    # a head instance (not measured in either run): the node's part only, (1.9 - 1.4 - 0.3) / 200
    assert disk_cost.figures(probe, None, helped, None)["help_cpu_s_per_item"] == pytest.approx(0.001)
    assert "each more node 2.00 ms" in disk_cost.summary({"resize": disk_cost.figures(probe, 0.4, helped, 0.6)})


def test_entry_per_workload_else_the_flat_figures_of_older_profiles():
    p = {"shared_disk": {"resize": {"node_cpu_s_per_item": 1.0}, "features": {"node_cpu_s_per_item": 2.0}}}
    assert disk_cost.entry(p, "features") == {"node_cpu_s_per_item": 2.0}
    assert disk_cost.entry(p, "edges") == {}
    flat = {"shared_disk": {"node_cpu_s_per_item": 3.0, "head_cpu_s_per_item": 4.0}}
    assert disk_cost.entry(flat, "edges") == {"node_cpu_s_per_item": 3.0, "head_cpu_s_per_item": 4.0}
    assert disk_cost.entry({}, "resize") == {}


def test_summary_names_each_workload():
    line = disk_cost.summary({"resize": {"items": 60, "node_cpu_s_per_item": 0.002, "head_cpu_s_per_item": None,
                                         "item_wall_s": 0.008}})
    assert line.startswith("shared disk per item (CPU; 60 items)") and "head not measured" in line
    assert "one worker 8.00 ms wall" in line
    assert disk_cost.summary({}).endswith("not measured")


def test_the_heads_cpu_is_read_to_the_nanosecond_not_in_clock_ticks():
    """A probe of a few items costs the head's sshd ~10 ms: in 10 ms ticks it could read 0 (it did, once)."""
    import subprocess
    import sys

    import psutil

    from playbooks.ssh.daemons import cpu_seconds

    child = subprocess.Popen([sys.executable, "-c", "import time\nt=time.process_time()\n"
                              "while time.process_time() - t < 0.003: pass\nprint(1, flush=True)\ntime.sleep(30)"],
                             stdout=subprocess.PIPE)
    try:
        assert child.stdout.readline() == b"1\n"
        s = cpu_seconds(psutil.Process(child.pid))
        assert 0.003 < s < 2.0
        assert abs(s * 100 - round(s * 100)) > 1e-6       # not a whole number of 10 ms ticks
    finally:
        child.kill()
        child.wait()
        child.stdout.close()
