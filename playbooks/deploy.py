"""Put the workload code on every node and check the interpreter it will run with.

The files of ``workloads/`` are copied over SFTP into ``<node workdir>/workloads/``, with the machine profile
of the node's own machine type as ``profile.json`` when ``invoke bench --node`` has measured one (see
``profiles``; the operator's own profile is never shipped: it describes another machine).  Each node's
interpreter (a local node uses the head's ``.venv`` python by absolute path, a cloud node the image's) is run
once and recorded in the fleet's state as ``deploy.json``.
"""
from __future__ import annotations

import json

from invoke import task
from invoke.exceptions import Exit
from rich.console import Console

from playbooks.settings import setting
from playbooks.measure import profiles
from playbooks.settings.defaults import REPO
from playbooks.fleet import nodes_or_exit
from playbooks.ssh.fanout import fan_out, fleet_dir, q, run_checked, show_failures

console = Console()
WORKLOADS = REPO / "workloads"
CHECK = "import sys, PIL; print(sys.version.split()[0])"
PROFILE = "profile.json"   # its name beside the workloads on a node (fleetwork looks for it there)


def workload_files() -> list[tuple[str, str]]:
    """(local path, name on the node) of every workload script."""
    return [(str(p), p.name) for p in sorted(WORKLOADS.glob("*.py"))]


def files_to_ship(c, provider: str, node) -> list[tuple[str, str]]:
    """What deploy copies to ``node``: the workload scripts, and the profile of the node's machine type if any."""
    files = workload_files()
    profile = profiles.for_node(c, provider, node)
    if profile is not None:
        files.append((str(profile), PROFILE))
    return files


def copy_files(conn, target: str, files: list[tuple[str, str]], timeout: float) -> None:
    """``files`` into the folder ``target`` on the node (created if missing), over SFTP."""
    run_checked(conn, f"mkdir -p {q(target)}", timeout)
    for local, name in files:
        conn.put(local, remote=f"{target}/{name}")


def deploy_one(c, conn, node, files):
    timeout = setting(c, "fleet.ssh_timeout")
    target = f"{node.workdir}/workloads"
    copy_files(conn, target, files, timeout)
    profile = next((local for local, name in files if name == PROFILE), None)
    if profile is None:  # a profile left by an earlier deploy may describe another machine type
        run_checked(conn, f"rm -f {q(target + '/' + PROFILE)}", timeout)
    version = run_checked(conn, f"{q(node.python)} -c {q(CHECK)}", timeout).strip()
    return {"python": node.python, "version": version, "workdir": node.workdir, "files": len(files),
            "profile": profile}


@task(help={"name": "fleet name (default: fleet.name)", "provider": "local, gcp or aws (default: fleet.provider)"})
def deploy(c, name="", provider=""):
    """Copy workloads/ (and each node's machine-type profile) to every node; record each node's interpreter."""
    name, nodes = nodes_or_exit(c, name, provider)
    provider = setting(c, "fleet.provider", provider)
    if not workload_files():
        raise Exit(f"nothing to deploy: {WORKLOADS} has no workload scripts")
    results = fan_out(c, name, nodes, lambda conn, n: deploy_one(c, conn, n, files_to_ship(c, provider, n)),
                      step="deploy")
    record = {r.node.name: r.value for r in results if r.ok}
    (fleet_dir(c, name) / "deploy.json").write_text(json.dumps(record, indent=1))
    with_profile = sum(1 for v in record.values() if v["profile"])
    console.print(f"deployed {len(workload_files())} workload file(s) to {len(record)}/{len(nodes)} node(s); "
                  f"{with_profile} got the measured profile of their machine type"
                  + ("" if with_profile else " (measure one with `invoke bench --node NODE`)"))
    if show_failures(results):
        raise Exit("deploy failed on some nodes (see the table above)")
