"""The shared root on a head instance, as the run state and progress read it: ``RemoteHead`` (SFTP as the
SFTP-only user, and the progress count run on the head), the ``head``/``remote_head`` hooks of a fleet with one.

(This section moves on to ``playbooks/runs/``: it is kept together, unchanged inside.)
"""
from __future__ import annotations

import json

from playbooks.providers.cloud.head_boot import HEAD_CHROOT, HEAD_DATA, HEAD_SFTP_USER  # noqa: F401
from playbooks.providers.cloud.tunnels import install_head_access
from playbooks.providers.types import RUNNING, Node, ProviderError
from playbooks.settings.defaults import fleet_dir

HEAD_PYTHON = "python3"               # what runs fleetwork.count_progress on the head instance
HEAD_WORKDIR = "fleetbook-head"       # where the head keeps workloads/ for counting, below the operator's home


def instance_head(c, provider: str, fleet: str, head_node: Node, internal: str, list_nodes):
    """The ``head(c, fleet)`` hook with a head instance: every running node gets the nodes' key and the head's
    host key (pinned for this fleet from the cloud) under the head's internal address; they mount that."""
    from playbooks.ssh.sftp_head import Head
    from playbooks.ssh.keys import host_entry
    port = int(c.config[provider].ssh_port)
    kh = fleet_dir(c, fleet) / "known_hosts"
    entry = host_entry(head_node.host, head_node.port)
    line = next((ln for ln in (kh.read_text().splitlines() if kh.exists() else [])
                 if ln.split(" ", 1)[0] == entry), None)
    if line is None:
        raise ProviderError(f"fleet {fleet}: the head instance's host key is not pinned yet: run "
                            f"`invoke fleet.create --provider {provider} --name {fleet} -n N` (it waits for the head)")
    nodes = [n for n in list_nodes(c, fleet) if n.state == RUNNING]
    install_head_access(c, fleet, nodes, host_entry(internal, port), line.split(" ", 1)[1])
    return Head(host=internal, port=port, user=HEAD_SFTP_USER, remote_path=f"/{HEAD_DATA}")


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
            from dataclasses import replace

            from playbooks.ssh.fanout import connect
            self._files = connect(self.c, self.fleet, replace(self.node, user=HEAD_SFTP_USER)).sftp()
        return self._files

    def sftp(self):
        """The SFTP session (chrooted: ``/data`` is the shared root), for ``playbooks/transfer/sftp.py``."""
        return self._sftp()

    def _path(self, rel: str) -> str:
        return f"/{HEAD_DATA}/{rel.strip('/')}"

    def _lstat(self, rel: str):
        """The SFTP attributes of ``rel`` (None when it or a folder above it is missing), after checking with
        lstat, one component at a time, that no folder on the way and not ``rel`` itself is a symlink: a node
        may have made one, and the SFTP user's writes must land where they are meant to.  (SFTP has no
        descriptor-relative calls, so this is a check before the use, inside the chroot.)"""
        import stat

        from playbooks.fs.safefs import Refused, rel_path
        path, st = f"/{HEAD_DATA}", None
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
        import stat
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
        from shlex import quote as q

        from playbooks.settings.defaults import REPO
        from playbooks.ssh.fanout import connect, run_checked
        if self._shell is None:
            self._shell = connect(self.c, self.fleet, self.node)
        files = ["fleetwork.py", f"{record['workload']}.py"]
        wdir = f"{HEAD_WORKDIR}/workloads"
        if any(f not in self._shipped for f in files):   # the same code that counts on the operator's disk
            run_checked(self._shell, f"mkdir -p {q(wdir)}", float(self.c.config.fleet.ssh_timeout))
            for f in files:
                self._shell.put(str(REPO / "workloads" / f), remote=f"{wdir}/{f}")
            self._shipped.update(files)
        command = (f"cd {q(wdir)} && {q(HEAD_PYTHON)} -c {q(COUNT_SCRIPT)} {q(HEAD_CHROOT + '/' + HEAD_DATA)} "
                   f"{q(json.dumps(record))}")
        result = run_checked(self._shell, command, max(60.0, float(self.c.config.fleet.ssh_timeout)))
        data = json.loads(result.strip().splitlines()[-1])
        if "refused" in data:
            from playbooks.fs.safefs import Refused
            raise Refused(data["refused"])
        return data

    def close(self) -> None:
        for x in (self._files, self._shell):
            if x is not None:
                x.close()


def uuid_hex() -> str:
    import uuid
    return uuid.uuid4().hex[:12]


# run on the head instance: argv = shared root, run record; prints one line of JSON


COUNT_SCRIPT = """
import json, os, shlex, stat, sys
sys.path.insert(0, os.getcwd())
import fleetwork as fw
root, record = sys.argv[1], json.loads(sys.argv[2])
wl = fw.load(record["workload"])
src, dst = os.path.join(root, record["src"]), os.path.join(root, record["dst"])
for rel in (record["src"], record["dst"], ".fleetbook/runs/" + record["run_id"] + "/nodes"):
    p = root
    for part in rel.split("/"):
        p = os.path.join(p, part)
        if os.path.islink(p):  # a node may have made it: count nothing through it
            print(json.dumps({"refused": p + " on the head instance is a symlink: fleetbook never follows a link "
                              "below the shared root (a node may have made it); remove it and try again"}))
            sys.exit(0)
opts = wl.parse_args(["--src", src, "--dst", dst, *shlex.split(record.get("args", ""))])
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
print(json.dumps({"counts": fw.count_progress(wl, src, dst, opts), "nodes": nodes,
                  "failures": fw.read_failures(dst), "free_bytes": fw.free_bytes(root)}))
"""

_REMOTE_HEADS: dict[tuple[str, str, str], RemoteHead | None] = {}


def remote_head(c, provider: str, fleet: str, find_head) -> RemoteHead | None:
    """The providers' ``remote_head`` hook: a RemoteHead when the fleet has a head instance (its ``role=head``
    label says so, whatever ``<provider>.head`` says now), else None.  ``find_head(c, fleet)`` returns
    a HeadInstance or None.  Looked up once per process."""
    key = (provider, fleet, str(fleet_dir(c, fleet)))
    if key not in _REMOTE_HEADS:
        found = find_head(c, fleet)
        _REMOTE_HEADS[key] = RemoteHead(c, fleet, found.node) if found and found.node.state == RUNNING else None
    return _REMOTE_HEADS[key]
