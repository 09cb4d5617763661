"""Give everything back: stop the workloads, unmount the shared disk, delete the fleet."""
from __future__ import annotations

from invoke import task
from invoke.exceptions import Exit
from rich.console import Console

from playbooks import fleet as fleet_tasks
from playbooks import mount as mount_tasks
from playbooks import run as run_tasks
from playbooks.runs import state as runstate
from playbooks.engines import dask as dask_engine
from playbooks.settings.errors import FleetbookError, user_errors

console = Console()


@task(help={"name": "fleet name (default: fleet.name)", "provider": "local, gcp or aws (default: fleet.provider)",
            "dry_run": "print what would be stopped and deleted (the data on a head instance too), do nothing",
            "discard_results": "delete a head instance even though its outputs were not pulled since their run ended"})
@user_errors
def teardown(c, name="", provider="", dry_run=False, discard_results=False):
    """Stop workloads, unmount, and delete every node of the fleet (a head instance once its outputs are pulled)."""
    name = fleet_tasks.fleet_name(c, name)
    if not fleet_tasks.dry(c, dry_run):
        if dask_engine.read_state(c, name):  # a Dask cluster on the fleet goes first, its scheduler included
            dask_engine.down(c, name, [n for n in fleet_tasks.provider_of(c, provider).list_nodes(c, name)
                                       if n.state == "running"])
        try:
            if runstate.load_run(c, provider=provider, fleet=name).get("fleet") == name:
                run_tasks.stop(c, name=name, provider=provider)
        except (Exit, FleetbookError):
            pass  # no run yet (runs/state.py raises Exit), or a head instance the provider cannot reach
        try:
            mount_tasks.unmount(c, name=name, provider=provider)
        except Exit as exc:  # no running node, or a node that cannot unmount: the nodes go anyway
            console.print(f"unmount: {exc.message}")
    fleet_tasks.down(c, name=name, provider=provider, dry_run=dry_run, discard_results=discard_results)
