"""Does the plan predict reality?  ``invoke plan`` for a local fleet of 1, 2 and 3 nodes against the measured
wall time of ``run --wait`` on the same images.

Steps, as a user would take them: a local fleet of 3 nodes (``local.cores_per_node=1``); ``invoke bench
--node`` on its first node (the per-item time of each workload on a sample of these very images, read through
the node's mount, and how far this machine's CPUs scale); then for n = 1, 2, 3: the plan's ``run_s`` (the time
``run --wait`` takes on a fleet that is up) and ``run.start`` + ``progress.wait_until_finished`` on the first
n nodes into a fresh folder, timed here (what ``invoke run --wait`` does, minus the start of the ``invoke``
command itself; ``job.poll`` is 0.2 s so that the poll's granularity does not hide the run's own time).

How to read it: ``extra_info`` has ``predicted_s``, ``measured_s`` and ``error`` = predicted / measured - 1 (the
aim: within 25 %), and the bottleneck the plan names.  The shared disk's per-item cost (node and head CPU, one
worker's wait on it) comes from ``bench --node``'s probe (``bench/disk_probe.py``); as root, the same figures
measured during each run here are in ``extra_info`` too (``disk_ms_node``, ``disk_ms_head``), and where the
machine's CPU went (``cpu_s``: each kind of process of the fleet, this process, and the machine's busy time
from /proc/stat) and when each node's runner worked (``timeline``).
"""
from __future__ import annotations

import contextlib
import io
import os
import json
import secrets
import shutil
import sys
import threading
import time
from contextlib import redirect_stdout
from pathlib import Path

import psutil
import pytest

REPO = Path(__file__).resolve().parent.parent
from tests.support.fleet import fleet_base, make_ctx  # noqa: E402,F401 - fleet_base: a fixture

from playbooks import bench, deploy, fleet, mount, plan, progress, run, teardown  # noqa: E402
from playbooks.measure import planning
from playbooks.runs.samples import make_samples  # noqa: E402

pytestmark = pytest.mark.fleet
NAME = "plan" + secrets.token_hex(2)


@pytest.fixture(scope="module")
def measured_fleet(fleet_base, sized, bench_scale):
    base = fleet_base
    c = make_ctx(base, local__cores_per_node=1, job__poll=0.2, bench__profile=str(base / "profile.json"),
                 bench__profiles=str(base / "profiles"))
    images = sized(small=120, default=600, large=3000)
    make_samples(base / "data" / "src", images)
    try:
        fleet.create(c, n=3, name=NAME)
        mount.mount(c, name=NAME)
        deploy.deploy(c, name=NAME)
        nodes = fleet.nodes_or_exit(c, NAME)[1]
        out = io.StringIO()
        with redirect_stdout(out):
            bench.run(c, node=nodes[0].name, name=NAME, scale=bench_scale)
        lines = out.getvalue().splitlines()       # what bench --node printed last: its summary
        first = next((i for i, line in enumerate(lines) if line.startswith("1cpu:")), max(0, len(lines) - 7))
        print("\nbench --node:\n" + "\n".join(lines[first:]))
        deploy.deploy(c, name=NAME)       # every node now has the profile of its machine type
        yield c, base, nodes, images
    finally:
        teardown.teardown(c, name=NAME)


def disk_cpu(c) -> tuple[float, float] | None:
    """CPU seconds so far of the shared disk: the nodes' sshfs and ssh processes (as root: the node users'),
    and the head sshd's children (the SFTP sessions).  None without per-node users."""
    if os.geteuid() != 0:
        return None
    from playbooks.ssh import daemons as procs
    from playbooks.ssh.fanout import fleet_dir
    node = head = 0.0
    for proc in psutil.process_iter(["username", "name"]):
        try:
            if (proc.info["username"] or "").startswith(f"fb-{NAME}-") and proc.info["name"] in ("sshfs", "ssh"):
                t = proc.cpu_times()
                node += t.user + t.system
        except psutil.Error:
            continue
    pid = procs.read_pid(fleet_dir(c, NAME) / "head" / "sshd.pid")
    try:
        for child in psutil.Process(pid).children(recursive=True):
            try:
                t = child.cpu_times()
                head += t.user + t.system
            except psutil.Error:
                continue
    except (psutil.Error, TypeError, ValueError):
        return None
    return node, head


BUSY = ("user", "nice", "system", "irq", "softirq", "steal")


class CpuLedger:
    """Where the machine's CPU goes during a run: every 0.25 s, the CPU seconds so far of each process of the
    fleet (by what it is: a node's runner, its sshfs and ssh, its sshd session and shell, the head's sshd
    sessions, this process, i.e. ``run.start``'s fan-out and the poller), and the machine's busy time
    (/proc/stat: everything, kernel threads too).  A process that ends between two looks loses at most its
    last 0.25 s.  As root only (the node users' processes)."""

    def __init__(self, c, nodes):
        from playbooks.providers.local_setup import node_dir
        from playbooks.settings.defaults import fleet_dir
        from playbooks.ssh import daemons as procs
        self.roots = {procs.read_pid(fleet_dir(c, NAME) / "head" / "sshd.pid"): "head sshd/sftp"}
        for node in nodes:
            self.roots[procs.read_pid(node_dir(c, NAME, node.name) / "sshd.pid")] = "node"
        self.kind: dict[tuple, str] = {}
        self.cpu: dict[tuple, float] = {}
        self.first: dict[tuple, float] = {}
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self.loop, daemon=True)

    def classify(self, proc) -> str:
        if proc.pid == os.getpid():
            return "operator (this process: start + poll)"
        try:
            user = proc.username() or ""
            chain = [proc] + proc.parents()
            name, cmd = proc.name(), " ".join(proc.cmdline())
        except psutil.Error:
            return "other"
        root = next((self.roots[p.pid] for p in chain if p.pid in self.roots), None)
        if root == "head sshd/sftp":
            return root
        if root == "node" or user.startswith(f"fb-{NAME}-"):
            if name in ("sshfs", "ssh"):
                return "node sshfs+ssh"
            if "workloads/" in cmd:
                return "node runner"
            return "node sshd+shell"
        return "other"

    def look(self):
        for proc in psutil.process_iter():
            try:
                key = (proc.pid, proc.create_time())
                if key not in self.kind:
                    self.kind[key] = self.classify(proc)
                    self.first[key] = time.time()
                if self.kind[key] == "other":
                    continue
                t = proc.cpu_times()
                self.cpu[key] = t.user + t.system + (t.children_user + t.children_system
                                                     if self.kind[key].startswith("operator") else 0.0)
            except psutil.Error:
                continue

    def loop(self):
        while not self.stop.wait(0.25):
            self.look()

    @staticmethod
    def busy() -> float:
        t = psutil.cpu_times()
        return sum(getattr(t, f, 0.0) for f in BUSY)

    def __enter__(self):
        self.look()
        self.base = dict(self.cpu)
        self.busy0 = self.busy()
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.stop.set()
        self.thread.join()
        self.look()
        self.machine_s = self.busy() - self.busy0

    def totals(self) -> dict[str, float]:
        out: dict[str, float] = {}
        for key, cpu in self.cpu.items():
            kind = self.kind[key]
            out[kind] = out.get(kind, 0.0) + cpu - self.base.get(key, 0.0)
        out = {k: round(v, 2) for k, v in sorted(out.items())}
        out["runners created at (epoch)"] = sorted(round(k[1], 2) for k, kind in self.kind.items()
                                                   if kind == "node runner")
        out["machine busy (/proc/stat)"] = round(self.machine_s, 2)
        return out


def node_times(c, record: dict, t0: float) -> list[dict]:
    """Each node's runner on the wall clock of the run (seconds after ``run.start`` was called): its progress
    start (interpreter, imports, listing and triage done), its end (exit.json), its items."""
    from playbooks.runs.layout import run_rel
    from playbooks.settings.defaults import shared_root
    out = []
    for entry in record["nodes"]:
        folder = shared_root(c) / run_rel(record["run_id"]) / "nodes" / entry["name"]
        try:
            beat = json.loads((folder / "heartbeat.json").read_text())
            end = json.loads((folder / "exit.json").read_text())
        except (OSError, ValueError):
            continue
        out.append({"node": entry["name"], "start_s": round(beat["started_at"] - t0, 2),
                    "end_s": round(end["finished_at"] - t0, 2), "done": end["summary"].get("done"),
                    "seconds": end["summary"].get("seconds")})
    return out


@pytest.mark.parametrize("n", [1, 2, 3])
def test_plan_predicts_run_wait(benchmark, measured_fleet, n):
    benchmark.group = "plan: predicted vs measured run --wait"
    c, base, nodes, images = measured_fleet
    with redirect_stdout(io.StringIO()):
        result = plan.plan(c, workload="resize", src="src", provider="local", sizes="1,2,3", json_=True)
    predicted = next(o for o in result["options"] if o["nodes"] == n)
    if n == 1:              # the table, as `invoke plan` prints it
        out = io.StringIO()
        with redirect_stdout(out):
            plan.plan(c, workload="resize", src="src", provider="local", sizes="1,2,3")
        print("\ninvoke plan --workload resize --src src --sizes 1,2,3\n" + out.getvalue())

    def clear():
        shutil.rmtree(base / "data" / "out", ignore_errors=True)
        return (), {}

    times, timeline = [], []

    def runbook():
        t0, wall0 = time.perf_counter(), time.time()
        record = run.start(c, NAME, nodes[:n], "resize", "src", "out", "")
        started = time.perf_counter() - t0
        snap = progress.wait_until_finished(c, record)
        times.append(time.perf_counter() - t0)
        assert snap["done"] == images
        timeline.append({"start_returned_s": round(started, 2), "nodes": node_times(c, record, wall0),
                         "wall0": wall0})

    before = disk_cpu(c)
    ledger = CpuLedger(c, nodes[:n]) if os.geteuid() == 0 else None
    with redirect_stdout(io.StringIO()), (ledger or contextlib.nullcontext()):
        benchmark.pedantic(runbook, setup=clear, rounds=1, iterations=1)
    after = disk_cpu(c)
    measured = min(times)
    if before and after:    # the same model with the shared disk's cost measured in this very run
        node_s, head_s = ((a - b) / images for a, b in zip(after, before))
        m = planning.Model(**{**result["model"], "links": (), "node_disk_s": node_s, "head_disk_s": head_s})
        benchmark.extra_info.update(disk_ms_node=round(node_s * 1e3, 3), disk_ms_head=round(head_s * 1e3, 3),
                                    predicted_with_measured_disk_s=planning.option(m, n)["run_s"])
    info = {"nodes": n, "images": images, "predicted_s": predicted["run_s"], "measured_s": round(measured, 3),
            "error": round(predicted["run_s"] / measured - 1, 3), "bottleneck": predicted["bottleneck"],
            "predicted_items_per_s": predicted["items_per_s"], "item_ms": round(result["model"]["item_s"] * 1e3, 3),
            "disk": result["inputs"]["shared_disk"] == planning.DEFAULT_DISK_SOURCE and "default" or "measured"}
    benchmark.extra_info.update(info)
    x = benchmark.extra_info
    print(f"\nplan vs run --wait, {n} node(s), {images} images: predicted {predicted['run_s']:.2f} s, measured "
          f"{measured:.2f} s ({info['error']:+.0%}), bottleneck {predicted['bottleneck']}; item "
          f"{info['item_ms']} ms, efficiency {result['model']['efficiency']}, machine "
          f"{result['model']['machine_efficiency']}" + (
              f"; disk measured node {x['disk_ms_node']} ms head {x['disk_ms_head']} ms per item: predicted "
              f"{x['predicted_with_measured_disk_s']:.2f} s" if "disk_ms_node" in x else ""))
    m = result["model"]
    print("  model: " + ", ".join(f"{k} {m[k]}" for k in (
        "item_s", "node_disk_s", "head_disk_s", "io_s", "run_start_s", "machine_efficiency", "ssh_s", "poll_s")
        if k in m) + "".join(f", {k} {m[k]}" for k in ("run_cpu_s", "start_cpu_s") if k in m))
    for prof in sorted((base / "profiles").glob("*.json")):
        disk = json.loads(prof.read_text()).get("shared_disk", {}).get("resize")
        print(f"  {prof.name} shared_disk resize: {disk}")
    if timeline:
        benchmark.extra_info["timeline"] = timeline[-1]
        print(f"  timeline: run.start returned at {timeline[-1]['start_returned_s']} s; " + "; ".join(
            f"{t['node']} items {t['start_s']}-{t['end_s']} s ({t['done']} done)" for t in timeline[-1]["nodes"]))
    if ledger:
        cpu = ledger.totals()
        benchmark.extra_info["cpu_s"] = cpu
        print(f"  CPU seconds over {measured:.2f} s wall ({ledger.machine_s / measured:.2f} cores busy): "
              + ", ".join(f"{k} {v}" for k, v in cpu.items() if not k.startswith("runners")))
        if timeline:
            t0 = timeline[-1]["wall0"]
            print("  runner processes created at " + ", ".join(
                f"{t - t0:.2f} s" for t in cpu["runners created at (epoch)"]))
