"""The Dask cluster of a fleet: a ``dask scheduler`` on the head, ``dask worker`` processes on every node.

``up`` starts the scheduler on the head (detached, its own session) and, through the same bounded Fabric
fan-out as ``run``, one ``dask worker`` per node (``--nworkers`` processes of ``--nthreads`` threads), detached,
with the node's interpreter and ``<workdir>/workloads`` on its path.  What was started is recorded in
``<fleet state>/dask.json`` (address, dashboard, scheduler pid, one worker process group per node); ``down``
stops exactly that.
"""
from __future__ import annotations

import shlex
import shutil
import signal
import sys
import time
from pathlib import Path

from rich.console import Console

from playbooks.engines.errors import EngineError
from playbooks.engines.launch import preflight
from playbooks.ssh import ports
from playbooks.runs import state as runstate
from playbooks.settings import setting
from playbooks.settings.defaults import state_dir
from playbooks.ssh import daemons as procs
from playbooks.ssh.fanout import fan_out, q, run_checked, show_failures

console = Console()


def state_file(c, fleet: str) -> Path:
    """Beside the fleet's folder, not in it: a torn-down fleet must not hide a scheduler still running."""
    return state_dir(c) / f"dask-{fleet}" / "dask.json"


def read_state(c, fleet: str) -> dict | None:
    return runstate.read_json(state_file(c, fleet))


def scheduler_alive(state: dict | None):
    """The scheduler process of ``state`` if it still runs (a recycled pid is not ours)."""
    if not state:
        return None
    needles = ("dask_scheduler", f"--port {state.get('port')}")
    return procs.ours(state.get("scheduler_pid"), lambda proc: all(n in " ".join(proc.cmdline()) for n in needles))


def scheduler_host(c, provider: str) -> str:
    host = setting(c, "dask.scheduler_host")
    if host:
        return host
    if provider == "local":
        return "127.0.0.1"  # every local node shares the head's network namespace
    # a cloud node reaches the head only through its reverse SSH tunnel (sshfs); Dask needs both directions
    raise EngineError("dask on a cloud fleet: set dask.scheduler_host to an address of this machine that the nodes "
                      "can reach and that can reach them (a VPN or the same VPC), e.g. "
                      "INVOKE_DASK_SCHEDULER_HOST=10.0.0.5")


def dashboard_available() -> bool:
    import importlib.util
    return importlib.util.find_spec("bokeh") is not None


def scheduler_command(host: str, port: int, dashboard_port: int, log_dir: Path, idle_timeout: str = "") -> list[str]:
    argv = [sys.executable, "-m", "distributed.cli.dask_scheduler", "--host", host, "--port", str(port),
            "--scheduler-file", str(log_dir / "scheduler.json")]
    if idle_timeout:
        argv += ["--idle-timeout", str(idle_timeout)]
    argv += ["--dashboard-address", f"{host}:{dashboard_port}"] if dashboard_available() else ["--no-dashboard"]
    return argv


def start_scheduler(argv: list[str], log: Path) -> int:
    """Start the scheduler detached (its own session, nobody's child once the launcher shell exits)."""
    return procs.detach(argv, log)


def wait_port(host: str, port: int, pid: int, log: Path, timeout: float) -> None:
    import psutil

    def alive() -> bool:
        try:
            return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
        except psutil.Error:
            return False

    if ports.wait_answer(host, port, timeout, alive):
        return
    tail = log.read_text(errors="replace").strip().splitlines()[-1:] if log.exists() else []
    raise EngineError(f"the Dask scheduler did not start on {host}:{port}: {tail[0] if tail else 'no log'} "
                      f"(see {log})")


def worker_command(node, address: str, nworkers: int, nthreads: int, local: bool, mount_wait: float = 60.0) -> str:
    """Shell command that starts ``dask worker`` on the node, detached, and prints its process group id.
    ``mount_wait``: how long a chunk waits for the node's dropped mount (``job.mount_wait``, ``dask_chunk``)."""
    wd = node.workdir
    scratch = f"{wd}/.dask"
    argv = [node.python, "-m", "distributed.cli.dask_worker", address, "--nworkers", str(nworkers),
            "--nthreads", str(nthreads), "--name", node.name, "--local-directory", scratch, "--no-dashboard",
            "--death-timeout", "60"]
    if local:
        argv += ["--host", node.host]  # a local node is its own loopback address, like a machine
    env = (f"FLEETBOOK_MOUNT={q(node.mountpoint)} FLEETBOOK_NODE_NAME={q(node.name)} "
           f"FLEETBOOK_MOUNT_WAIT={q(f'{float(mount_wait):g}')} PYTHONPATH={q(wd + '/workloads')}")
    # only the worker goes to the background (see launch.node_command: bash would hold the channel open)
    return (f"cd {q(wd)} && mkdir -p {q(scratch)} && {{ {env} setsid nohup {shlex.join(argv)} "
            f"> {q(scratch + '/worker.log')} 2>&1 < /dev/null & echo $!; }}")


def stop_group_command(pid: int, grace: float = 5.0) -> str:
    """Shell: SIGTERM the process group, wait up to ``grace`` seconds, then SIGKILL what is left."""
    steps = int(grace / 0.1)
    return (f"kill -TERM -- -{pid} 2>/dev/null || exit 0; i=0; while [ $i -lt {steps} ]; do "
            f"kill -0 -- -{pid} 2>/dev/null || exit 0; sleep 0.1; i=$((i+1)); done; "
            f"kill -KILL -- -{pid} 2>/dev/null; true")


def node_cores(c, conn, provider: str, timeout: float) -> int:
    if provider == "local":
        return max(1, setting(c, "local.cores_per_node"))
    return max(1, int(run_checked(conn, "nproc", timeout).strip() or 1))


def connect_client(address: str, timeout: float = 10.0):
    from distributed import Client
    return Client(address, timeout=f"{timeout}s", set_as_default=False)


# ---------------------------------------------------------------------------------------------------- up/down

def _check_ports(host: str, port: int, dport: int) -> None:
    for p, what in ((port, "dask.port"), (dport, "dask.dashboard_port")):
        if not ports.free(host, p) and (p == port or dashboard_available()):
            raise EngineError(f"port {p} on {host} is taken: choose another with {what} "
                              f"(e.g. INVOKE_DASK_{what.split('.')[1].upper()}={p + 10}) or `invoke dask.down`")


def _start_workers(c, name: str, nodes, provider: str, address: str, nworkers: int):
    nthreads = setting(c, "dask.nthreads")
    ssh_timeout = setting(c, "fleet.ssh_timeout")

    def start(conn, node):
        n = int(nworkers or setting(c, "dask.nworkers") or node_cores(c, conn, provider, ssh_timeout))
        cmd = worker_command(node, address, n, nthreads, provider == "local", setting(c, "job.mount_wait"))
        pgid = int(run_checked(conn, cmd, ssh_timeout).split()[-1])
        return {"pid": pgid, "nworkers": n}

    return fan_out(c, name, nodes, start, step="dask-worker")


def _wait_workers(name: str, address: str, expected: int, timeout: float) -> int:
    """Wait until ``expected`` worker processes joined; returns their threads."""
    with connect_client(address, timeout) as client:
        try:
            client.wait_for_workers(expected, timeout=timeout)
        except TimeoutError:
            have = len(client.scheduler_info(n_workers=-1)["workers"])
            raise EngineError(f"only {have}/{expected} Dask worker(s) joined {address} in {timeout:.0f} s: see "
                              f"<node workdir>/.dask/worker.log on the nodes; `invoke dask.down --name {name}` "
                              f"cleans up") from None
        return sum(w["nthreads"] for w in client.scheduler_info(n_workers=-1)["workers"].values())


def up(c, name: str, nodes, provider: str, nworkers: int = 0, port: int = 0) -> dict:
    provider = provider or setting(c, "fleet.provider")
    state = read_state(c, name)
    if scheduler_alive(state):
        console.print(f"dask: already up for fleet {name} at {state['address']} "
                      f"({len(state['workers'])} node(s)); `invoke dask.down` first to change it")
        return state
    if state:  # a scheduler that died (idle timeout, reboot): its workers must not join the new one twice
        down(c, name, nodes)
    host = scheduler_host(c, provider)
    port = setting(c, "dask.port", port or None)
    dport = setting(c, "dask.dashboard_port")
    _check_ports(host, port, dport)
    preflight(c, name, nodes, "fleetwork")  # mounted and deployed, else a one-line error
    log_dir = state_file(c, name).parent
    log_dir.mkdir(parents=True, exist_ok=True)
    log = log_dir / "scheduler.log"
    timeout = setting(c, "dask.start_timeout")
    pid = start_scheduler(scheduler_command(host, port, dport, log_dir, setting(c, "dask.idle_timeout")), log)
    address = f"tcp://{host}:{port}"
    state = {"fleet": name, "provider": provider, "address": address, "host": host, "port": port,
             "dashboard": f"http://{host}:{dport}/status" if dashboard_available() else None,
             "scheduler_pid": pid, "started_at": time.time(), "workers": {}}
    runstate.write_json(state_file(c, name), state)  # written at once: `dask.down` can clean a half start
    wait_port(host, port, pid, log, timeout)

    results = _start_workers(c, name, nodes, provider, address, nworkers)
    state["workers"] = {r.node.name: r.value for r in results if r.ok}
    runstate.write_json(state_file(c, name), state)
    failed = show_failures(results)
    expected = sum(w["nworkers"] for w in state["workers"].values())
    threads = _wait_workers(name, address, expected, timeout)
    console.print(f"dask: scheduler {address}  ({expected} worker process(es), {threads} thread(s) on "
                  f"{len(state['workers'])} node(s))")
    console.print(f"dask: dashboard {state['dashboard']}" if state["dashboard"]
                  else "dask: no dashboard (install bokeh on the head for one)")
    if failed:
        raise EngineError("dask workers did not start on some nodes (see the table above)")
    return state


def _stray_workers(name: str) -> list:
    """Local worker processes of fleet ``name`` (a node whose record was lost: its worker carries the marker)."""
    import psutil
    stray = []
    for proc in psutil.process_iter(["cmdline"]):
        try:
            if ("dask_worker" in " ".join(proc.info["cmdline"] or [])
                    and proc.environ().get("FLEETBOOK_NODE", "").startswith(name + "/")):
                stray.append(proc)
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
            continue
    return stray


def down(c, name: str, nodes) -> int:
    """Stop the workers (one process group per node) and the scheduler; returns how many things it stopped."""
    state = read_state(c, name)
    if not state:
        console.print(f"dask: nothing running for fleet {name}")
        return 0
    stopped = 0
    groups = state.get("workers", {})
    targets = [n for n in nodes if n.name in groups]
    if targets:
        timeout = setting(c, "fleet.ssh_timeout") + 10
        results = fan_out(c, name, targets, lambda conn, n: run_checked(
            conn, stop_group_command(int(groups[n.name]["pid"])), timeout), step="dask-stop")
        stopped += sum(r.ok for r in results)
        show_failures(results)
    if state.get("provider") == "local":
        procs.kill_all(_stray_workers(name))
    sched = scheduler_alive(state)
    if sched:
        procs.kill_all(procs.kill_all([sched], signal.SIGTERM, timeout=10))
        stopped += 1
    shutil.rmtree(state_file(c, name).parent, ignore_errors=True)
    console.print(f"dask: stopped the scheduler {state['address']} and the workers of "
                  f"{len(targets)} node(s)")
    return stopped
