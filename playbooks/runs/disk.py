"""The shared disk of a fleet: the shared root on this machine, or on the fleet's head instance over SFTP.

Chosen once from the fleet (``shared_disk(c, provider, fleet)``: the provider's ``find_head`` says whether a head
instance holds it), then used the same way by run, progress, overhead, data and stop, so none of them asks
"here or there" again.  Both kinds offer, with paths relative to the shared root and no symlink ever followed:

``where``                              " <path>" here, " on the head instance" there (for messages)
``remote``                             True on a head instance
``read_text(rel)`` / ``write_text(rel, text)`` (atomic) / ``is_dir(rel)`` / ``mkdirs(rel)``
``give_to_nodes(rel, tree=False)``     let the nodes write in ``rel`` (here: chown to the SFTP user as root;
                                       on a head instance a no-op: the shared root is the SFTP user's already)
``tally(record, count=True)``          a ``Tally``: the run's counts and the head's free bytes (counted where
                                       the files are: here, or by one command on the head instance), and each
                                       node's (heartbeat, exit record), checked by ``state.node_record``
``failures(record)``                   {item: record} of the run's failed items (``<dst>/.failed/``)
``store(rel, label)``                  the ``playbooks.transfer`` store of ``rel`` (LocalStore / SftpStore)
``close()``
"""
from __future__ import annotations

import shlex
from dataclasses import dataclass, field
from pathlib import Path

from playbooks.fs import safefs
from playbooks.runs import buckets, head_instance
from playbooks.runs import layout as runstate
from playbooks.settings import setting
from playbooks.settings.defaults import shared_root

_ITEMS: dict[str, list[str]] = {}  # run id -> the items of its source: listed once per process, outputs each time


@dataclass(frozen=True)
class Tally:
    """A run as its shared disk holds it right now."""

    nodes: dict = field(default_factory=dict)   # node name -> (heartbeat, exit record), each a dict or None
    counts: dict | None = None                  # {"total", "done", "failed", ...}; None when not counted
    free_bytes: int | None = None               # free space where the shared root is

    def node(self, name: str) -> tuple[dict | None, dict | None]:
        return self.nodes.get(name, (None, None))


class SharedDisk:
    """What both kinds share: the files, through ``self.files`` (a ``safefs.Root`` here, a ``RemoteHead``
    there: the same four methods, neither following a link).  The rest each kind defines (see the module)."""

    files = None
    remote = False
    where = ""

    def read_text(self, rel: str) -> str | None:
        return self.files.read_text(rel)

    def write_text(self, rel: str, text: str) -> None:
        self.files.write_text(rel, text)

    def is_dir(self, rel: str) -> bool:
        return self.files.is_dir(rel)

    def mkdirs(self, rel: str) -> None:
        self.files.mkdirs(rel)


class LocalDisk(SharedDisk):
    """The shared root on this machine (a local fleet, or a cloud fleet whose nodes tunnel to it): ``safefs``."""

    def __init__(self, c):
        self.c = c
        self.path = Path(shared_root(c))
        self.files = self.root = safefs.Root(self.path)
        self.where = f" {self.path}"

    def give_to_nodes(self, rel: str, tree: bool = False) -> None:
        from playbooks.ssh import sftp_head
        sftp_head.give_to_nodes(self.c, rel, tree=tree)

    def _workload(self, record: dict):
        fw = runstate.fleetwork()
        wl = fw.load(record["workload"])
        src, dst = str(self.root.checked(record["src"])), str(self.root.checked(record["dst"]))
        return fw, wl, src, dst, wl.parse_args(["--src", src, "--dst", dst, *shlex.split(record.get("args", ""))])

    def tally(self, record: dict, count: bool = True) -> Tally:
        nodes = {e["name"]: runstate.node_files(self.c, record["run_id"], e["name"]) for e in record["nodes"]}
        if not count:
            return Tally(nodes)
        if buckets.is_bucket_run(record):     # the data is in a bucket: counted there, by two paged listings
            return Tally(nodes, buckets.count(self.c, record), runstate.fleetwork().free_bytes(str(self.path)))
        fw, wl, src, dst, opts = self._workload(record)
        if record["run_id"] not in _ITEMS:
            _ITEMS[record["run_id"]] = wl.list_items(src, opts)
        counts = fw.count_progress(wl, src, dst, opts, items=_ITEMS[record["run_id"]])
        return Tally(nodes, counts, fw.free_bytes(str(self.path)))

    def failures(self, record: dict) -> dict:
        if buckets.is_bucket_run(record):
            return buckets.failures(self.c, record)
        return runstate.fleetwork().read_failures(str(self.root.checked(record["dst"])))

    def store(self, rel: str, label: str = ""):
        from playbooks.transfer.stores import LocalStore
        return LocalStore(self.path / rel, label or f"{self.path / rel} (shared root)")

    def close(self) -> None:
        pass


class HeadDisk(SharedDisk):
    """The shared root on a head instance: files over SFTP, counting by one command there (``RemoteHead``)."""

    remote = True
    where = " on the head instance"

    def __init__(self, head: head_instance.RemoteHead):
        self.files = self.head = head
        self.c = head.c

    def give_to_nodes(self, rel: str, tree: bool = False) -> None:
        """Nothing to do: the head's SFTP user, the nodes' login, made the folders and owns them."""

    def tally(self, record: dict, count: bool = True) -> Tally:
        data = self.head.snapshot_data(record)      # one command: counts, heartbeats and exits together
        nodes = {e["name"]: tuple(map(runstate.node_record, data["nodes"].get(e["name"], (None, None))))
                 for e in record["nodes"]}
        counts = buckets.count(self.c, record) if count and buckets.is_bucket_run(record) else data["counts"]
        return Tally(nodes, counts, data.get("free_bytes"))

    def failures(self, record: dict) -> dict:
        if buckets.is_bucket_run(record):
            return buckets.failures(self.c, record)
        return self.head.snapshot_data(record)["failures"]

    def store(self, rel: str, label: str = ""):
        from playbooks.transfer.sftp import SftpStore
        return SftpStore(self.head, rel, label or f"head instance:{rel or '.'}")

    def close(self) -> None:
        self.head.close()


def head_of(c, provider: str = "", fleet: str = "") -> head_instance.RemoteHead | None:
    """The fleet's running head instance when its shared disk lives on one, else None (it is on this machine)."""
    provider = setting(c, "fleet.provider", provider)
    if provider == "local":
        return None
    return head_instance.remote_head(c, provider, setting(c, "fleet.name", fleet))


def shared_disk(c, provider: str = "", fleet: str = "") -> LocalDisk | HeadDisk:
    """The fleet's shared disk: on its head instance when it has one, else on this machine."""
    head = head_of(c, provider, fleet)
    return HeadDisk(head) if head is not None else LocalDisk(c)


def of_record(c, record: dict) -> LocalDisk | HeadDisk:
    """The shared disk a run record was written to."""
    return shared_disk(c, record.get("provider", "local"), record.get("fleet", ""))
