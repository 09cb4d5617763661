"""The head of a cloud fleet on the operator's machine: one reverse tunnel per node, and giving each node the
key and pinned host key it mounts the head with."""
from __future__ import annotations

from pathlib import Path

from playbooks.providers.types import RUNNING, Node, ProviderError
from playbooks.settings import setting
from playbooks.settings.defaults import fleet_dir
from playbooks.ssh import daemons as procs


def _tunnel_dir(c, fleet: str) -> Path:
    return fleet_dir(c, fleet) / "tunnels"


def _tunnel_alive(pid_file: Path):
    return procs.ours(procs.read_pid(pid_file), lambda proc: "ssh" in proc.name())


def start_tunnel(c, fleet: str, node: Node, head_host: str, head_port: int, tunnel_port: int) -> int:
    """A detached ``ssh -N -R`` from this machine to the node: the node's 127.0.0.1:tunnel_port reaches the head.

    OpenSSH with the fleet's key and known_hosts (StrictHostKeyChecking=yes); it exits when the forward cannot
    be set up, and keep-alives end it when the node vanishes.  Idempotent: a live tunnel is kept.
    """
    tdir = _tunnel_dir(c, fleet)
    tdir.mkdir(parents=True, exist_ok=True)
    pid_file = tdir / f"{node.name}.pid"
    proc = _tunnel_alive(pid_file)
    if proc is not None:
        return proc.pid
    from playbooks.ssh.fanout import openssh_argv
    cmd = openssh_argv(c, fleet, node, "-N", "-o", "ExitOnForwardFailure=yes", "-o", "ServerAliveInterval=10",
                       "-o", "ServerAliveCountMax=3", "-R", f"127.0.0.1:{tunnel_port}:{head_host}:{head_port}")
    pid = procs.detach(cmd, tdir / f"{node.name}.log")  # outlives this invoke, nobody's child
    pid_file.write_text(str(pid))
    return pid


def close_tunnels(c, fleet: str) -> int:
    """End every reverse tunnel of the fleet; returns how many were running."""
    n = 0
    for pid_file in _tunnel_dir(c, fleet).glob("*.pid"):
        proc = _tunnel_alive(pid_file)
        if proc is not None:
            proc.terminate()
            n += 1
        pid_file.unlink(missing_ok=True)
    return n


def stop_head(c, fleet: str) -> int:
    """Close the fleet's tunnels and stop its local head sshd (if one runs); returns the tunnels closed."""
    n = close_tunnels(c, fleet)
    if (fleet_dir(c, fleet) / "head" / "sshd.pid").exists():
        from playbooks.ssh import sftp_head as local_head
        local_head.stop(c, fleet)
    return n


def install_head_access(c, fleet: str, nodes: list[Node], entry: str, host_key: str, then=None) -> None:
    """Give each node the nodes' key (``~/.ssh/fleet_head``, written through the channel's stdin, never on a
    command line) and pin the head's host key as ``entry`` in its ``~/.ssh/known_hosts``; then ``then(node)``."""
    from shlex import quote as q

    from playbooks.ssh.fanout import fan_out, run_checked, show_failures
    node_key = (fleet_dir(c, fleet) / "node_ed25519").read_text()
    keytype, b64 = host_key.split()[:2]
    timeout = setting(c, "fleet.ssh_timeout")

    def install(conn, node):
        conn.open()
        stdin, stdout, stderr = conn.client.exec_command(
            'umask 077 && mkdir -p "$HOME/.ssh" && cat > "$HOME/.ssh/fleet_head"', timeout=timeout)
        stdin.write(node_key)
        stdin.channel.shutdown_write()
        if stdout.channel.recv_exit_status() != 0:
            raise RuntimeError(f"cannot write ~/.ssh/fleet_head: {stderr.read().decode().strip()}")
        run_checked(conn, f'kh="$HOME/.ssh/known_hosts"; touch "$kh" && '
                          f'{{ grep -v -F {q(entry + " ")} "$kh" || true; }} > "$kh.tmp" && '
                          f'echo {q(f"{entry} {keytype} {b64}")} >> "$kh.tmp" && mv "$kh.tmp" "$kh"', timeout)
        return then(node) if then else None

    results = fan_out(c, fleet, nodes, install, step="head")
    if show_failures(results):
        raise ProviderError(f"fleet {fleet}: could not give every node access to the head (table above); "
                            "retry `invoke mount`, or remove the failed nodes")


def tunnel_head(c, provider: str, fleet: str, list_nodes):
    """The ``head(c, fleet)`` hook of a cloud provider: the operator's machine is the head, reached by tunnels.

    Starts the fleet's local SFTP-only head sshd, gives each running node the nodes' key and the head's host
    key pinned as ``[127.0.0.1]:<tunnel_port>`` (in the login user's ``~/.ssh``), opens one reverse tunnel per
    node, and returns where the nodes mount from: ``127.0.0.1:<tunnel_port>`` on each node.
    """
    from playbooks.providers import local
    from playbooks.ssh import sftp_head as local_head
    s = c.config[provider]
    local.ensure_fleet(c, fleet)
    local.ensure_head_address(c, fleet)             # this machine is the head: the local provider's address
    head = local_head.start(c, fleet)
    tport = setting(c, f"{provider}.tunnel_port")
    host_key = (fleet_dir(c, fleet) / "head" / "ssh_host_ed25519_key.pub").read_text()
    nodes = [n for n in list_nodes(c, fleet) if n.state == RUNNING]
    install_head_access(c, fleet, nodes, f"[127.0.0.1]:{tport}", host_key,
                        lambda node: start_tunnel(c, fleet, node, head.host, head.port, tport))
    return type(head)(host="127.0.0.1", port=tport, user=head.user, remote_path=head.remote_path)
