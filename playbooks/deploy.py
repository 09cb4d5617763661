"""Put the workload code on every node and check the interpreter it will run with.

The files of ``workloads/`` (and the machine profile that ``invoke bench`` wrote, if any) are copied over SFTP
into ``<node workdir>/workloads/``; each node's interpreter (a local node uses the head's ``.venv`` python by
absolute path, a cloud node the image's) is run once and recorded in the fleet's state as ``deploy.json``.
"""
from __future__ import annotations

import json

from invoke import task
from invoke.exceptions import Exit
from rich.console import Console

from .config import REPO, profile_path
from .fleet import nodes_or_exit
from .remote import fan_out, fleet_dir, q, run_checked, show_failures

console = Console()
WORKLOADS = REPO / "workloads"
CHECK = "import sys, PIL; print(sys.version.split()[0])"


def files_to_ship(c) -> list[tuple[str, str]]:
    """(local path, name on the node) for every file deploy copies."""
    files = [(str(p), p.name) for p in sorted(WORKLOADS.glob("*.py"))]
    profile = profile_path(c)
    if profile.exists():
        files.append((str(profile), "profile.json"))
    return files


def deploy_one(c, conn, node, files):
    timeout = float(c.config.fleet.ssh_timeout)
    target = f"{node.workdir}/workloads"
    run_checked(conn, f"mkdir -p {q(target)}", timeout)
    for local, name in files:
        conn.put(local, remote=f"{target}/{name}")
    version = run_checked(conn, f"{q(node.python)} -c {q(CHECK)}", timeout).strip()
    return {"python": node.python, "version": version, "workdir": node.workdir, "files": len(files)}


@task(help={"name": "fleet name (default: fleet.name)", "provider": "local, gcp or aws (default: fleet.provider)"})
def deploy(c, name="", provider=""):
    """Copy workloads/ to every node and record which interpreter each node uses."""
    name, nodes = nodes_or_exit(c, name, provider)
    files = files_to_ship(c)
    if not any(n.endswith(".py") for _, n in files):
        raise Exit(f"nothing to deploy: {WORKLOADS} has no workload scripts")
    results = fan_out(c, name, nodes, lambda conn, n: deploy_one(c, conn, n, files), step="deploy")
    record = {r.node.name: r.value for r in results if r.ok}
    (fleet_dir(c, name) / "deploy.json").write_text(json.dumps(record, indent=1))
    console.print(f"deployed {len(files)} file(s) to {len(record)}/{len(nodes)} node(s)")
    if show_failures(results):
        raise Exit("deploy failed on some nodes (see the table above)")
