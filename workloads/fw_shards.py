"""fw_shards: which node does an item first: sha1(item) mod n, the order a node works in, ``--shard i/n``.

Standard library only.
"""
from __future__ import annotations

import hashlib

from fw_errors import UsageError


def item_hash(item: str) -> str:
    return hashlib.sha1(item.encode("utf-8", "surrogateescape")).hexdigest()


def shard_of(item: str, n: int) -> int:
    """The stable shard of an item: sha1(item) mod n (the same on every machine and Python)."""
    return int(item_hash(item), 16) % n


def shard_order(todo: list, shard: tuple[int, int] | None) -> list[tuple[object, bool]]:
    """``(entry, helped)`` in the order a node works: its own shard first, then the other shards in turn
    (node i starts with shard i+1, so helpers spread out), each from its END: its owner works from the start,
    so owner and helper meet in the middle instead of doing the same items twice.  ``entry[0]`` is the item."""
    if not shard or shard[1] <= 1:
        return [(t, False) for t in todo]
    i, n = shard
    by_shard: dict[int, list] = {}
    for t in todo:
        by_shard.setdefault(shard_of(t[0], n), []).append(t)
    own = [(t, False) for t in by_shard.get(i, [])]
    return own + [(t, True) for k in range(1, n) for t in reversed(by_shard.get((i + k) % n, []))]


def parse_shard(text: str | None) -> tuple[int, int] | None:
    """``"i/n"`` (0-based i) -> (i, n); None -> None; anything else -> UsageError."""
    if text is None or text == "":
        return None
    try:
        i_s, n_s = text.split("/")
        i, n = int(i_s), int(n_s)
    except ValueError:
        raise UsageError(f"--shard must look like i/n, e.g. 0/4 (got {text!r})") from None
    if n < 1 or not 0 <= i < n:
        raise UsageError(f"--shard i/n needs n >= 1 and 0 <= i < n (got {text!r})")
    return i, n
