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


@pytest.mark.parametrize("shell", ["bash", "sh"])
def test_a_workload_start_returns_its_pid_at_once(tmp_path, slow_python, shell):
    node = Node(name="n-0", host="127.0.0.1", mountpoint=str(tmp_path / "mnt"), python=str(slow_python),
                workdir=str(tmp_path / "wd"))
    (tmp_path / "wd").mkdir()
    (tmp_path / "mnt").mkdir()
    record = {"run_id": "resize-x", "workload": "resize", "src": "src", "dst": "out", "nodes": [{"name": "n-0"}]}
    state = tmp_path / "mnt" / ".fleetbook" / "runs" / "resize-x" / "nodes" / "n-0"
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
