"""Copy a plan's entries on a pool of threads, each file on its own (atomic in its store), reporting progress.

At most ``threads * 4`` files are in flight at once (never one future per file of a 100,000-file tree up
front).  A file that fails is tried once more, then recorded with its error; the others go on.
"""
from __future__ import annotations

import time
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait
from dataclasses import dataclass, field

from playbooks.transfer.plan import Plan
from playbooks.transfer.stores import Counting, Entry

ATTEMPTS = 2


@dataclass
class Result:
    copied: int = 0
    bytes_copied: int = 0
    failed: list[tuple[str, str]] = field(default_factory=list)
    seconds: float = 0.0


def copy_one(src_store, dst_store, entry: Entry, on_bytes) -> None:
    for attempt in range(ATTEMPTS):
        sent = 0

        def count(n: int) -> None:
            nonlocal sent
            sent += n
            on_bytes(n)

        try:
            with Counting(src_store.open_read(entry.rel, entry), count) as src:
                dst_store.write(entry.rel, entry, src)
            return
        except Exception:
            on_bytes(-sent)            # the bar goes back: this file's bytes will come again
            if attempt == ATTEMPTS - 1:
                raise


def run(plan: Plan, src_store, dst_store, threads: int, on_bytes=lambda n: None, on_file=lambda e: None) -> Result:
    """Copy ``plan.copy`` from ``src_store`` to ``dst_store``; ``on_bytes(n)`` and ``on_file(entry)`` are called
    from the worker threads as data moves and as each file lands."""
    result = Result()
    start = time.monotonic()
    todo = iter(plan.copy)
    with ThreadPoolExecutor(max(1, threads), thread_name_prefix="transfer") as pool:
        running = {}
        while True:
            while len(running) < max(1, threads) * 4:
                entry = next(todo, None)
                if entry is None:
                    break
                running[pool.submit(copy_one, src_store, dst_store, entry, on_bytes)] = entry
            if not running:
                break
            done, _ = wait(running, return_when=FIRST_COMPLETED)
            for fut in done:
                entry = running.pop(fut)
                exc = fut.exception()
                if exc is None:
                    result.copied += 1
                    result.bytes_copied += entry.size
                    on_file(entry)
                else:
                    result.failed.append((entry.rel, f"{type(exc).__name__}: {exc}".strip()[:300]))
    result.seconds = time.monotonic() - start
    return result
