"""Where the time goes on each node: compute, disk, network, memory, unused cores, or nothing at all.

``invoke overhead`` samples every running node of the fleet in parallel for ``--seconds`` (once a second:
CPU per core, load, memory and swap, disk and network MB/s, the workload processes' CPU, RSS and what their
threads wait on, and the run's items/s from the heartbeats on the shared disk), then gives each node a verdict
with the one lever to pull.  On a local fleet the nodes share one machine: a node's own figures come from its
own processes (environment marker ``FLEETBOOK_NODE=<fleet>/<node>``) and its cores from
``local.cores_per_node``; machine-wide figures are marked as shared.
"""
from __future__ import annotations

import base64
import json as jsonlib
import shlex
import sys
import zlib
from pathlib import Path

from invoke import task
from invoke.exceptions import Exit

from playbooks.settings import setting
from playbooks.settings.errors import FleetbookError
from playbooks.ssh import fanout as remote
from playbooks.runs import disk as rundisk
from playbooks.runs import state as runstate
from playbooks.fleet import nodes_or_exit
from playbooks.measure.verdicts import SHARED_FIGURES, Verdict, classify, fleet_line, timeline

SAMPLER = Path(__file__).parent / "measure" / "sampling.py"
MARKER = "FLEETBOOK_NODE"
MAX_SECONDS = 600
NO_DATA = "no-data"


def fan_out(c, fleet, nodes, fn, *, step):
    """The fleet's bounded parallel SSH fan-out (playbooks/remote.py); a seam for tests."""
    return remote.fan_out(c, fleet, nodes, fn, step=step, max_parallel=c.config.fleet.max_parallel)


def sampler_command(python: str, seconds: float, match: str) -> str:
    """One shell command that runs the sampler on a node without copying a file there first."""
    code = base64.b64encode(zlib.compress(SAMPLER.read_bytes(), 9)).decode()
    boot = f"import base64,zlib;exec(compile(zlib.decompress(base64.b64decode('{code}')),'sampling.py','exec'))"
    return " ".join([shlex.quote(python), "-c", shlex.quote(boot), "--seconds", str(seconds), "--match", shlex.quote(match)])


def parse_sampler_output(stdout: str) -> dict:
    """The sampler's JSON (its last non-empty line), or a RuntimeError saying what the node said instead."""
    lines = [ln for ln in stdout.strip().splitlines() if ln.strip()]
    if not lines:
        raise RuntimeError("the sampler printed nothing")
    try:
        data = jsonlib.loads(lines[-1])
    except ValueError:
        raise RuntimeError(f"the sampler printed no JSON: {lines[-1][:200]}") from None
    if "error" in data:
        raise RuntimeError(data["error"])
    return data


def make_sampler(fleet: str, seconds: float, timeout: float):
    """fn(conn, node) for the fan-out: run the sampler on the node and return its series."""

    def sample_node(conn, node) -> dict:
        cmd = sampler_command(node.python, seconds, f"{MARKER}={fleet}/{node.name}")
        r = conn.run(cmd, hide=True, warn=True, in_stream=False, timeout=timeout)
        if r.exited != 0:
            last = (r.stderr.strip().splitlines() or r.stdout.strip().splitlines() or [f"exit {r.exited}"])[-1]
            if "No module named 'psutil'" in r.stdout + r.stderr:
                last = "psutil is missing on the node: add it to the node image (invoke image.bake)"
            raise RuntimeError(last)
        return parse_sampler_output(r.stdout)

    return sample_node


# ---------------------------------------------------------------------------------------------- heartbeats
def read_run_state(c, nodes, provider: str = "", fleet: str = "") -> dict:
    """{node name: (heartbeat, status)} of the latest run, read on the head's disk (this machine's, or a head
    instance's over SSH); {} without a run.  status is runstate's: done / failed / running / lost / starting."""
    try:
        record = runstate.load_run(c, provider=provider, fleet=fleet)
    except (Exit, FleetbookError):   # no run yet; or a head instance the provider cannot reach
        return {}
    tally = rundisk.shared_disk(c, provider, fleet).tally(record, count=False)
    in_run = {e["name"] for e in record.get("nodes", [])}
    lost_after = setting(c, "job.lost_after")
    out = {}
    for n in nodes:
        if n.name in in_run:
            beat, exit_ = tally.node(n.name)
            out[n.name] = (beat, runstate.node_status(record, n.name, beat, exit_, lost_after))
    return out


def items_rate(before: dict | None, after: dict | None, status: str | None) -> float | None:
    """Items/s of one node over the sampling window: from the heartbeat's done counter if it moved, else its
    own rate_per_s; 0 when its run is over or lost; None without a heartbeat."""
    if not after:
        return None
    if status not in (None, "running"):
        return 0.0
    t0, t1 = float((before or {}).get("updated_at") or 0), float(after.get("updated_at") or 0)
    if before and t1 > t0 and before.get("started_at") == after.get("started_at"):
        return round(max(0.0, (after.get("done", 0) - before.get("done", 0)) / (t1 - t0)), 3)
    return float(after.get("rate_per_s") or 0.0)


def own_link(node) -> bool:
    """A local node in its own network namespace (``local.netns``) has its own link: its network is its own."""
    return bool((node.labels or {}).get("link"))


# ---------------------------------------------------------------------------------------------- output
def no_data(node: str, error: str) -> Verdict:
    return Verdict(node, NO_DATA, f"{NO_DATA}: {error}; check that the node answers SSH", {"error": error})


def as_json(fleet: str, seconds: float, shared: bool, cores, verdicts: list[Verdict]) -> dict:
    keep = ("cores", "busy_cores", "cpu_pct", "iowait_pct", "net_wait_pct", "disk_mb_s", "net_mb_s", "disk_iops",
            "rss_mb", "majflt_s", "mem_used_pct", "swap_mb_s", "load1", "procs", "items_per_s", "error")
    return {
        "fleet": fleet, "seconds": seconds, "shared_machine": shared, "cores_per_node": cores,
        "shared_figures": [k for k in SHARED_FIGURES if any(k in v.shared for v in verdicts)],
        "nodes": {v.node: {"verdict": v.verdict, "lever": v.lever, "shared": list(v.shared),
                           **{k: v.figures[k] for k in keep if k in v.figures}} for v in verdicts},
        "fleet_line": fleet_line([v for v in verdicts if v.verdict != NO_DATA]),
    }


def _fmt(x, spec=".1f") -> str:
    return "-" if x is None else format(x, spec)


def print_table(fleet: str, shared: bool, cores, verdicts: list[Verdict], line: dict) -> None:
    from rich.console import Console
    from rich.table import Table
    from rich.text import Text

    net_shared = any("net_mb_s" in v.shared for v in verdicts)
    star = "*" if net_shared else ""
    t = Table(title=f"overhead of fleet {fleet}", title_justify="left")
    for col in ("node", "verdict", "cores busy", "iowait %", "net wait %", "disk MB/s", f"net MB/s{star}",
                "RSS MB", "items/s"):
        t.add_column(col, justify="left" if col in ("node", "verdict") else "right")
    t.add_column("lever", min_width=36, ratio=1, overflow="fold")
    for v in verdicts:
        f = v.figures
        if v.verdict == NO_DATA:
            t.add_row(Text(v.node), Text(NO_DATA, style="red"), *["-"] * 7, Text(str(f.get("error", ""))))
            continue
        busy = f"{_fmt(min(max(f['busy_cores'], f['run_threads']), f['cores']))}/{f['cores']:g}"
        t.add_row(Text(v.node), v.verdict, busy, _fmt(f["iowait_pct"], ".0f"), _fmt(f["net_wait_pct"], ".0f"),
                  _fmt(f["disk_mb_s"]), _fmt(f["net_mb_s"]), _fmt(f["rss_mb"], ".0f"), _fmt(f.get("items_per_s")),
                  v.lever.split(": ", 1)[-1])
    con = Console()
    con.print(t)
    total = "unknown (no heartbeats)" if line["items_per_s"] is None else f"{line['items_per_s']:.1f} items/s"
    slow = line["slowest"]
    if slow:
        rate = "" if slow["items_per_s"] is None else f", {slow['items_per_s']:.1f} items/s"
        slow_txt = f"slowest {slow['node']}{rate}: {slow['lever']}"
    elif line["nodes"]:
        slow_txt = "no node is working"
    else:
        slow_txt = "no node answered"
    con.print(f"fleet: {line['nodes']} node(s), {total}; {slow_txt}", markup=False, highlight=False, soft_wrap=True)
    if shared:
        net = ("net MB/s (and memory, swap, load, IOPS in --json) are machine-wide" if net_shared else
               "memory, swap, load and IOPS (in --json) are machine-wide; net MB/s is each node's own link")
        con.print(f"{star or '-'} shared: local nodes run on one machine, so {net} (the same for every node); CPU, "
                  f"waits, disk MB/s and RSS come from each node's own processes ({MARKER}={fleet}/<node>), "
                  f"cores = local.cores_per_node = {cores}.", markup=False, highlight=False, soft_wrap=True)


def write_plot(path: Path, series: dict, cores, shared: bool, own_net: set | frozenset = frozenset()) -> None:
    """A PNG timeline: CPU %, iowait %, disk MB/s and network MB/s per node (matplotlib Agg)."""
    try:
        import matplotlib
    except ImportError:
        raise Exit("--plot needs matplotlib: pip install -e '.[bench]'") from None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = (("cpu_pct", "CPU %"), ("iowait_pct", "iowait %"), ("disk_mb_s", "disk MB/s"),
              ("net_mb_s", "network MB/s" + (" (machine-wide)" if shared and len(own_net) < len(series) else "")))
    fig, axes = plt.subplots(len(panels), 1, sharex=True, figsize=(9, 8), constrained_layout=True)
    t0 = min((s.get("started_at") or 0.0) for s in series.values()) if series else 0.0
    for node, s in sorted(series.items()):
        tl = timeline(s, cores=cores, shared=shared, own_net=node in own_net)
        shift = (s.get("started_at") or t0) - t0
        xs = [x + shift for x in tl["t"]]
        for ax, (key, _) in zip(axes, panels):
            ax.plot(xs, tl[key], marker="o", markersize=3, label=node)
    for ax, (_, label) in zip(axes, panels):
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
    axes[0].set_ylim(0, 105)
    axes[1].set_ylim(0, 105)
    axes[-1].set_xlabel("seconds")
    if series:
        axes[0].legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize="small")
    fig.suptitle("fleetbook overhead" + (" (local fleet: shared machine)" if shared else ""))
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path, dpi=90)
    except OSError as exc:
        raise Exit(f"cannot write the plot {path}: {exc.strerror or exc}; pick another --plot path") from None
    finally:
        plt.close(fig)


# ---------------------------------------------------------------------------------------------- the task
@task(help={
    "seconds": "how long to sample every node, one sample a second (default 10)",
    "json": "print only a JSON object to stdout: verdict and lever (and figures) per node",
    "plot": "also write a PNG timeline of CPU, iowait, disk and network per node to this file",
    "name": "fleet name (default: fleet.name)",
    "provider": "local, gcp or aws (default: fleet.provider)",
})
def overhead(c, seconds=10, json_=False, plot="", name="", provider=""):
    """What holds each node back (CPU, disk, network, memory...) and the lever to pull.

    Samples every running node in parallel for --seconds, then prints a table with one row per node and a
    fleet line (total items/s, the slowest node and why)."""
    if not 1 <= seconds <= MAX_SECONDS:
        raise Exit(f"--seconds must be between 1 and {MAX_SECONDS}, got {seconds}")
    if plot and not plot.lower().endswith(".png"):
        raise Exit(f"--plot writes a PNG: give a file name ending in .png, got {plot!r}")
    fleet, nodes = nodes_or_exit(c, name, provider)
    shared = (provider or c.config.fleet.provider) == "local"
    cores = setting(c, "local.cores_per_node") if shared else None

    before = read_run_state(c, nodes, provider, fleet)
    timeout = seconds + 2 * setting(c, "fleet.ssh_timeout")
    results = fan_out(c, fleet, nodes, make_sampler(fleet, seconds, timeout), step="overhead")
    after = read_run_state(c, nodes, provider, fleet)

    verdicts, series = [], {}
    by_name = {r.node.name: r for r in results}
    for n in nodes:
        r = by_name.get(n.name)
        if r is None or not r.ok:
            verdicts.append(no_data(n.name, str(getattr(r, "error", None) or "no result")))
            continue
        series[n.name] = r.value
        beat, status = after.get(n.name, (None, None))
        rate = items_rate(before.get(n.name, (None, None))[0], beat, status)
        try:
            verdicts.append(classify(r.value, node=n.name, cores=cores, shared=shared, own_net=own_link(n),
                                     heartbeat=beat, run_status=status, items_per_s=rate))
        except (ValueError, KeyError, TypeError) as exc:
            verdicts.append(no_data(n.name, f"unreadable samples ({exc})"))

    if plot:
        write_plot(Path(plot), series, cores, shared, {n.name for n in nodes if own_link(n)})
    if json_:
        print(jsonlib.dumps(as_json(fleet, seconds, shared, cores, verdicts), indent=2))
        if plot:
            print(f"wrote {plot}", file=sys.stderr)
        return
    print_table(fleet, shared, cores, verdicts, fleet_line([v for v in verdicts if v.verdict != NO_DATA]))
    if plot:
        print(f"wrote {plot}")
