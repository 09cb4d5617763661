"""The node-side sampler, for real on this machine (--seconds 2; three short runs in all).

A "node" here is just an environment marker, as on a local fleet: FLEETBOOK_NODE=<fleet>/<node>.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
import uuid
from pathlib import Path
from types import SimpleNamespace

import pytest

from playbooks.overhead import make_sampler, parse_sampler_output, sampler_command
from playbooks.measure.verdicts import COMPUTE, IDLE, UNDER, classify

SAMPLER = Path(__file__).resolve().parent.parent / "playbooks" / "measure" / "sampling.py"


def run_sampler(marker: str, seconds: int = 2) -> dict:
    out = subprocess.run([sys.executable, str(SAMPLER), "--seconds", str(seconds), "--match", marker],
                         check=True, capture_output=True, text=True, timeout=seconds + 30)
    return json.loads(out.stdout)


@pytest.fixture
def marker():
    return f"FLEETBOOK_NODE=test-{uuid.uuid4().hex[:8]}/node-0"


@pytest.fixture
def burner(marker):
    """One CPU-burning process carrying the node's marker."""
    key, value = marker.split("=", 1)
    p = subprocess.Popen([sys.executable, "-c", "while True: pass"], env=dict(os.environ, **{key: value}),
                         stdin=subprocess.DEVNULL)
    time.sleep(0.3)
    yield p
    p.kill()
    p.wait(timeout=10)


def test_a_cpu_burner_is_compute_bound_on_one_core_and_under_used_on_two(burner, marker):
    series = run_sampler(marker)
    assert len(series["samples"]) == 2
    for s in series["samples"]:
        assert s["procs"]["count"] == 1
        assert s["procs"]["cpu_cores"] > 0.3  # the machine is shared with other work: at least a good part
        assert s["procs"]["threads_run"] >= 0.6
        assert set(s["machine"]["cpu"][0]) >= {"user", "system", "iowait", "idle"}
        assert len(s["machine"]["cpu"]) == series["cpu_count"]
    one = classify(series, node="node-0", cores=1, shared=True)
    assert one.verdict == COMPUTE, one.lever
    two = classify(series, node="node-0", cores=2, shared=True)
    assert two.verdict == UNDER, two.lever
    assert "of 2 cores busy" in two.lever and "raise --workers or the chunk size" in two.lever


def test_nothing_running_is_idle(marker):
    series = run_sampler(marker)
    assert all(s["procs"]["count"] == 0 for s in series["samples"])
    v = classify(series, node="node-0", cores=1, shared=True)
    assert v.verdict == IDLE and "nothing running" in v.lever


def test_the_sampler_runs_from_the_one_line_command_the_task_sends(marker):
    """What goes over SSH: `python -c <compressed sampler> --seconds N --match ...`, no file on the node."""
    cmd = sampler_command(sys.executable, 1, marker)
    assert str(SAMPLER.parent) not in cmd
    r = subprocess.run(cmd, shell=True, capture_output=True, text=True, timeout=30)  # as sshd runs it: sh -c
    assert r.returncode == 0, r.stderr
    data = parse_sampler_output(r.stdout)
    assert data["match"]["env"] == [marker] and len(data["samples"]) == 1


def test_parse_sampler_output_says_what_went_wrong():
    with pytest.raises(RuntimeError, match="psutil"):
        parse_sampler_output('{"error": "psutil is not installed on this node"}\n')
    with pytest.raises(RuntimeError, match="no JSON"):
        parse_sampler_output("Traceback ...\nboom\n")
    with pytest.raises(RuntimeError, match="nothing"):
        parse_sampler_output("\n")


def test_bad_arguments_are_refused():
    r = subprocess.run([sys.executable, str(SAMPLER), "--match", "no-equals-sign"], capture_output=True, text=True)
    assert r.returncode == 2 and "KEY=VALUE" in r.stderr


class ShellConn:
    """Stands in for a Fabric Connection: runs the command in a local shell, as sshd would on the node."""

    def run(self, cmd, **kw):
        r = subprocess.run(cmd, shell=True, capture_output=True, text=True, timeout=kw.get("timeout") or 60)
        return SimpleNamespace(exited=r.returncode, stdout=r.stdout, stderr=r.stderr)


def test_a_node_without_psutil_says_so_in_one_line(marker):
    bare = shutil.which("python3", path="/usr/bin:/bin")
    if not bare or subprocess.run([bare, "-c", "import psutil"], capture_output=True).returncode == 0:
        pytest.skip("no interpreter without psutil on this machine")
    node = SimpleNamespace(name="node-0", python=bare)
    with pytest.raises(RuntimeError, match="psutil is missing on the node"):
        make_sampler("test", 1, 30)(ShellConn(), node)
