"""workloads/fleetwork.py: the shared runner (chunk size, profile, skip-if-done, shards, state files, temps)."""
from __future__ import annotations

import json
import os
import pty
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.support.workloads import PY, check_jpeg_outputs, fleetwork, many_jpegs, run, script, summary_of, temp_files

import fw_items  # noqa: E402 - workloads/ is on sys.path (workloads_support)
import fw_outputs  # noqa: E402
import fw_progress  # noqa: E402


# ------------------------------------------------------------------------------------------------ units
@pytest.mark.parametrize("n, workers, item_s, overhead_us, expected", [
    (10_000, 2, 1e-3, 126.0, 3),        # 126 us <= 5 % of 3 x 1 ms
    (10_000, 2, 1.0, 126.0, 1),         # expensive items: one per task
    (1_000, 2, 1e-5, 126.0, 125),       # cheap items want 252 per chunk, but keep 4 chunks per worker
    (100_000, 2, 1e-5, 126.0, 252),
    (1_000, 4, None, 126.0, 62),        # unknown cost: the 4-chunks-per-worker cap
    (3, 8, 1e-3, 126.0, 1),             # fewer items than workers
    (0, 2, 1e-3, 126.0, 1),
    (10_000, 2, 1e-3, 0.0, 1),          # free tasks
])
def test_choose_chunksize(n, workers, item_s, overhead_us, expected):
    c = fleetwork.choose_chunksize(n, workers, item_s, overhead_us)
    assert c == expected
    if item_s and c < max(1, n // (4 * workers)):          # not capped: overhead is <= 5 % ...
        assert overhead_us / 1e6 <= 0.05 * item_s * c
        if c > 1:                                          # ... and c is the smallest such chunk
            assert overhead_us / 1e6 > 0.05 * item_s * (c - 1)


def test_parse_shard_and_shard_of():
    assert fleetwork.parse_shard("0/4") == (0, 4) and fleetwork.parse_shard(None) is None
    for bad in ("4/4", "-1/2", "1/0", "a/b", "1", "1/2/3"):
        with pytest.raises(fleetwork.UsageError):
            fleetwork.parse_shard(bad)
    items = [f"x/{i}.jpg" for i in range(400)]
    counts = [sum(fleetwork.shard_of(it, 4) == k for it in items) for k in range(4)]
    assert sum(counts) == 400 and min(counts) > 60
    assert fleetwork.shard_of("a.jpg", 7) == int(fleetwork.item_hash("a.jpg"), 16) % 7


def test_load_and_available():
    assert {"resize", "edges", "features", "gridsearch"} <= set(fleetwork.available())
    assert not {"fleetwork", "storage"} & set(fleetwork.available())          # helpers, not workloads
    wl = fleetwork.load("resize")
    assert wl.name == "resize" and isinstance(wl, fleetwork.Workload)
    with pytest.raises(KeyError, match="available"):
        fleetwork.load("no-such-workload")
    # the head's way: `from workloads import fleetwork`, then load(): the workload's `import fleetwork` is the
    # same module, so BadInput & co are one class
    code = ("import sys; from workloads import fleetwork; w = fleetwork.load('gridsearch'); "
            "m = sys.modules['gridsearch']; print(m.fleetwork is fleetwork, type(w).__mro__[1] is fleetwork.Workload)")
    r = subprocess.run([PY, "-c", code], cwd=Path(fleetwork.HERE).parent, capture_output=True, text=True, timeout=60)
    assert r.stdout.split() == ["True", "True"], r.stderr


def test_scan_outputs_skips_dot_entries_and_temps(tmp_path):
    (tmp_path / "a" / "b").mkdir(parents=True)
    (tmp_path / "a" / "b" / "x.jpg").write_bytes(b"1")
    (tmp_path / "top.jpg").write_bytes(b"1")
    (tmp_path / "a" / ".x.jpg.tmp-host-1-ab").write_bytes(b"")
    (tmp_path / ".failed").mkdir()
    (tmp_path / ".failed" / "r.json").write_text("{}")
    (tmp_path / ".hidden").write_text("")
    assert fleetwork.scan_outputs(str(tmp_path)) == {"a/b/x.jpg", "top.jpg"}
    assert fleetwork.scan_outputs(str(tmp_path / "missing")) == set()


def test_atomic_write_and_failure_record(tmp_path):
    fleetwork.atomic_write(str(tmp_path / "sub" / "o.bin"), b"abc")
    fleetwork.atomic_write(str(tmp_path / "sub" / "o.bin"), lambda f: f.write(b"xyz"))
    assert (tmp_path / "sub" / "o.bin").read_bytes() == b"xyz"
    def half_then_fail(f):
        f.write(b"half")
        raise RuntimeError("encoder failed")

    with pytest.raises(RuntimeError):
        fleetwork.atomic_write(str(tmp_path / "sub" / "p.bin"), half_then_fail)
    assert sorted(os.listdir(tmp_path / "sub")) == ["o.bin"]          # no temp left after an error
    fleetwork.record_failure(str(tmp_path), "a b/ü.jpg", "empty", "0 bytes", node="n1")
    rec = fleetwork.read_failures(str(tmp_path))["a b/ü.jpg"]
    assert rec["reason"] == "empty" and rec["node"] == "n1"
    assert os.listdir(tmp_path / ".failed") == [fleetwork.item_hash("a b/ü.jpg")[:20] + ".json"]


def test_sweep_only_dead_temps_of_this_host(tmp_path):
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    host = fleetwork.HOST
    names = {f".a.jpg.tmp-{host}-{dead.pid}-0001": False,       # dead owner on this host: swept
             f".b.jpg.tmp-{host}-1-0002": True,                 # pid 1 is alive and older than the file
             f".c.jpg.tmp-other-host-{dead.pid}-0003": True}     # another host's: never touched here
    (tmp_path / "d").mkdir()
    for n in names:
        (tmp_path / "d" / n).write_bytes(b"partial")
    _outs, temps = fw_outputs.scan(str(tmp_path))
    assert len(temps) == 3
    assert fleetwork.sweep_temps(temps) == 1
    for n, kept in names.items():
        assert (tmp_path / "d" / n).exists() == kept, n


# ------------------------------------------------------------------------------------------------ runner
def test_second_run_changes_nothing_and_costs_one_scan(tmp_path, monkeypatch):
    names = many_jpegs(tmp_path / "src", 24, side=160)
    dst = tmp_path / "dst"
    wl = fleetwork.load("resize")
    args = ["--src", str(tmp_path / "src"), "--dst", str(dst), "--workers", "1", "--quiet"]
    assert fleetwork.main(wl, args) == 0
    check_jpeg_outputs(dst, names)
    before = {n: (os.stat(dst / n).st_ino, os.stat(dst / n).st_mtime_ns) for n in fleetwork.scan_outputs(str(dst))}

    calls = {"stat": [], "scandir_dst": 0, "process": 0}
    real_stat, real_lstat, real_scandir = os.stat, os.lstat, os.scandir
    root = str(tmp_path)

    def counted(fn):                # os.path.exists/isdir/islink and realpath all end in os.stat/os.lstat
        def wrapper(path, *a, **k):
            if str(path).startswith(root):
                calls["stat"].append(str(path)[len(root):])
            return fn(path, *a, **k)
        return wrapper

    def scandir(path="."):
        if isinstance(path, int) or str(path).startswith(str(dst)):   # .failed is listed by its descriptor
            calls["scandir_dst"] += 1
        return real_scandir(path)

    def no_process(*a, **k):
        calls["process"] += 1

    monkeypatch.setattr(os, "stat", counted(real_stat))
    monkeypatch.setattr(os, "lstat", counted(real_lstat))
    monkeypatch.setattr(os, "scandir", scandir)
    monkeypatch.setattr(type(wl), "process", no_process)
    assert fleetwork.main(wl, args) == 0
    monkeypatch.undo()
    assert calls["process"] == 0
    # a few checks of src/dst themselves (isdir, realpath, makedirs), none of any item or output
    assert len(calls["stat"]) <= 10, calls
    assert not [p for p in calls["stat"] if p.endswith((".jpg", ".json"))], calls
    # dst, its subfolders and .failed (.claims, the first run's done markers, is not listed)
    dirs_in_dst = 1 + sum(len([x for x in d if x != ".claims"]) for _r, d, _f in os.walk(dst))
    assert calls["scandir_dst"] == dirs_in_dst, calls            # one walk, each folder listed once
    after = {n: (os.stat(dst / n).st_ino, os.stat(dst / n).st_mtime_ns) for n in fleetwork.scan_outputs(str(dst))}
    assert after == before


class Recorder(fleetwork.Workload):
    """A cheap workload for runner tests: items are names, outputs text files."""

    name = "recorder"
    needs_src = False

    def __init__(self, n=12, sleep=0.0, on_process=None):
        super().__init__()
        self.n, self.sleep, self.on_process, self.order = n, sleep, on_process, []

    def list_items(self, src, opts):
        return [f"item{i:03d}" for i in range(self.n)]

    def output_for(self, item, opts):
        return item + ".txt"

    def process(self, item, src, dst, opts):
        self.order.append(item)
        if self.on_process:
            self.on_process(item, dst)
        time.sleep(self.sleep)
        if item.endswith("7"):
            raise fleetwork.BadInput("sevens", "items ending in 7 are bad")
        fleetwork.atomic_write(os.path.join(dst, self.output_for(item, opts)), item.encode())


def test_shard_does_own_share_first_then_helps(tmp_path, monkeypatch):
    import fw_claims
    wl = Recorder(n=40)
    n, i = 3, 1
    own = [it for it in wl.list_items(None, None) if fleetwork.shard_of(it, n) == i]
    victim = next(it for it in wl.list_items(None, None) if fleetwork.shard_of(it, n) != i)
    monkeypatch.setenv("FLEETBOOK_RUN", "run-t")

    def another_node_does(item, dst):
        if item == own[0]:                 # meanwhile another node of the run does `victim` under its block's
            key = fw_claims.block_of(victim, n, 40)    # claim, then stops: its marker names what it settled
            held = fw_claims.acquire_block(dst, key, token="run-t", node="n2")
            Path(dst, victim + ".txt").write_text("by another node")
            fw_claims.settle(held, token="run-t", done=False, settled={victim})

    wl.on_process = another_node_does
    rc = fleetwork.main(wl, ["--dst", str(tmp_path), "--shard", f"{i}/{n}", "--workers", "1", "--node", "n1",
                             "--quiet"])
    assert rc == 0
    assert wl.order[:len(own)] == own                          # own share first, in order
    assert victim not in wl.order                               # its block's marker says so: not redone
    helped = wl.order[len(own):]
    assert helped != sorted(helped)                             # the help phase is shuffled
    assert Path(tmp_path, victim + ".txt").read_text() == "by another node"
    assert len(fleetwork.scan_outputs(str(tmp_path))) == 40 - 4  # item007, 017, 027, 037 failed
    # shuffle is seeded by the node name: same node, same order
    wl2 = Recorder(n=40)
    fleetwork.main(wl2, ["--dst", str(tmp_path / "again"), "--shard", f"{i}/{n}", "--workers", "1",
                         "--node", "n1", "--quiet"])
    assert [x for x in wl2.order if x != victim] == wl.order


def test_state_files_and_progress(tmp_path, monkeypatch):
    monkeypatch.setattr(fw_progress, "HEARTBEAT_EVERY", 0.05)
    wl = Recorder(n=20, sleep=0.01)
    state = tmp_path / "state" / "node1"
    rc = fleetwork.main(wl, ["--dst", str(tmp_path / "dst"), "--state", str(state), "--workers", "1",
                             "--node", "node1", "--quiet"])
    assert rc == 0
    hb = json.loads((state / "heartbeat.json").read_text())
    assert set(hb) == {"node", "pid", "host", "total", "done", "skipped", "failed", "rate_per_s", "started_at",
                       "updated_at", "first_output_at", "last_output_at"}
    assert hb["started_at"] <= hb["first_output_at"] <= hb["last_output_at"] <= hb["updated_at"]
    assert (hb["node"], hb["total"], hb["done"], hb["failed"]) == ("node1", 20, 18, 2)
    ex = json.loads((state / "exit.json").read_text())
    assert ex["code"] == 0 and ex["summary"]["done"] == 18 and ex["finished_at"] >= hb["started_at"]
    opts = wl.parse_args(["--dst", str(tmp_path / "dst")])
    assert fleetwork.count_progress(wl, None, str(tmp_path / "dst"), opts) == \
        {"total": 20, "done": 18, "failed": 2, "pending": 0}
    assert not [f for f in os.listdir(state) if fleetwork.TMP_MARK in f]


def test_profile_gives_start_method_and_chunksize(tmp_path):
    many_jpegs(tmp_path / "src", 40, side=96)
    profile = tmp_path / "profile.json"
    # a very expensive task overhead: after 4 probe items (one per task), the chunk size is the
    # 4-chunks-per-worker cap, (40 - 4) // (4 * 2) = 4
    profile.write_text(json.dumps({"start_method": "spawn", "per_task_overhead_us": 1e6, "cores": 2}))
    env = {"FLEETBOOK_PROFILE": str(profile), "FLEETBOOK_CORES": "2"}   # a 2-core machine, like the profile's
    r = run("resize", "--src", tmp_path / "src", "--dst", tmp_path / "dst", env=env)
    assert r.returncode == 0, r.stderr
    summary = json.loads(r.stderr.split("fleetwork: summary ", 1)[1].splitlines()[0])
    assert (summary["start_method"], summary["workers"], summary["profile"]) == ("spawn", 2, str(profile))
    assert summary["chunksize"] == 4
    assert "start_method=spawn chunksize=4" in r.stderr
    # a profile may also fix the chunk size; flags still win
    profile.write_text(json.dumps({"start_method": "fork", "chunksize": 3, "cores": 2}))
    r = run("resize", "--src", tmp_path / "src", "--dst", tmp_path / "dst2", env=env)
    assert "start_method=fork chunksize=3" in r.stderr, r.stderr
    r = run("resize", "--src", tmp_path / "src", "--dst", tmp_path / "dst3", "--chunksize", 5, "--workers", 2,
            env=env)
    assert "start_method=fork chunksize=5" in r.stderr, r.stderr
    for d in ("dst", "dst2", "dst3"):
        assert len(fleetwork.scan_outputs(str(tmp_path / d))) == 40


def test_progress_bar_only_on_a_tty(tmp_path):
    many_jpegs(tmp_path / "src", 4, side=96)
    master, slave = pty.openpty()
    env = dict(os.environ, FLEETBOOK_PROFILE="/nonexistent")
    p = subprocess.Popen([PY, script("resize"), "--src", str(tmp_path / "src"), "--dst", str(tmp_path / "dst"),
                          "--workers", "1"], stdout=slave, stderr=subprocess.DEVNULL, env=env)
    os.close(slave)
    out = b""
    while True:
        try:
            chunk = os.read(master, 4096)
        except OSError:
            break
        if not chunk:
            break
        out += chunk
    assert p.wait(30) == 0
    os.close(master)
    text = out.decode()
    assert "\r[" in text and "4/4" in text
    assert text.strip().splitlines()[-1].startswith("done=4 ")
    r = run("resize", "--src", tmp_path / "src", "--dst", tmp_path / "dst2", "--workers", 1)
    assert "\r" not in r.stdout and r.stdout.count("\n") == 1


def test_sigterm_stops_cleanly_with_exit_record(tmp_path):
    """The fleet runner stops a node with SIGTERM: exit 143, exit.json written, the summary says incomplete."""
    import signal

    state = tmp_path / "state"
    env = dict(os.environ, FLEETBOOK_PROFILE="/nonexistent")
    p = subprocess.Popen([PY, script("gridsearch"), "--dst", str(tmp_path / "grid"), "--grid", "small",
                          "--workers", "1", "--state", str(state)], stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True, env=env)
    deadline = time.time() + 30
    while not (state / "heartbeat.json").exists() and time.time() < deadline:
        time.sleep(0.05)
    time.sleep(0.2)
    p.send_signal(signal.SIGTERM)
    out, err = p.communicate(timeout=60)
    assert p.returncode == 128 + signal.SIGTERM, err
    assert "Traceback" not in err
    rec = json.loads((state / "exit.json").read_text())
    assert rec["code"] == 143 and rec["summary"]["stopped"] == signal.SIGTERM
    assert out.strip().splitlines()[-1].startswith("done=")
    assert not temp_files(tmp_path / "grid")


class Crasher(Recorder):
    """A workload whose item003 kills its worker process (a decoder segfault, the OOM killer)."""

    def process(self, item, src, dst, opts):
        if item == "item003":
            import signal
            os.kill(os.getpid(), signal.SIGKILL)
        super().process(item, src, dst, opts)


def test_item_that_kills_its_worker_is_isolated_and_recorded(tmp_path, capsys):
    wl = Crasher(n=24)
    dst = tmp_path / "dst"
    rc = fleetwork.main(wl, ["--dst", str(dst), "--workers", "2", "--start-method", "fork",
                             "--chunksize", "3", "--state", str(tmp_path / "st")])
    assert rc == 0
    err = capsys.readouterr().err
    assert "a worker died" in err and "Traceback" not in err
    failures = fleetwork.read_failures(str(dst))
    assert failures["item003"]["reason"] == "worker-crashed"
    assert {k for k, v in failures.items() if v["reason"] == "sevens"} == {"item007", "item017"}
    assert len(fleetwork.scan_outputs(str(dst))) == 24 - 3
    ex = json.loads((tmp_path / "st" / "exit.json").read_text())
    assert ex["code"] == 0 and ex["summary"]["worker_crashes"] == 1
    # the items of the chunks in flight are re-run alone: those already written count as skipped
    assert ex["summary"]["done"] + ex["summary"]["skipped"] == 21 and ex["summary"]["failed"] == 3


def test_shard_order_own_first_then_other_shards_from_their_end():
    import fleetwork as fw
    todo = [(f"img_{k:03d}.jpg", False) for k in range(60)]
    by = {j: [t for t in todo if fw.shard_of(t[0], 3) == j] for j in range(3)}
    order = fw.shard_order(todo, (1, 3))
    assert [t for t, helped in order if not helped] == by[1]
    assert [t for t, helped in order if helped] == by[2][::-1] + by[0][::-1]
    assert sorted(t for t, _ in order) == sorted(todo)  # every item once
    assert fw.shard_order(todo, None) == [(t, False) for t in todo]


def test_run_items_with_known_listing_does_not_walk_the_destination(tmp_path, monkeypatch):
    """An engine that listed the destination once passes known=: a chunk then checks only its own items."""
    fw = fleetwork
    src, dst = tmp_path / "src", tmp_path / "dst"
    names = many_jpegs(src, 6, side=64)
    wl = fw.load("resize")
    opts = wl.parse_args(["--src", str(src), "--dst", str(dst), "--workers", "1", "--quiet"])
    first = fw.run_items(wl, names[:3], str(src), str(dst), opts, progress_bar=False)
    assert first["done"] == 3
    walked = []
    real_scandir = os.scandir
    monkeypatch.setattr(os, "scandir", lambda p=".": (walked.append(os.fspath(p)), real_scandir(p))[1])
    summary = fw.run_items(wl, names, str(src), str(dst), opts, progress_bar=False, known=(set(), {}))
    monkeypatch.undo()
    assert (summary["done"], summary["skipped"]) == (3, 3)  # the 3 done ones found by a check each, not redone
    assert str(dst) not in walked
    check_jpeg_outputs(dst, names)


def test_threads_run_items_at_once_in_one_process(tmp_path):
    """--threads through the CLI: every item done, outputs valid; a bad value is a one-line usage error."""
    src, dst = tmp_path / "src", tmp_path / "dst"
    names = many_jpegs(src, 8, side=64)
    result = run("resize", "--src", str(src), "--dst", str(dst), "--workers", "1", "--threads", "4")
    assert result.returncode == 0, result.stderr
    assert summary_of(result.stdout)["done"] == 8
    check_jpeg_outputs(dst, names)
    bad = run("resize", "--src", str(src), "--dst", str(dst), "--threads", "0")
    assert bad.returncode == 2 and "--threads must be >= 1" in bad.stderr + bad.stdout


def test_threaded_really_runs_items_at_once_and_keeps_order():
    import threading
    barrier = threading.Barrier(4, timeout=10)  # breaks (and fails the test) unless 4 items run at the same time

    def item(k):
        barrier.wait()
        return k * k

    assert list(fw_items.threaded(item, list(range(8)), 4)) == [k * k for k in range(8)]
    assert list(fw_items.threaded(lambda k: -k, [1, 2, 3], 1)) == [-1, -2, -3]
