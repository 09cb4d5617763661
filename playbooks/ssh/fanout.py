"""Bounded parallel SSH over Fabric: per-host results and failures come back as data.

Fabric's ThreadingGroup starts one thread per host and joins without a timeout; here a pool capped at
``fleet.max_parallel`` runs one step per node, each connection with a connect timeout and each command with
``fleet.ssh_timeout``.  Host keys are checked against the fleet's own known_hosts with a RejectPolicy.
"""
from __future__ import annotations

import shlex
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

import paramiko
from fabric import Config, Connection
from rich.console import Console
from rich.table import Table
from rich.text import Text

from playbooks.settings import setting
from playbooks.settings.defaults import fleet_dir, state_dir  # noqa: F401 - fleet_dir: one copy, in settings
from playbooks.ssh.sshd import config_word

if TYPE_CHECKING:                  # any object with the Node's fields will do: the ssh layer is below providers
    from playbooks.providers import Node


@dataclass
class HostResult:
    node: Node
    step: str
    ok: bool
    value: Any = None
    error: str = ""


def fleet_key(c, fleet: str) -> Path:
    """The operator's private key for this fleet (authorized on every node)."""
    return fleet_dir(c, fleet) / "id_ed25519"


def fleet_known_hosts(c, fleet: str) -> Path:
    """The fleet's own known_hosts: every node's host key, pinned when the fleet created it."""
    return fleet_dir(c, fleet) / "known_hosts"


def connect(c, fleet: str, node: Node) -> Connection:
    """A Fabric Connection to ``node`` with the fleet's key and pinned host keys (no auto-add, ever)."""
    conn = Connection(
        node.host, user=node.user, port=node.port,
        config=Config(overrides={"load_ssh_configs": False, "run": {"hide": True, "warn": True}}),
        connect_timeout=setting(c, "fleet.ssh_timeout"),
        connect_kwargs={"key_filename": str(fleet_key(c, fleet)), "look_for_keys": False,
                        "allow_agent": False, "banner_timeout": setting(c, "fleet.ssh_timeout")},
    )
    known = fleet_known_hosts(c, fleet)
    if known.exists():  # none yet: every host is unknown, and RejectPolicy says so
        conn.client.load_host_keys(str(known))
    conn.client.set_missing_host_key_policy(paramiko.RejectPolicy())
    return conn


def openssh_argv(c, fleet: str, node: Node, *options: str) -> list[str]:
    """The system ``ssh`` client's command line to ``node``: the fleet's key and pinned host keys only, no ssh
    config files (so no SendEnv), no agent, no forwarding, no prompts; ``options`` go before the destination,
    a remote command after the returned list."""
    return ["ssh", "-F", "/dev/null", "-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=yes",
            "-o", f"UserKnownHostsFile={config_word(fleet_known_hosts(c, fleet))}",
            "-o", "GlobalKnownHostsFile=/dev/null",
            "-o", "UpdateHostKeys=no", "-o", "IdentitiesOnly=yes", "-i", str(fleet_key(c, fleet)),
            "-o", "ForwardAgent=no", "-o", "ForwardX11=no",
            "-o", f"ConnectTimeout={max(1, int(setting(c, 'fleet.ssh_timeout')))}", "-p", str(node.port),
            *options, "--", f"{node.user}@{node.host}"]


def describe(exc: BaseException) -> str:
    """One line for a host's failure: a changed host key says so (paramiko's own words are base64 blobs)."""
    if isinstance(exc, paramiko.BadHostKeyException):
        return (f"host key of {exc.hostname} does not match the fleet's known_hosts: it offers "
                f"{exc.key.get_name()} {exc.key.fingerprint}, the fleet pinned {exc.expected_key.fingerprint}; "
                "if the machine was rebuilt on purpose, remove its line from the fleet's known_hosts, else do not "
                "connect (someone may be in the middle)")
    text = str(exc).strip().splitlines()
    msg = text[-1] if text else ""
    return f"{type(exc).__name__}: {msg}" if msg else type(exc).__name__


def fan_out(c, fleet: str, nodes: list[Node], fn: Callable[[Connection, Node], Any], *, step: str,
            max_parallel: int | None = None) -> list[HostResult]:
    """Run ``fn(conn, node)`` on every node, at most ``fleet.max_parallel`` at once; never raises."""
    cap = max(1, min(setting(c, "fleet.max_parallel", max_parallel or None), len(nodes) or 1))

    def one(node: Node) -> HostResult:
        conn = None
        try:
            conn = connect(c, fleet, node)
            return HostResult(node, step, True, fn(conn, node))
        except Exception as exc:  # a host's failure is data, not a crash of the whole step
            return HostResult(node, step, False, error=describe(exc))
        finally:
            if conn is not None:
                conn.close()

    with ThreadPoolExecutor(max_workers=cap, thread_name_prefix=f"fan-{step}") as pool:
        return list(pool.map(one, nodes))


def run_checked(conn: Connection, command: str, timeout: float | None = None) -> str:
    """Run a shell command on the node; raise with its stderr when it fails."""
    result = conn.run(command, timeout=timeout, hide=True, warn=True, in_stream=False)
    if result.exited != 0:
        raise RuntimeError(f"exit {result.exited}: {error_line(result.stderr or result.stdout) or command.split()[0]}")
    return result.stdout


def error_line(output: str) -> str:
    """The line of a failed command's output that says why: OpenSSH's host-key verdict when there is one (it
    comes before ssh's or sshfs's last words, such as "Connection reset by peer"), else the last line."""
    lines = [ln.strip() for ln in output.strip().splitlines() if ln.strip()]
    changed = next((ln for ln in lines if ln.startswith("Host key for ") and "has changed" in ln), None)
    if changed or "Host key verification failed." in lines:
        host = changed[len("Host key for "):].split(" has changed")[0] if changed else "the server"
        return (f"host key of {host} does not match the node's known_hosts (ssh: Host key verification failed): "
                "was that machine rebuilt, or is someone in the middle?")
    return lines[-1] if lines else ""


def show_failures(results: list[HostResult], console: Console | None = None) -> int:
    """Print a table (host, step, error) of the failed results; return how many failed."""
    failed = [r for r in results if not r.ok]
    if failed:
        table = Table(title="failed on some nodes", title_justify="left")
        for col in ("node", "host", "step", "error"):
            table.add_column(col)
        for r in failed:
            table.add_row(*(Text(str(x)) for x in (r.node.name, f"{r.node.host}:{r.node.port}", r.step, r.error)))
        (console or Console(stderr=True)).print(table)
    return len(failed)


q = shlex.quote
