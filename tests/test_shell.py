"""`invoke exec` and `invoke ssh` on a real 2-node local fleet, and what `invoke progress` says of a finished run.

One fleet for the whole module (created, mounted and deployed once); every command goes through real sshd daemons.
"""
from __future__ import annotations

import json
import os
import pwd
import signal
import subprocess
import time
from pathlib import Path

import pytest
from tests.support.fleet import fleet_processes, invoke_cli, make_ctx

from playbooks import deploy, fleet, mount, progress, run, teardown
from playbooks.runs import state as runstate
from playbooks.providers import local
from playbooks.runs.samples import make_samples

pytestmark = [pytest.mark.fleet, pytest.mark.timeout(240)]
NAME = "sh" + os.urandom(2).hex()
N0, N1 = f"{NAME}-0", f"{NAME}-1"
KEYS = {"node", "host", "exit", "stdout", "stderr", "error"}


@pytest.fixture(scope="module")
def up(fleet_base):
    c = make_ctx(fleet_base, job__lost_after=5.0, job__poll=0.2)
    make_samples(fleet_base / "data" / "src", 16, size=(320, 240))
    try:
        fleet.create(c, n=2, name=NAME)
        mount.mount(c, name=NAME)
        deploy.deploy(c, name=NAME)
        yield c
    finally:
        teardown.teardown(c, name=NAME)


def nodes(c) -> dict:
    return {n.name: n for n in local.list_nodes(c, NAME)}


def cli(base, *args, **kw):
    return invoke_cli(base, *args, "--name", NAME, **kw)


def test_exec_runs_on_every_node_as_its_user_in_its_workdir(up, fleet_base):
    # `cat` first: stdin is /dev/null, so a command that reads it gets nothing and goes on at once
    result = cli(fleet_base, "exec", 'cat; pwd; id -un; echo "$FLEETBOOK_NODE"; echo to-stderr >&2', "--json",
                 "--timeout", "20")
    assert result.returncode == 0, result.stderr
    rows = json.loads(result.stdout)
    found = nodes(up)
    assert [r["node"] for r in rows] == [N0, N1] and all(set(r) == KEYS for r in rows)
    for r in rows:
        n = found[r["node"]]
        assert r["host"] == n.host and r["exit"] == 0 and r["error"] == ""
        assert r["stdout"] == f"{n.workdir}\n{n.user}\n{NAME}/{n.name}\n" and r["stderr"] == "to-stderr\n"


def test_exec_runs_in_the_home_while_there_is_no_workdir(up, fleet_base):
    n = nodes(up)[N0]
    moved = Path(n.workdir + ".away")
    os.rename(n.workdir, moved)
    try:
        result = cli(fleet_base, "exec", "pwd", "--nodes", N0, "--json")
    finally:
        os.rename(moved, n.workdir)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)[0]["stdout"] == pwd.getpwnam(n.user).pw_dir + "\n"  # the login home


def test_a_command_failing_on_one_node_fails_the_task_and_names_it(up, fleet_base):
    cmd = f'if [ "$FLEETBOOK_NODE" = {NAME}/{N1} ]; then echo broken-here >&2; exit 7; fi; echo fine'
    result = cli(fleet_base, "exec", cmd)
    assert result.returncode == 1
    assert result.stderr.strip().splitlines()[-1] == f"failed on 1 of 2 node(s): {N1} (exit 7)"
    lines = {ln.split("│")[1].strip(): ln for ln in result.stdout.splitlines() if ln.count("│") >= 4}
    assert " 0 " in lines[N0] and "fine" in lines[N0]
    assert " 7 " in lines[N1] and "broken-here" in lines[N1]
    as_json = cli(fleet_base, "exec", cmd, "--json")
    assert as_json.returncode == 1
    assert [(r["node"], r["exit"], r["stdout"]) for r in json.loads(as_json.stdout)] == [
        (N0, 0, "fine\n"), (N1, 7, "")]


def test_a_node_that_cannot_be_reached_fails_the_task_and_is_named(up, fleet_base):
    import psutil
    sshd = psutil.Process(int(nodes(up)[N1].id))
    sshd.send_signal(signal.SIGSTOP)          # the node's sshd stops answering: `unreachable`
    try:
        result = cli(fleet_base, "exec", "echo ran", "--json")
        alone = cli(fleet_base, "ssh", N1, "--command", "echo ran")
    finally:
        sshd.send_signal(signal.SIGCONT)
    assert result.returncode == 1
    assert [(r["node"], r["exit"], r["stdout"], r["error"]) for r in json.loads(result.stdout)] == [
        (N0, 0, "ran\n", ""), (N1, None, "", "not run: the node is unreachable")]
    assert result.stderr.strip().splitlines()[-1] == (
        f"failed on 1 of 2 node(s): {N1} (not run: the node is unreachable)")
    assert alone.returncode == 1 and "ran" not in alone.stdout
    assert alone.stderr.strip() == f"no running node to reach ({N1} unreachable): see `invoke fleet.list --name {NAME}`"


def test_nodes_picks_a_subset_and_refuses_unknown_names(up, fleet_base):
    result = cli(fleet_base, "exec", 'echo "$FLEETBOOK_NODE"', "--nodes", N1, "--json")
    assert result.returncode == 0, result.stderr
    assert [(r["node"], r["stdout"]) for r in json.loads(result.stdout)] == [(N1, f"{NAME}/{N1}\n")]
    bad = cli(fleet_base, "exec", "touch ran-anyway", "--nodes", f"{N1},nope")
    assert bad.returncode == 1 and bad.stdout == ""
    assert bad.stderr.strip() == f"no node nope in fleet {NAME}: its nodes are {N0}, {N1}"
    assert not (Path(nodes(up)[N1].workdir) / "ran-anyway").exists()


def test_output_with_markup_characters_is_shown_literally(up, fleet_base):
    cmd = r"printf '%s\n' '[red]x[/red]' '[/x] [bold' ':smile:'; printf 'esc\033[31mred\n' >&2"
    result = cli(fleet_base, "exec", cmd, "--nodes", N0)
    assert result.returncode == 0, result.stderr
    for literal in ("[red]x[/red]", "[/x] [bold", ":smile:", "esc\\x1b[31mred"):
        assert literal in result.stdout
    assert "\x1b[31m" not in result.stdout   # the node's escape sequence never reaches the terminal


def test_the_command_runs_exactly_as_typed_and_nothing_of_the_operator_goes_with_it(up, fleet_base, monkeypatch):
    cmd = ("X='a b'; printf '<%s>' \"$X\" 'c;d' \"it's\" '$HOME' \\$X \"$FLEETBOOK_NODE\"; echo; "
           "echo \"${FB_OPERATOR_SECRET-unset} ${SSH_AUTH_SOCK-no-agent}\" # a comment")
    here = subprocess.run(["sh", "-c", cmd], capture_output=True, text=True, check=True,
                          env={"PATH": os.environ["PATH"], "FLEETBOOK_NODE": f"{NAME}/{N0}"}).stdout
    assert here == f"<a b><c;d><it's><$HOME><$X><{NAME}/{N0}>\nunset no-agent\n"
    monkeypatch.setenv("FB_OPERATOR_SECRET", "leaked")
    monkeypatch.setenv("SSH_AUTH_SOCK", "/tmp/operator-agent.sock")
    result = cli(fleet_base, "exec", cmd, "--nodes", N0, "--json")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)[0]["stdout"] == here


def test_a_command_past_its_timeout_is_stopped_on_the_node(up, fleet_base):
    t0 = time.monotonic()
    result = cli(fleet_base, "exec", "echo started; sleep 47; echo never", "--timeout", "1", "--json")
    took = time.monotonic() - t0
    assert result.returncode == 1 and took < 20
    rows = json.loads(result.stdout)
    assert [(r["exit"], r["stdout"], r["error"]) for r in rows] == [(124, "started\n", "timed out after 1 s")] * 2
    assert "timed out after 1 s" in result.stderr
    for _ in range(50):
        left = [p for p in fleet_processes(NAME) if "sleep 47" in p]
        if not left:
            break
        time.sleep(0.1)
    assert not left, left


def test_bad_exec_arguments_get_one_line(up, fleet_base):
    for args, says in ((("exec", " "), "say what to run"), (("exec", "true", "--timeout", "soon"), "--timeout"),
                       (("ssh", "nope"), f"no node nope in fleet {NAME}: its nodes are {N0}, {N1}")):
        result = cli(fleet_base, *args)
        assert result.returncode == 1 and says in result.stderr and "Traceback" not in result.stderr
        assert len(result.stderr.strip().splitlines()) == 1


def test_ssh_runs_a_command_on_one_node_with_the_fleet_pins(up, fleet_base):
    n = nodes(up)[N1]
    result = cli(fleet_base, "ssh", N1, "--command", 'echo "$FLEETBOOK_NODE"; pwd; exit 3')
    assert result.returncode == 3, result.stderr
    assert result.stdout == f"{NAME}/{N1}\n{n.workdir}\n"
    # the fleet's own known_hosts decides: pin another key for the node and ssh refuses to talk to it
    known = Path(up.config.fleet.state_dir) / NAME / "known_hosts"
    saved = known.read_text()
    other = (local.node_dir(up, NAME, N0) / "ssh_host_ed25519_key.pub").read_text()
    entry = f"[{n.host}]:{n.port}"
    known.write_text("".join(ln + "\n" for ln in saved.splitlines() if not ln.startswith(entry + " "))
                     + f"{entry} {' '.join(other.split()[:2])}\n")
    try:
        refused = cli(fleet_base, "ssh", N1, "--command", "echo got-in")
    finally:
        known.write_text(saved)
    assert refused.returncode == 255 and "got-in" not in refused.stdout
    assert "host key" in refused.stderr.lower()


def test_progress_of_a_finished_run_gives_its_average_rate_duration_and_processed(up, fleet_base):
    record = run.start(up, NAME, list(nodes(up).values()), "resize", "src", "out-sh", "--size 32")
    snap = progress.wait_until_finished(up, record)
    files = [runstate.node_files(up, record["run_id"], e["name"]) for e in record["nodes"]]
    beats, exits = [b for b, _ in files], [x for _, x in files]
    assert snap["done"] == snap["total"] == 16
    assert snap["processed"] == sum(x["summary"]["done"] for x in exits) >= snap["done"]
    last = max(x["finished_at"] for x in exits)
    assert snap["duration_s"] == pytest.approx(last - record["started_at"], abs=0.1)
    assert 0 < snap["duration_s"] <= snap["elapsed_s"]
    assert snap["rate_per_s"] == pytest.approx(16 / (last - record["started_at"]), abs=0.001)
    for n, beat, x in zip(snap["nodes"], beats, exits):  # a finished node shows its own average (last beat), not 0
        assert n["done"] == x["summary"]["done"] == beat["done"]
        assert n["rate_per_s"] == beat["rate_per_s"] and (n["rate_per_s"] > 0) == (n["done"] > 0)
    assert snap["eta_s"] == 0.0
    assert "on average, finished in" in progress.table(snap).title
    shown = invoke_cli(fleet_base, "progress", "--json", "--run-id", record["run_id"])
    assert shown.returncode == 0, shown.stderr
    got = json.loads(shown.stdout)
    assert {"duration_s", "processed", "rate_per_s"} <= set(got)
    assert (got["duration_s"], got["processed"], got["rate_per_s"]) == (
        snap["duration_s"], snap["processed"], snap["rate_per_s"])
    # a second run over the same outputs makes nothing: it processed 0 and its average rate is 0, not 16/duration
    again = progress.wait_until_finished(up, run.start(up, NAME, list(nodes(up).values()), "resize", "src",
                                                       "out-sh", "--size 32"))
    assert (again["done"], again["processed"], again["rate_per_s"]) == (16, 0, 0.0) and again["duration_s"] > 0


def test_a_job_started_detached_outlives_exec(up, fleet_base):
    import psutil
    t0 = time.monotonic()
    result = cli(fleet_base, "exec", "nohup sleep 53 > /dev/null 2>&1 &", "--nodes", N0, "--timeout", "1")
    assert result.returncode == 0, result.stderr
    assert time.monotonic() - t0 < 10       # exec returned without waiting for the job
    time.sleep(1.5)
    left = [p for p in fleet_processes(NAME) if "sleep 53" in p]
    assert len(left) == 1, left            # still running on the node after the node's timeout and exec ended
    psutil.Process(int(left[0].split()[0])).kill()
