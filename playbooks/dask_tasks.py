"""Run workloads on Dask across the fleet: a scheduler on the head, workers on every node.

`invoke dask.up` starts them (detached; scheduler address and dashboard printed), `invoke run --workload W
--engine dask` sends chunks of items to them, `invoke dask.down` stops them all.
"""
from __future__ import annotations

from invoke import task

from playbooks.engines import dask as engine
from playbooks.fleet import fleet_name, nodes_or_exit, provider_of
from playbooks.settings import setting
from playbooks.settings.errors import user_errors


@task(help={
    "name": "fleet name (default: fleet.name)",
    "provider": "local, gcp or aws (default: fleet.provider)",
    "nworkers": "worker processes per node (default: dask.nworkers, 0 = the node's cores)",
    "port": "scheduler port on the head (default: dask.port)",
})
@user_errors()
def up(c, name="", provider="", nworkers=0, port=0):
    """Start a Dask scheduler on the head and Dask workers on every node."""
    name, nodes = nodes_or_exit(c, name, provider)
    engine.up(c, name, nodes, setting(c, "fleet.provider", provider), nworkers=nworkers, port=port)


@task(help={"name": "fleet name (default: fleet.name)", "provider": "local, gcp or aws (default: fleet.provider)"})
@user_errors()
def down(c, name="", provider=""):
    """Stop the Dask workers on every node and the scheduler on the head (a second call does nothing)."""
    name = fleet_name(c, name)
    nodes = [n for n in provider_of(c, provider).list_nodes(c, name) if n.state == "running"]
    engine.down(c, name, nodes)
