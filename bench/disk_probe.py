"""What the shared disk costs a node per item: one real workload run through the node's mount, measured.

``invoke bench --node`` runs this on the node (from its workdir, beside ``workloads/``), after the pytest part:

    python bench/disk_probe.py --src MNT/src --scratch MNT/.fleetbook-probe/NODE --workload resize --items 200

It copies a sample of ``--items`` inputs of ``--src`` (spread by the hash of their names, among the first
``20 * items`` found) into ``SCRATCH/src`` on the same mount, then runs ``workloads/<workload>.py --workers 1``
from there into ``SCRATCH/dst-<workload>``, as a fleet run would (claims, temp file + rename, skip scan), and measures:

* ``node_cpu_s``: CPU seconds of the sshfs process serving this mount and of its ssh child, during the run
  (read from /proc: no psutil needed on the node);
* ``work_cpu_s``: CPU seconds of the workload run itself (its process and its workers);
* ``seconds``: the workload's own processing time (its last line, ``seconds=S``), one worker: per item, the
  work plus every wait on the mount (reads, claims, writes, renames);
* ``start_cpu_s`` (``--step start``, its own JSON line): CPU seconds of one run of the same workload that has
  nothing to do (an empty source folder on the same mount): its interpreter, imports, listing, scan and exit,
  i.e. the part of ``work_cpu_s`` that every node pays once, whatever its number of items.  A local fleet's
  nodes pay it together on the machine they share (``invoke plan`` counts it there).

``--step help`` runs the same sample once more into a fresh ``SCRATCH/dst-help-<workload>``, as two shards at
once (``--shard 0/2`` and ``--shard 1/2``, two runners through the same mount, the claims deciding who does
what): each runner, done with its own shard, goes over the other's (claims its blocks, checks each output
before doing the item, reads ahead), which a fleet of ``n`` nodes does ``n - 1`` times over.  It prints the
same figures (``node_cpu_s``, ``work_cpu_s``, ``done``, ``seconds``) for both runners together.

It prints one JSON line and removes the scratch folder.  ``invoke bench --node`` runs the three steps apart
(``--step prepare|start|run|clean``) and measures the head's side (its sshd's SFTP sessions) on the operator's machine
around ``run`` alone: copying the sample in and removing it cost the head too, and are no part of an item.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import resource
import shutil
import subprocess
import sys
import time

IMAGES = (".jpg", ".jpeg", ".png", ".webp", ".gif", ".bmp", ".tif", ".tiff")


def sample(src: str, n: int) -> list[str]:
    found = []
    for folder, dirs, files in os.walk(src):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for name in sorted(files):
            if name.lower().endswith(IMAGES) and not name.startswith("."):
                found.append(os.path.relpath(os.path.join(folder, name), src))
        if len(found) >= 20 * n:
            break
    return sorted(found, key=lambda p: hashlib.sha1(p.encode("utf-8", "surrogateescape")).hexdigest())[:n]


def _processes():
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            if os.stat(f"/proc/{entry}").st_uid != os.getuid():
                continue
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                argv = [a.decode("utf-8", "replace") for a in f.read().split(b"\0") if a]
        except OSError:
            continue
        if argv:
            yield int(entry), argv


def mount_pids(mountpoint: str) -> list[int]:
    """This user's sshfs process whose command line names ``mountpoint``, and the ssh it talks through (sshfs
    daemonizes, so that ssh is not its child: it is the ``-s sftp`` ssh with the same IdentityFile)."""
    want = os.path.realpath(mountpoint)
    procs = list(_processes())
    sshfs = [(pid, argv) for pid, argv in procs
             if os.path.basename(argv[0]) == "sshfs" and any(os.path.realpath(a) == want for a in argv[1:])]
    keys = {a.split("IdentityFile=", 1)[1] for _, argv in sshfs for a in argv if "IdentityFile=" in a}
    ssh = [pid for pid, argv in procs if os.path.basename(argv[0]) == "ssh" and "sftp" in argv
           and (not keys or any("IdentityFile=" in a and a.split("IdentityFile=", 1)[1] in keys for a in argv))]
    return [pid for pid, _ in sshfs] + ssh


def cpu_s(pids: list[int]) -> float:
    tick = os.sysconf("SC_CLK_TCK")
    total = 0.0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            total += (int(fields[11]) + int(fields[12])) / tick     # utime, stime
        except (OSError, ValueError, IndexError):
            continue
    return total


def mountpoint_of(path: str) -> str:
    path = os.path.realpath(path)
    while not os.path.ismount(path) and path != "/":
        path = os.path.dirname(path)
    return path


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--src", required=True, help="the job's input folder, on the node's mount")
    ap.add_argument("--scratch", required=True, help="a folder on the same mount to use and remove")
    ap.add_argument("--workload", default="resize")
    ap.add_argument("--items", type=int, default=200)
    ap.add_argument("--args", default="", help="extra workload arguments, one shell-quoted string")
    ap.add_argument("--step", choices=("prepare", "start", "run", "help", "clean", "all"), default="all",
                    help="prepare: copy the sample; start: the CPU of a run with nothing to do; run: the measured "
                         "run; help: the same as two shards at once; clean: remove the scratch folder; all: "
                         "prepare, run, clean (invoke bench --node runs them apart, measuring the head around "
                         "`run` and `help` only)")
    a = ap.parse_args(argv)
    if a.step in ("prepare", "all"):
        items = sample(a.src, a.items)
        if not items:
            print(json.dumps({"workload": a.workload, "items": 0, "error": f"no images in {a.src}"}))
            return 0
        shutil.rmtree(a.scratch, ignore_errors=True)
        for item in items:
            dst = os.path.join(a.scratch, "src", item)
            os.makedirs(os.path.dirname(dst), exist_ok=True)
            shutil.copyfile(os.path.join(a.src, item), dst)
    if a.step == "start":
        print(json.dumps({"workload": a.workload, "start_cpu_s": start_cpu_s(a)}))
    if a.step in ("run", "all"):
        measure(a)
    if a.step == "help":
        measure(a, shards=2)
    if a.step in ("clean", "all"):
        shutil.rmtree(a.scratch, ignore_errors=True)
    return 0


def children_cpu_s() -> float:
    used = resource.getrusage(resource.RUSAGE_CHILDREN)
    return used.ru_utime + used.ru_stime


def workload_cmd(a, src: str, dst: str) -> list[str]:
    return [sys.executable, f"workloads/{a.workload}.py", "--src", src, "--dst", dst, "--workers", "1", "--quiet",
            *a.args.split()]


def start_cpu_s(a) -> float | None:
    """CPU seconds of a run with nothing to do, through the same mount (None: it failed)."""
    empty, dst = (os.path.join(a.scratch, f"{what}-{a.workload}") for what in ("empty", "dst-start"))
    os.makedirs(empty, exist_ok=True)
    before = children_cpu_s()
    out = subprocess.run(workload_cmd(a, empty, dst), capture_output=True, text=True)
    used = children_cpu_s() - before
    shutil.rmtree(empty, ignore_errors=True)
    shutil.rmtree(dst, ignore_errors=True)
    return used if out.returncode == 0 else None


def measure(a, shards: int = 1) -> None:
    """The measured run: one runner, or ``shards`` runners at once, one shard each."""
    items = [f for _, _, files in os.walk(os.path.join(a.scratch, "src")) for f in files]
    pids = mount_pids(mountpoint_of(a.scratch))
    dst = os.path.join(a.scratch, f"dst-{a.workload}" if shards == 1 else f"dst-help-{a.workload}")
    cmd = workload_cmd(a, os.path.join(a.scratch, "src"), dst)
    cmds = [cmd] if shards == 1 else [cmd + ["--shard", f"{i}/{shards}", "--node", f"probe-{i}"]
                                      for i in range(shards)]
    before_node, before_work, t0 = cpu_s(pids), children_cpu_s(), time.perf_counter()
    procs = [subprocess.Popen(c, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for c in cmds]
    outs = [(p, *p.communicate()) for p in procs]
    wall = time.perf_counter() - t0
    after_node, after_work = cpu_s(pids), children_cpu_s()
    done = failed = 0
    seconds = 0.0
    for _p, stdout, _err in outs:
        last = (stdout.strip().splitlines() or [""])[-1]
        fields = dict(kv.split("=", 1) for kv in last.split() if "=" in kv)
        done, failed = done + int(fields.get("done", 0)), failed + int(fields.get("failed", 0))
        seconds = max(seconds, float(fields.get("seconds", wall)))
    code = max(p.returncode for p in procs)
    print(json.dumps({
        "workload": a.workload, "items": len(items), "done": done, "failed": failed, "seconds": seconds,
        "wall_s": wall, "node_cpu_s": after_node - before_node, "mount_processes": len(pids), "shards": shards,
        "work_cpu_s": after_work - before_work,
        "exit": code, "stderr": "".join(err for _p, _o, err in outs)[-400:] if code else ""}))


if __name__ == "__main__":
    sys.exit(main())
