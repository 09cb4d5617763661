"""``invoke bench --node NODE``: the machine-level part of the bench suite on one fleet node, i.e. on the
hardware the job will run on, and its profile stored per machine type.

What runs on the node (``NODE_TESTS``, ``NODE_SELECT``): pool start-up per start method (small parent only: a
1 GB parent could exhaust a small node's memory), per-task overhead and chunk sizes of the process pool (not the
thread pool's), and ``bench/test_items.py``: the
per-item time of each workload on a sample of the job's real inputs, read from the node's mount of the shared
disk (``--src``, default ``job.src``), the cost of starting a run, and how far one process per core scales.
The bench files and the workload scripts are copied over SFTP into the node's workdir (as ``deploy`` does);
the node's interpreter must have pytest and pytest-benchmark (a local node uses the head's venv, which has
them).  The benchmark JSON comes back over SFTP and becomes ``.fleetbook/profiles/<provider>-<machine
type>.json`` (``bench.profiles``), which ``deploy`` then ships to every node of that machine type and
``invoke plan`` reads.
"""
from __future__ import annotations

import json
import shlex
import tempfile
from pathlib import Path

from invoke.exceptions import Exit
from rich.console import Console

from playbooks.settings import setting
from playbooks.measure import disk_cost, profiles
from playbooks.measure.profile import build_profile
from playbooks.settings.defaults import REPO
from playbooks.deploy import copy_files, workload_files
from playbooks.fleet import nodes_or_exit
from playbooks.engines.launch import is_mounted
from playbooks.ssh.fanout import connect, q, run_checked
from playbooks.ssh.sftp_head import sessions_cpu_s
from playbooks.runs import layout
from playbooks.runs.disk import shared_disk

console = Console()
NODE_TESTS = ("test_start_methods.py", "test_chunks.py", "test_items.py")
SUPPORT = ("conftest.py", "bench_support.py", "disk_probe.py")
PROBED = ("resize", "features")              # the workloads whose shared-disk cost the probe measures
PROBE_ITEMS = {"small": 60, "default": 200, "large": 400}
NODE_SELECT = "not numpy and not bytes and not thread_pool"   # what the profile needs, in about a minute
NEEDS = "import pytest, pytest_benchmark, numpy, PIL"
JSON_NAME = "bench-node.json"


def env_prefix(env: dict[str, str]) -> str:
    """``K=V `` words (quoted) before a command, or nothing."""
    return "".join(f"{k}={q(v)} " for k, v in env.items())


def bench_files() -> list[tuple[str, str]]:
    return [(str(REPO / "bench" / name), name) for name in SUPPORT + NODE_TESTS]


def node_command(node, scale: str, src_on_node: str, sample: int, env: dict[str, str], pytest_args: str = "") -> str:
    """The shell command that benchmarks the node (from its workdir), writing ``bench-node.json`` there.

    pytest is kept inside the workdir: no configuration file (``-c /dev/null``: a local node's workdir sits below
    the checkout, whose pyproject.toml is not for it), root and conftest search stop there (the node may not
    list the folders above), its temporary files too (``--basetemp``: a /tmp/pytest-of-<user> left by an earlier
user of the same name would stop it), and path options are spelled ``--opt=PATH`` (a bare path argument would take part
    in the choice of the root directory)."""
    tests = " ".join(f"bench/{t}" for t in NODE_TESTS)
    return (f"cd {q(node.workdir)} && rm -f {JSON_NAME} && {env_prefix(env)}{q(node.python)} -m pytest "
            f"{tests} -c /dev/null --rootdir=. --confcutdir=. --basetemp=.bench-tmp -p no:cacheprovider -q "
            f"-k {q(NODE_SELECT)} "
            f"--bench-scale={q(scale)} "
            f"--bench-src={q(src_on_node)}{f' --bench-sample={int(sample)}' if sample else ''} "
            f"--benchmark-json={JSON_NAME} --benchmark-columns=median,rounds {pytest_args}").strip()


def _pick(nodes, wanted: str):
    for node in nodes:
        if node.name == wanted:
            return node
    raise Exit(f"no running node {wanted!r} in this fleet: choose one of {', '.join(n.name for n in nodes)}")


def measure(c, node_name: str, *, name: str = "", provider: str = "", scale: str = "", src: str = "",
            sample: int = 0, pytest_args: str = "") -> Path:
    """Benchmark ``node_name``; write and return its machine type's profile file."""
    name, nodes = nodes_or_exit(c, name, provider)
    provider = setting(c, "fleet.provider", provider)
    node = _pick(nodes, node_name)
    mtype = profiles.machine_type(c, provider, node)
    out = profiles.profile_file(c, provider, mtype)
    src = setting(c, "job.src", src)
    if Path(src).is_absolute() or ".." in Path(src).parts:
        raise Exit(f"--src {src}: give a folder inside shared.root, relative to it (e.g. src)")
    src_on_node = f"{node.mountpoint}/{src}"
    timeout = setting(c, "fleet.ssh_timeout")
    conn = connect(c, name, node)
    try:
        check = (f"{is_mounted(q(node.mountpoint))} || {{ echo no-mount; exit 0; }}; "
                 f"test -d {q(src_on_node)} || {{ echo no-src; exit 0; }}; "
                 f"{q(node.python)} -c {q(NEEDS)} 2>/dev/null || echo no-pytest")
        problem = run_checked(conn, check, timeout).strip()
        if problem == "no-mount":
            raise Exit(f"the shared disk is not mounted on {node.name}: run `invoke mount` first (the sample of "
                       "inputs is read from it)")
        if problem == "no-src":
            raise Exit(f"{src} is not a folder of the shared root (seen from {node.name}): put the job's inputs "
                       "there or pass --src")
        if problem == "no-pytest":
            raise Exit(f"{node.python} on {node.name} lacks pytest, pytest-benchmark, numpy or Pillow: add them to "
                       "image.steps and `invoke image.bake` (or pip install them on the node)")
        copy_files(conn, f"{node.workdir}/workloads", workload_files(), timeout)
        copy_files(conn, f"{node.workdir}/bench", bench_files(), timeout)
        cmd = node_command(node, scale, src_on_node, sample, profiles.node_env(c, provider), pytest_args)
        console.print(f"bench on {node.name} ({provider} {mtype}), scale {scale}, a sample of {src}: {cmd}",
                      markup=False, highlight=False, soft_wrap=True)
        result = conn.run(cmd, hide=False, warn=True, in_stream=False, timeout=setting(c, "bench.node_timeout"))
        with tempfile.TemporaryDirectory() as tmp:
            local = Path(tmp) / JSON_NAME
            try:
                conn.get(f"{node.workdir}/{JSON_NAME}", local=str(local))
                data = json.loads(local.read_text())
            except (OSError, ValueError) as exc:
                raise Exit(f"the bench on {node.name} wrote no benchmark JSON (pytest exited {result.exited}; "
                           f"{exc}): see its output above") from None
        disk = probe_disk(c, conn, name, node, src_on_node, scale, provider)
    finally:
        conn.close()
    if not data.get("benchmarks"):
        raise Exit(f"the bench on {node.name} measured nothing (pytest exited {result.exited}): see its output above")
    profile = build_profile(data, source=f"{provider}:{name}/{node.name}")
    profile.update(provider=provider, machine_type=mtype, node=node.name, measured_on="node",
                   sample_src=src)
    if disk:
        profile["shared_disk"] = disk
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(profile, indent=2) + "\n")
    for line in summary_lines(profile):
        console.print(line, markup=False, highlight=False, soft_wrap=True)
    console.print(f"profile: {out} (deploy ships it to every {mtype} node; `invoke plan` reads it)")
    if result.exited:
        console.print(f"warning: pytest exited {result.exited} on {node.name}; the profile holds what was measured",
                      style="yellow")
    return out


def probe_rel(node) -> str:
    """The probe's scratch folder, relative to the shared root (beside the runs' state)."""
    return f"{layout.STATE}/probe/{node.name}"


def probe_command(node, src_on_node: str, workload: str, items: int, env: dict[str, str], step: str) -> str:
    scratch = f"{node.mountpoint}/{probe_rel(node)}"
    return (f"cd {q(node.workdir)} && {env_prefix(env)}{q(node.python)} bench/disk_probe.py "
            f"--src {q(src_on_node)} --scratch {q(scratch)} --workload {q(workload)} --items {int(items)} "
            f"--step {q(step)}")


def probe_disk(c, conn, fleet: str, node, src_on_node: str, scale: str, provider: str) -> dict:
    """The shared disk's cost per item of each of ``PROBED``: one real run of the workload through the node's
    mount (``bench/disk_probe.py``) on one sample copied there for all of them, then the same as two shards at
    once (what helping costs), the head's sshd sessions measured here around each run alone (when the head is
    this machine).  Nothing else may use the fleet
    meanwhile: the head's figure counts every session."""
    out = {}
    items = PROBE_ITEMS.get(scale, PROBE_ITEMS["default"])
    env = profiles.node_env(c, provider)
    disk = shared_disk(c, provider, fleet)
    try:
        disk.mkdirs(probe_rel(node))
        disk.give_to_nodes(probe_rel(node), tree=True)     # the node writes there as the head's SFTP user
    finally:
        disk.close()

    def step(workload: str, name: str):
        return conn.run(probe_command(node, src_on_node, workload, items, env, name), hide=True, warn=True,
                        in_stream=False, timeout=setting(c, "bench.node_timeout"))

    prepared = step(PROBED[0], "prepare")      # its copy costs the head too: outside what is measured
    try:
        for workload in PROBED:
            start = step(workload, "start") if not prepared.stdout.strip() else None
            before = sessions_cpu_s(c, fleet)
            result = step(workload, "run") if not prepared.stdout.strip() else prepared   # else: its error
            after = sessions_cpu_s(c, fleet)
            probe = json_line(result)
            helped, help_head = {}, None
            if probe.get("done"):       # the same as two shards at once: what one more node costs
                before_help = sessions_cpu_s(c, fleet)
                helped = json_line(step(workload, "help"))
                after_help = sessions_cpu_s(c, fleet)
                help_head = after_help - before_help if None not in (before_help, after_help) else None
            fig = disk_cost.figures({**probe, **json_line(start)},
                                    after - before if before is not None and after is not None else None,
                                    helped, help_head)
            if fig is None:
                console.print(f"warning: the shared-disk probe of {workload} on {node.name} measured nothing "
                              f"({probe.get('error') or probe.get('stderr') or result.stderr.strip()[-200:]})",
                              style="yellow", markup=False)
                continue
            out[workload] = fig
    finally:
        step(PROBED[0], "clean")
    return out


def json_line(result) -> dict:
    """The last line of a probe step's output as JSON ({} when there is none)."""
    try:
        data = json.loads((result.stdout.strip().splitlines() or ["{}"])[-1]) if result is not None else {}
    except ValueError:
        return {}
    return data if isinstance(data, dict) else {}


def summary_lines(p: dict) -> list[str]:
    """What was measured on the node, in a few lines."""
    mem = p.get("memory_bytes")
    items = ", ".join(f"{w} {s * 1e3:.2f} ms" for w, s in (p.get("item_seconds") or {}).items()) or "not measured"
    starts = ", ".join(f"{m} {s * 1e3:.0f} ms" for m, s in (p.get("pool_start_s") or {}).items())
    return [
        f"{p.get('machine_type')}: {p.get('cores')} cores, {p.get('cpu_model')}, "
        f"{f'{mem / 2**30:.1f} GiB' if mem else 'memory unknown'}",
        f"pool start: {starts or 'not measured'}; start method {p.get('start_method')}; per-task overhead "
        f"{p.get('per_task_overhead_us')} us; parallel efficiency {p.get('parallel_efficiency')}"
        + (f" ({p.get('machine_efficiency')} over all {p.get('cpus')} CPUs of the machine)"
           if p.get("cpus") and p.get("cpus") != p.get("cores") else ""),
        f"per item ({(p.get('sample') or '?')}): {items}"
        + (f"; reading one input through the mount {p['sample_read_s_per_item'] * 1e3:.2f} ms"
           if p.get("sample_read_s_per_item") else ""),
        f"run start: {', '.join(f'{w} {s:.2f} s' for w, s in (p.get('run_start_s') or {}).items()) or '-'}",
        disk_cost.summary(p.get("shared_disk") or {}),
    ]


def quote_args(args: str) -> str:
    """Extra pytest arguments for the node as one shell-safe string."""
    try:
        return shlex.join(shlex.split(args))
    except ValueError as exc:
        raise Exit(f"--pytest-args is not valid shell quoting ({exc})") from None
