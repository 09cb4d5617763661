"""What a transfer must copy: the source's entries that the destination lacks or holds differently.

Skip rules: a file is the same when its size and its mtime (whole seconds) are (every copy gives its file the
source's mtime); an object is the same when its size is and one of its fingerprints (S3 ETag, GCS MD5 or
CRC32C) equals the source file's.  Fingerprints are asked of the source only for files whose size matches an
object, in one batch (``fingerprints``), so an unchanged tree costs one listing on each side plus one read of
the candidates where they live.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from playbooks.transfer.stores import Entry


@dataclass
class Plan:
    copy: list[Entry] = field(default_factory=list)
    skip: list[Entry] = field(default_factory=list)

    @property
    def bytes_to_copy(self) -> int:
        return sum(e.size for e in self.copy)

    @property
    def bytes_skipped(self) -> int:
        return sum(e.size for e in self.skip)


def same_file(src: Entry, dst: Entry) -> bool:
    return src.size == dst.size and src.mtime is not None and dst.mtime is not None \
        and int(src.mtime) == int(dst.mtime)


def make_plan(src_store, dst_store, src: dict[str, Entry], dst: dict[str, Entry]) -> Plan:
    plan = Plan()
    candidates: dict[str, list[str]] = {}
    for rel in sorted(src):
        entry, there = src[rel], dst.get(rel)
        if there is None or there.size != entry.size:
            plan.copy.append(entry)
        elif dst_store.kind == "files":
            (plan.skip if same_file(entry, there) else plan.copy).append(entry)
        elif not there.sums:
            plan.copy.append(entry)
        else:
            candidates[rel] = sorted(there.sums)
    if candidates:
        found = src_store.fingerprints(candidates)
        for rel in candidates:
            mine, theirs = found.get(rel, {}), dst[rel].sums
            same = any(mine.get(k) == v for k, v in theirs.items())
            (plan.skip if same else plan.copy).append(src[rel])
        plan.copy.sort(key=lambda e: e.rel)
    return plan
