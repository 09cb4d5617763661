"""Fingerprints of a file's content in the forms object stores report them, computed in one read.

``md5``          hex MD5: an S3 ETag of a single PUT, GCS ``md5Hash`` (decoded to hex)
``crc32c``       base64 of the big-endian CRC32C, as GCS reports it (only where ``google_crc32c`` imports)
``etag:<part>``  an S3 multipart ETag: hex MD5 of the parts' MD5s, then ``-<parts>``, for parts of <part> bytes

Standard library only (CRC32C when ``google_crc32c`` is importable), because this file also runs on a head
instance as ``python3 -c <this source>`` (``remote_script``): the fingerprints of files that live there are
computed there, so a resumed pull never reads a finished file back over the network to check it.
"""
from __future__ import annotations

import base64
import hashlib
import json
import os
import sys

CHUNK = 1 << 20


def _crc32c():
    try:
        import google_crc32c
        return google_crc32c.Checksum()
    except ImportError:
        return None


def fingerprints(f, kinds) -> dict:
    """The fingerprints ``kinds`` of the binary file object ``f`` (read to its end once); a kind this machine
    cannot compute (crc32c without google_crc32c) is left out."""
    kinds = set(kinds)
    md5 = hashlib.md5() if "md5" in kinds else None
    crc = _crc32c() if "crc32c" in kinds else None
    parts = {int(k.split(":", 1)[1]): [hashlib.md5(), 0, []] for k in kinds if k.startswith("etag:")}
    while True:
        block = f.read(CHUNK)
        if not block:
            break
        if md5 is not None:
            md5.update(block)
        if crc is not None:
            crc.update(block)
        for size, state in parts.items():
            view = memoryview(block)
            while view:
                take = min(len(view), size - state[1])
                state[0].update(view[:take])
                state[1] += take
                view = view[take:]
                if state[1] == size:
                    state[2].append(state[0].digest())
                    state[0], state[1] = hashlib.md5(), 0
    out = {}
    if md5 is not None:
        out["md5"] = md5.hexdigest()
    if crc is not None:
        out["crc32c"] = base64.b64encode(crc.digest()).decode()
    for size, (current, filled, done) in parts.items():
        if filled:
            done.append(current.digest())
        out[f"etag:{size}"] = f"{hashlib.md5(b''.join(done)).hexdigest()}-{len(done)}"
    return out


def file_fingerprints(path: str, kinds) -> dict:
    """``fingerprints`` of a file, opened without following a symbolic link."""
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
    with os.fdopen(fd, "rb") as f:
        return fingerprints(f, kinds)


def main() -> None:
    """On a head instance: stdin ``{"root": R, "files": [[rel, [kinds]], ...]}``, stdout ``{rel: {kind: v}}``;
    a file that cannot be read is left out."""
    job = json.load(sys.stdin)
    root = os.path.realpath(job["root"])
    out = {}
    for rel, kinds in job["files"]:
        path = os.path.join(root, rel)
        if ".." in rel.split("/") or rel.startswith("/"):
            continue
        try:
            out[rel] = file_fingerprints(path, kinds)
        except OSError:
            continue
    json.dump(out, sys.stdout)


def remote_script() -> str:
    """This module's source plus a call of ``main``: what a head instance runs with ``python3 -c``."""
    with open(__file__) as f:
        return f.read() + "\nmain()\n"
