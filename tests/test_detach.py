"""The commands that start a workload or a Dask worker on a node return at once, in every login shell: the
SSH channel (here: the pipes of a subprocess) is not held open by what they leave running."""
from __future__ import annotations

import os
import signal
import subprocess
import time

import pytest

from playbooks.engines.dask import cluster as dask_cluster
from playbooks.engines.launch import node_command
from playbooks.providers import Node


@pytest.fixture
def slow_python(tmp_path):
    """An interpreter that runs for 20 s whatever it is asked (the workload or worker left running)."""
    exe = tmp_path / "python"
    exe.write_text("#!/bin/sh\nexec sleep 20\n")
    exe.chmod(0o755)
    return exe


def _returns_at_once(shell: str, cmd: str) -> int:
    t0 = time.monotonic()
    out = subprocess.run([shell, "-c", cmd], capture_output=True, text=True, timeout=10)
    assert time.monotonic() - t0 < 5, f"{shell} waited for what it started"
    pid = int(out.stdout.split()[-1])
    assert pid > 1
    for _ in range(100):                  # setsid may not have run yet: its own session, then the whole group
        if os.getsid(pid) == pid:
            os.killpg(pid, signal.SIGKILL)
            break
        time.sleep(0.02)
    else:
        raise AssertionError(f"{pid} did not get a session of its own (setsid)")
    return pid


def _one_node_run(tmp_path, python, run_id: str):
    """A node whose workdir and mountpoint are folders of ``tmp_path`` and whose interpreter is ``python``, a run
    of it, and where its state folder on the "shared disk" is."""
    node = Node(name="n-0", host="127.0.0.1", mountpoint=str(tmp_path / "mnt"), python=str(python),
                workdir=str(tmp_path / "wd"))
    (tmp_path / "wd").mkdir()
    (tmp_path / "mnt").mkdir()
    record = {"run_id": run_id, "workload": "resize", "src": "src", "dst": "out", "nodes": [{"name": "n-0"}]}
    return node, record, tmp_path / "mnt" / ".fleetbook" / "runs" / run_id / "nodes" / "n-0"


@pytest.mark.parametrize("shell", ["bash", "sh"])
def test_a_workload_start_returns_its_pid_at_once(tmp_path, slow_python, shell):
    node, record, state = _one_node_run(tmp_path, slow_python, "resize-x")
    state.mkdir(parents=True)
    (state / "exit.json").write_text('{"code": 0, "preempted": true}')    # left by the node it replaces
    assert _returns_at_once(shell, node_command(node, record, 0, [], None)) > 1
    assert not (state / "exit.json").exists()


@pytest.mark.parametrize("shell", ["bash", "sh"])
def test_a_dask_worker_start_returns_its_pid_at_once(tmp_path, slow_python, shell):
    node = Node(name="n-0", host="127.0.0.1", mountpoint=str(tmp_path / "mnt"), python=str(slow_python),
                workdir=str(tmp_path / "wd"))
    (tmp_path / "wd").mkdir()
    assert _returns_at_once(shell, dask_cluster.worker_command(node, "tcp://127.0.0.1:8786", 1, 1, local=True)) > 1


def test_the_final_copy_of_the_log_never_shows_it_half_written(tmp_path):
    """Once the workload has ended, the node's shell puts its local log (and exit file) on the shared disk.  A plain
    ``cp`` over the shared log emptied it first: a reader at that moment (``progress``, the head's last look, a test)
    read nothing (found in tests/test_mount_netns.py and tests/test_node_hardware.py).  Now it is copied beside it,
    then renamed into place."""
    exe = tmp_path / "python"                 # a workload that says a lot, then ends
    exe.write_text("#!/bin/sh\nhead -c 30000000 /dev/zero | tr '\\0' x; echo; echo 'fleetwork: summary {}'\n")
    exe.chmod(0o755)
    node, record, state = _one_node_run(tmp_path, exe, "resize-y")
    subprocess.run(["sh", "-c", node_command(node, record, 0, [], None)], capture_output=True, timeout=10, check=True)
    log, seen, shrank, ended = state / "log.txt", 0, [], None
    deadline = time.monotonic() + 30
    while ended is None or time.monotonic() < ended + 1.0:     # up to a second after the exit file came
        assert time.monotonic() < deadline, "the workload's exit file did not reach the shared disk"
        try:
            size = log.stat().st_size
        except FileNotFoundError:
            size = 0
        if size < seen:
            shrank.append((seen, size))
        seen = max(seen, size)
        if ended is None and (state / "exit.json").exists():
            ended = time.monotonic()
    assert seen > 30_000_000 and not shrank, f"the shared log shrank while it was copied: {shrank[:3]}"
    assert log.read_bytes() == (tmp_path / "wd" / ".runs" / "resize-y" / "log.txt").read_bytes()
    assert sorted(p.name for p in state.iterdir()) == ["exit.json", "log.txt"]     # no copy left beside them
