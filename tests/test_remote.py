"""The bounded fan-out: a cap on concurrent hosts, and per-host failures as data shown as a table."""
from __future__ import annotations

import threading

from tests.support.fleet import make_ctx
from rich.console import Console

from playbooks.providers import Node, local
from playbooks.ssh.fanout import fan_out, run_checked, show_failures


def test_fan_out_never_runs_more_hosts_than_the_cap(tmp_path):
    c = make_ctx(tmp_path, fleet__max_parallel=2)
    local.ensure_fleet(c, "capped")
    lock, running, peak = threading.Lock(), [0], [0]
    both = threading.Barrier(2, timeout=10)  # only passes when two hosts really run at once

    def step(conn, node):
        with lock:
            running[0] += 1
            peak[0] = max(peak[0], running[0])
        both.wait()
        with lock:
            running[0] -= 1
        return node.name

    nodes = [Node(name=f"n{i}", host="127.0.0.1", port=1) for i in range(6)]
    results = fan_out(c, "capped", nodes, step, step="count")
    assert [r.value for r in results] == [n.name for n in nodes] and all(r.ok for r in results)
    assert peak[0] == 2


def test_a_host_that_fails_is_a_row_not_a_traceback(tmp_path):
    c = make_ctx(tmp_path, fleet__ssh_timeout=3.0)
    local.ensure_fleet(c, "ghosts")
    nodes = [Node(name="ghost", host="127.0.1.250", port=1)]  # nothing listens there
    results = fan_out(c, "ghosts", nodes, lambda conn, n: run_checked(conn, "true"), step="probe")
    assert not results[0].ok and results[0].error
    console = Console(record=True, width=200)
    assert show_failures(results, console) == 1
    text = console.export_text()
    assert "ghost" in text and "probe" in text and "127.0.1.250:1" in text and "Traceback" not in text
