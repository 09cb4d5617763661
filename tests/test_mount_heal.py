"""Issue 13 item 4 without a fleet: a runner whose mount drops (a fake "Transport endpoint is not connected" from
workloads/fw_faults.py) waits for it, bounded, and goes on, or exits `unhealthy`; never an item in flight recorded
as failed, never a partial output; its last words on its own disk."""
from __future__ import annotations

import errno
import json
import os
import subprocess
import time

import pytest
from tests.support.workloads import PY, check_jpeg_outputs, many_jpegs, run, script, summary_of, temp_files

import fw_claims
import fw_disk
from fw_errors import EXIT_UNHEALTHY


def _outputs(dst):
    return [p for p in dst.rglob("*.jpg") if not p.name.startswith(".")]


def _start(src, dst, state, local, flag, workers, wait):
    env = {**os.environ, "FLEETBOOK_PROFILE": "/nonexistent", "FLEETBOOK_ITEM_DELAY": "0.05",
           "FLEETBOOK_FAULT_MOUNT_DOWN": str(flag), "FLEETBOOK_MOUNT_WAIT": str(wait),
           "FLEETBOOK_LOCAL_STATE": str(local)}
    env.pop("FLEETBOOK_FAULT", None)
    return subprocess.Popen([PY, script("resize"), "--src", str(src), "--dst", str(dst), "--workers", str(workers),
                             "--state", str(state)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=env)


def _until(check, proc, deadline_s=60):
    deadline = time.monotonic() + deadline_s
    while not check():
        assert time.monotonic() < deadline, "timed out"
        assert proc.poll() is None, proc.communicate()
        time.sleep(0.05)


@pytest.mark.parametrize("workers", [1, 2])
def test_a_runner_rides_out_a_dropped_mount_and_goes_on(tmp_path, workers):
    src, dst, state, local, flag = (tmp_path / x for x in ("src", "dst", "state", "local", "mount-down"))
    names = many_jpegs(src, 40, side=96)
    proc = _start(src, dst, state, local, flag, workers, wait=60)
    _until(lambda: len(_outputs(dst)) >= 5, proc)
    flag.touch()                                        # the mount drops: every read and write fails ENOTCONN
    _until(lambda: (local / "health.json").exists(), proc)
    health = json.loads((local / "health.json").read_text())
    assert health["state"] == "mount-lost" and "Transport endpoint is not connected" in health["error"]
    frozen = len(_outputs(dst))
    time.sleep(1.5)                                     # it waits: nothing is done, nothing is failed
    assert len(_outputs(dst)) == frozen and proc.poll() is None
    assert not list((dst / ".failed").iterdir())
    flag.unlink()                                       # the mount is back
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err
    assert summary_of(out)["failed"] == 0
    check_jpeg_outputs(dst, names)
    assert len(_outputs(dst)) == len(names)
    assert not list((dst / ".failed").iterdir()) and not temp_files(dst)
    assert fw_claims.unsettled(str(dst)) == []                 # only done markers (the head sweeps them)
    exit_ = json.loads((local / "exit.json").read_text())
    assert exit_ == json.loads((state / "exit.json").read_text())
    assert exit_["code"] == 0 and exit_["summary"]["mount_recoveries"] == 1
    assert json.loads((local / "health.json").read_text())["state"] == "running"
    assert "waiting up to 60 s for the mount" in err and "the mount answers again" in err


def test_a_mount_that_does_not_come_back_ends_the_run_unhealthy(tmp_path):
    src, dst, state, local, flag = (tmp_path / x for x in ("src", "dst", "state", "local", "mount-down"))
    names = many_jpegs(src, 30, side=96)
    proc = _start(src, dst, state, local, flag, 2, wait=2)
    _until(lambda: len(_outputs(dst)) >= 3, proc)
    flag.touch()
    t0 = time.monotonic()
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == EXIT_UNHEALTHY, err
    assert time.monotonic() - t0 >= 2                   # it waited for the mount first
    exit_ = json.loads((local / "exit.json").read_text())
    assert exit_["code"] == EXIT_UNHEALTHY and exit_["unhealthy"] is True
    assert exit_["error"].startswith("mount lost: Transport endpoint is not connected")
    assert "did not come back within 2 s" in exit_["error"]
    assert json.loads((local / "health.json").read_text())["state"] == "unhealthy"
    # no item in flight recorded as failed (not one failure record), no partial output
    assert summary_of(out)["failed"] == 0 and not list((dst / ".failed").iterdir())
    assert 3 <= len(_outputs(dst)) < len(names) and not temp_files(dst)
    check_jpeg_outputs(dst, [n for n in names if (dst / n).exists()])
    flag.unlink()                                       # once the mount is back, a re-run finishes the set
    r = run("resize", "--src", src, "--dst", dst, "--workers", 2)
    assert r.returncode == 0, r.stderr
    check_jpeg_outputs(dst, names)


def test_a_local_disks_io_error_is_the_items_a_network_mounts_is_the_mounts(tmp_path, monkeypatch):
    eio = OSError(errno.EIO, os.strerror(errno.EIO))
    gone = OSError(errno.ENOTCONN, os.strerror(errno.ENOTCONN))
    assert fw_disk.mount_lost(gone, str(tmp_path)) == "mount lost: Transport endpoint is not connected"
    assert fw_disk.mount_lost(eio, str(tmp_path)) is None            # a bad sector of one file on a local disk
    monkeypatch.setattr(fw_disk, "fs_type", lambda path: "fuse.sshfs")
    assert fw_disk.mount_lost(eio, str(tmp_path)) == "mount lost: Input/output error"
    monkeypatch.setattr(fw_disk, "free_bytes", lambda path: 1024)     # sshfs's full head: disk full, exit 3
    assert fw_disk.mount_lost(eio, str(tmp_path)) is None
    try:                                                 # a BadInput made from a mount's error is still the mount's
        try:
            raise gone
        except OSError as e:
            raise ValueError("unreadable") from None
    except ValueError as bad:
        assert fw_disk.mount_oserror(bad) is gone


def test_a_nodes_last_words_name_the_cause():
    from playbooks import nodehealth
    said = ("mount: dead Transport endpoint is not connected\nalive: no\n== health.json\n"
            '{"state": "unhealthy", "error": "mount lost: Transport endpoint is not connected (item \'a\'); it did '
            'not come back within 60 s"}\n\n== exit.json\n{"code": 4, "unhealthy": true}\n\n== log\nfleetwork: x\n')
    d = nodehealth.parse_last_words(said)
    assert d["mount"] == "dead" and d["alive"] is False and d["exit"]["code"] == 4 and d["log"] == ["fleetwork: x"]
    assert nodehealth.cause(d) == "mount lost: Transport endpoint is not connected"
    assert nodehealth.mount_trouble(d)
    back = nodehealth.parse_last_words(said.replace("mount: dead Transport endpoint is not connected", "mount: ok"))
    assert nodehealth.cause(back).startswith("mount lost: Transport endpoint is not connected (item 'a')")
    assert nodehealth.mount_trouble(back)               # the workload says it lost its mount: restart it
    fine = nodehealth.parse_last_words("mount: ok\nalive: yes\n== health.json\n\n== exit.json\n\n== log\n")
    assert nodehealth.cause(fine) is None and not nodehealth.mount_trouble(fine)
    assert not nodehealth.mount_trouble({"reachable": False, "error": "unreachable over SSH: timed out"})
