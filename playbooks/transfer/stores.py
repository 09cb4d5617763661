"""Where files come from and go to: a folder on this machine (``LocalStore``), and what every store offers.

A store lists everything below its root in one walk (``list() -> {rel: Entry}``), opens one file for reading
(``open_read(rel)``), and writes one file so that it appears only when complete (``write``: a temp file in the
same folder, its mtime set, then a rename; an object store's upload becomes visible only when it completes).
Temp files are named ``.fbpart-<12 hex>``: short (a 255-byte name still has room), never listed as content,
and removed by the next transfer into that store (``remove_stale``).

Files are compared by size and mtime (whole seconds: SFTP carries no more), objects by size and fingerprint
(``sums``: ETag, MD5, CRC32C), see ``plan``.
"""
from __future__ import annotations

import os
import re
import secrets
from dataclasses import dataclass, field
from pathlib import Path

from playbooks.fs.safefs import Root

TEMP_RE = re.compile(r"^\.fbpart-[0-9a-f]{12}$")
COPY_CHUNK = 1 << 20


def temp_name() -> str:
    return f".fbpart-{secrets.token_hex(6)}"


@dataclass(frozen=True)
class Entry:
    """One file or object: its path below the store's root ("a/b.jpg"), size, mtime (epoch seconds; an
    object's last modification) and, for objects, the fingerprints that identify its content."""

    rel: str
    size: int
    mtime: float | None = None
    sums: dict = field(default_factory=dict, compare=False, hash=False)  # kind -> value (see digest.py)


class Counting:
    """A readable file object that reports every block it hands out to ``on_bytes`` (the progress bar)."""

    def __init__(self, f, on_bytes):
        self.f, self.on_bytes = f, on_bytes

    def read(self, n: int = -1) -> bytes:
        block = self.f.read(n)
        if block:
            self.on_bytes(len(block))
        return block

    def close(self) -> None:
        self.f.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


class LocalStore:
    """A folder on this machine (a local folder, or the shared root when it lives here).

    Symbolic links are neither followed nor copied: a node can plant one in the shared root over SFTP, and the
    operator's process must not read or write through it (``safefs.Root``: no link on the way or at the name
    is followed)."""

    kind = "files"

    def __init__(self, root: Path, label: str = ""):
        self.root = Path(root)
        self.files = Root(self.root)
        self.label = label or str(root)
        self.stale: list[str] = []

    def exists(self) -> bool:
        return self.root.is_dir()

    def list(self) -> dict[str, Entry]:
        out: dict[str, Entry] = {}
        self.stale = []
        if not self.root.is_dir():
            return out
        todo = [("", str(self.root))]
        while todo:
            prefix, folder = todo.pop()
            try:
                entries = list(os.scandir(folder))
            except OSError:
                continue
            for e in entries:
                rel = f"{prefix}{e.name}"
                if e.is_symlink():
                    continue
                if e.is_dir(follow_symlinks=False):
                    todo.append((rel + "/", e.path))
                elif e.is_file(follow_symlinks=False):
                    if TEMP_RE.match(e.name):
                        self.stale.append(rel)
                        continue
                    st = e.stat(follow_symlinks=False)
                    out[rel] = Entry(rel, st.st_size, st.st_mtime)
        return out

    def remove_stale(self, keys=None) -> int:
        """Delete the temp files of transfers that were killed (found by the last ``list``)."""
        n = 0
        for rel in self.stale:
            try:
                os.unlink(self.root / rel)
                n += 1
            except OSError:
                pass
        self.stale = []
        return n

    def open_read(self, rel: str, entry: Entry | None = None):
        return self.files.open_read(rel)

    def write(self, rel: str, entry: Entry, src) -> None:
        """Copy the readable ``src`` to ``rel``: temp file, mtime = the source's, rename (atomic); through
        ``safefs``, so no link on the way or at the name is followed."""
        self.files.write_stream(rel, src, mtime=entry.mtime, tmp=temp_name(), chunk=COPY_CHUNK)

    def fingerprints(self, wanted: dict[str, list[str]]) -> dict[str, dict]:
        """{rel: {kind: value}} for the files and kinds asked (see ``digest``)."""
        from playbooks.transfer.digest import file_fingerprints
        out = {}
        for rel, kinds in wanted.items():
            try:
                out[rel] = file_fingerprints(str(self.root / rel), kinds)
            except OSError:
                continue
        return out
