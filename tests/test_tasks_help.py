"""`invoke --list` shows every task with a one-line help, and every argument of every task has help text.

Checked in a fresh interpreter: Invoke hands out (pops) a task's help texts the first time it builds that task's
arguments, so a process that already parsed a task shows none the second time.
"""
from __future__ import annotations

import json
import subprocess
import sys

from playbooks.settings.defaults import REPO

CHECK = r"""
import json, tasks
def walk(col, prefix=""):
    for name, task in col.tasks.items():
        yield prefix + name, task
    for name, sub in col.collections.items():
        yield from walk(sub, prefix + name + ".")
out = {}
for name, task in walk(tasks.ns):
    first = ((task.__doc__ or "").strip().splitlines() or [""])[0]
    out[name] = {"doc": first, "missing": [a.name for a in task.get_arguments() if not (a.help or "").strip()]}
print(json.dumps(out))
"""


def test_every_task_and_argument_is_explained():
    result = subprocess.run([sys.executable, "-c", CHECK], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    found = json.loads(result.stdout)
    assert {"fleet.create", "fleet.list", "fleet.down", "mount", "unmount", "deploy", "run", "stop", "progress",
            "teardown", "demo", "overhead", "bench.run", "image.bake", "dask.up", "dask.down", "batch.setup",
            "batch.submit", "batch.status", "batch.down"} <= set(found)
    assert not [n for n, t in found.items() if not t["doc"]], "tasks without a one-line help"
    assert {n: t["missing"] for n, t in found.items() if t["missing"]} == {}
