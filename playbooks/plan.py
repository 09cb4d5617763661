"""Plan the fleet from measured figures: how many nodes of which type, how long, what it costs, what saturates.

``invoke plan --workload W [--items N | --src S] [--provider P --machine-type T] [--deadline 1h | --budget 5]``
reads the per-item time of W on that machine type (``invoke bench --node``'s profile; else this machine's
``invoke bench`` profile, marked as a guess), its cores and parallel efficiency, the shared disk's per-item
cost on node and head (from the profile when measured, else DESIGN.md's figures, marked), the node start-up
time (``plan.boot_s``), the links (``plan.*``) and the spot/on-demand price tables of the provider, and prints
fleet sizes (``plan.sizes``) with wall time, cost and bottleneck, and the one it recommends.  The model is
``planning``'s; ``--json`` prints it as data.  ``--engine batch`` plans AWS Batch shards instead.
"""
from __future__ import annotations

import json
import re

from invoke import task
from invoke.exceptions import Exit
from rich.console import Console
from rich.table import Table

from playbooks.engines.launch import workload_opts
from playbooks.engines.plan import WARN_SHARE, job_line
from playbooks.measure import disk_cost, planning
from playbooks.measure import profiles
from playbooks.providers import PROVIDERS
from playbooks.runs import state as runstate
from playbooks.settings import setting
from playbooks.settings.defaults import profile_path, shared_root
from playbooks.settings.errors import user_errors

console = Console()
RUN_S_MEANS = ("`invoke run --wait` on a fleet that is up, from its first SSH round to the poll that sees the "
               "last node end; not the start of the `invoke` command itself (its Python and imports, before it "
               "connects); with more than one node it counts one claim recheck at the end, which a run skips "
               "when its nodes happen to finish their own shards together")
BOOT_S = {"local": 1.0, "gcp": 60.0, "aws": 90.0}     # plan.boot_s = -1: seconds until a new node answers SSH
SSH_S = {"local": 0.15, "gcp": 0.5, "aws": 0.5}      # plan.ssh_s = -1 (local: run.start's two rounds took 0.27-0.42 s)


def duration(text: str) -> float | None:
    """``90``, ``90s``, ``30m``, ``1h``, ``1h30m`` -> seconds; "" -> None."""
    if not text:
        return None
    m = re.fullmatch(r"\s*(?:(\d+(?:\.\d+)?)h)?\s*(?:(\d+(?:\.\d+)?)m)?\s*(?:(\d+(?:\.\d+)?)s?)?\s*", str(text))
    if not m or not any(m.groups()):
        raise Exit(f"--deadline {text!r}: write it like 90s, 30m, 1h or 1h30m")
    h, mnt, s = (float(g) if g else 0.0 for g in m.groups())
    return h * 3600 + mnt * 60 + s


def ints(text: str, what: str) -> list[int]:
    try:
        values = [int(v) for v in str(text).split(",") if v.strip()]
    except ValueError:
        values = []
    if not values or min(values) < 1:
        raise Exit(f"{what} {text!r}: give whole numbers >= 1, comma-separated, e.g. 1,5,10")
    return values


def count_items(c, workload: str, src: str, args: str) -> tuple[int, float | None]:
    """Items of ``workload`` in ``src`` (relative to shared.root, on this machine) and their mean size in bytes."""
    root = shared_root(c)
    wl, opts, _ = workload_opts(workload, str(root / src), str(root / (src + "-plan")), args)
    if getattr(wl, "needs_src", True) and not (root / src).is_dir():
        raise Exit(f"source folder {src} does not exist in the shared root {root}: pass --src, or --items N")
    items = wl.list_items(str(root / src) if getattr(wl, "needs_src", True) else None, opts)
    if not getattr(wl, "needs_src", True) or not items:
        return len(items), None
    fw = runstate.fleetwork()
    sample = sorted(items, key=fw.item_hash)[:200]
    sizes = [(root / src / i).stat().st_size for i in sample if (root / src / i).is_file()]
    return len(items), (sum(sizes) / len(sizes) if sizes else None)


def _this_machine(c) -> tuple[int, float | None, str]:
    """This machine's cores and the parallel efficiency its own profile (``invoke bench``) measured."""
    eff = (profiles.load(profile_path(c)) or {}).get("parallel_efficiency")
    return (runstate.fleetwork().machine_cores(), eff,
            "measured by `invoke bench`" if eff else "unknown: 1.0 assumed (run `invoke bench`)")


def build_model(c, workload: str, items: int, in_bytes: float | None, provider: str, mtype: str,
                head: str) -> tuple[planning.Model, dict]:
    """The planner's inputs from profiles, settings and price tables, with where each one comes from."""
    profile, source = profiles.measured(c, provider, mtype)
    item_s, _ = profiles.item_seconds(c, provider, mtype, workload)
    if item_s is None:
        raise Exit(f"no measured time per item of {workload} for {provider} {mtype}: run `invoke bench --node "
                   f"NODE` on a {mtype} node (or `invoke bench` here for a guess)")
    p = profile or {}
    sources = {"item_s": source}
    if provider == "local":
        cores = setting(c, "local.cores_per_node")
        sources["cores"] = "local.cores_per_node"
    elif p.get("measured_on") == "node" and isinstance(p.get("cores"), int):
        cores, sources["cores"] = p["cores"], "measured on the node"
    else:
        cores = profiles.type_cores(mtype)
        if cores is None:
            raise Exit(f"how many cores has a {mtype}? its name does not say: measure one with `invoke bench --node`")
        sources["cores"] = f"from the name {mtype}"
    eff = p.get("parallel_efficiency") if p.get("measured_on") == "node" else None
    sources["efficiency"] = "measured on the node" if eff else "unknown: 1.0 assumed"
    disk = disk_cost.entry(p, workload)
    node_disk = disk.get("node_cpu_s_per_item")
    head_disk = disk.get("head_cpu_s_per_item")
    sources["shared_disk"] = (
        f"measured by bench --node through the node's mount (node {node_disk * 1e3:.2f} ms, head "
        + (f"{head_disk * 1e3:.2f} ms" if head_disk else "not measured: the default")
        + " per item)" if node_disk else planning.DEFAULT_DISK_SOURCE)
    wall = disk.get("item_wall_s")
    if wall:            # one worker through the mount: the work and every wait on the shared disk
        io_s = max(0.0, float(wall) - item_s)
        sources["io_wait"] = (f"{io_s * 1e3:.2f} ms per item waiting on the shared disk (one worker through the "
                              f"node's mount: {float(wall) * 1e3:.2f} ms wall, measured)")
    else:
        io_s = p.get("sample_read_s_per_item") if p.get("measured_on") == "node" else None
        sources["io_wait"] = (f"{io_s * 1e3:.2f} ms to read one input through the node's mount (measured; writes "
                              "not)" if io_s else "not measured (bench --node reads its sample through the mount)")
    item_info = (p.get("items") or {}).get(workload) or {}
    in_b = in_bytes if in_bytes is not None else float(item_info.get("in_bytes") or 0.0)
    out_b = float(item_info.get("out_bytes") or 0.0)
    sources["bytes"] = (f"inputs {in_b / 1e3:.1f} kB ("
                        + ("mean of up to 200 of them" if in_bytes is not None else "the profile's sample")
                        + f"), outputs {out_b / 1e3:.1f} kB (" + ("the profile's sample)" if out_b else "unknown)"))
    here_cores, here_eff, here_src = _this_machine(c)
    links, machine_cores, machine_eff, uses_here = [], None, 1.0, False
    run_cpu, start_cpu, help_cpu = None, 0.0, None
    if provider == "local":
        node_machine_eff = p.get("machine_efficiency") if p.get("measured_on") == "node" else None
        head_cores, machine_cores = here_cores, here_cores
        machine_eff = node_machine_eff or here_eff or 1.0
        uses_here = not node_machine_eff and bool(here_eff)
        sources["machine"] = (f"{here_cores} cores shared by the nodes and the head; efficiency "
                              + ("measured by `invoke bench --node`" if node_machine_eff else here_src))
        run_cpu, start_cpu = local_cpu(disk)
        help_cpu = disk.get("help_cpu_s_per_item")
        help_cpu = float(help_cpu) if isinstance(help_cpu, (int, float)) else None
        sources["machine_cpu"] = (
            (f"per item the runner's {run_cpu * 1e3:.2f} ms through the mount" if run_cpu is not None else
             f"per item the work's {item_s * 1e3:.2f} ms (the runner's CPU through the mount not measured)")
            + " + the node's sshfs + the head's sshd"
            + (f" + {help_cpu * 1e3:.2f} ms for each node beyond the first (helping)" if help_cpu is not None
               else " (what helping costs: not measured)")
            + "; " + (f"{start_cpu:.2f} s of CPU to start each node's runner" if start_cpu
                      else "each node's start: not measured (0 s)")
            + (" (measured by bench --node's probe)" if start_cpu or help_cpu is not None else ""))
    elif head == "instance":
        hmt = head_type(c, provider)
        head_cores = profiles.type_cores(hmt) or 2
        gbps = setting(c, "plan.head_link_gbps")
        links = [planning.Link(planning.HEAD_LINK, gbps * 1e9 / 8, in_b + out_b)]
        sources["head"] = f"head instance {hmt}, {head_cores} cores, a {gbps:g} Gbit/s link (plan.head_link_gbps)"
    else:
        head_cores = here_cores
        up, down = setting(c, "plan.uplink_mbps"), setting(c, "plan.downlink_mbps")
        links = [planning.Link(planning.UPLINK, up * 1e6 / 8, in_b),
                 planning.Link(planning.DOWNLINK, down * 1e6 / 8, out_b)]
        sources["head"] = (f"this machine, through tunnels: {up:g} Mbit/s up, "
                           f"{down:g} Mbit/s down (plan.uplink_mbps, plan.downlink_mbps)")
    node_price, head_price = prices(c, provider, mtype, head)
    sources["price"] = ("fleet.price_per_hour" if provider == "local" else f"{provider} price table / settings, spot") \
        if node_price is not None else "unknown"
    method = p.get("start_method")
    boot_s, ssh_s = setting(c, "plan.boot_s"), setting(c, "plan.ssh_s")
    boot = boot_s if boot_s >= 0 else BOOT_S[provider]
    sources["boot_s"] = f"{boot:g} s, plan.boot_s (a setting, not measured)"
    model = planning.Model(
        items=items, item_s=item_s, cores=cores, efficiency=float(eff or 1.0),
        node_disk_s=float(node_disk or planning.DEFAULT_NODE_DISK_S),
        head_disk_s=float(head_disk or planning.DEFAULT_HEAD_DISK_S), head_cores=float(head_cores),
        io_s=float(io_s or 0.0), disk_on_node_cores=provider != "local",
        links=tuple(links), machine_cores=machine_cores, machine_efficiency=float(machine_eff),
        run_cpu_s=run_cpu, start_cpu_s=float(start_cpu or 0.0), help_cpu_s=float(help_cpu or 0.0), boot_s=boot,
        ssh_s=ssh_s if ssh_s >= 0 else SSH_S[provider],
        max_parallel=setting(c, "fleet.max_parallel"),
        run_start_s=float((p.get("run_start_s") or {}).get(workload) or 0.3),
        pool_start_s=float((p.get("pool_start_s") or {}).get(method) or 0.0) if cores > 1 else 0.0,
        poll_s=setting(c, "job.poll"), node_price_h=node_price, head_price_h=head_price,
        notes=tuple(busy_notes({"the per-item time": profile,
                                "this machine's profile": profiles.load(profile_path(c)) if uses_here else None})))
    return model, sources


def local_cpu(disk: dict) -> tuple[float | None, float | None]:
    """From the probe's entry: the runner's CPU per item through the mount (without its start) and its start's
    CPU; (None, None) when the probe did not measure them (older profiles: ``work_cpu_s_per_item`` counts the
    start in, it is not taken)."""
    run, start = disk.get("run_cpu_s_per_item"), disk.get("start_cpu_s")
    if not isinstance(start, (int, float)) or not isinstance(run, (int, float)):
        return None, None
    return float(run), float(start)


def busy_notes(named: dict[str, dict | None]) -> list[str]:
    """A note for each profile measured while other work competed (1-minute load above the CPUs it has)."""
    notes = []
    for what, p in named.items():
        load, cpus = (p or {}).get("load_average_1m"), (p or {}).get("cpus") or (p or {}).get("cores")
        if isinstance(load, (int, float)) and cpus and load > cpus:
            notes.append(f"{what} was measured while the machine was busy (load {load:g} on {cpus} CPU(s)): "
                         "its times are high and its efficiency low; measure again when it is quiet")
    return notes


def prices(c, provider: str, mtype: str, head: str) -> tuple[float | None, float | None]:
    """(spot price of a node, on-demand price of the head instance or None) per hour, from the price tables."""
    from playbooks.providers import cloud as cc
    if provider == "local":
        return cc.price_per_hour(c, "local", True), None
    node = cc.price_per_hour(c, provider, True, mtype)
    if head != "instance":
        return node, None
    return node, cc.price_per_hour(c, provider, False, head_type(c, provider))


def head_type(c, provider: str) -> str:
    """The machine type of a head instance (gcp.head_machine_type / aws.head_instance_type)."""
    return setting(c, "gcp.head_machine_type" if provider == "gcp" else f"{provider}.head_instance_type")


def batch_plan(c, workload: str, items: int, item_s: float) -> dict:
    """AWS Batch shard counts: jobs, items per job, overhead share, wall, cost; the recommended count."""
    start_s, threads = setting(c, "batch.job_start_s"), setting(c, "batch.threads")
    counts = ints(setting(c, "plan.shards"), "plan.shards") + [setting(c, "batch.shards")]
    from playbooks.providers import cloud as cc
    price = cc.price_per_hour(c, "aws", True)           # the spot price of aws.instance_type, per vCPU below
    type_vcpus = profiles.type_cores(setting(c, "aws.instance_type"))
    vcpu_price = price / type_vcpus if price is not None and type_vcpus else None
    rows = planning.batch_options(items, counts, job_start_s=start_s, vcpus=setting(c, "batch.vcpus"),
                                  max_vcpus=setting(c, "batch.max_vcpus"), vcpu_price_h=vcpu_price,
                                  share_of=lambda n, shards: job_line(n, shards, start_s, item_s, threads)[1])
    for r in rows:
        share = r["overhead_share"] or 0.0
        r["nodes"] = min(r["shards"], r["jobs_at_once"])
        r["bottleneck"] = ("job start" if share > 0.5 else
                           "job concurrency (batch.max_vcpus)" if r["shards"] > r["jobs_at_once"] else "item work")
        r["warning"] = share > WARN_SHARE
    ok = [r for r in rows if not r["warning"]]
    best = (min(ok, key=lambda r: (r["wall_s"], r["shards"])) if ok
            else min(rows, key=lambda r: r["overhead_share"] or 0))
    why = ("the fastest whose job start is at most 10 % of the work" if ok
           else "every count spends more than 10 % on job start: the lowest share")
    return {"options": rows, "recommended": {**best, "why": why}}


@task(help={
    "workload": "which workload: resize, edges, features, gridsearch (default: job.workload)",
    "items": "how many items (instead of counting --src)",
    "src": "count the items in this folder of shared.root (default: job.src)",
    "args": "workload arguments that change the items, one quoted string, e.g. --args '--grid full'",
    "provider": "local, gcp or aws (default: fleet.provider)",
    "machine_type": "the nodes' machine type (default: gcp.machine_type / aws.instance_type; local: <N>cpu)",
    "deadline": "recommend the cheapest size done within this, e.g. 90s, 30m, 1h",
    "budget": "recommend the fastest size that costs at most this many USD, e.g. 5",
    "sizes": "fleet sizes to compare, comma-separated (default: plan.sizes)",
    "engine": "local (a fleet, the default) or batch (AWS Batch: shards and jobs)",
    "json": "print only JSON: options, recommended, inputs, notes",
})
@user_errors()
def plan(c, workload="", items=0, src="", args="", provider="", machine_type="", deadline="", budget="",
         sizes="", engine="local", json_=False):
    """Fleet sizes with wall time, cost and bottleneck, from measured per-item times; recommend one."""
    workload = setting(c, "job.workload", workload)
    provider = setting(c, "fleet.provider", provider)
    if provider not in PROVIDERS:
        raise Exit(f"unknown provider {provider!r}: choose one of {', '.join(PROVIDERS)}")
    if engine not in ("local", "batch"):
        raise Exit(f"unknown engine {engine!r}: use --engine local or --engine batch")
    if engine == "batch" and provider != "aws":
        provider = "aws"
    if deadline and budget:
        raise Exit("give --deadline or --budget, not both")
    try:
        budget_usd = float(budget) if budget not in ("", None) else None
    except ValueError:
        raise Exit(f"--budget {budget!r}: give USD as a number, e.g. --budget 5") from None
    if (budget_usd is not None and budget_usd < 0) or int(items) < 0:
        raise Exit("--budget and --items must not be negative")
    deadline_s = duration(deadline)
    fleet_sizes = ints(setting(c, "plan.sizes", sizes), "--sizes")
    if items and src:
        raise Exit("give --items N or --src S, not both")
    in_bytes = None
    if items:
        n = int(items)
        if workload not in runstate.fleetwork().available():
            raise Exit(f"unknown workload {workload!r}: choose one of {', '.join(runstate.fleetwork().available())}")
    else:
        n, in_bytes = count_items(c, workload, setting(c, "job.src", src), args)
    mtype = machine_type or profiles.configured_type(c, provider)
    head = "local" if provider == "local" else setting(c, f"{provider}.head")
    model, sources = build_model(c, workload, n, in_bytes, provider, mtype, head)
    result = planning.plan(model, fleet_sizes, deadline_s, budget_usd)
    result.update(workload=workload, items=n, provider=provider, machine_type=mtype, head=head, inputs=sources,
                  run_s_means=RUN_S_MEANS)
    if engine == "batch":
        result["engine"] = "batch"
        result["fleet"] = {"options": result.pop("options"), "recommended": result.pop("recommended")}
        result.update(batch_plan(c, workload, n, model.item_s))
    if json_:
        print(json.dumps(result, indent=1))
        return result
    show(result)
    return result


def _t(s: float) -> str:
    return f"{s:.1f} s" if s < 120 else f"{s / 60:.1f} min" if s < 7200 else f"{s / 3600:.1f} h"


def show(r: dict) -> None:
    m = r["model"]
    console.print(f"plan: {r['items']:,} items of {r['workload']} on {r['provider']} {r['machine_type']} "
                  f"({m['cores']} cores, efficiency {m['efficiency']:.2f}), head: {r['head']}",
                  markup=False, highlight=False)
    for key in ("item_s", "cores", "efficiency", "shared_disk", "io_wait", "bytes", "machine", "machine_cpu",
                "head", "price", "boot_s"):
        if key in r["inputs"]:
            label = {"item_s": f"per item {m['item_s'] * 1e3:.2f} ms"}.get(key, key)
            console.print(f"  {label}: {r['inputs'][key]}", markup=False, highlight=False, soft_wrap=True)
    batch = r.get("engine") == "batch"
    table = Table(title="AWS Batch, one job per shard" if batch else "fleet sizes", title_justify="left")
    cols = (["shards", "jobs", "items/job", "overhead", "wall", "cost", "limit"] if batch
            else ["nodes", "wall", "of which run", "cost", "items/s", "saturates first"])
    for col in cols:
        table.add_column(col, justify="left" if col in ("limit", "saturates first") else "right")
    best, key = r["recommended"], "shards" if batch else "nodes"
    for o in r["options"]:
        cost = "-" if o["cost_usd"] is None else f"${o['cost_usd']:.2f}"
        mark = " *" if o[key] == best[key] else ""
        if batch:
            table.add_row(f"{o['shards']:,}{mark}", f"{o['jobs']:,}", f"{o['items_per_job']:,}",
                          "?" if o["overhead_share"] is None else f"{o['overhead_share']:.1%}", _t(o["wall_s"]), cost,
                          o["bottleneck"])
        else:
            table.add_row(f"{o['nodes']}{mark}", _t(o["wall_s"]), _t(o["run_s"]), cost, f"{o['items_per_s']:,.1f}",
                          o["bottleneck"])
    console.print(table)
    if not batch:
        console.print(f"run: {r.get('run_s_means', RUN_S_MEANS)}", markup=False, highlight=False, soft_wrap=True)
    what = f"{best['shards']:,} shards" if batch else f"{best['nodes']} node(s)"
    console.print(f"recommended: {what}, {_t(best['wall_s'])}"
                  + ("" if best["cost_usd"] is None else f", ${best['cost_usd']:.2f}") + f" ({best['why']})",
                  markup=False, highlight=False)
    for note in r.get("notes") or []:
        console.print(f"note: {note}", style="yellow", markup=False, highlight=False)
    if best.get("lever"):
        console.print(f"saturates first: {best['bottleneck']}: {best['lever']}", markup=False, highlight=False)
    if batch and best.get("warning"):
        console.print("warning: job start is more than 10 % of the work at every shard count", style="yellow")
