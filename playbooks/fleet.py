"""Create, list and remove a fleet of nodes (local sshd hosts, GCP or AWS spot machines).

A fleet is found by its label ``fleet=<name>`` at the provider, never by a local list.
"""
from __future__ import annotations

import json
import time

from invoke import task
from invoke.exceptions import Exit
from rich.console import Console
from rich.table import Table

from playbooks import providers
from playbooks.providers import FleetSpec, NodesNotReady, supports
from playbooks.providers.cloud import head_mode
from playbooks.runs import keep
from playbooks.settings import SettingError, setting
from playbooks.settings.errors import user_errors
from playbooks.settings.flags import long_only
from playbooks.ssh import sftp_head as local_head

console = Console()
err = Console(stderr=True)


def fleet_name(c, name: str) -> str:
    """``name`` (default: fleet.name), checked by the one fleet-name rule (``providers.check_name``)."""
    with user_errors():
        return providers.check_name(name or setting(c, "fleet.name"))


def provider_of(c, provider: str) -> providers.Provider:
    with user_errors():
        return providers.get(setting(c, "fleet.provider", provider))


def dry(c, dry_run: bool) -> bool:
    """``--dry-run`` on the task, or Invoke's global ``--dry``."""
    return bool(dry_run or c.config.run.dry)


def nodes_or_exit(c, name: str, provider: str = "", *, running: bool = True):
    """The fleet's nodes (only running ones by default), or a one-line error when there are none."""
    name = fleet_name(c, name)
    with user_errors():
        nodes = provider_of(c, provider).list_nodes(c, name)
    alive = [n for n in nodes if n.state == providers.RUNNING] if running else nodes
    if not alive:
        raise Exit(f"no running fleet named {name!r}: start one with `invoke fleet.create -n 3 --name {name}`")
    return name, alive


def uptime(started_at) -> str:
    if not started_at:
        return "-"
    s = int(time.time() - started_at)
    return f"{s // 3600}h{s % 3600 // 60:02d}m" if s >= 3600 else f"{s // 60}m{s % 60:02d}s"


def show(nodes, title: str) -> None:
    table = Table(title=title, title_justify="left")
    links = any(n.labels.get("link") for n in nodes)
    cloud = any(n.labels.get(providers.ZONE_KEY) for n in nodes)   # cloud nodes: where each runs, and its type
    for col in ("node", "address", "state", "uptime", "user", *(["zone", "type"] if cloud else ["isolation"]),
                *(["link"] if links else [])):
        table.add_column(col)
    for n in nodes:
        iso = n.labels.get("isolation", "-")
        where = [n.labels.get(providers.ZONE_KEY, "-"), n.labels.get(providers.TYPE_KEY, "-")] if cloud else \
            ["reduced (not root)" if iso == "none" else iso]
        table.add_row(n.name, f"{n.host}:{n.port}", n.state, uptime(n.started_at), n.user, *where,
                      *([n.labels.get("link", "-")] if links else []))
    console.print(table)


@task(help={
    "n": "how many nodes the fleet should have (creates only the missing ones); `--n 20` works too",
    "name": "fleet name (default: fleet.name); several fleets can coexist",
    "provider": "local, gcp or aws (default: fleet.provider)",
    "spot": "spot / preemptible machines (cloud only; --no-spot for on-demand)",
    "min": "cloud: fail unless at least this many can be had (default: n)",
    "ttl": "cloud: hours after which nodes delete themselves (default: fleet.ttl_hours)",
    "dry_run": "print what would be created and create nothing",
    "wait": "wait until every node answers SSH (--no-wait returns once the provider accepted them)",
    "head": "cloud: tunnel (this machine is the head) or instance (one on-demand head VM; default: <provider>.head)",
})
@user_errors
def create(c, n=0, name="", provider="", spot=True, min=0, ttl="", dry_run=False, wait=True, head=""):
    """Start a fleet of N nodes, or grow one to N (idempotent)."""
    if n < 1:
        raise Exit("say how many nodes: invoke fleet.create -n 3 (or --n 3)")
    try:
        ttl_hours = setting(c, "fleet.ttl_hours", ttl or None)
    except SettingError:
        raise Exit(f"--ttl {ttl!r} is not a number of hours: e.g. --ttl 2.5") from None
    name = fleet_name(c, name)
    prov = provider_of(c, provider)
    if head and not supports(prov, "head"):
        raise Exit(f"--head is for cloud fleets (gcp, aws): a {prov.name} fleet's head is this machine")
    spec = FleetSpec(name=name, count=n, provider=prov.name, spot=spot,
                     min_count=min or None, ttl_hours=ttl_hours,
                     dry_run=dry(c, dry_run), wait=wait, head=head)
    if not spec.dry_run and (not supports(prov, "head") or head_mode(c, spec.provider, head) == "tunnel"):
        local_head.servable(c)  # this machine serves the shared root: a root it cannot serve stops us here
    if supports(prov, "estimate"):
        console.print(prov.estimate(c, spec))
    before = [x for x in prov.list_nodes(c, name) if x.state != providers.TERMINATED]
    nodes = prov.create(c, spec)  # with spec.dry_run a provider prints the requests it would send, sends none
    if spec.dry_run:
        console.print(f"[dry run] fleet {name}: {len(before)} node(s) exist; would create {max(0, n - len(before))}")
        return
    if wait:
        try:
            nodes = prov.wait_ready(c, name, setting(c, "fleet.ready_timeout"))
        except NodesNotReady as exc:
            raise Exit(f"fleet {name}: {exc}; see `invoke fleet.list --name {name}`") from None
    show(nodes, f"fleet {name}: {max(0, len(nodes) - len(before))} created, {len(nodes)} in all")


long_only(create, "head")  # no automatic -h for --head: `invoke fleet.create -h` stays the task's help


@task(name="list", help={
    "name": "fleet name (default: fleet.name)",
    "provider": "local, gcp or aws (default: fleet.provider)",
    "all": "cloud: every instance with a fleet label in every configured zone/region, orphans included",
    "json": "print the nodes as JSON",
})
@user_errors
def list_(c, name="", provider="", all=False, json_=False):
    """Show the fleet's nodes as they are now (checked live): address, state, uptime (cloud: zone, type)."""
    prov = provider_of(c, provider)
    if all and supports(prov, "list_all"):
        nodes = prov.list_all(c)
        title = "every fleetbook instance"
    else:
        name = fleet_name(c, name)
        nodes = prov.list_nodes(c, name)
        title = f"fleet {name}"
    if json_:
        print(json.dumps([{"name": x.name, "host": x.host, "port": x.port, "state": x.state, "user": x.user,
                           "uptime_s": round(time.time() - x.started_at) if x.started_at else None,
                           "zone": x.labels.get(providers.ZONE_KEY),
                           "machine_type": x.labels.get(providers.TYPE_KEY),
                           "labels": x.labels} for x in nodes], indent=1))
    elif not nodes:
        console.print(f"{title}: no nodes")
    else:
        show(nodes, title)


@task(help={
    "name": "fleet name (default: fleet.name)",
    "provider": "local, gcp or aws (default: fleet.provider)",
    "dry_run": "print what would be deleted (nodes, and the data on a head instance) and delete nothing",
    "discard_results": "delete a head instance even though its outputs were not pulled since their run ended",
})
@user_errors
def down(c, name="", provider="", dry_run=False, discard_results=False):
    """Stop and delete every node of the fleet (a head instance only once its outputs are pulled)."""
    name = fleet_name(c, name)
    prov = provider_of(c, provider)
    pname = prov.name
    verdict = keep.check(c, prov, name)      # None: no head instance, the shared root is on this machine
    hold = verdict is not None and not verdict.safe and not discard_results
    kw = {"keep_head": hold} if verdict is not None else {}   # the local provider knows no head instance
    if dry(c, dry_run):
        nodes = prov.list_nodes(c, name)
        prov.terminate(c, name, dry_run=True, **kw)  # prints the requests it would send
        console.print(f"[dry run] fleet {name}: would delete {len(nodes)} node(s): "
                      + (", ".join(x.name for x in nodes) or "none"), markup=False)
        if verdict is not None:
            console.print(f"[dry run] {keep.plan_line(verdict, hold, keep.monthly_cost(c, pname))}", markup=False)
        return
    removed = prov.terminate(c, name, **kw)
    console.print(f"fleet {name}: {removed} node(s) removed" if removed else f"fleet {name}: nothing to remove")
    if hold:
        raise Exit(f"fleet {name}: kept the head instance {verdict.head} ({keep.monthly_cost(c, pname)}): "
                   f"{keep.describe(verdict)}; {keep.advice(verdict, name, pname)}")


@task(help={"node": "the node to preempt", "grace": "seconds between the notice and the kill (GCP gives 30)",
            "name": "fleet name (default: fleet.name)", "provider": "local only (a cloud preempts by itself)"})
def preempt(c, node, grace=30, name="", provider=""):
    """Preempt one local node like a cloud: a notice its workload sees, then the node killed after --grace s."""
    from playbooks.providers import preempt as local_preempt   # issue 13
    name = fleet_name(c, name)
    if provider_of(c, provider).__name__.rsplit(".", 1)[-1] != "local":
        raise Exit("fleet.preempt is for the local provider: a cloud sends its own notices")
    try:
        local_preempt.preempt(c, name, node, float(grace))
    except KeyError:
        raise Exit(f"no node {node!r} in fleet {name}: see `invoke fleet.list --name {name}`") from None
    console.print(f"node {node}: notice raised, killed after {float(grace):g} s")
