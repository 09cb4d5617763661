"""What the shared disk costs in CPU, per item, on the nodes and on the head (issue 15).

One local fleet of two nodes (one worker each).  For resize and for features, in one run:

* ``work_ms``: the workload's own CPU per item, one process (``--workers 1``) on the head's own disk (the CPU of
  a run of N items minus that of a run of a few, so the interpreter's start and imports do not count);
* ``node_ms``: CPU per item of the nodes' sshfs processes and their ssh clients during ``invoke run --wait``;
* ``head_ms``: CPU per item of the head's SFTP sshd and its children (one per mount, internal-sftp);
* ``disk_over_work``: (node + head) / work, the goal is at most 0.25 for resize;
* ``sftp_ops``: SFTP requests per item by kind: one ``--workers 1`` run through node 0's own sshfs command,
  started here in the foreground with ``-o sshfs_debug`` (which logs every request);
* ``throughput_ratio``: the runbook's images/s over one plain process pool of as many workers on the same
  cores (goals: 0.8 resize, 0.9 features), best of three rounds each, the pool's run just before each runbook
  round (``ratio_per_round``: the spread); it is the noisy one on a shared machine.  ``fixed_s``: the same run
  on the finished folder (start over SSH, listing, the wait for the exit files): what a run costs whatever its
  items; ``ratio_less_fixed`` leaves it out;
* ``node_cores_per_head_core``: how many busy node cores (work + their own sshfs) one head core can feed.

* ``test_sftp_request_and_byte_cost``: CPU per SFTP request (STAT) and per 64 KiB READ, on the head's session
  and in the node's ssh client, for AES-GCM and chacha20-poly1305: the floor of the FUSE/SFTP path is
  (requests per item) x (per request) + (KiB per item) x (per KiB);
* ``test_lever_chunk_in_one_sftp_stream``: the lever "a chunk's inputs and outputs in one SFTP stream" (one
  ``sftp -b`` session per node, a batch of gets into a node-local folder, a batch of put-to-temp + rename):
  node and head CPU per item and requests per item, to set against the sshfs path above.

``FLEETBOOK_BENCH_MOUNT_OPTS`` (comma-separated sshfs options, added to the mount) and ``FLEETBOOK_BENCH_ENV``
(``K=V,K=V`` put in the nodes' environment, e.g. ``FLEETBOOK_CLAIMS=0``) let one lever at a time be measured.
Ratios of one run, never absolute seconds.
"""
from __future__ import annotations

import collections
import os
import re
import resource
import secrets
import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest
from bench_support import workload_cpu_s

from tests.support.fleet import bench_base, make_ctx

from playbooks import deploy, fleet, mount, progress, run, teardown
from playbooks.providers import local
from playbooks.runs.samples import make_samples
from playbooks.settings.defaults import fleet_dir

REPO = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.fleet
NAME = "dcost" + secrets.token_hex(2)
REQUEST = re.compile(r"^\[\d+\]\s+([A-Z_]+)", re.M)   # sshfs_debug: "[00042] OPEN"


def _env_extra() -> dict:
    raw = os.environ.get("FLEETBOOK_BENCH_ENV", "")
    return dict(kv.split("=", 1) for kv in raw.split(",") if "=" in kv)


@pytest.fixture(scope="module")
def cost_fleet(tmp_path_factory, sized, monkeypatch_module):
    base = bench_base(tmp_path_factory, "costfleet")
    c = make_ctx(base, local__cores_per_node=1, job__poll=0.1)
    images = sized(small=24, default=480, large=3000)
    make_samples(base / "data" / "src", images)
    extra_opts = os.environ.get("FLEETBOOK_BENCH_MOUNT_OPTS", "")
    if extra_opts:
        real = mount.mount_command
        monkeypatch_module.setattr(mount, "mount_command", lambda node, head: real(node, head).replace(
            "sshfs -o ", f"sshfs -o {extra_opts},", 1))
    extra_env = _env_extra()
    if extra_env:
        from playbooks import supervise
        real_env = supervise.node_env_extra
        monkeypatch_module.setattr(run, "node_env_extra", lambda c_, p: {**real_env(c_, p), **extra_env})
    try:
        fleet.create(c, n=2, name=NAME)
        mount.mount(c, name=NAME)
        deploy.deploy(c, name=NAME)
        yield c, base, images
    finally:
        teardown.teardown(c, name=NAME)
        shutil.rmtree(base, ignore_errors=True)


@pytest.fixture(scope="module")
def monkeypatch_module():
    mp = pytest.MonkeyPatch()
    yield mp
    mp.undo()


# ------------------------------------------------------------------------------------------------ CPU
def _cpu(proc: psutil.Process) -> float:
    t = proc.cpu_times()
    return t.user + t.system + t.children_user + t.children_system


def head_procs(c) -> list[psutil.Process]:
    """The head's SFTP sshd and every process below it (per-connection sshd, internal-sftp runs inside)."""
    pid = int((fleet_dir(c, NAME) / "head" / "sshd.pid").read_text())
    top = psutil.Process(pid)
    return [top, *top.children(recursive=True)]


def node_disk_procs(c) -> list[psutil.Process]:
    """Every node's sshfs (run by the node's user fb-<fleet>-<i> as root, else named by its node folder) and the
    ssh client below it."""
    found = []
    for p in psutil.process_iter(["name", "cmdline", "username"]):
        try:
            cmd = " ".join(p.info["cmdline"] or [])
            if p.info["name"] == "sshfs" and ((p.info["username"] or "").startswith(f"fb-{NAME}-")
                                              or f"/{NAME}/" in cmd):
                found += [p, *p.children(recursive=True)]
        except psutil.Error:
            continue
    return found


class Meter:
    """CPU seconds used by groups of long-lived processes between two samples.  Each group is found again at
    every sample (``finders``: name -> callable listing its processes), so a process that started in between
    (e.g. a second ssh of sshfs ``max_conns``) counts from zero; ``delta`` subtracts per process."""

    def __init__(self, finders: dict):
        self.finders = finders

    def sample(self) -> dict:
        """Per group, per pid: (CPU seconds, context switches (voluntary + not), read + write syscalls)."""
        out = {}
        for name, find in self.finders.items():
            got = {}
            for p in find():
                try:
                    io = p.io_counters()
                    got[(p.pid, p.create_time())] = (_cpu(p), sum(p.num_ctx_switches()), io.read_count + io.write_count)
                except psutil.Error:
                    pass
            out[name] = got
        return out

    @staticmethod
    def delta(before: dict, after: dict) -> dict:
        """Per group: CPU seconds, and ``<group>_switches``, ``<group>_rw_calls`` between two samples."""
        out = {}
        for name, procs in after.items():
            sums = [0.0, 0, 0]
            for key, vals in procs.items():
                was = before.get(name, {}).get(key, (0.0, 0, 0))
                for k in range(3):
                    sums[k] += vals[k] - was[k]
            out[name], out[f"{name}_switches"], out[f"{name}_rw_calls"] = sums
        return out


def work_cpu_per_item(base: Path, workload: str, n: int) -> float:
    """The workload's own CPU per item in one process on local disk: (CPU(n) - CPU(k)) / (n - k)."""
    k = max(2, n // 16)
    small = base / "data" / "src-few"
    if not small.exists():
        for f in sorted(p for p in (base / "data" / "src").rglob("*") if p.is_file())[:k]:
            target = small / f.relative_to(base / "data" / "src")
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(f, target)

    def cpu_of(src: Path) -> float:
        dst = base / "data" / f"local-{workload}"
        shutil.rmtree(dst, ignore_errors=True)
        return workload_cpu_s(workload, ["--src", src, "--dst", dst],
                              {**os.environ, "FLEETBOOK_PROFILE": "/nonexistent"})

    few = min(cpu_of(small) for _ in range(2))
    many = min(cpu_of(base / "data" / "src") for _ in range(2))
    return max(0.0, many - few) / (n - k)


def pool_seconds(base: Path, workload: str, workers: int) -> float:
    dst = base / "data" / f"pool-{workload}"
    shutil.rmtree(dst, ignore_errors=True)
    t0 = time.perf_counter()
    subprocess.run([sys.executable, str(REPO / "workloads" / f"{workload}.py"), "--src", str(base / "data" / "src"),
                    "--dst", str(dst), "--workers", str(workers), "--quiet"], check=True, capture_output=True)
    return time.perf_counter() - t0


def sshfs_argv(c, node, mp: str) -> list[str]:
    """The node's own sshfs command (``mount.mount_command``, its options as they are) for a mount at ``mp``."""
    from playbooks.mount import head_for
    cmd = mount.mount_command(node, head_for(c, NAME, ""))
    words = shlex.split(cmd[cmd.index("sshfs -o "):].split(" && ")[0])
    return [*words[:-1], mp]


def count_requests(c, base: Path, workload: str) -> tuple[collections.Counter, int]:
    """SFTP requests by kind of one ``--workers 1`` run of ``workload`` over node 0's sshfs command (run here in
    the foreground with ``sshfs_debug``), reading src and writing a folder of its own on the shared disk."""
    from playbooks.ssh.sftp_head import give_to_nodes
    node = local.list_nodes(c, NAME)[0]
    mp = base / f"debug-mnt-{workload}"
    mp.mkdir(exist_ok=True)
    dst = f"debug-{workload}"
    shutil.rmtree(base / "data" / dst, ignore_errors=True)
    (base / "data" / dst).mkdir()
    give_to_nodes(c, dst)
    log = base / f"sshfs-debug-{workload}.log"
    argv = sshfs_argv(c, node, str(mp))
    with open(log, "wb") as out:
        proc = subprocess.Popen([argv[0], "-f", "-o", "sshfs_debug", *argv[1:]], stdout=out, stderr=out)
    try:
        for _ in range(200):
            if os.path.ismount(mp):
                break
            time.sleep(0.05)
        else:
            raise AssertionError(f"debug mount did not come up: {log.read_text()[-500:]}")
        at = log.stat().st_size
        subprocess.run([sys.executable, str(REPO / "workloads" / f"{workload}.py"), "--src", f"{mp}/src",
                        "--dst", f"{mp}/{dst}", "--workers", "1", "--quiet"], check=True, capture_output=True,
                       env={**os.environ, "FLEETBOOK_PROFILE": "/nonexistent", **_env_extra()})
        with open(log, "rb") as f:
            f.seek(at)
            text = f.read().decode("utf-8", "replace")
        if os.environ.get("FLEETBOOK_BENCH_KEEP_LOG"):     # the request log, to read the sequence per item
            shutil.copy(log, f"{os.environ['FLEETBOOK_BENCH_KEEP_LOG']}-{workload}.log")
    finally:
        subprocess.run(["fusermount3", "-u", "-z", str(mp)], capture_output=True)
        proc.terminate()
        proc.wait(10)
    return collections.Counter(REQUEST.findall(text)), len(list((base / "data" / dst).rglob("*.*")))


@pytest.mark.parametrize("workload", ["resize", "features"])
def test_disk_cpu_per_item(benchmark, cost_fleet, workload):
    """CPU per item of the nodes' sshfs + ssh and of the head's sshd, next to the work's own, and the runbook's
    throughput over one pool's (see the module docstring)."""
    benchmark.group = "fleet: shared-disk CPU per item"
    c, base, images = cost_fleet
    nodes = local.list_nodes(c, NAME)
    work = work_cpu_per_item(base, workload, images)
    pools = []
    meter = Meter({"node": lambda: node_disk_procs(c), "head": lambda: head_procs(c)})
    found = meter.sample()
    assert found["node"] and found["head"], found
    ops, _ = count_requests(c, base, workload)
    runs = []

    def clear():   # the pool's run just before each runbook round: the machine's load is about the same for both
        pools.append(pool_seconds(base, workload, len(nodes)))
        shutil.rmtree(base / "data" / "fleet", ignore_errors=True)
        return (), {}

    def runbook():
        before, t0 = meter.sample(), time.perf_counter()
        snap = progress.wait_until_finished(c, run.start(c, NAME, nodes, workload, "src", "fleet", ""))
        secs, after = time.perf_counter() - t0, meter.sample()
        assert snap["done"] == images
        runs.append((secs, Meter.delta(before, after)))

    benchmark.pedantic(runbook, setup=clear, rounds=3, iterations=1)
    t0 = time.perf_counter()     # the same run on the finished folder: what a run costs whatever its items
    again = progress.wait_until_finished(c, run.start(c, NAME, nodes, workload, "src", "fleet", ""))
    fixed = time.perf_counter() - t0
    assert again["done"] == images, again     # counted as done: every output is there
    pool = min(pools)
    paired = sorted(p / r[0] for p, r in zip(pools, runs))
    _secs, cpu = min(runs, key=lambda r: r[1]["node"] + r[1]["head"])
    fleet_s = min(r[0] for r in runs)
    node_ms, head_ms, work_ms = (cpu["node"] / images * 1e3, cpu["head"] / images * 1e3, work * 1e3)
    per_item_ops = {k: round(v / images, 2) for k, v in sorted(ops.items())}
    info = dict(images=images, work_ms=round(work_ms, 3), node_ms=round(node_ms, 3), head_ms=round(head_ms, 3),
                disk_over_work=round((node_ms + head_ms) / work_ms, 3) if work_ms else None,
                sftp_ops_per_item=round(sum(ops.values()) / images, 2), sftp_ops=per_item_ops,
                pool_s=round(pool, 3), fleet_s=round(fleet_s, 3), throughput_ratio=round(pool / fleet_s, 3),
                ratio_per_round=[round(x, 2) for x in paired], fixed_s=round(fixed, 3),
                ratio_less_fixed=round(pool / (fleet_s - fixed), 3) if fleet_s > fixed else None,
                node_cores_per_head_core=round((work_ms + node_ms) / head_ms, 1) if head_ms else None,
                switches_per_item={k: round(cpu[f"{k}_switches"] / images, 1) for k in ("node", "head")},
                rw_syscalls_per_item={k: round(cpu[f"{k}_rw_calls"] / images, 1) for k in ("node", "head")},
                us_per_request={k: round(cpu[k] / max(1, sum(ops.values())) * 1e6) for k in ("node", "head")},
                mount_opts=os.environ.get("FLEETBOOK_BENCH_MOUNT_OPTS", ""),
                node_env=os.environ.get("FLEETBOOK_BENCH_ENV", ""))
    benchmark.extra_info.update(info)
    print(f"\n{workload}: work {work_ms:.2f} ms/item; node sshfs+ssh {node_ms:.2f} ms; head sshd {head_ms:.2f} ms; "
          f"disk/work {info['disk_over_work']}; runbook/pool {info['throughput_ratio']} (rounds "
          f"{info['ratio_per_round']}; a run of the finished folder takes {fixed:.2f} s, without it "
          f"{info['ratio_less_fixed']}); one head core feeds {info['node_cores_per_head_core']} busy node cores; "
          f"SFTP requests/item {info['sftp_ops_per_item']}: "
          f"{per_item_ops}; context switches/item {info['switches_per_item']}; read+write syscalls/item "
          f"{info['rw_syscalls_per_item']}")
    assert work_ms > 0 and node_ms > 0 and head_ms > 0


# --------------------------------------------------------------------------- the SFTP path's floor (issue 15)
def node_ssh_argv(c, node, cipher: str = "") -> list[str]:
    """ssh from node ``node`` to the head as its sshfs makes it (``mount.ssh_options``, the node key, the pinned
    host key); ``cipher`` first when given (ssh takes the first value of an option)."""
    from playbooks.mount import head_for
    head = head_for(c, NAME, "")
    home = node.labels["home"]
    opts = [*([f"Ciphers={cipher}"] if cipher else []), *mount.ssh_options(head),
            f"IdentityFile={home}/.ssh/fleet_head", f"UserKnownHostsFile={home}/.ssh/known_hosts"]
    return ["-F", "/dev/null", *(w for o in opts for w in ("-o", o)), f"{head.user}@{head.host}"]


def _sessions(c, before: set[int]) -> list[psutil.Process]:
    return [p for p in head_procs(c) if p.pid not in before]


def _own_cpu(procs) -> float:
    total = 0.0
    for p in procs:
        try:
            t = p.cpu_times()
            total += t.user + t.system
        except psutil.Error:
            pass
    return total


def sftp_costs(c, node, rel: str, cipher: str, n: int) -> dict:
    """One SFTP session (OpenSSH's ssh as the transport, paramiko speaking SFTP over its stdin/stdout): CPU per
    request of the node's ssh client, of the head's session (its sshd processes) and of the paramiko client, for
    ``n`` STATs of ``rel`` and ``n`` 64 KiB READs of it (sshfs' largest read)."""
    import socket

    import paramiko
    from paramiko.sftp import CMD_READ, CMD_STAT
    from paramiko.sftp_file import int64

    before = {p.pid for p in head_procs(c)}
    mine, theirs = socket.socketpair()
    ssh = subprocess.Popen(["ssh", "-s", *node_ssh_argv(c, node, cipher), "sftp"], stdin=theirs, stdout=theirs)
    theirs.close()
    class Quiet(paramiko.SFTPClient):
        def _log(self, *args, **kwargs):    # it names its channel in each line: a plain socket has none
            pass

    sftp = Quiet(mine)
    try:
        session = _sessions(c, before)
        me = psutil.Process(ssh.pid)
        opened = sftp.open(rel, "rb")      # kept: the handle closes with it
        handle = opened.handle
        out = {}
        for kind, call in (("stat", lambda: sftp._request(CMD_STAT, rel)),
                           ("read64k", lambda: sftp._request(CMD_READ, handle, int64(0), 65536))):
            call()
            h0, s0, p0 = _own_cpu(session), _own_cpu([me]), time.process_time()
            for _ in range(n):
                call()
            out[kind] = {"head_us": (_own_cpu(session) - h0) / n * 1e6, "ssh_us": (_own_cpu([me]) - s0) / n * 1e6,
                         "paramiko_us": (time.process_time() - p0) / n * 1e6}
        return out
    finally:
        sftp.close()
        mine.close()
        ssh.wait(10)


def test_sftp_request_and_byte_cost(cost_fleet):
    """Per request and per byte, on the head and in the node's ssh, by cipher: the floor of the FUSE/SFTP path
    is (requests per item) x (per request) + (bytes per item) x (per byte), plus sshfs' own per request."""
    c, base, images = cost_fleet
    node = local.list_nodes(c, NAME)[0]
    rel = sorted(p for p in (base / "data" / "src").rglob("*.jpg"))[0].relative_to(base / "data").as_posix()
    n = 5000
    info = {}
    for cipher in ("aes128-gcm@openssh.com", "chacha20-poly1305@openssh.com"):
        got = sftp_costs(c, node, rel, cipher, n)
        per_kb = {k: (got["read64k"][k] - got["stat"][k]) / 64 for k in ("head_us", "ssh_us")}
        info[cipher.split("@")[0]] = {"per_request_us": {k: round(v, 1) for k, v in got["stat"].items()},
                                      "per_64k_read_us": {k: round(v, 1) for k, v in got["read64k"].items()},
                                      "per_kib_us": {k: round(v, 3) for k, v in per_kb.items()}}
    print(f"\nSFTP per request and per KiB (head session, node ssh client, paramiko client), {n} each: {info}")
    for v in info.values():
        assert v["per_request_us"]["head_us"] > 0 and v["per_64k_read_us"]["head_us"] > v["per_request_us"]["head_us"]


# --------------------------------------------------------------- lever: a chunk in one SFTP stream (issue 15)
SFTP_REQ = re.compile(r"^debug\d: request \d+: ([a-z@.-]+)", re.M)


class SftpStream:
    """One OpenSSH ``sftp -b -`` session from node ``node`` to the head, kept for a whole run as a streaming
    runner would: ``do(lines)`` sends a batch and waits for its end (an ``lpwd`` after it, whose answer sftp
    prints line-buffered); ``cpu()`` the CPU seconds so far of sftp + ssh and of the head's session."""

    def __init__(self, c, node, cwd: Path):
        before = {p.pid for p in head_procs(c)}
        self.err = open(cwd / "sftp.err", "w+")
        self.proc = subprocess.Popen(["sftp", "-q", "-B", "262144", "-b", "-", *node_ssh_argv(c, node)],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self.err, text=True,
                                     cwd=cwd)
        self.do([])
        self.node = [psutil.Process(self.proc.pid), *psutil.Process(self.proc.pid).children(recursive=True)]
        self.head = _sessions(c, before)
        assert self.head, "no head session found"

    def do(self, lines: list[str]) -> None:
        self.proc.stdin.write("".join(f"{line}\n" for line in lines) + "lpwd\n")
        self.proc.stdin.flush()
        for line in self.proc.stdout:
            if line.startswith("Local working directory"):
                return
        self.err.seek(0)
        raise AssertionError(f"sftp ended: {self.err.read()[-500:]}")

    def cpu(self) -> tuple[float, float]:
        return _own_cpu(self.node), _own_cpu(self.head)

    def close(self) -> None:
        self.proc.stdin.close()
        self.proc.wait(30)
        self.proc.stdout.close()
        self.err.close()


def _count_batch(base: Path, lines: list[str], cwd: Path) -> collections.Counter:
    """SFTP requests of the same batch, by kind, against a local sftp-server that logs each one."""
    batch = cwd / "batch"
    batch.write_text("\n".join(lines) + "\n")
    got = subprocess.run(["sftp", "-q", "-B", "262144", "-b", str(batch), "-D",
                          f"/usr/lib/openssh/sftp-server -e -l DEBUG3 -d {shlex.quote(str(base / 'data'))}"],
                         capture_output=True, text=True, cwd=cwd)
    assert got.returncode == 0, got.stderr[-500:]
    return collections.Counter(k for k in SFTP_REQ.findall(got.stderr) if k not in ("limits", "realpath", "sent"))


def test_lever_chunk_in_one_sftp_stream(cost_fleet):
    """Lever (not built in the runner): node 0 keeps ONE ``sftp -b`` session to the head; for each chunk it
    fetches the chunk's inputs into a node-local folder with one batch, runs resize there, and pushes the outputs
    back with one more (put to a temp name + rename: atomic).  CPU per item of sftp + ssh (node) and of the
    head's session, SFTP requests per item; a session's own start (key exchange, login) apart."""
    import tempfile

    c, base, images = cost_fleet
    node = local.list_nodes(c, NAME)[0]
    from playbooks.ssh.sftp_head import give_to_nodes
    src = base / "data" / "src"
    rels = sorted(p.relative_to(src).as_posix() for p in src.rglob("*.jpg"))
    dst = "stream-resize"
    shutil.rmtree(base / "data" / dst, ignore_errors=True)
    (base / "data" / dst).mkdir()
    give_to_nodes(c, dst)
    chunk = max(8, len(rels) // 10)
    ops: collections.Counter = collections.Counter()
    with tempfile.TemporaryDirectory(dir=base) as tmp:
        work = Path(tmp)
        empty = []
        for _ in range(3):             # a session's start and end alone: sftp + ssh on the node
            before = resource.getrusage(resource.RUSAGE_CHILDREN)
            subprocess.run(["sftp", "-q", "-b", "/dev/null", *node_ssh_argv(c, node)], check=True,
                           capture_output=True)
            after = resource.getrusage(resource.RUSAGE_CHILDREN)
            empty.append((after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime))
        stream = SftpStream(c, node, work)
        node0, head0 = stream.cpu()
        stream.do(["ls -1 " + dst])    # skip-if-done: one listing (of each output folder) per run
        made: set[str] = set()
        for at in range(0, len(rels), chunk):
            part = rels[at:at + chunk]
            inp, out = work / "in", work / "out"
            shutil.rmtree(inp, ignore_errors=True)
            shutil.rmtree(out, ignore_errors=True)
            for r in part:
                (inp / r).parent.mkdir(parents=True, exist_ok=True)
            gets = [f'get "src/{r}" "in/{r}"' for r in part]
            stream.do(gets)
            if at == 0:
                ops += _count_batch(base, gets, work)
            subprocess.run([sys.executable, str(REPO / "workloads" / "resize.py"), "--src", str(inp), "--dst",
                            str(out), "--workers", "1", "--quiet"], check=True, capture_output=True,
                           env={**os.environ, "FLEETBOOK_PROFILE": "/nonexistent"})
            outs = sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file())
            puts = []
            for o in outs:
                folder = os.path.dirname(o)
                if folder and folder not in made:
                    made.add(folder)
                    puts.append(f'-mkdir "{dst}/{folder}"')
                tmpname = f"{folder}/.{os.path.basename(o)}.tmp-{secrets.token_hex(4)}".lstrip("/")
                puts += [f'put "out/{o}" "{dst}/{tmpname}"', f'rename "{dst}/{tmpname}" "{dst}/{o}"']
            stream.do(puts)
            if at == 0:
                (base / "data" / "stream-count").mkdir(exist_ok=True)
                ops += _count_batch(base, [p.replace(f'"{dst}/', '"stream-count/') for p in puts], work)
        node1, head1 = stream.cpu()
        stream.close()
    shutil.rmtree(base / "data" / "stream-count", ignore_errors=True)
    n = len(rels)
    first = min(chunk, n)
    info = dict(images=n, chunk=chunk, node_ms=round((node1 - node0) / n * 1e3, 3),
                head_ms=round((head1 - head0) / n * 1e3, 3), session_start_node_ms=round(min(empty) * 1e3, 1),
                sftp_ops_per_item=round(sum(ops.values()) / first, 2),
                sftp_ops={k: round(v / first, 2) for k, v in sorted(ops.items())})
    print(f"\nlever, a chunk in one sftp -b stream (resize): {info}")
    done = {p.relative_to(base / "data" / dst).as_posix() for p in (base / "data" / dst).rglob("*.jpg")}
    assert len(done) == n and not [p for p in (base / "data" / dst).rglob(".*")], "every output, no temp left"
