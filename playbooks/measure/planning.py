"""How many machines, which type, what it costs: the fleet plan, as pure functions of measured figures.

The model (every figure per item is CPU seconds unless it says bytes):

* a node does ``cores * parallel_efficiency / (item_s + node_disk_s)`` items/s: the workload's measured time
  per item on that machine type (one process), plus what reading and writing through sshfs costs the node's
  CPUs (a local node's sshfs runs beside the cores it counts: there only the machine cap below has it);
* each worker also waits for its input to arrive through the mount: at most
  ``cores * parallel_efficiency / (item_s + io_s)`` items/s per node, ``io_s`` the measured wall time of one read
  (writes are not measured: the figure is a floor);
* the head serves the shared disk: ``head_cores / head_disk_s`` items/s at most (its sshd/sftp-server per item);
* each link carries its share of the bytes: the head's link (a head instance) both ways, or the operator's
  uplink (inputs) and downlink (outputs) when the head is the operator's machine behind a tunnel;
* a local fleet runs nodes and head on one machine, which pays for every process of the run: each node's
  runner (``run_cpu_s``: its CPU per item through the mount, i.e. the work plus its system calls through FUSE,
  its claims and renames, measured by ``bench --node``'s probe; else ``item_s``), its sshfs and ssh
  (``node_disk_s``) and the head's sshd (``head_disk_s``), and for each node beyond the first what helping
  costs (``help_cpu_s``: a node done with its own shard goes over the others', claiming their blocks and
  checking each output; the probe's two-shard run less its one-runner run): at most ``machine_cores *
  machine_efficiency / machine_item_s`` items/s, ``machine_item_s`` the sum, ``(nodes - 1) * help_cpu_s``
  included.  Each node's runner also pays its start once
  (``start_cpu_s``: interpreter, imports, listing, exit; the probe's run with nothing to do) on the same
  cores: ``nodes`` starts take ``max(run_start_s, nodes * start_cpu_s / (machine_cores *
  machine_efficiency))``, so more local nodes than cores start slower, and the machine-bound phase is that
  start plus ``items * machine_item_s / (machine_cores * machine_efficiency)``;
* the fleet's rate is the smallest of these; the one that binds is the bottleneck (the machine, when its phase
  is longer than the start plus the items at the smallest other rate).

Not counted: what helping costs a cloud node's cores and the head (only a local fleet's machine has it), the
``invoke`` command's own start (its interpreter and imports, before ``run.start``), this
machine's poller and fan-out (a few per cent of one core), and the kernel's threads (the FUSE and loopback
work they do outside the processes above).

Wall time = boot (create, wait, mount, deploy: ``boot_s`` plus three SSH fan-out rounds) + the run (two fan-out
rounds to check and start, the workload's start on a node, its pool start, the items at the fleet's rate (a
local fleet: or the machine-bound phase above, whichever is longer), one item per worker at the end, with
more than one node one claim recheck, half a progress poll).  ``run_s`` alone is what ``invoke run --wait`` takes on a
fleet that is up.  Cost = node-hours at the node price (at least ``min_billed_s`` per node) + the head instance.

AWS Batch (``batch_options``): one job per shard; each job pays ``job_start_s`` before its items; the jobs run
``max_vcpus / vcpus`` at a time.  The overhead share is ``batch.plan_line``'s, which also drives the warning.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

# DESIGN.md section 4, "resize over the fleet's sshfs (2 nodes, 1 worker each, 480 JPEGs)": CPU per item of the
# shared disk, measured once on a 2-core machine; used until the profile holds a measured figure.
DEFAULT_NODE_DISK_S = 1.8e-3
DEFAULT_HEAD_DISK_S = 1.3e-3
DEFAULT_DISK_SOURCE = ("default: DESIGN.md section 4 figures (node sshfs+ssh 1.8 ms, head sshd/sftp 1.3 ms per "
                       "item, resize on a 2-core machine), not measured on this fleet")
CLAIM_RECHECK_S = 1.0  # workloads/fw_runner.py CLAIM_RECHECK (tests/test_planning.py keeps them equal)
WITHIN = 1.10          # no deadline or budget: the smallest fleet within 10 % of the fastest option
NODE_CPU, NODE_WAIT, HEAD_CPU, MACHINE_CPU = "node CPU", "node I/O wait", "head CPU", "machine CPU (local)"
HEAD_LINK, UPLINK, DOWNLINK = "head link", "operator uplink", "operator downlink"
LEVERS = {
    NODE_CPU: "more nodes, or a machine type with more cores",
    NODE_WAIT: "the workers wait on the shared disk: more workers than cores (--args '--workers N') or "
               "--args '--threads N' overlap the waits; or more nodes",
    HEAD_CPU: "a head with more cores (a bigger head instance), or fewer, larger items",
    MACHINE_CPU: "a local fleet shares this machine's cores: more local nodes cannot go faster",
    HEAD_LINK: "a head instance with a faster link, or smaller inputs",
    UPLINK: "every input goes up the operator's uplink: a head instance (gcp.head / aws.head = instance) puts "
            "the data next to the nodes",
    DOWNLINK: "every output comes down the operator's downlink: a head instance keeps them in the cloud",
}


@dataclass(frozen=True)
class Link:
    name: str            # what the output calls it: HEAD_LINK, UPLINK or DOWNLINK
    bytes_per_s: float
    bytes_per_item: float


@dataclass(frozen=True)
class Model:
    items: int
    item_s: float                     # seconds of work per item, one process, on the node's machine type
    cores: int = 1                    # workers per node
    efficiency: float = 1.0           # parallel efficiency of `cores` workers on one node
    node_disk_s: float = DEFAULT_NODE_DISK_S
    head_disk_s: float = DEFAULT_HEAD_DISK_S
    io_s: float = 0.0                 # a worker's wait per item for its input through the mount (wall)
    disk_on_node_cores: bool = True   # the node's sshfs runs on the cores it counts (False: a local node)
    head_cores: float = 2.0
    links: tuple[Link, ...] = ()
    machine_cores: float | None = None    # local fleet: nodes and head share this machine's CPUs
    machine_efficiency: float = 1.0
    run_cpu_s: float | None = None    # local fleet: a runner's CPU per item through the mount (None: item_s)
    start_cpu_s: float = 0.0          # local fleet: a runner's CPU to start (on the machine the nodes share)
    help_cpu_s: float = 0.0           # local fleet: CPU per item of the run that each node beyond the first adds
    boot_s: float = 0.0               # until the nodes answer SSH (create + boot)
    ssh_s: float = 0.3                # one fan-out round (connect + a short command), per max_parallel nodes
    max_parallel: int = 16
    run_start_s: float = 0.3          # a workload run's start on a node (interpreter, imports, listing, scan)
    pool_start_s: float = 0.0         # its process pool's start
    poll_s: float = 1.0               # `run --wait` refreshes this often
    claim_recheck_s: float = CLAIM_RECHECK_S
    node_price_h: float | None = None
    head_price_h: float | None = None  # a head instance (on-demand); None: none or unknown
    min_billed_s: float = 60.0
    notes: tuple[str, ...] = field(default_factory=tuple)


def caps(m: Model, nodes: int) -> dict[str, float]:
    """Items/s each part of the system allows with ``nodes`` nodes."""
    work = nodes * m.cores * m.efficiency
    out = {NODE_CPU: work / max(1e-12, m.item_s + (m.node_disk_s if m.disk_on_node_cores else 0.0))}
    if m.io_s > 0:
        out[NODE_WAIT] = work / max(1e-12, m.item_s + m.io_s)
    if m.head_disk_s > 0:
        out[HEAD_CPU] = m.head_cores / m.head_disk_s
    for link in m.links:
        if link.bytes_per_item > 0 and link.bytes_per_s > 0:
            out[link.name] = link.bytes_per_s / link.bytes_per_item
    if m.machine_cores:
        out[MACHINE_CPU] = machine_capacity(m) / max(1e-12, machine_item_s(m, nodes))
    return out


def machine_capacity(m: Model) -> float:
    """CPU seconds per second a local fleet's machine gives all its processes."""
    return (m.machine_cores or 0.0) * m.machine_efficiency


def machine_item_s(m: Model, nodes: int = 1) -> float:
    """CPU seconds one item costs a local fleet's machine: the runner's, the node's sshfs+ssh, the head's, and
    with ``nodes`` nodes ``nodes - 1`` times what helping costs."""
    run = m.run_cpu_s if m.run_cpu_s is not None else m.item_s
    return run + m.node_disk_s + m.head_disk_s + max(0, nodes - 1) * m.help_cpu_s


def start_s(m: Model, nodes: int) -> float:
    """Until the nodes' runners have started: ``run_start_s``; on a local fleet at least the CPU of all their
    starts on the machine's cores (more nodes than cores start one after the other)."""
    if not m.machine_cores:
        return m.run_start_s
    return max(m.run_start_s, nodes * m.start_cpu_s / max(1e-12, machine_capacity(m)))


def rounds(m: Model, nodes: int) -> int:
    return math.ceil(nodes / max(1, m.max_parallel))


def option(m: Model, nodes: int) -> dict:
    """One fleet size: wall time (boot + run), cost, items/s and what saturates first."""
    allowed = caps(m, nodes)
    others = {k: v for k, v in allowed.items() if k != MACHINE_CPU}
    bottleneck = min(others, key=others.get)
    rate = others[bottleneck]
    phase = m.run_start_s + (m.items / rate if m.items else 0.0)     # start, then the items
    if MACHINE_CPU in allowed:
        machine = start_s(m, nodes) + (m.items / allowed[MACHINE_CPU] if m.items else 0.0)
        if machine > phase:
            bottleneck, rate, phase = MACHINE_CPU, allowed[MACHINE_CPU], machine
    per_worker_tail = m.item_s + max(m.node_disk_s, m.io_s) if m.items else 0.0
    # with helpers, a node that runs out of items while others still hold claims on theirs looks again one
    # claim recheck later (workloads/fw_runner.py CLAIM_RECHECK): the run ends up to that much after its last item.
    # Counted whole: a run skips it only when its nodes finish their own shards within about one claim block of
    # each other (no helper meets a held block), which depends on timing; ``claim_recheck_s`` says how much of
    # ``run_s`` it is.
    recheck = m.claim_recheck_s if nodes > 1 and m.items else 0.0
    per_worker_tail += recheck
    run_s = 2 * rounds(m, nodes) * m.ssh_s + phase + m.pool_start_s + per_worker_tail + m.poll_s / 2
    boot_s = m.boot_s + 3 * rounds(m, nodes) * m.ssh_s
    wall = boot_s + run_s
    cost = None
    if m.node_price_h is not None:
        cost = nodes * m.node_price_h * max(wall, m.min_billed_s) / 3600
        if m.head_price_h:
            cost += m.head_price_h * max(wall, m.min_billed_s) / 3600
        cost = round(cost, 4)
    return {"nodes": nodes, "wall_s": round(wall, 2), "run_s": round(run_s, 2), "boot_s": round(boot_s, 2),
            "claim_recheck_s": round(recheck, 2),
            "cost_usd": cost, "items_per_s": round(rate, 2), "bottleneck": bottleneck,
            "node_cpu_share": round(rate / allowed[NODE_CPU], 3), "lever": LEVERS.get(bottleneck, "")}


def recommend(options: list[dict], deadline_s: float | None = None,
              budget_usd: float | None = None) -> tuple[dict, str]:
    """The option to take, and why.  Deadline: the cheapest that meets it.  Budget: the fastest within it.
    Neither: the smallest fleet within 10 % of the fastest option's wall time."""
    if not options:
        raise ValueError("no options to choose from")

    def cost(o):
        return o["cost_usd"] if o["cost_usd"] is not None else 0.0

    fastest = min(options, key=lambda o: (o["wall_s"], o["nodes"]))
    if deadline_s is not None:
        ok = [o for o in options if o["wall_s"] <= deadline_s]
        if not ok:
            return fastest, f"no size meets the deadline of {deadline_s:g} s: the fastest"
        best = min(ok, key=lambda o: (cost(o), o["wall_s"], o["nodes"]))
        return best, f"the cheapest that meets the deadline of {deadline_s:g} s"
    if budget_usd is not None:
        priced = [o for o in options if o["cost_usd"] is not None]
        if not priced:
            return fastest, "no price known: the fastest (set the provider's price to plan a budget)"
        ok = [o for o in priced if o["cost_usd"] <= budget_usd]
        if not ok:
            cheapest = min(priced, key=lambda o: (o["cost_usd"], o["wall_s"]))
            return cheapest, f"no size fits the budget of ${budget_usd:g}: the cheapest"
        return min(ok, key=lambda o: (o["wall_s"], o["nodes"])), f"the fastest within the budget of ${budget_usd:g}"
    within = [o for o in options if o["wall_s"] <= fastest["wall_s"] * WITHIN]
    best = min(within, key=lambda o: o["nodes"])
    return best, "the smallest fleet within 10 % of the fastest wall time"


def plan(m: Model, sizes: list[int], deadline_s: float | None = None, budget_usd: float | None = None) -> dict:
    options = [option(m, n) for n in sorted(set(sizes))]
    best, why = recommend(options, deadline_s, budget_usd)
    return {"options": options, "recommended": {**best, "why": why},
            "model": {k: v for k, v in asdict(m).items() if k != "notes"}, "notes": list(m.notes)}


def batch_options(items: int, shard_counts: list[int], *, job_start_s: float, vcpus: int, max_vcpus: int,
                  vcpu_price_h: float | None, share_of) -> list[dict]:
    """AWS Batch, one job per shard: jobs, items per job, overhead share, wall time and cost of each shard count.
    ``share_of(items, shards)`` is the engine's own overhead share (``batch.plan_line``, which also decides the
    warning); a job then lasts ``job_start_s / share`` (its start plus its items), and the jobs run
    ``max_vcpus / vcpus`` at a time."""
    at_once = max(1, max_vcpus // max(1, vcpus))
    out = []
    for shards in sorted(set(shard_counts)):
        share = share_of(items, shards)
        job_s = job_start_s / share if share else job_start_s
        waves = math.ceil(shards / at_once)
        cost = None if vcpu_price_h is None else round(shards * job_s * vcpus * vcpu_price_h / 3600, 4)
        out.append({"shards": shards, "jobs": shards, "items_per_job": math.ceil(items / shards) if items else 0,
                    "overhead_share": share, "job_s": round(job_s, 1), "wall_s": round(waves * job_s, 1),
                    "cost_usd": cost, "jobs_at_once": at_once})
    return out
