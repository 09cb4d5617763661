"""workloads/fw_items.py: one item through its workload, as named records (Job, Task, Result)."""
from __future__ import annotations

import errno
import os

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
