"""The bench suite itself: what `invoke bench` selects against `pytest bench/`, and that every benchmark module
takes its sizes from ``--bench-scale``."""
from __future__ import annotations

import os
import subprocess
import sys

from playbooks.settings.defaults import REPO


def _pytest(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "pytest", "-p", "no:cacheprovider", *args], cwd=REPO,
                          capture_output=True, text=True, timeout=240, env={**os.environ, **(env or {})})


def _collected(*args: str) -> set[str]:
    r = _pytest("bench", "--collect-only", "-q", *args)
    assert r.returncode == 0, r.stdout + r.stderr
    return {line for line in r.stdout.splitlines() if "::" in line}


def test_invoke_bench_selects_pytest_bench_minus_the_fleet_benchmarks():
    """README: `invoke bench` = `pytest bench -m 'not fleet'`; `--fleet` = `pytest bench/`."""
    everything, machine = _collected(), _collected("-m", "not fleet")
    fleet_only = everything - machine
    assert machine < everything and fleet_only
    assert {t.split("::")[0] for t in fleet_only} <= {"bench/test_fleet.py", "bench/test_plan_check.py",
                                                   "bench/test_progress_eta.py", "bench/test_diskcost.py"}
    assert not any(t.startswith(("bench/test_fleet.py", "bench/test_plan_check.py", "bench/test_progress_eta.py",
                                 "bench/test_diskcost.py"))
                   for t in machine)


def test_workload_benchmarks_honour_bench_scale():
    """--bench-scale small wins over FLEETBOOK_BENCH_SCALE=default: 4 photos, not 24."""
    r = _pytest("bench/test_workloads.py", "-k", "pool_throughput", "--bench-scale", "small",
                "--benchmark-disable", "-s", env={"FLEETBOOK_BENCH_SCALE": "default"})
    assert r.returncode == 0, r.stdout + r.stderr
    assert "resize pool: {'items': 4," in r.stdout, r.stdout
