"""workloads/fw_items.py: one item through its workload, as named records (Job, Task, Result)."""
from __future__ import annotations

import errno
import os
from types import SimpleNamespace

import pytest

from tests.support.workloads import fleetwork

import fw_items  # noqa: E402 - workloads/ is on sys.path (workloads_support)
from fw_items import Job, Result, Task


class Echo(fleetwork.Workload):
    name = "echo"
    needs_src = False

    def __init__(self, error=None):
        super().__init__()
        self.error, self.calls = error, []

    def output_for(self, item, opts):
        return item + ".out"

    def process(self, item, src, dst, opts):
        self.calls.append(item)
        if self.error is not None:
            raise self.error
        fleetwork.atomic_write(os.path.join(dst, self.output_for(item, opts)), item.encode())


def job(tmp_path, wl):
    return Job(wl, str(tmp_path / "src"), str(tmp_path / "dst"), None, "n1")


def test_done_clears_an_old_failure_record(tmp_path):
    wl = Echo()
    fleetwork.record_failure(str(tmp_path / "dst"), "a", "empty")
    assert fw_items.do_item(job(tmp_path, wl), Task("a", had_record=True)) == Result("a", "done", None)
    assert (tmp_path / "dst" / "a.out").read_bytes() == b"a"
    assert fleetwork.read_failures(str(tmp_path / "dst")) == {}


def test_recheck_skips_an_item_whose_output_appeared(tmp_path, monkeypatch):
    wl = Echo()
    (tmp_path / "dst").mkdir()
    (tmp_path / "dst" / "b.out").write_bytes(b"by another node")
    assert fw_items.do_item(job(tmp_path, wl), Task("b", recheck=True)).status == "skipped"
    # issue 13: the claim checks the output once it holds the item, so a helper's output is not redone
    assert fw_items.do_item(job(tmp_path, wl), Task("b")).status == "skipped"
    assert not (tmp_path / "dst" / ".claims").exists() or not os.listdir(tmp_path / "dst" / ".claims")
    monkeypatch.setenv("FLEETBOOK_CLAIMS", "0")                  # measuring only: the runner without claims
    assert fw_items.do_item(job(tmp_path, wl), Task("b")).status == "done"    # no recheck: done again
    assert wl.calls == ["b"]


def test_bad_input_and_other_errors_are_recorded_but_a_full_disk_stops_the_run(tmp_path):
    bad = fw_items.do_item(job(tmp_path, Echo(fleetwork.BadInput("truncated", "cut"))), Task("c"))
    assert bad == Result("c", "failed", "truncated")
    other = fw_items.do_item(job(tmp_path, Echo(ValueError("boom"))), Task("d"))
    assert other.reason == "error"
    records = fleetwork.read_failures(str(tmp_path / "dst"))
    assert records["c"]["node"] == "n1" and records["d"]["error"] == "ValueError: boom"
    with pytest.raises(fleetwork.DestinationError, match="destination"):
        fw_items.do_item(job(tmp_path, Echo(OSError(errno.EROFS, "Read-only file system"))), Task("e"))
    assert "e" not in fleetwork.read_failures(str(tmp_path / "dst"))


# ------------------------------------------------------------------------------------------------ issue 15
def test_claims_per_block_one_claim_for_many_items_and_a_held_block_is_busy(tmp_path, monkeypatch):
    """With the run's item count known, a block of items costs one claim (made once, then turned into a done
    marker), not one per item; a block another live process holds is busy for all its items; the blocks every
    node computes are the same and cover every item once."""
    import fw_claims

    monkeypatch.setenv("FLEETBOOK_CLAIM_BLOCK", "8")
    items = [f"i{k:03d}" for k in range(64)]
    keys = {it: fw_claims.block_of(it, 2, len(items)) for it in items}
    assert keys == {it: fw_claims.block_of(it, 2, len(items)) for it in reversed(items)}
    assert 4 <= len(set(keys.values())) <= 16                  # about 64 / 8 blocks, never one per item
    wl = Echo()
    j = Job(wl, str(tmp_path / "src"), str(tmp_path / "dst"), SimpleNamespace(shard="0/2"), "n1", total=len(items),
            token="run-1")
    made = []
    real_create = fw_claims._create
    monkeypatch.setattr(fw_claims, "_create", lambda path, rec: real_create(path, rec) and not made.append(path))
    held_key = keys[items[0]]
    held = [it for it in items if keys[it] == held_key]
    other = fw_claims.acquire_block(j.dst, held_key, token="run-1", node="n2")   # held by "another node" (this
    monkeypatch.setattr(fw_claims, "HOST", "elsewhere")          # live process, seen as another host, no heartbeat)
    made.clear()
    tasks = fw_items.with_blocks(j, [Task(it) for it in items])
    results = list(fw_items.run_tasks(j, tasks))
    assert sorted(r.item for r in results) == items
    assert {r.item for r in results if r.status == "busy"} == set(held)
    assert {r.item for r in results if r.status == "done"} == set(items) - set(held)
    assert len(made) == len(set(keys.values())) - 1              # one claim per free block
    assert fw_claims.unsettled(j.dst) == [os.path.basename(other.path)]   # the others are done markers
    # the other node did held[0], then stopped (a notice): its claim names what it settled
    (tmp_path / "dst" / f"{held[0]}.out").write_bytes(b"by the other node")
    fw_claims.settle(other, token="run-1", done=False, settled={held[0]})
    busy = [t for t in tasks if t.item in held]
    again = {r.item: r.status for r in fw_items.run_tasks(j, [t._replace(recheck=True) for t in busy])}
    assert again[held[0]] == "skipped" and all(again[it] == "done" for it in held[1:])
    assert sorted(wl.calls) == sorted(set(items) - {held[0]})      # nothing done twice
    assert fw_claims.unsettled(j.dst) == []                       # every block done
    # a helper of the same run that comes to every item now: all skipped, nothing done
    assert {r.status for r in fw_items.run_tasks(j, tasks)} == {"skipped"}
    assert len(wl.calls) == len(items) - 1


def test_block_size_one_is_a_claim_per_item(tmp_path, monkeypatch):
    import fw_claims

    monkeypatch.setenv("FLEETBOOK_CLAIM_BLOCK", "1")
    assert fw_claims.block_of("a", 2, 100) is None
    monkeypatch.setenv("FLEETBOOK_CLAIM_BLOCK", "16")
    assert fw_claims.block_of("a", 2, 0) is None                 # item count unknown: per item, as before


def test_a_callable_output_is_written_in_one_write_and_atomically(tmp_path, monkeypatch):
    """np.savez-like writers write many small pieces: over sshfs each would be a round trip, so the output is
    built in memory and written once; a writer that fails leaves neither the output nor a temp file."""
    import fw_outputs

    writes = []
    real_write = os.write
    monkeypatch.setattr(os, "write", lambda fd, b: writes.append(len(b)) or real_write(fd, b))

    def pieces(f):
        for k in range(100):
            f.write(b"%03d" % k)

    out = tmp_path / "d" / "x.bin"
    fw_outputs.atomic_write(str(out), pieces)
    assert out.read_bytes() == b"".join(b"%03d" % k for k in range(100))
    assert len(writes) == 1

    def broken(f):
        f.write(b"half")
        raise RuntimeError("writer failed")

    with pytest.raises(RuntimeError):
        fw_outputs.atomic_write(str(tmp_path / "d" / "y.bin"), broken)
    assert sorted(os.listdir(tmp_path / "d")) == ["x.bin"]
    # the folder went away after this process made it once: made again, not an error
    out.unlink()
    (tmp_path / "d").rmdir()
    fw_outputs.atomic_write(str(out), b"again")
    assert out.read_bytes() == b"again"


def test_prefetch_reads_the_next_items_files_ahead_with_the_same_checks(tmp_path, monkeypatch):
    """The next item's bytes are read in the background and taken once by read_bytes; what the checks refuse
    (a link out of --src, a FIFO) is never taken from the prefetch: the item's own read raises as before."""
    import fw_inputs

    fw_inputs.forget_prefetched()
    src = tmp_path / "src"
    src.mkdir()
    (src / "a.jpg").write_bytes(b"A" * 1000)
    (tmp_path / "secret").write_bytes(b"S")
    (src / "out.jpg").symlink_to(tmp_path / "secret")
    os.mkfifo(src / "pipe.jpg")
    reads = []
    real = fw_inputs._read_now
    monkeypatch.setattr(fw_inputs, "_read_now", lambda path: reads.append(path) or real(path))
    fw_inputs._AHEAD.clear()              # what an earlier run in this process read ahead and never took
    fw_inputs.prefetch(str(src), ["a.jpg", "out.jpg", "pipe.jpg"])
    for fut in list(fw_inputs._AHEAD.values()):
        fut.exception(timeout=10)
    assert reads == [str(src / "a.jpg"), str(src / "pipe.jpg")]           # the link out of src is not read
    assert fw_inputs.read_bytes(str(src / "a.jpg")) == b"A" * 1000
    assert reads.count(str(src / "a.jpg")) == 1                          # taken from the prefetch
    with pytest.raises(fleetwork.BadInput, match="not a file|regular"):
        fw_inputs.read_bytes(str(src / "pipe.jpg"))
    assert set(fw_inputs._AHEAD) <= {str(src / "out.jpg")}
    fw_inputs.forget_prefetched()
    monkeypatch.setenv("FLEETBOOK_PREFETCH", "0")
    fw_inputs.prefetch(str(src), ["a.jpg"])
    assert not fw_inputs._AHEAD
    # a run's list of items ends: what was read ahead and not taken is dropped (never served stale later)
    monkeypatch.delenv("FLEETBOOK_PREFETCH")
    wl = Echo()
    wl.needs_src, wl.source_files = True, lambda item, opts: [item]
    j = Job(wl, str(src), str(tmp_path / "dst"), None, "n1")
    assert [r.status for r in fw_items.run_tasks(j, [Task("a.jpg"), Task("out.jpg")])] == ["done", "failed"]
    assert not fw_inputs._AHEAD


def _prefetch_and_read(path: str) -> bytes:
    import fw_inputs

    fw_inputs.prefetch(os.path.dirname(path), [os.path.basename(path)])
    return fw_inputs.read_bytes(path)


def test_a_forked_pool_worker_prefetches_on_its_own_thread_not_the_runners_dead_one(tmp_path):
    """An inline run made the prefetch thread; a pool forked later inherits the executor without its thread.
    The worker must start its own, else its first read waits forever (a pool run after an inline run hung)."""
    import concurrent.futures as cf
    import multiprocessing

    import fw_inputs
    import fw_pool

    (tmp_path / "a.jpg").write_bytes(b"A" * 100)
    (tmp_path / "b.jpg").write_bytes(b"B" * 100)
    assert _prefetch_and_read(str(tmp_path / "a.jpg")) == b"A" * 100      # the runner's own thread exists now
    assert fw_inputs._POOL
    pool = cf.ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("fork"))
    try:
        assert pool.submit(_prefetch_and_read, str(tmp_path / "b.jpg")).result(timeout=15) == b"B" * 100
    finally:
        fw_pool.kill_pool(pool)
