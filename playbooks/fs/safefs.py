"""Files below the shared root, opened the way the operator's side must: never through a symlink.

A node can make a symlink anywhere it can write over SFTP, and the head's own code runs as root, so everything
the head reads, writes or deletes below the shared root goes through ``Root``:

* a path is walked one folder at a time from the root's own descriptor (``os.open(part, O_DIRECTORY |
  O_NOFOLLOW, dir_fd=...)``): a symlink anywhere in it is refused (``Refused``), never followed;
* a file is read with ``O_NOFOLLOW | O_NONBLOCK`` relative to its folder's descriptor, only when it is a regular
  file, and at most ``limit`` bytes of it;
* a file is written to a temp file in its folder and renamed over the old name, both relative to that folder's
  descriptor (a symlink at the final name is replaced by the new file, not followed);
* a tree is removed with ``shutil.rmtree(name, dir_fd=...)``, which never follows a link inside it either.

The root itself is the operator's setting and trusted as given.  ``rel_path`` is the one check of a path below
the root that comes from a flag or from a file on the shared disk; ``name`` the check of one path component
(a run id, a node name).  ``Refused`` is an Invoke ``Exit``: any task that meets one ends with its one line.
"""
from __future__ import annotations

import errno
import io
import json
import os
import re
import secrets
import shutil
import stat
from pathlib import Path, PurePosixPath

from invoke.exceptions import Exit

_DIR = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
READ_LIMIT = 16 << 20          # the state files are small: a bigger one is not read (a node may have made it)


class Refused(Exit):
    """A path below the shared root that fleetbook will not use: a symlink in it, or a path leaving the root."""

    def __init__(self, message: str):
        super().__init__(message)


def rel_path(value, what: str = "path") -> str:
    """``value`` as a clean path below the shared root (``'a/b'``), or ``Refused`` with a one-line reason:
    absolute paths, ``..`` components, empty paths and NUL bytes are refused."""
    text = str(value)
    if "\0" in text:
        raise Refused(f"{what} {text!r} contains a NUL byte")
    if "://" in text:
        raise Refused(f"{what} {text!r} is a URL: the shared disk takes paths relative to shared.root (object "
                      "stores go to `invoke batch.submit`)")
    if text.startswith("/"):
        raise Refused(f"{what} {text!r} must be relative to shared.root (e.g. src or out/run1), not absolute")
    parts = [p for p in PurePosixPath(text).parts if p != "."]
    if ".." in parts:
        raise Refused(f"{what} {text!r} leaves shared.root: '..' is not allowed (give a path below shared.root)")
    if not parts:
        raise Refused(f"{what} {text!r} names no folder: give a path below shared.root, e.g. src")
    return "/".join(parts)


def name(value, what: str = "name") -> str:
    """One path component such as a run id or a node name: letters, digits, '.', '_', '-', not starting with a dot."""
    text = str(value)
    if not _NAME.match(text):
        raise Refused(f"{what} {text!r} is not a valid name (letters, digits, '.', '_', '-')")
    return text


def _parts(rel: str) -> list[str]:
    return [] if rel in ("", ".") else rel_path(rel).split("/")


class Root:
    """A folder (the shared root) below which nothing is reached through a symlink.  Paths are relative to it
    ('/'-separated); the same methods as a head instance's ``runs.head_instance.RemoteHead`` where they overlap."""

    def __init__(self, path):
        self.path = Path(path)

    def __repr__(self) -> str:
        return f"Root({str(self.path)!r})"

    # ------------------------------------------------------------------------------------------ walking
    def _refused(self, parts: list[str]) -> Refused:
        where = self.path.joinpath(*parts)
        return Refused(f"{where} is a symlink: fleetbook never follows a link below the shared root (a node may "
                       f"have made it); remove it (rm {where}) and try again")

    def _open_dir(self, parts: list[str], create: bool = False) -> int:
        """A descriptor of the folder ``parts`` below the root, walked without following links; ``create``
        makes missing folders.  FileNotFoundError / NotADirectoryError when it is not there."""
        if create:
            self.path.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            for i, part in enumerate(parts):
                try:
                    nfd = os.open(part, _DIR, dir_fd=fd)
                except FileNotFoundError:
                    if not create:
                        raise
                    try:
                        os.mkdir(part, 0o755, dir_fd=fd)
                    except FileExistsError:     # made meanwhile (or a link: the open below refuses it)
                        pass
                    nfd = self._open_child(fd, parts[:i + 1])
                except OSError as e:
                    if e.errno not in (errno.ELOOP, errno.ENOTDIR):
                        raise
                    nfd = self._open_child(fd, parts[:i + 1])
                os.close(fd)
                fd = nfd
            return fd
        except BaseException:
            os.close(fd)
            raise

    def _open_child(self, fd: int, parts: list[str]) -> int:
        try:
            return os.open(parts[-1], _DIR, dir_fd=fd)
        except OSError as e:
            if e.errno in (errno.ELOOP, errno.ENOTDIR) and stat.S_ISLNK(os.lstat(parts[-1], dir_fd=fd).st_mode):
                raise self._refused(parts) from None
            raise

    def _parent(self, rel: str, create: bool = False) -> tuple[int, str, list[str]]:
        parts = _parts(rel)
        if not parts:
            raise Refused(f"no file name below {self.path}")
        return self._open_dir(parts[:-1], create), parts[-1], parts

    # ------------------------------------------------------------------------------------------ reading
    def checked(self, rel: str) -> Path:
        """The absolute path of ``rel`` after checking that no folder or file on the way is a symlink (as far as
        it exists); for read-only listings, which then walk it without entering links."""
        parts = _parts(rel)
        try:
            os.close(self._open_dir(parts))
        except (FileNotFoundError, NotADirectoryError):
            pass
        return self.path.joinpath(*parts)

    def read_bytes(self, rel: str, limit: int = READ_LIMIT) -> bytes | None:
        """The content of a regular file, or None when it is missing, not a regular file or bigger than
        ``limit``; ``Refused`` when it or a folder on the way is a symlink."""
        try:
            f = self.open_read(rel)
        except (FileNotFoundError, NotADirectoryError):
            return None
        with f:
            if os.fstat(f.fileno()).st_size > limit:
                return None
            return f.read(limit + 1)[:limit]

    def read_text(self, rel: str) -> str | None:
        data = self.read_bytes(rel)
        return None if data is None else data.decode("utf-8", "replace")

    def read_json(self, rel: str) -> dict | None:
        """A JSON object, or None when the file is missing or not a JSON object."""
        data = self.read_bytes(rel)
        try:
            obj = json.loads(data) if data is not None else None
        except ValueError:
            return None
        return obj if isinstance(obj, dict) else None

    def _lstat(self, rel: str) -> os.stat_result | None:
        try:
            dfd, last, parts = self._parent(rel)
        except (FileNotFoundError, NotADirectoryError):
            return None
        try:
            st = os.lstat(last, dir_fd=dfd)
        except FileNotFoundError:
            return None
        finally:
            os.close(dfd)
        if stat.S_ISLNK(st.st_mode):
            raise self._refused(parts)
        return st

    def exists(self, rel: str) -> bool:
        return self._lstat(rel) is not None

    def is_dir(self, rel: str) -> bool:
        st = self._lstat(rel)
        return st is not None and stat.S_ISDIR(st.st_mode)

    # ------------------------------------------------------------------------------------------ writing
    def mkdirs(self, rel: str) -> None:
        """Make the folder ``rel`` and the folders above it, refusing a symlink anywhere on the way."""
        os.close(self._open_dir(_parts(rel), create=True))

    def write_bytes(self, rel: str, data: bytes, mode: int = 0o644, exact_mode: bool = False) -> None:
        """Atomic: a temp file in the same folder, then renamed over ``rel`` (folders made as needed); with
        ``exact_mode`` the file gets ``mode`` whatever the umask."""
        self.write_stream(rel, io.BytesIO(data), mode=mode, exact_mode=exact_mode)

    def write_stream(self, rel: str, src, *, mtime: float | None = None, tmp: str = "", mode: int = 0o644,
                     chunk: int = 1 << 20, exact_mode: bool = False) -> None:
        """Copy the readable ``src`` to ``rel`` atomically: the temp file ``tmp`` (default ``.fb-tmp-<hex>``) in
        the same folder, its mtime set when given, then renamed over ``rel``; all relative to the folder's own
        descriptor, so no link on the way or at the name is followed (folders made as needed)."""
        dfd, last, _parts_ = self._parent(rel, create=True)
        try:
            tmp = tmp or f".fb-tmp-{secrets.token_hex(8)}"
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, mode,
                         dir_fd=dfd)
            try:
                with os.fdopen(fd, "wb") as f:
                    while block := src.read(chunk):
                        f.write(block)
                    f.flush()  # before the mtime: a later write would change it again
                    if exact_mode:
                        os.fchmod(f.fileno(), mode)
                    if mtime is not None:
                        os.utime(f.fileno(), (mtime, mtime))
                os.replace(tmp, last, src_dir_fd=dfd, dst_dir_fd=dfd)
            except BaseException:
                try:
                    os.unlink(tmp, dir_fd=dfd)
                except OSError:
                    pass
                raise
        finally:
            os.close(dfd)

    def open_read(self, rel: str):
        """A binary file object of the regular file ``rel`` (FileNotFoundError when it is missing or not a
        regular file); ``Refused`` when it or a folder on the way is a symlink."""
        dfd, last, parts = self._parent(rel)
        try:
            try:
                fd = os.open(last, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC, dir_fd=dfd)
            except OSError as e:
                if e.errno == errno.ELOOP:
                    raise self._refused(parts) from None
                raise
        finally:
            os.close(dfd)
        f = os.fdopen(fd, "rb")
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            f.close()
            raise FileNotFoundError(errno.ENOENT, "not a regular file", rel)
        os.set_blocking(fd, True)
        return f

    def write_text(self, rel: str, text: str) -> None:
        self.write_bytes(rel, text.encode())

    def write_json(self, rel: str, obj) -> None:
        self.write_bytes(rel, json.dumps(obj, indent=1).encode())

    def chown(self, rel: str, uid: int, gid: int, tree: bool = False) -> None:
        """Give the folder ``rel`` (with ``tree``: every folder below it too) to ``uid:gid``, each through its
        own descriptor (``fchown``): a folder swapped for a link meanwhile is never followed, and files are
        left as they are.  ``Refused`` for a link on the way to ``rel``."""
        fd = self._open_dir(_parts(rel))
        try:
            os.fchown(fd, uid, gid)
            if tree:        # fwalk opens each folder without following links, and checks it is the one listed
                for _top, _dirs, _files, dfd in os.fwalk(".", dir_fd=fd):
                    os.fchown(dfd, uid, gid)
        finally:
            os.close(fd)

    def rmtree(self, rel: str) -> None:
        """Remove the folder (or file) ``rel`` and everything in it; nothing when it is missing.  A symlink at
        ``rel`` or above it is refused; links inside it are removed, never followed."""
        try:
            dfd, last, parts = self._parent(rel)
        except (FileNotFoundError, NotADirectoryError):
            return
        try:
            try:
                st = os.lstat(last, dir_fd=dfd)
            except FileNotFoundError:
                return
            if stat.S_ISLNK(st.st_mode):
                raise self._refused(parts)
            if stat.S_ISDIR(st.st_mode):
                shutil.rmtree(last, dir_fd=dfd)
            else:
                os.unlink(last, dir_fd=dfd)
        finally:
            os.close(dfd)


def write_file(path, data: bytes, mode: int = 0o644) -> None:
    """THE atomic writer of a file of the operator's own (keys, known_hosts, JSON state): a temp file in the
    same folder with exactly ``mode``, then renamed over ``path``; the folder made as needed, the name never
    followed if it is a link."""
    path = Path(path)
    Root(path.parent).write_bytes(path.name, data, mode, exact_mode=True)


def write_json_file(path, obj) -> None:
    """``write_file`` of ``obj`` as indented JSON."""
    write_file(path, json.dumps(obj, indent=1).encode())
