"""The shared root on a head instance as a store: SFTP as the chrooted SFTP-only user, with the operator's key.

Every worker thread opens its own SFTP channel on the head's one SSH connection.  Listing reads each folder
once (``listdir_attr``: the server hands out names with their attributes in batches, never a stat per file).
A file is written to a ``.fbpart-*`` temp file in its folder (pipelined writes), its mtime set, then
posix-renamed into place.  Fingerprints of files on the head (to compare them with objects in a bucket) are
computed on the head by one command over the operator's login (``digest.remote_script``): a resumed pull
never reads a finished file back over the network to check it.
"""
from __future__ import annotations

import json
import shlex
import stat
import threading

from playbooks.transfer.stores import TEMP_RE, Entry, temp_name

SFTP_CHUNK = 32 * 1024   # paramiko's pipelined writes go out in packets of this size


class SftpStore:
    kind = "files"

    def __init__(self, head, rel: str, label: str = ""):
        from playbooks.providers import cloud as cc
        self.head, self.rel = head, rel
        self.base = f"/{cc.HEAD_DATA}/{rel}".rstrip("/")
        self.label = label or f"head instance:{rel or '.'}"
        self.stale: list[str] = []
        self._local = threading.local()
        self._made: set[str] = set()
        self._lock = threading.Lock()

    def _sftp(self):
        client = getattr(self._local, "sftp", None)
        if client is None:
            import paramiko
            transport = self.head.sftp().get_channel().get_transport()
            client = self._local.sftp = paramiko.SFTPClient.from_transport(transport)
        return client

    def _path(self, rel: str) -> str:
        return f"{self.base}/{rel}"

    def exists(self) -> bool:
        try:
            return stat.S_ISDIR(self._sftp().stat(self.base).st_mode)
        except OSError:
            return False

    def list(self) -> dict[str, Entry]:
        out: dict[str, Entry] = {}
        self.stale = []
        todo = [("", self.base)]
        while todo:
            prefix, folder = todo.pop()
            try:
                attrs = self._sftp().listdir_attr(folder)
            except OSError:
                continue
            for a in attrs:
                rel = f"{prefix}{a.filename}"
                if stat.S_ISDIR(a.st_mode):
                    todo.append((rel + "/", f"{folder}/{a.filename}"))
                elif stat.S_ISREG(a.st_mode):      # links (lstat attributes) are neither followed nor copied
                    if TEMP_RE.match(a.filename):
                        self.stale.append(rel)
                    else:
                        out[rel] = Entry(rel, a.st_size, float(a.st_mtime))
        return out

    def remove_stale(self, keys=None) -> int:
        n = 0
        for rel in self.stale:
            try:
                self._sftp().remove(self._path(rel))
                n += 1
            except OSError:
                pass
        self.stale = []
        return n

    def open_read(self, rel: str, entry: Entry):
        f = self._sftp().open(self._path(rel), "rb")
        f.prefetch(entry.size)
        return f

    def _parent(self, rel: str) -> str:
        parent = f"{self.base}/{rel}".rsplit("/", 1)[0]
        with self._lock:
            if parent in self._made:
                return parent
        path = ""
        for part in [p for p in parent.split("/") if p]:
            path += "/" + part
            try:
                if not stat.S_ISDIR(self._sftp().stat(path).st_mode):
                    raise OSError(f"{path} on the head instance is not a folder")
            except FileNotFoundError:
                try:
                    self._sftp().mkdir(path)
                except OSError:    # made by another thread meanwhile
                    if not stat.S_ISDIR(self._sftp().stat(path).st_mode):
                        raise
        with self._lock:
            self._made.add(parent)
        return parent

    def write(self, rel: str, entry: Entry, src) -> None:
        tmp = f"{self._parent(rel)}/{temp_name()}"
        sftp = self._sftp()
        try:
            with sftp.open(tmp, "wb") as out:
                out.set_pipelined(True)
                while block := src.read(SFTP_CHUNK):
                    out.write(block)
            if entry.mtime is not None:
                sftp.utime(tmp, (entry.mtime, entry.mtime))
            sftp.posix_rename(tmp, self._path(rel))
        except BaseException:
            try:
                sftp.remove(tmp)
            except OSError:
                pass
            raise

    def fingerprints(self, wanted: dict[str, list[str]]) -> dict[str, dict]:
        """Computed on the head by one command (the operator's login), reading the files there."""
        if not wanted:
            return {}
        from playbooks.providers import cloud as cc
        from playbooks.runs import head_instance
        from playbooks.ssh.fanout import connect
        from playbooks.transfer.digest import remote_script
        root = f"{cc.HEAD_CHROOT}/{cc.HEAD_DATA}/{self.rel}".rstrip("/")
        conn = connect(self.head.c, self.head.fleet, self.head.node)
        try:
            conn.open()
            stdin, stdout, stderr = conn.client.exec_command(
                f"{shlex.quote(head_instance.HEAD_PYTHON)} -c {shlex.quote(remote_script())}", timeout=3600)
            stdin.write(json.dumps({"root": root, "files": [[r, k] for r, k in wanted.items()]}))
            stdin.channel.shutdown_write()
            text = stdout.read().decode()
            if stdout.channel.recv_exit_status() != 0:
                raise OSError(f"fingerprints on the head instance failed: {stderr.read().decode().strip()[-200:]}")
            return json.loads(text)
        finally:
            conn.close()
