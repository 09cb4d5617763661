"""Helpers shared by the cloud providers (gcp, aws): names, deadlines, prices, startup script, host keys.

No cloud SDK is imported here, so ``cost_so_far`` and the checks stay cheap for ``invoke progress``.
"""
from __future__ import annotations

import json
import re
import socket
import time
from pathlib import Path

from invoke.exceptions import Exit

from playbooks.ssh import daemons as procs
from playbooks.ssh import ports
from playbooks.providers import RUNNING, TYPE_KEY, ZONE_KEY, Node, NodesNotReady

FLEET_LABEL = "fleet"
DEADLINE_LABEL = "fleetbook-deadline"   # epoch seconds (digits: a valid GCP label value)
SPOT_LABEL = "fleetbook-spot"           # "true" / "false": which price applies
IMAGE_HASH_LABEL = "fleetbook-image-hash"
NETWORK_TAG = "fleetbook"

NAME_RE = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")
LABEL_VALUE_RE = re.compile(r"^[a-z0-9_-]{0,63}$")
MAX_FLEET_NAME = 50   # leaves room for "-####" and the bake prefix under GCP's 63-character instance names


def check_name(name: str) -> str:
    """A fleet name must be a valid instance-name prefix and label value, else a one-line Exit."""
    if not name or len(name) > MAX_FLEET_NAME or not NAME_RE.match(name):
        raise Exit(f"invalid fleet name {name!r}: use lowercase letters, digits and '-', start with a letter, "
                   f"end with a letter or digit, at most {MAX_FLEET_NAME} characters (--name)")
    return name


def check_labels(labels: dict) -> dict:
    for key, value in labels.items():
        if not NAME_RE.match(key) or not LABEL_VALUE_RE.match(str(value)):
            raise Exit(f"invalid label {key}={value!r}: lowercase letters, digits, '-' and '_', at most 63")
    return labels


def split_list(value) -> list[str]:
    if isinstance(value, (list, tuple)):
        return [str(v).strip() for v in value if str(v).strip()]
    return [v.strip() for v in str(value or "").split(",") if v.strip()]


def deadline(ttl_hours: float, now: float | None = None) -> int:
    if not ttl_hours or ttl_hours <= 0:
        raise Exit("--ttl must be a positive number of hours: cloud nodes always delete themselves")
    return int((now or time.time()) + ttl_hours * 3600)


def fleet_labels(name: str, ttl_hours: float, spot: bool) -> dict:
    return check_labels({FLEET_LABEL: name, DEADLINE_LABEL: str(deadline(ttl_hours)),
                         SPOT_LABEL: "true" if spot else "false"})


# --- prices and cost -----------------------------------------------------------------------------------------

TYPE_SETTINGS = {"gcp": ("machine_type", "machine_types"), "aws": ("instance_type", "instance_types")}


def _settings(c, provider: str):
    return c.config[provider]


def machine_types(c, provider: str) -> list[str]:
    """The machine (GCP) or instance (AWS) types a fleet may use: ``<provider>.machine_types`` /
    ``instance_types`` (a list, or comma-separated from the environment), else the single-value setting."""
    one, many = TYPE_SETTINGS[provider]
    s = _settings(c, provider)
    return list(dict.fromkeys(split_list(s.get(many)) or [str(s[one])]))


def node_facts(labels: dict, zone: str, machine_type: str) -> dict:
    """A node's labels/tags plus where it runs and its type, as read from the instance."""
    return {**labels, ZONE_KEY: zone, TYPE_KEY: machine_type}


def region_of(zone: str) -> str:
    """``us-central1-a`` -> ``us-central1`` (GCP), ``us-east-1a`` -> ``us-east-1`` (AWS)."""
    return re.sub(r"(-[a-z]|[a-z])$", "", zone)


def price_per_hour(c, provider: str, spot: bool, machine_type: str | None = None,
                   zone: str | None = None) -> float | None:
    """USD per node-hour for a machine type (default: the provider's first type), or None when unknown.

    ``<provider>.price_spot`` / ``price_on_demand`` override every type.  Else the table ``<provider>.prices``
    (cloud_config.py, extendable in invoke.yaml) is read at ``<zone>/<type>``, then ``<region>/<type>``, then
    ``<type>``: the most specific entry wins."""
    if provider not in ("gcp", "aws"):
        p = float(c.config.fleet.get("price_per_hour", 0) or 0)
        return p or None
    s = _settings(c, provider)
    explicit = float(s.get("price_spot" if spot else "price_on_demand", 0) or 0)
    if explicit:
        return explicit
    mtype = machine_type or machine_types(c, provider)[0]
    table = s.get("prices") or {}
    keys = [f"{zone}/{mtype}", f"{region_of(zone)}/{mtype}"] if zone else []
    pair = next((table.get(k) for k in [*keys, mtype] if table.get(k)), None)
    if not pair:
        return None
    return float(pair[0] if spot else pair[1]) or None


def _listed(items: list[str]) -> str:
    return items[0] if len(items) == 1 else "{" + ", ".join(items) + "}"


def estimate(c, provider: str, count: int, spot: bool, ttl_hours: float, zones: list[str] | None = None) -> str:
    """One line to print before creating: what the fleet costs per hour and at most over its TTL (a range
    when it may use several machine types or zones)."""
    types = machine_types(c, provider)
    kind = "spot" if spot else "on-demand"
    what = f"{count} x {_listed(types)} ({kind})"
    prices = {t: [price_per_hour(c, provider, spot, t, z) for z in (zones or [None])] for t in types}
    unknown = [t for t, ps in prices.items() if None in ps]
    if unknown:
        key = f"{provider}.price_{'spot' if spot else 'on_demand'}"
        if len(types) > 1:
            return f"cost: {what}: price unknown for {', '.join(unknown)}; add it to {provider}.prices or set {key}"
        return f"cost: {what}: price unknown; set {key}"
    every = [p for ps in prices.values() for p in ps]
    low, high = min(every), max(every)
    if low == high:
        return (f"cost: {what} at ${low:.4f}/h = ${count * low:.2f}/h, "
                f"at most ${count * low * ttl_hours:.2f} over the {ttl_hours:g} h TTL")
    return (f"cost: {what} at ${low:.4f}-{high:.4f}/h = ${count * low:.2f}-{count * high:.2f}/h, "
            f"at most ${count * high * ttl_hours:.2f} over the {ttl_hours:g} h TTL")


def capacity_line(cloud: str, count: int, spot: bool, types: list[str], places: list[str], place_word: str,
                  what: str, cleaned: str, widen: str) -> str:
    """The one-line capacity error: what was asked, what was tried (places x types), what to widen."""
    kind = "spot" if spot else "on-demand"
    tried = f"tried {len(places)} {place_word}{'s' if len(places) != 1 else ''} x {len(types)} type" \
            f"{'s' if len(types) != 1 else ''}"
    return (f"{cloud} has no capacity or quota for {count} x {_listed(types)} ({kind}) in {_listed(places)} "
            f"({tried}: {what}); {cleaned}. Widen {widen}, ask for fewer nodes (-n/--min) or --no-spot, "
            "or raise the quota")


def cost_so_far(c, nodes: list[Node], provider: str, now: float | None = None) -> float | None:
    """USD spent so far by ``nodes`` (node-hours since each started x the price of its own type and zone);
    None when a price is unknown."""
    now = now or time.time()
    total = 0.0
    for node in nodes:
        spot = str(node.labels.get(SPOT_LABEL, "true")) == "true"
        price = float(c.config.fleet.get("price_per_hour", 0) or 0) or price_per_hour(
            c, provider, spot, node.labels.get(TYPE_KEY) or None, node.labels.get(ZONE_KEY) or None)
        if price is None or node.started_at is None:
            return None
        total += max(0.0, now - node.started_at) / 3600 * price
    return round(total, 4)


# --- what runs on the node at boot ---------------------------------------------------------------------------

def startup_script(deadline_epoch: int | None = None, mountpoint: str = "/mnt/fleetbook") -> str:
    """Shell run at every boot: python3 and sshfs present (a baked image has them already), the shared
    mountpoint writable by the login user, and (AWS) a power-off at the deadline.

    With ``InstanceInitiatedShutdownBehavior=terminate`` on EC2, the power-off deletes the instance; it is
    scheduled again at every boot from the absolute deadline, so a reboot does not extend the TTL.
    """
    import shlex
    mp = shlex.quote(mountpoint)
    lines = ["#!/bin/sh", "# fleetbook startup: runs at every boot",
             "if ! command -v python3 >/dev/null || ! command -v sshfs >/dev/null; then",
             "  export DEBIAN_FRONTEND=noninteractive",
             "  (apt-get update -q && apt-get install -y -q python3 sshfs fuse3) ||"
             " (dnf install -y python3 fuse-sshfs) || true",
             "fi",
             f"mkdir -p {mp} && chmod 1777 {mp}"]
    if deadline_epoch:
        lines += [f"deadline={int(deadline_epoch)}",
                  'left=$(( (deadline - $(date +%s)) / 60 ))',
                  '[ "$left" -lt 1 ] && left=1',
                  'shutdown -h +"$left" "fleetbook TTL reached" || (sleep $((left*60)) && poweroff) &']
    return "\n".join(lines) + "\n"


def aws_user_data(deadline_epoch: int, mountpoint: str = "/mnt/fleetbook") -> str:
    """cloud-config for EC2: the startup script at every boot (bootcmd runs per boot, user scripts once)."""
    script = startup_script(deadline_epoch, mountpoint)
    return "#cloud-config\n" + json.dumps({"bootcmd": [["sh", "-c", script]]}, indent=1) + "\n"


# --- host keys and readiness ---------------------------------------------------------------------------------

def fleet_dir(c, name: str) -> Path:
    from playbooks.settings.defaults import state_dir
    return state_dir(c) / name


def public_key(c, name: str) -> str:
    """The fleet's own public key line (created on first use, under the fleet's state dir)."""
    from playbooks.ssh.keys import keypair
    return keypair(fleet_dir(c, name) / "id_ed25519", f"fleetbook-{name}")


def parse_console_host_keys(text: str) -> list[str]:
    """Host key lines between cloud-init's ``-----BEGIN SSH HOST KEY KEYS-----`` markers (EC2 console)."""
    m = re.search(r"-----BEGIN SSH HOST KEY KEYS-----(.*?)-----END SSH HOST KEY KEYS-----", text or "", re.S)
    if not m:
        return []
    keys = []
    for line in m.group(1).splitlines():
        parts = line.strip().split()
        if len(parts) >= 2 and (parts[0].startswith("ssh-") or parts[0].startswith("ecdsa-")):
            keys.append(f"{parts[0]} {parts[1]}")
    return keys


def scan_host_key(host: str, port: int, timeout: float) -> str:
    """The key the server shows now (``type base64``), for trust-on-first-use when the cloud gives none."""
    import paramiko
    sock = socket.create_connection((host, port), timeout=timeout)
    transport = paramiko.Transport(sock)
    try:
        transport.get_security_options().key_types = ["ssh-ed25519"] + [
            k for k in transport.get_security_options().key_types if k != "ssh-ed25519"]
        transport.start_client(timeout=timeout)
        key = transport.get_remote_server_key()
        return f"{key.get_name()} {key.get_base64()}"
    finally:
        transport.close()


def pin_keys(c, name: str, node: Node, keys: list[str]) -> None:
    """Pin the node's trusted host key (ed25519 preferred) in the fleet's known_hosts."""
    from playbooks.ssh.keys import pin
    if not keys:
        return
    best = sorted(keys, key=lambda k: (not k.startswith("ssh-ed25519"), k))[0]
    pin(fleet_dir(c, name) / "known_hosts", node.host, node.port, best)


def known_entry(c, name: str, node: Node) -> bool:
    from playbooks.ssh.keys import host_entry
    kh = fleet_dir(c, name) / "known_hosts"
    entry = host_entry(node.host, node.port)
    return kh.exists() and any(ln.split(" ", 1)[0] == entry for ln in kh.read_text().splitlines())


def ssh_answers(c, name: str, node: Node) -> tuple[bool, str]:
    """True when ``true`` runs on the node with the fleet key and the pinned host key (RejectPolicy)."""
    from playbooks.ssh.fanout import connect, describe
    conn = None
    try:
        conn = connect(c, name, node)
        result = conn.run("true", hide=True, warn=True, in_stream=False,
                          timeout=float(c.config.fleet.ssh_timeout))
        return result.exited == 0, f"exit {result.exited}"
    except Exception as exc:
        return False, describe(exc)
    finally:
        if conn is not None:
            conn.close()


def wait_ready(c, name: str, timeout: float, list_nodes, trusted_keys, poll: float = 2.0) -> list[Node]:
    """Wait until every node of the fleet runs, has a pinned host key and answers SSH.

    ``trusted_keys(node)`` returns the host keys the cloud vouches for (guest attributes, console output) or
    [] when it has none yet.  A node whose cloud never gives a key within half the timeout is pinned on first
    use (accept-new) into the fleet's own known_hosts only, and a message says so.
    """
    start = time.monotonic()
    end = start + float(timeout)
    ready: dict[str, Node] = {}
    why: dict[str, str] = {}
    tofu: list[str] = []
    while True:
        nodes = list_nodes(c, name)
        if not nodes:
            raise NodesNotReady([name], "fleet has no nodes")
        for node in nodes:
            if node.name in ready:
                continue
            if node.state != RUNNING or not node.host:
                why[node.name] = f"state {node.state}"
                continue
            keys = trusted_keys(node)
            if keys:
                pin_keys(c, name, node, keys)   # the cloud vouches: replaces a stale entry for a reused address
            elif not known_entry(c, name, node):
                if time.monotonic() - start > float(timeout) / 2 and ports.answers(node.host, node.port, 3):
                    try:
                        pin_keys(c, name, node, [scan_host_key(node.host, node.port, 5)])
                        tofu.append(node.name)
                    except Exception as exc:  # noqa: BLE001 - keep waiting
                        why[node.name] = f"host key scan failed: {exc}"
                        continue
                else:
                    why[node.name] = "no host key from the cloud yet"
                    continue
            ok, detail = ssh_answers(c, name, node)
            if ok:
                ready[node.name] = node
            else:
                why[node.name] = detail
        if len(ready) == len(nodes):
            if tofu:
                print(f"note: {len(tofu)} host key(s) pinned on first use (cloud gave none): {', '.join(tofu)}")
            return [ready[n.name] for n in nodes]
        if time.monotonic() >= end:
            missing = [n.name for n in nodes if n.name not in ready]
            detail = "; ".join(f"{n}: {why.get(n, '?')}" for n in missing[:5])
            raise NodesNotReady(missing, f"did not answer SSH in {timeout:g} s ({detail})")
        time.sleep(poll)


_COST_CACHE: dict[tuple[str, str], tuple[float, list[Node], Node | None]] = {}


def run_cost(c, provider: str, record, elapsed: float | None, list_nodes, max_age: float = 60.0,
             find_head=None) -> float | None:
    """The providers' ``cost_so_far`` hook for ``invoke progress``.

    ``record`` is either a list of Nodes or a run record (``{"fleet", "nodes": [{"name"}...]}``); for a record
    the fleet is listed at most once a minute (progress refreshes every second) and each node costs from its
    own start time, plus the fleet's head instance if it has one (on-demand, at the head's machine type).
    When the listing fails, the run's elapsed time x its node count is the estimate.
    """
    if isinstance(record, (list, tuple)):
        return cost_so_far(c, list(record), provider)
    fleet = str(record.get("fleet") or c.config.fleet.name)
    names = {n["name"] for n in record.get("nodes", [])}
    key = (provider, fleet)
    stamp, nodes, head = _COST_CACHE.get(key, (0.0, [], None))
    if time.monotonic() - stamp > max_age:
        try:
            nodes = list_nodes(c, fleet)
            found = find_head(c, fleet) if find_head else None
            head = found[0] if found else None
        except (Exception, SystemExit):  # noqa: BLE001 - a cost estimate must never break progress
            nodes, head = [], None
        _COST_CACHE[key] = (time.monotonic(), nodes, head)
    mine = [n for n in nodes if n.name in names]
    if mine:
        total = cost_so_far(c, mine, provider)
        if total is not None and head is not None:
            s = _settings(c, provider)
            price = price_per_hour(c, provider, False, s.head_machine_type if provider == "gcp" else
                                   s.head_instance_type)
            if price is None or head.started_at is None:
                return None
            total = round(total + max(0.0, time.time() - head.started_at) / 3600 * price, 4)
        return total
    price = float(c.config.fleet.get("price_per_hour", 0) or 0) or price_per_hour(c, provider, True)
    if price is None or elapsed is None:
        return None
    return round(price * len(names) * elapsed / 3600, 4)


def forget_hosts(c, name: str, nodes: list[Node]) -> None:
    """Drop the known_hosts entries of deleted nodes: a later VM may get the same address with a new key."""
    from playbooks.ssh.keys import unpin
    kh = fleet_dir(c, name) / "known_hosts"
    for node in nodes:
        if node.host:
            unpin(kh, node.host, node.port)


# --- the head on a cloud fleet: one reverse tunnel per node ----------------------------------------------

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
    timeout = float(c.config.fleet.ssh_timeout)

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
        raise Exit(f"fleet {fleet}: could not give every node access to the head (table above); "
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
    tport = int(s.tunnel_port)
    host_key = (fleet_dir(c, fleet) / "head" / "ssh_host_ed25519_key.pub").read_text()
    nodes = [n for n in list_nodes(c, fleet) if n.state == RUNNING]
    install_head_access(c, fleet, nodes, f"[127.0.0.1]:{tport}", host_key,
                        lambda node: start_tunnel(c, fleet, node, head.host, head.port, tport))
    return type(head)(host="127.0.0.1", port=tport, user=head.user, remote_path=head.remote_path)


# --- the head on a cloud fleet: a head instance ------------------------------------------------------------

ROLE_LABEL = "role"                   # role=head marks the head instance; nodes carry no role
HEAD_CHROOT = "/srv/fleetbook"        # root-owned: sshd chroots the nodes' SFTP login here
HEAD_DATA = "data"                    # the shared root is HEAD_CHROOT/data, owned by the SFTP user
HEAD_SFTP_USER = "fleetsftp"          # the nodes' (and the operator's SFTP) login on the head: SFTP only
HEAD_AUTHORIZED = "/etc/fleetbook/head_authorized_keys"


def head_mode(c, provider: str, spec_head: str = "") -> str:
    mode = str(spec_head or c.config[provider].get("head", "tunnel"))
    if mode not in ("tunnel", "instance"):
        raise Exit(f"{provider}.head / --head is {mode!r}: choose tunnel or instance (docs/cloud.md, section 8)")
    return mode


def is_head(labels: dict) -> bool:
    return str((labels or {}).get(ROLE_LABEL, "")) == "head"


def head_name(fleet: str) -> str:
    return f"{fleet}-head"


def head_labels(name: str, ttl_hours: float) -> dict:
    return check_labels({**fleet_labels(name, ttl_hours, spot=False), ROLE_LABEL: "head"})


def head_match_block(user: str, chroot: str, authorized: str) -> list[str]:
    """sshd_config lines of the head's SFTP-only login (the same on a head instance and in the tests)."""
    return [f"Match User {user}", f"  AuthorizedKeysFile {authorized}", f"  ChrootDirectory {chroot}",
            f"  ForceCommand internal-sftp -d /{HEAD_DATA}", "  AllowTcpForwarding no", "  AllowAgentForwarding no",
            "  PermitTTY no", "  X11Forwarding no", "  PermitTunnel no"]


def head_authorized_keys(c, fleet: str) -> str:
    """The nodes' key and the operator's key, both ``restrict``ed; sshd forces SFTP in the chroot for them."""
    from playbooks.ssh.keys import keypair
    node_pub = keypair(fleet_dir(c, fleet) / "node_ed25519", f"fleetbook-node@{fleet}")
    return f"restrict {node_pub}\nrestrict {public_key(c, fleet)}\n"


def head_script(c, fleet: str, deadline_epoch: int | None = None) -> str:
    """What a head instance runs at every boot: the node startup (python3, TTL), then the shared root, the
    SFTP-only user, its authorized keys and the Match block at the end of sshd_config (once), and a reload."""
    import shlex
    q = shlex.quote
    block = ["# fleetbook head", *head_match_block(HEAD_SFTP_USER, HEAD_CHROOT, HEAD_AUTHORIZED)]
    data = f"{HEAD_CHROOT}/{HEAD_DATA}"
    lines = [
        f"id {HEAD_SFTP_USER} >/dev/null 2>&1 || useradd --system -M -p '*' -s /usr/sbin/nologin {HEAD_SFTP_USER}",
        f"mkdir -p {q(data)} /etc/fleetbook",
        f"chown root:root {q(HEAD_CHROOT)} && chmod 755 {q(HEAD_CHROOT)}",
        f"chown {HEAD_SFTP_USER}: {q(data)} && chmod 755 {q(data)}",
        f"printf %s {q(head_authorized_keys(c, fleet))} > {HEAD_AUTHORIZED} && chmod 644 {HEAD_AUTHORIZED}",
        "grep -qx '# fleetbook head' /etc/ssh/sshd_config || "
        f"printf '%s\\n' {' '.join(q(x) for x in block)} >> /etc/ssh/sshd_config",
        "sshd -t && { systemctl try-reload-or-restart ssh 2>/dev/null || systemctl try-reload-or-restart sshd "
        "2>/dev/null || true; }",
    ]
    return startup_script(deadline_epoch) + "\n".join(lines) + "\n"


def aws_head_user_data(c, fleet: str, deadline_epoch: int) -> str:
    script = head_script(c, fleet, deadline_epoch)
    return "#cloud-config\n" + json.dumps({"bootcmd": [["sh", "-c", script]]}, indent=1) + "\n"


def instance_head(c, provider: str, fleet: str, head_node: Node, internal: str, list_nodes):
    """The ``head(c, fleet)`` hook with a head instance: every running node gets the nodes' key and the head's
    host key (pinned for this fleet from the cloud) under the head's internal address; they mount that."""
    from playbooks.ssh.sftp_head import Head
    from playbooks.ssh.keys import host_entry
    port = int(c.config[provider].ssh_port)
    kh = fleet_dir(c, fleet) / "known_hosts"
    entry = host_entry(head_node.host, head_node.port)
    line = next((ln for ln in (kh.read_text().splitlines() if kh.exists() else [])
                 if ln.split(" ", 1)[0] == entry), None)
    if line is None:
        raise Exit(f"fleet {fleet}: the head instance's host key is not pinned yet: run "
                   f"`invoke fleet.create --provider {provider} --name {fleet} -n N` (it waits for the head)")
    nodes = [n for n in list_nodes(c, fleet) if n.state == RUNNING]
    install_head_access(c, fleet, nodes, host_entry(internal, port), line.split(" ", 1)[1])
    return Head(host=internal, port=port, user=HEAD_SFTP_USER, remote_path=f"/{HEAD_DATA}")
