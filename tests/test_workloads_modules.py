"""workloads/: plain scripts over fleetwork.py and its fw_*.py siblings: imports that only point down (no
cycle), only the standard library at the top of the runner's modules, each module of a readable size."""
from __future__ import annotations

import ast
import graphlib
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.workloads import PY, WORKLOADS

MODULES = {p.stem: p for p in sorted(WORKLOADS.glob("*.py"))}
WORKLOAD_SCRIPTS = ("resize", "edges", "features", "gridsearch")


def imports(path: Path, *, top_only: bool = False) -> set[str]:
    """Top-level package names that ``path`` imports (anywhere in it, or only at module level)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    nodes = tree.body if top_only else ast.walk(tree)
    found = set()
    for node in nodes:
        if isinstance(node, ast.Import):
            found |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.add(node.module.split(".")[0])
    return found


def test_no_import_cycle_in_workloads():
    graph = {name: imports(path) & set(MODULES) for name, path in MODULES.items()}
    try:
        order = list(graphlib.TopologicalSorter(graph).static_order())
    except graphlib.CycleError as e:
        pytest.fail(f"import cycle in workloads/: {e.args[1]}")
    assert order.index("fw_errors") < order.index("fleetwork") < order.index("resize")


def test_workloads_use_only_fleetwork_among_their_siblings():
    for name in WORKLOAD_SCRIPTS:
        assert imports(MODULES[name]) & set(MODULES) == {"fleetwork"}, name
    for name in set(MODULES) - set(WORKLOAD_SCRIPTS) - {"fleetwork", "storage"}:
        assert "fleetwork" not in imports(MODULES[name]), f"{name} imports the API it is part of"


def test_runner_modules_import_only_the_standard_library_at_the_top():
    for name, path in MODULES.items():
        if name in WORKLOAD_SCRIPTS:
            continue
        other = imports(path, top_only=True) - set(MODULES) - set(sys.stdlib_module_names) - {"__future__"}
        assert not other, f"{name} imports {other} at its top (a node may lack them)"


def test_modules_are_at_most_about_400_lines():
    sizes = {name: len(path.read_text(encoding="utf-8").splitlines()) for name, path in MODULES.items()}
    assert max(sizes.values()) <= 400, sizes


def test_each_runner_module_imports_alone_from_any_folder(tmp_path):
    """A fresh interpreter with workloads/ on its path (as a script or a node has it) imports each module by
    itself, and ``fleetwork`` gives the same objects as the modules that hold them."""
    names = sorted(n for n in MODULES if n.startswith("fw_"))
    code = ("import sys, importlib; sys.path.insert(0, sys.argv[1]); "
            "[importlib.import_module(n) for n in sys.argv[2:]]; import fleetwork, fw_workload, fw_images; "
            "print(fleetwork.Workload is fw_workload.Workload, "
            "fleetwork.IMAGE_EXTENSIONS is fw_images.IMAGE_EXTENSIONS)")
    for name in names:
        r = subprocess.run([PY, "-c", code, str(WORKLOADS), name], cwd=tmp_path, capture_output=True, text=True,
                           timeout=60)
        assert r.returncode == 0 and r.stdout.split() == ["True", "True"], (name, r.stderr)


def test_storage_command_runs_a_workload_by_name(tmp_path):
    r = subprocess.run([PY, str(WORKLOADS / "storage.py"), "gridsearch", "--help"], cwd=tmp_path,
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0 and "gridsearch options" in r.stdout, r.stderr
    r = subprocess.run([PY, str(WORKLOADS / "storage.py")], cwd=tmp_path, capture_output=True, text=True,
                       timeout=60)
    assert r.returncode == 2 and "usage: storage.py WORKLOAD" in r.stderr
