"""The house's layers: imports inside playbooks/ only point down, no module imports itself back through others.

Layers, bottom to top: settings < fs < ssh < providers < runs, transfer < measure < engines < the runbook steps
(the modules directly in playbooks/, one Invoke collection each).  Every import counts, also one inside a
function (the usual way to hide a cycle); only imports under ``if TYPE_CHECKING:`` are for type checkers alone.
"""
from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
PLAYBOOKS = REPO / "playbooks"
RANK = {"settings": 0, "fs": 1, "ssh": 2, "providers": 3, "runs": 4, "transfer": 4, "measure": 5, "engines": 6}
STEPS = 7


def module_name(path: Path) -> str:
    parts = list(path.relative_to(REPO).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(p): p for p in sorted(PLAYBOOKS.rglob("*.py"))}


def rank(mod: str) -> int:
    parts = mod.split(".")
    if len(parts) == 1:
        return -1                                   # the playbooks package itself
    if parts[1] in RANK:
        return RANK[parts[1]]
    return STEPS


def _type_checking_only(node: ast.If) -> bool:
    t = node.test
    return (isinstance(t, ast.Name) and t.id == "TYPE_CHECKING") or (
        isinstance(t, ast.Attribute) and t.attr == "TYPE_CHECKING")


def imports_of(mod: str) -> set[str]:
    """The playbooks modules that ``mod`` imports (a package import counts as its __init__)."""
    path = MODULES[mod]
    tree = ast.parse(path.read_text(), str(path))
    is_pkg = path.name == "__init__.py"
    found: set[str] = set()

    def visit(node):
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and _type_checking_only(child):
                for sub in child.orelse:
                    visit(sub)
                continue
            if isinstance(child, ast.Import):
                found.update(a.name for a in child.names)
            elif isinstance(child, ast.ImportFrom):
                if child.level:
                    base = mod.split(".") if is_pkg else mod.split(".")[:-1]
                    base = base[:len(base) - (child.level - 1)] if child.level > 1 else base
                    target = ".".join(base + ([child.module] if child.module else []))
                else:
                    target = child.module or ""
                found.add(target)
                found.update(f"{target}.{a.name}" for a in child.names)
            visit(child)

    visit(tree)
    return {m for m in found if m in MODULES and m != mod}


GRAPH = {m: imports_of(m) for m in MODULES}


def test_every_import_points_down_or_sideways_within_a_layer():
    upward = sorted(f"{m} (layer {rank(m)}) imports {t} (layer {rank(t)})"
                    for m, targets in GRAPH.items() for t in targets if rank(t) > rank(m) >= 0)
    assert not upward, "imports that point up:\n" + "\n".join(upward)


def test_no_import_cycle():
    cycles, seen, stack, on_stack = [], set(), [], set()

    def walk(m):
        seen.add(m)
        stack.append(m)
        on_stack.add(m)
        for t in sorted(GRAPH[m]):
            if t in on_stack:
                cycles.append(" -> ".join(stack[stack.index(t):] + [t]))
            elif t not in seen:
                walk(t)
        stack.pop()
        on_stack.discard(m)

    for m in sorted(GRAPH):
        if m not in seen:
            walk(m)
    # a package's __init__ re-exporting its own submodule (a registry) is not a cycle of layers
    def package_and_its_own(cycle: str) -> bool:
        mods = set(cycle.split(" -> "))
        return len(mods) == 2 and any(MODULES[m].name == "__init__.py" and all(x.startswith(m + ".") or x == m
                                                                                for x in mods) for m in mods)

    cycles = [c for c in cycles if not package_and_its_own(c)]
    assert not cycles, "import cycles:\n" + "\n".join(cycles)


def test_engines_use_the_provider_contract_not_one_provider():
    bad = sorted(f"{m} imports {t}" for m, targets in GRAPH.items() if rank(m) == RANK["engines"]
                 for t in targets if t.startswith("playbooks.providers."))
    assert not bad, "\n".join(bad)


@pytest.mark.parametrize("folder", ["providers", "ssh", "settings", "fs"])
def test_the_lower_layers_know_nothing_of_the_workloads(folder):
    bad = sorted(str(p.relative_to(REPO)) for p in (PLAYBOOKS / folder).rglob("*.py")
                 if re.search(r"fleetwork|[\"']workloads[\"'/]", p.read_text()))
    assert not bad, "these modules refer to the workloads: " + ", ".join(bad)


def test_bench_imports_test_support_without_path_tricks():
    bad = sorted(str(p.relative_to(REPO)) for p in (REPO / "bench").rglob("*.py")
                 if re.search(r"sys\.path\.\w+\(.*tests", p.read_text()))
    assert not bad, "bench/ puts tests/ on sys.path: " + ", ".join(bad)
