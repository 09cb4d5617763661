"""Run a command on the fleet's nodes (`invoke exec`), or open a shell on one of them (`invoke ssh`).

``invoke exec "pip install x"`` hands the text, exactly as given, to each node's login shell, as the node's login
user, in the node's workdir (where `invoke deploy` puts workloads/; the home while there is none), on every
running node of the fleet through the bounded fan-out; a node that is not running fails the task untried.
Nothing of the operator's goes with it: no environment variables, no SSH agent, no forwarding, no stdin (the
command reads /dev/null).  On the node, coreutils ``timeout`` stops the command (TERM, then KILL 5 s later, to
its whole process group) after ``--timeout`` seconds (``fleet.exec_timeout``, 600 by default: long enough for
a pip install).  Start long jobs detached: ``invoke exec "nohup python train.py > train.log 2>&1 &"``.

``invoke ssh NODE`` is the system ``ssh`` client with the fleet's key and the fleet's pinned host keys only.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import sys
import time

from invoke import task
from invoke.exceptions import CommandTimedOut, Exit
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn
from rich.table import Table
from rich.text import Text

from playbooks.fleet import nodes_or_exit
from playbooks.providers import RUNNING, TERMINATED, Node
from playbooks.settings import SettingError, setting
from playbooks.settings.errors import user_errors
from playbooks.ssh.fanout import fan_out, openssh_argv, q

console = Console()
TAIL = 5                  # lines of stdout / stderr per node in the table (--json has all of it)
GRACE = 30.0              # the operator's side gives up this long after the node's own timeout
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")


def pick_nodes(c, name: str, provider: str, wanted: str) -> tuple[str, list[Node]]:
    """The nodes named in ``wanted`` (comma-separated; default: every node of the fleet but the terminated ones),
    in whatever state they are, or a one-line error when a name is unknown or none of them is running."""
    names = [w.strip() for w in wanted.split(",") if w.strip()]
    name, every = nodes_or_exit(c, name, provider, running=False)
    known = {n.name: n for n in every}
    unknown = [w for w in names if w not in known]
    if unknown:
        raise Exit(f"no node {', '.join(unknown)} in fleet {name}: its nodes are {', '.join(known)}")
    chosen = [known[w] for w in dict.fromkeys(names)] if names else [n for n in every if n.state != TERMINATED]
    if not any(n.state == RUNNING for n in chosen):
        states = ", ".join(f"{n.name} {n.state}" for n in (chosen or every))
        raise Exit(f"no running node to reach ({states}): see `invoke fleet.list --name {name}`")
    return name, chosen


def in_workdir(node: Node, command: str) -> str:
    """``command`` as the user typed it, after a move to the node's workdir when it exists."""
    return f"cd {q(node.workdir)} 2>/dev/null\n{command}"


def bounded(script: str, timeout: float) -> str:
    """``script`` run by the node's login shell with stdin closed, stopped by ``timeout`` on the node (where it
    has no coreutils ``timeout``, only the operator's side gives up)."""
    shell, body = '"${SHELL:-/bin/sh}"', q(script)
    return (f"if command -v timeout >/dev/null 2>&1; then exec timeout -k 5 {timeout:.3f} {shell} -c {body} "
            f"</dev/null; else exec {shell} -c {body} </dev/null; fi")


def exec_one(conn, node: Node, command: str, timeout: float) -> dict:
    """Run ``command`` on one node: its exit code, whole stdout and stderr, and why it failed when it did."""
    t0 = time.monotonic()
    try:
        result = conn.run(bounded(in_workdir(node, command), timeout), timeout=timeout + GRACE, hide=True,
                          warn=True, in_stream=False, env={})
    except CommandTimedOut as exc:
        return {"exit": None, "stdout": exc.result.stdout, "stderr": exc.result.stderr,
                "error": f"no answer {timeout + GRACE:g} s after the start"}
    code = result.exited
    late = code in (124, 137) and time.monotonic() - t0 >= timeout - 0.5
    return {"exit": code, "stdout": result.stdout, "stderr": result.stderr,
            "error": f"timed out after {timeout:g} s" if late else ""}


def rows_of(chosen: list[Node], results) -> list[dict]:
    """One row per chosen node, in order: what `--json` prints.  A node that was not running was not tried."""
    done = {r.node.name: (r.value if r.ok else {"exit": None, "stdout": "", "stderr": "", "error": r.error})
            for r in results}
    return [{"node": n.name, "host": n.host, **done.get(n.name, {
        "exit": None, "stdout": "", "stderr": "", "error": f"not run: the node is {n.state}"})} for n in chosen]


def tail(text: str, lines: int = TAIL) -> str:
    """The last lines of some output, control characters written out (a terminal never interprets them)."""
    kept = [ln.rsplit("\r", 1)[-1] for ln in text.rstrip().replace("\r\n", "\n").split("\n")][-lines:]
    return _CONTROL.sub(lambda m: f"\\x{ord(m.group()):02x}", "\n".join(kept))


def table(rows: list[dict]) -> Table:
    """node, exit, the last lines of stdout and stderr; every cell a Text, so output is never read as markup."""
    ok = sum(r["exit"] == 0 for r in rows)
    t = Table(title=f"exec: exit 0 on {ok}/{len(rows)} node(s)", title_justify="left", show_lines=True)
    for col in ("node", "exit", f"stdout (last {TAIL} lines)", "stderr"):
        t.add_column(col, overflow="fold")
    for r in rows:
        code = Text("-" if r["exit"] is None else str(r["exit"]), style="green" if r["exit"] == 0 else "red")
        err = Text(tail(r["stderr"]))
        if r["error"]:
            err.append(("\n" if err else "") + r["error"], style="red")
        t.add_row(Text(r["node"]), code, Text(tail(r["stdout"])), err)
    return t


def failed_line(rows: list[dict]) -> str:
    bad = [f"{r['node']} ({r['error'] or 'exit %s' % r['exit']})" for r in rows if r["exit"] != 0]
    return f"failed on {len(bad)} of {len(rows)} node(s): {', '.join(bad)}" if bad else ""


@task(name="exec", positional=["command"], help={
    "command": "what to run on every node, as ONE quoted string, e.g. \"pip install tqdm\"; run by the node's "
               "login shell as the node's user in its workdir; nothing of your environment goes with it",
    "name": "fleet name (default: fleet.name)",
    "provider": "local, gcp or aws (default: fleet.provider)",
    "nodes": "only these nodes, comma-separated, e.g. --nodes demo-0,demo-2 (default: every node of the fleet; "
             "one that is not running fails the task without being tried)",
    "timeout": "seconds each node may take before its command is stopped (default: fleet.exec_timeout, 600)",
    "json": "print only JSON: a list of {node, host, exit, stdout, stderr, error}",
})
@user_errors
def exec_(c, command=None, name="", provider="", nodes="", timeout="", json_=False):
    """Run one shell command on every node of the fleet; each node's exit code and output."""
    if not (command or "").strip():
        raise Exit('say what to run, as one quoted string: invoke exec "python3 -V"')
    try:
        limit = setting(c, "fleet.exec_timeout", timeout or None)
    except SettingError:
        limit = 0.0
    if not 0 < limit < float("inf"):
        raise Exit(f"--timeout {timeout!r} is not a positive number of seconds: e.g. --timeout 120")
    name, chosen = pick_nodes(c, name, provider, nodes)
    running = [n for n in chosen if n.state == RUNNING]
    with Progress(TextColumn("exec"), BarColumn(), MofNCompleteColumn(), TextColumn("node(s)"),
                  console=Console(stderr=True), transient=True) as bar:
        job = bar.add_task("exec", total=len(running))

        def one(conn, node):
            try:
                return exec_one(conn, node, command, limit)
            finally:
                bar.advance(job)
        rows = rows_of(chosen, fan_out(c, name, running, one, step="exec"))
    if json_:
        print(json.dumps(rows, indent=1), flush=True)
    else:
        console.print(table(rows))
    failed = failed_line(rows)
    if failed:
        raise Exit(failed)


@task(positional=["node"], help={
    "node": "which node (see `invoke fleet.list`)",
    "command": "run this one command (ONE quoted string, in the node's workdir) instead of opening a shell",
    "name": "fleet name (default: fleet.name)",
    "provider": "local, gcp or aws (default: fleet.provider)",
})
@user_errors
def ssh(c, node=None, command="", name="", provider=""):
    """A shell on one node (the system ssh client, with the fleet's key and pinned host keys)."""
    node = (node or "").strip()
    if not node or "," in node:
        raise Exit("say which one node: invoke ssh NODE (`invoke fleet.list` shows them; `invoke exec` runs on many)")
    client = shutil.which("ssh")
    if client is None:
        raise Exit("no ssh client on this machine: apt-get install openssh-client")
    name, (target,) = pick_nodes(c, name, provider, node)   # one name; pick_nodes refuses it unless running
    argv = openssh_argv(c, name, target, *(["-t"] if command and sys.stdin.isatty() else []))
    if command:
        argv.append(in_workdir(target, command))
    sys.stdout.flush()
    sys.stderr.flush()
    os.execv(client, argv)
