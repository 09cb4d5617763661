"""The fleet's head instance as the operator reaches it: its shared root over SFTP, and counting run there.

Moved out of the providers (the providers know nothing of the workloads): a provider only says
where the head instance is (``find_head(c, fleet)``); what lives on its disk, and the counting that ships the
workloads' own code there (every ``workloads/*.py``) and runs ``import fleetwork``, is the run layer's.
``runs/disk.py`` wraps it as the shared disk of a fleet with a head instance.
"""
from __future__ import annotations

import json
import stat
import uuid
from dataclasses import replace
from shlex import quote as q
from typing import TYPE_CHECKING

from playbooks.fs.safefs import Refused, rel_path
from playbooks.providers import RUNNING, get
from playbooks.providers import cloud as cc
from playbooks.settings import setting
from playbooks.settings.defaults import REPO, fleet_dir
from playbooks.settings.errors import FleetbookError
from playbooks.ssh.fanout import connect, run_checked

if TYPE_CHECKING:
    from playbooks.providers import Node

HEAD_PYTHON = "python3"               # what runs fleetwork.count_progress on the head instance
HEAD_WORKDIR = "fleetbook-head"       # where the head keeps workloads/ for counting, below the operator's home


def workload_files() -> list[str]:
    """What the head needs to count as the operator's machine does: every module in workloads/ (the runner's
    sibling modules too, whatever they are called)."""
    return sorted(p.name for p in (REPO / "workloads").glob("*.py"))


class RemoteHead:
    """The shared root on a head instance, as ``runstate`` and ``progress`` need it: files over SFTP as the
    SFTP-only user (with the operator's key, chrooted: paths are relative to the shared root), and the
    progress count as one command on the head (the operator's login), printing JSON."""

    def __init__(self, c, fleet: str, node: Node):
        self.c, self.fleet, self.node = c, fleet, node
        self._files = self._shell = None
        self._shipped: set[str] = set()

    def _sftp(self):
        if self._files is None:
            self._files = connect(self.c, self.fleet, replace(self.node, user=cc.HEAD_SFTP_USER)).sftp()
        return self._files

    def sftp(self):
        """The SFTP session (chrooted: ``/data`` is the shared root), for ``playbooks/transfer/sftp.py``."""
        return self._sftp()

    def _path(self, rel: str) -> str:
        return f"/{cc.HEAD_DATA}/{rel.strip('/')}"

    def _lstat(self, rel: str):
        """The SFTP attributes of ``rel`` (None when it or a folder above it is missing), after checking with
        lstat, one component at a time, that no folder on the way and not ``rel`` itself is a symlink: a node
        may have made one, and the SFTP user's writes must land where they are meant to.  (SFTP has no
        descriptor-relative calls, so this is a check before the use, inside the chroot.)"""
        path, st = f"/{cc.HEAD_DATA}", None
        for part in rel_path(rel).split("/"):
            path += "/" + part
            try:
                st = self._sftp().lstat(path)
            except FileNotFoundError:
                return None
            if stat.S_ISLNK(st.st_mode):
                raise Refused(f"{path} on the head instance is a symlink: fleetbook never follows a link below the "
                              "shared root (a node may have made it); remove it and try again")
        return st

    def read_text(self, rel: str) -> str | None:
        if self._lstat(rel) is None:
            return None
        try:
            with self._sftp().open(self._path(rel)) as f:
                return f.read().decode()
        except OSError:
            return None

    def is_dir(self, rel: str) -> bool:
        st = self._lstat(rel)
        return st is not None and stat.S_ISDIR(st.st_mode)

    def mkdirs(self, rel: str) -> None:
        parts = [p for p in rel.strip("/").split("/") if p]
        for k in range(1, len(parts) + 1):
            sub = "/".join(parts[:k])
            if self._lstat(sub) is None:
                try:
                    self._sftp().mkdir(self._path(sub))
                except OSError:
                    if not self.is_dir(sub):
                        raise

    def write_text(self, rel: str, text: str) -> None:
        """Atomic: a temp file, then posix-rename over the old one (which replaces a link there, never follows
        it); the folders above are checked for links first."""
        parent = rel.rsplit("/", 1)[0] if "/" in rel else ""
        self.mkdirs(parent)
        tmp = self._path(f"{parent}/.tmp-{uuid_hex()}")
        with self._sftp().open(tmp, "wx") as f:
            f.write(text.encode())
        self._sftp().posix_rename(tmp, self._path(rel))

    def snapshot_data(self, record: dict) -> dict:
        """``{"counts": {...}, "nodes": {name: [heartbeat, exit]}, "failures": {...}}`` counted on the head."""
        if self._shell is None:
            self._shell = connect(self.c, self.fleet, self.node)
        files = workload_files()
        wdir = f"{HEAD_WORKDIR}/workloads"
        timeout = setting(self.c, "fleet.ssh_timeout")
        if any(f not in self._shipped for f in files):   # the same code that counts on the operator's disk
            run_checked(self._shell, f"mkdir -p {q(wdir)}", timeout)
            for f in files:
                self._shell.put(str(REPO / "workloads" / f), remote=f"{wdir}/{f}")
            self._shipped.update(files)
        command = (f"cd {q(wdir)} && {q(HEAD_PYTHON)} -c {q(COUNT_SCRIPT)} {q(cc.HEAD_CHROOT + '/' + cc.HEAD_DATA)} "
                   f"{q(json.dumps(record))}")
        result = run_checked(self._shell, command, max(60.0, timeout))
        data = json.loads(result.strip().splitlines()[-1])
        if "refused" in data:
            raise Refused(data["refused"])
        return data

    def close(self) -> None:
        for x in (self._files, self._shell):
            if x is not None:
                x.close()


def uuid_hex() -> str:
    return uuid.uuid4().hex[:12]


# run on the head instance: argv = shared root, run record; prints one line of JSON
COUNT_SCRIPT = """
import json, os, shlex, stat, sys
sys.path.insert(0, os.getcwd())
import fleetwork as fw
root, record = sys.argv[1], json.loads(sys.argv[2])
wl = fw.load(record["workload"])
bucket = "://" in record["src"] + record["dst"]   # a bucket run: its data is counted in the bucket, not here
src, dst = os.path.join(root, record["src"]), os.path.join(root, record["dst"])
for rel in ([] if bucket else [record["src"], record["dst"]]) + [".fleetbook/runs/" + record["run_id"] + "/nodes"]:
    p = root
    for part in rel.split("/"):
        p = os.path.join(p, part)
        if os.path.islink(p):  # a node may have made it: count nothing through it
            print(json.dumps({"refused": p + " on the head instance is a symlink: fleetbook never follows a link "
                              "below the shared root (a node may have made it); remove it and try again"}))
            sys.exit(0)
opts = None if bucket else wl.parse_args(["--src", src, "--dst", dst, *shlex.split(record.get("args", ""))])
def read(p):  # what a node wrote: never through a link, never a FIFO or a huge file
    try:
        if os.path.islink(os.path.dirname(p)):
            return None
        fd = os.open(p, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except OSError:
        return None
    with os.fdopen(fd, "rb") as f:
        try:
            return json.loads(f.read(1 << 20)) if stat.S_ISREG(os.fstat(fd).st_mode) else None
        except (OSError, ValueError):
            return None
state = os.path.join(root, ".fleetbook", "runs", record["run_id"], "nodes")
nodes = {n["name"]: [read(os.path.join(state, n["name"], f)) for f in ("heartbeat.json", "exit.json")]
         for n in record["nodes"]}
print(json.dumps({"counts": None if bucket else fw.count_progress(wl, src, dst, opts), "nodes": nodes,
                  "failures": {} if bucket else fw.read_failures(dst), "free_bytes": fw.free_bytes(root)}))
"""

_REMOTE_HEADS: dict[tuple[str, str, str], RemoteHead | None] = {}


def head_node(found):
    """The head instance's Node in what ``find_head`` returns: a ``HeadInstance`` (``.node``), or the older
    (node, internal address, zone) tuple."""
    return found.node if hasattr(found, "node") else found[0]


class HeadStopped(FleetbookError):
    """The fleet's shared root is on a head instance that is not running (its TTL stopped it)."""


def remote_head(c, provider: str, fleet: str) -> RemoteHead | None:
    """A RemoteHead when the fleet has a running head instance (its ``role=head`` label says so, whatever
    ``<provider>.head`` says now), else None: the provider's ``find_head(c, fleet)`` says where it is.  Looked
    up once per process.  A head that exists but is stopped is a HeadStopped error, never "the shared root is
    on this machine": its disk holds the fleet's shared root."""
    key = (provider, fleet, str(fleet_dir(c, fleet)))
    if key not in _REMOTE_HEADS:
        prov = get(provider)
        found = prov.find_head(c, fleet)
        node = head_node(found) if found else None
        if node is None or node.state != RUNNING:
            other = prov.head_node(c, fleet)
            if other is not None and other.state != RUNNING:
                raise HeadStopped(
                    f"the head instance {other.name} of fleet {fleet} is {other.state} (its TTL stops it), with the "
                    f"shared root on its disk: `invoke data.pull --provider {provider} --name {fleet}` or "
                    f"`invoke fleet.create --provider {provider} --name {fleet} -n N` starts it again")
        _REMOTE_HEADS[key] = RemoteHead(c, fleet, node) if node is not None and node.state == RUNNING else None
    return _REMOTE_HEADS[key]


def forget(c, provider: str, fleet: str) -> None:
    """Look the head instance up again next time (it was started or deleted)."""
    _REMOTE_HEADS.pop((provider, fleet, str(fleet_dir(c, fleet))), None)
