"""engines/dask/mounts.py without a cluster: which nodes' mounts are dead (every worker's own look, several workers
of one node saying the same), one remount per dead node, not again while a repair may still be under way, and a
remount that fails kept as such.  The real thing (a Dask cluster on a local fleet, sshfs killed mid-run) is
tests/test_dask_fleet.py."""
from __future__ import annotations

import threading
import types

from playbooks.engines import dask_chunk
from playbooks.engines.dask import mounts


class Client:
    """Answers ``run(dask_chunk.mount_state)`` with the looks given, one worker address each."""

    def __init__(self, looks):
        self.looks, self.calls = looks, []

    def run(self, fn, on_error="raise"):
        self.calls.append((fn, on_error))
        return {f"tcp://127.0.0.1:{4000 + k}": look for k, look in enumerate(self.looks)}


def node(name):
    return types.SimpleNamespace(name=name)


def test_a_dead_mount_is_remounted_once_and_kept(monkeypatch):
    dead = {"node": "n1", "ok": False, "error": "Transport endpoint is not connected"}
    client = Client([{"node": "n0", "ok": True, "error": None}, dead, dead,            # n1 has two workers
                     {"node": "elsewhere", "ok": False, "error": "x"}, RuntimeError("worker gone")])
    asked = []

    def remount(ns):
        asked.append([n.name for n in ns])
        return [types.SimpleNamespace(ok=True, error=None)]
    watch = mounts.MountWatch(remount, [node("n0"), node("n1")], client, every=1.0)
    watch.check()
    assert client.calls == [(dask_chunk.mount_state, "return")]      # a worker that cannot answer is no error
    assert asked == [["n1"]]                                        # not a node of another fleet
    [rep] = watch.repairs
    assert rep["node"] == "n1" and rep["cause"] == "Transport endpoint is not connected"
    assert rep["detected_at"] <= rep["remounted_at"]
    watch.check()                                                   # still dead a second later: being repaired
    assert asked == [["n1"]]
    monkeypatch.setattr(mounts.time, "time", lambda: rep["detected_at"] + 3.5)
    watch.check()                                                   # still dead after 3 looks: once more
    assert asked == [["n1"], ["n1"]] and len(watch.repairs) == 2


def test_a_remount_that_fails_is_said_and_kept():
    client = Client([{"node": "n0", "ok": False, "error": "no answer within 3 s"}])
    watch = mounts.MountWatch(lambda ns: [types.SimpleNamespace(ok=False, error="ssh: connect timed out")],
                              [node("n0")], client, every=5.0)
    watch.check()
    [rep] = watch.repairs
    assert rep["remount_failed"] == "ssh: connect timed out" and "remounted_at" not in rep


def test_without_a_way_to_remount_nothing_watches():
    client = Client([{"node": "n0", "ok": False, "error": "x"}])
    with mounts.MountWatch(None, [node("n0")], client, every=0.2) as watch:
        pass
    assert not watch._thread.is_alive() and client.calls == [] and watch.repairs == []


def test_a_mount_that_answers_is_ok_and_a_missing_one_is_not(tmp_path, monkeypatch):
    monkeypatch.setenv("FLEETBOOK_MOUNT", str(tmp_path))
    monkeypatch.setenv("FLEETBOOK_NODE_NAME", "n7")
    assert dask_chunk.mount_state() == {"node": "n7", "ok": True, "error": None, "mountpoint": str(tmp_path)}
    monkeypatch.setenv("FLEETBOOK_MOUNT", str(tmp_path / "gone"))
    look = dask_chunk.mount_state()
    assert look["ok"] is False and "No such file" in look["error"]


def test_a_chunk_waits_for_a_dead_mount_then_lets_dask_retry_it(tmp_path, monkeypatch):
    monkeypatch.setenv("FLEETBOOK_MOUNT_WAIT", "1")
    gone = tmp_path / "mnt"
    threading.Timer(0.5, gone.mkdir).start()                        # the mount is back within the wait
    dask_chunk._wait_for_mount(str(gone), "n0")
    monkeypatch.setenv("FLEETBOOK_MOUNT_WAIT", "0")
    try:
        dask_chunk._wait_for_mount(str(tmp_path / "never"), "n0")
    except RuntimeError as e:
        assert "n0: the shared disk at" in str(e) and "does not answer" in str(e)
    else:
        raise AssertionError("a mount that never answers must fail the chunk (Dask retries it)")
