"""Folders of this machine that other local users (the local nodes' Unix users) must reach, and nobody may swap."""
from __future__ import annotations

import os
import stat
from pathlib import Path

from invoke.exceptions import Exit

from playbooks.settings import setting
from playbooks.settings.defaults import repo_path


class PublicFolderError(Exit):
    """A folder on the way to the nodes' folders is not safe to hand out (typed; an ``Exit`` for the step)."""


def public_folder(c, path: Path, mode: int = 0o711) -> Path:
    """Make ``path`` below ``local.public_dir`` a root-owned folder of ``mode`` (0711: node users pass through
    to their own folder and can neither list nor change anything on the way), with every folder above it
    root's and writable by nobody else, so that no other user can swap what the nodes are given."""
    top = repo_path(setting(c, "local.public_dir"))
    if not path.is_relative_to(top):
        raise ValueError(f"{path} is not below {top}")
    for folder in reversed(top.parents):
        st = folder.stat()
        if st.st_uid != 0 or st.st_mode & 0o022 or not st.st_mode & 0o001:
            raise PublicFolderError(f"{folder} must be root's, writable by nobody else and open to others (0755) to hold the "
                       "nodes' folders: fix its mode or set local.public_dir (INVOKE_LOCAL_PUBLIC_DIR)")
    folder = top
    for part in ("", *path.relative_to(top).parts):
        folder = folder / part
        folder.mkdir(mode=mode, exist_ok=True)
        st = folder.lstat()
        if not stat.S_ISDIR(st.st_mode) or st.st_uid != 0:
            raise PublicFolderError(f"{folder} is not a folder of root's: remove it, or set local.public_dir")
        os.chmod(folder, 0o711 if folder != path else mode)
    return path
