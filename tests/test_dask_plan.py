"""The Dask engine's pieces that need no fleet: the plan and its warning, chunk sizes, commands, port checks."""
from __future__ import annotations

import math
import shlex
import socket
from pathlib import Path

import pytest
from invoke.exceptions import Exit

from tests.support.cloud import make_context
from playbooks import run
from playbooks.engines import dask as engine
from playbooks.engines.errors import EngineError
from playbooks.providers import Node


def ctx(tmp_path: Path, **dask):
    return make_context({"fleet": {"state_dir": str(tmp_path / "state")}, "shared": {"root": str(tmp_path / "d")},
                         "dask": dict(engine.DASK_DEFAULTS, **dask)})


def test_plan_line_gives_tasks_items_per_task_and_overhead_share():
    line, share = engine.plan_line("dask", 1000, 100, 10, 0.002, 0.001)
    assert "1000 item(s) -> 100 task(s) of up to 10 item(s)" in line
    assert share == pytest.approx(0.002 / (0.002 + 10 * 0.001)) and "16.7%" in line
    line, share = engine.plan_line("dask", 10, 1, 10, 0.002, None)
    assert share is None and "overhead share unknown" in line


@pytest.mark.parametrize("items, threads, item_s, overhead_us", [
    (36, 3, 0.006, 3600.0), (1000, 6, 0.002, 1859.0), (330_000, 40, 0.01, 1859.0), (5, 3, None, 1859.0)])
def test_chunks_follow_the_profile_rule_and_cover_every_item(tmp_path, items, threads, item_s, overhead_us):
    from playbooks.runs import state as runstate
    fw = runstate.fleetwork()
    c = ctx(tmp_path)
    todo = [f"i{k}" for k in range(items)]

    class Opts:
        chunksize = None

    chunk = engine.plan(c, Opts, todo, threads, overhead_us, item_s)
    assert chunk == fw.choose_chunksize(items, threads, item_s, overhead_us)
    assert math.ceil(items / chunk) * chunk >= items
    Opts.chunksize = 7  # the workload's own --chunksize (via --args) wins
    assert engine.plan(c, Opts, todo, threads, overhead_us, item_s) == 7
    assert engine.plan(ctx(tmp_path, chunksize=11), Opts, todo, threads, overhead_us, item_s) == 11


def test_worker_command_is_detached_quoted_and_on_the_workloads_path():
    node = Node(name="n-0", host="127.0.1.10", port=22, user="fb-x-0", mountpoint="/mnt/fleet book",
                python="/opt/venv/bin/python", workdir="/home/n 0/fleetbook")
    cmd = engine.worker_command(node, "tcp://127.0.0.1:8786", 2, 1, local=True)
    assert "setsid nohup" in cmd and cmd.endswith("& echo $!; }")
    assert "PYTHONPATH='/home/n 0/fleetbook/workloads'" in cmd and "FLEETBOOK_MOUNT='/mnt/fleet book'" in cmd
    assert "FLEETBOOK_MOUNT_WAIT=60 " in cmd         # a chunk waits for a dropped mount (job.mount_wait)
    argv = shlex.split(cmd.split("setsid nohup ", 1)[1].split(" > ", 1)[0])
    assert argv[:4] == ["/opt/venv/bin/python", "-m", "distributed.cli.dask_worker", "tcp://127.0.0.1:8786"]
    assert argv[argv.index("--nworkers") + 1] == "2" and argv[argv.index("--host") + 1] == "127.0.1.10"
    assert "--host" not in engine.worker_command(node, "tcp://h:1", 1, 1, local=False)


def test_a_taken_port_is_a_one_line_error(tmp_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        with pytest.raises(EngineError) as e:
            engine.up(ctx(tmp_path, port=port), "nofleet", [], "local")
    assert f"port {port}" in e.value.message and "dask.port" in e.value.message


def test_down_without_a_cluster_is_a_no_op(tmp_path):
    assert engine.down(ctx(tmp_path), "nofleet", []) == 0


def test_unknown_engine_is_refused(tmp_path, monkeypatch):
    monkeypatch.setattr(run, "nodes_or_exit", lambda c, name, provider: ("f", []))
    with pytest.raises(Exit) as e:
        run.run_(ctx(tmp_path), workload="resize", engine="spark")
    assert "--engine local or --engine dask" in e.value.message
