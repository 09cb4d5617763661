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
import stat
from dataclasses import dataclass, field
from pathlib import Path

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


def check_rel(rel: str) -> str:
    """A relative path below a root: no absolute path, no ``..``, no empty name; '' or '.' is the root."""
    rel = rel.strip()
    parts = [p for p in rel.replace("\\", "/").split("/") if p not in ("", ".")]
    if rel.startswith("/") or ".." in parts:
        raise ValueError(f"{rel!r} must be a path relative to the shared root, without '..'")
    return "/".join(parts)


class LocalStore:
    """A folder on this machine (a local folder, or the shared root when it lives here).

    Symbolic links are neither followed nor copied: a node can plant one in the shared root over SFTP, and the
    operator's process must not write through it (temp files are opened with O_NOFOLLOW | O_EXCL, and no
    folder on the way to a file may be a link)."""

    kind = "files"

    def __init__(self, root: Path, label: str = ""):
        self.root = Path(root)
        self.label = label or str(root)
        self.stale: list[str] = []
        self._made: set[str] = set()

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
        fd = os.open(self.root / rel, os.O_RDONLY | os.O_NOFOLLOW)
        return os.fdopen(fd, "rb")

    def _parent(self, rel: str) -> Path:
        """The folder of ``rel``, made if missing; a symbolic link on the way is refused."""
        parent = rel.rsplit("/", 1)[0] if "/" in rel else ""
        if parent not in self._made:
            path = self.root
            path.mkdir(parents=True, exist_ok=True)
            for part in [p for p in parent.split("/") if p]:
                path = path / part
                try:
                    os.mkdir(path)
                except FileExistsError:
                    if not stat.S_ISDIR(os.lstat(path).st_mode):
                        raise OSError(f"{path} is not a folder (a link or a file): not writing through it")
            self._made.add(parent)
        return self.root / parent if parent else self.root

    def write(self, rel: str, entry: Entry, src) -> None:
        """Copy the readable ``src`` to ``rel``: temp file, mtime = the source's, rename (atomic)."""
        folder = self._parent(rel)
        tmp = folder / temp_name()
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o644)
        try:
            with os.fdopen(fd, "wb") as out:
                while block := src.read(COPY_CHUNK):
                    out.write(block)
            if entry.mtime is not None:
                os.utime(tmp, (entry.mtime, entry.mtime), follow_symlinks=False)
            os.replace(tmp, self.root / rel)
        except BaseException:
            try:
                os.unlink(tmp)
            except OSError:
                pass
            raise

    def fingerprints(self, wanted: dict[str, list[str]]) -> dict[str, dict]:
        """{rel: {kind: value}} for the files and kinds asked (see ``digest``)."""
        from .digest import file_fingerprints
        out = {}
        for rel, kinds in wanted.items():
            try:
                out[rel] = file_fingerprints(str(self.root / rel), kinds)
            except OSError:
                continue
        return out
