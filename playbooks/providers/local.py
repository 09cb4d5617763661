"""The ``local`` provider: every node is a real OpenSSH daemon on its own loopback address of this machine.

As root (isolation ``user``) a node behaves like a machine: it has its own Unix user (its processes can be
killed as one, like a vanished VM), its own home as its disk, its own mount namespace (its sshfs mount of the
shared disk sits at ``shared.mountpoint``, the same path on every node, invisible to the others) and it cannot
write the head's folders except through that mount.  Without root (isolation ``none``) the daemons run as the
operator, each node's mount sits in its own folder, and ``fleet.list`` says that isolation is reduced.

The truth about a node is its labels file (``node.json``) plus the live process: a dead daemon is
``terminated``, a stopped or silent one is ``unreachable``.  Every process started through a node carries
``FLEETBOOK_NODE=<fleet>/<node>`` in its environment.
"""
from __future__ import annotations

import ipaddress
import json
import os
import pwd
import shlex
import shutil
import stat
import subprocess
import time
from pathlib import Path

import psutil
from playbooks.providers.types import ProviderError

from playbooks.fs.public import public_folder  # noqa: F401 - also the provider's, for its node folders
from playbooks.ssh import daemons as procs
from playbooks.ssh import keys as sshkeys
from playbooks.ssh import ports
from playbooks.ssh.keys import ensure_fleet  # noqa: F401 - the fleet's keys, made at create
from playbooks.ssh.sshd import SSHD, sshd_alive, sshd_config, start_sshd  # noqa: F401
from playbooks.settings.defaults import (fleet_dir, nodes_dir, public_dir, public_fleet_dir,  # noqa: F401
                                         shared_mountpoint, state_dir)
from playbooks.providers import netns
from playbooks.providers import RUNNING, TERMINATED, UNREACHABLE, FleetSpec, Node, NodesNotReady
from playbooks.providers.types import LOCAL_MAX_FLEET_NAME, check_name
from playbooks.providers.local_setup import _check_tools, _used_addresses, isolation, node_dir, use_netns  # noqa: F401
from playbooks.settings import setting

MARKER = "FLEETBOOK_NODE"


# ---------------------------------------------------------------- addresses


def allocate_address(c, port: int, taken: set[str] | None = None) -> str:
    """The first loopback address from ``local.base_address`` on that no fleet uses and whose port is free."""
    used = _used_addresses(c) | (taken or set())
    base = ipaddress.IPv4Address(c.config.local.base_address)
    for k in range(2000):
        host = str(base + k)
        if not ipaddress.IPv4Address(host).is_loopback:
            break
        if host not in used and ports.free(host, port):
            return host
    raise ProviderError("no free loopback address left for a node: run `invoke fleet.down` on fleets you no longer need")


# ---------------------------------------------------------------- processes

def node_processes(fleet: str, node: str, user: str | None = None) -> list[psutil.Process]:
    """Every process that belongs to the node: its environment marker, or (as root) its Unix user."""
    marker = f"{fleet}/{node}"
    found = []
    for proc in psutil.process_iter(["username"]):
        try:
            if (user and proc.info["username"] == user) or proc.environ().get(MARKER) == marker:
                found.append(proc)
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
            continue
    return found


# ---------------------------------------------------------------- nodes

def _read_labels(ndir: Path) -> dict | None:
    try:
        return json.loads((ndir / "node.json").read_text())
    except (OSError, ValueError):
        return None


def _node(labels: dict, state: str) -> Node:
    home = labels["home"]
    mountpoint = labels["mountpoint"]
    return Node(name=labels["node"], host=labels["host"], port=labels["port"], user=labels["user"], state=state,
                id=str(labels.get("pid", "")), labels=labels, started_at=labels.get("created_at"),
                mountpoint=mountpoint, python=labels["python"], workdir=f"{home}/fleetbook")


def node_state(ndir: Path, labels: dict) -> str:
    proc = sshd_alive(procs.read_pid(ndir / "sshd.pid") or labels.get("pid"), ndir / "sshd_config")
    if proc is None:
        return TERMINATED
    try:
        if proc.status() == psutil.STATUS_STOPPED:
            return UNREACHABLE
    except psutil.NoSuchProcess:
        return TERMINATED
    return RUNNING if ports.banner(labels["host"], labels["port"]) else UNREACHABLE


def list_nodes(c, name: str) -> list[Node]:
    nodes = []
    for ndir in sorted(nodes_dir(c, name).glob("*"), key=lambda p: _index(p.name)):
        labels = _read_labels(ndir)
        if labels and labels.get("fleet") == name:
            nodes.append(_node(labels, node_state(ndir, labels)))
    return nodes


def _index(node_name: str) -> int:
    tail = node_name.rsplit("-", 1)[-1]
    return int(tail) if tail.isdigit() else 10**6


VENV_IN_NODE = "/var/lib/fleetbook/venv"  # where a node sees the head's venv when its own path is closed to it


def _venv() -> Path:
    from playbooks.settings.defaults import REPO
    return REPO / ".venv"


def _open_to_others(path: Path) -> bool:
    """Can another user reach ``path`` (every folder above it enterable by others)?"""
    return all(p.stat().st_mode & 0o001 for p in path.parents if p != Path("/"))


def _python(mode: str) -> str:
    """The interpreter nodes run workloads with: the head's virtual environment, by absolute path.  A per-node
    user who cannot enter the checkout's folders (e.g. one below /root) sees the venv bound at VENV_IN_NODE."""
    venv = _venv() / "bin" / "python"
    if not venv.exists():
        return shutil.which("python3") or "python3"
    if mode == "user" and not _open_to_others(_venv()):
        return f"{VENV_IN_NODE}/bin/python"
    return str(venv)


def _create_node(c, fleet: str, index: int, host: str, mode: str, net: dict | None = None) -> Node:
    fdir = fleet_dir(c, fleet)
    name = f"{fleet}-{index}"
    ndir = node_dir(c, fleet, name)
    if ndir.exists():
        shutil.rmtree(ndir)
    home = ndir / "home"
    (home / ".ssh").mkdir(parents=True)
    os.chmod(ndir, 0o711)
    port = setting(c, "local.port")
    user = pwd.getpwuid(os.geteuid()).pw_name
    wrapper = None
    mountpoint = str(ndir / "mnt")
    if mode == "user":
        user = f"fb-{fleet}-{index}"
        _remove_user(user)
        subprocess.run(["useradd", "--no-create-home", "--home-dir", str(home), "--shell", "/bin/sh",
                        "--user-group", "--password", "*", user], check=True, capture_output=True)
        mountpoint = shared_mountpoint(c)
        Path(mountpoint).mkdir(parents=True, exist_ok=True)
        ids = pwd.getpwnam(user)
        # A private mount namespace: the node's tmpfs at the mountpoint (owned by the node's user, so its
        # sshfs can mount there) is seen by this node only; it vanishes with the node's last process.
        link = netns.add_node(net, fleet, index, host) if net else None
        venv = None
        if _python(mode).startswith(VENV_IN_NODE):
            Path(VENV_IN_NODE).mkdir(parents=True, exist_ok=True)
            venv = str(_venv())
        wrapper = [*(netns.exec_prefix(fleet, index) if net else []),
                   "unshare", "--mount", "--propagation", "private", "--", "sh", "-c",
                   namespace_setup(mountpoint, ids.pw_uid, ids.pw_gid, venv)]
    else:
        Path(mountpoint).mkdir()
    # what the node holds: the key to reach the head (SFTP only) and the head's pinned host key
    head = json.loads((fdir / "head" / "head.json").read_text())
    shutil.copyfile(fdir / "node_ed25519", home / ".ssh" / "fleet_head")
    os.chmod(home / ".ssh" / "fleet_head", 0o600)
    head_pub = (fdir / "head" / "ssh_host_ed25519_key.pub").read_text()
    sshkeys.pin(home / ".ssh" / "known_hosts", head["host"], head["port"], head_pub)
    (ndir / "authorized_keys").write_text((fdir / "id_ed25519.pub").read_text())
    host_pub = sshkeys.keypair(ndir / "ssh_host_ed25519_key", f"{name}@fleetbook")
    cfg = ndir / "sshd_config"
    cfg.write_text(sshd_config(listen=host, port=port, host_key=ndir / "ssh_host_ed25519_key",
                               pid_file=ndir / "sshd.pid", authorized=ndir / "authorized_keys", user=user,
                               extra=[f"SetEnv {MARKER}={fleet}/{name}", "AllowTcpForwarding no",
                                      "Subsystem sftp internal-sftp"]))
    if mode == "user":
        subprocess.run(["chown", "-R", f"{user}:{user}", str(home)], check=True)
        os.chmod(home, 0o700)
    labels = {"fleet": fleet, "node": name, "index": index, "host": host, "port": port, "user": user,
              "isolation": mode, "home": str(home), "mountpoint": mountpoint, "python": _python(mode),
              "created_at": time.time()}
    if mode == "user" and net:
        labels.update(netns=netns.ns_name(fleet, index), link=link)
    (ndir / "node.json").write_text(json.dumps(labels, indent=1))
    pid = start_sshd(cfg, ndir / "sshd.log", wrapper)
    labels["pid"] = pid
    (ndir / "node.json").write_text(json.dumps(labels, indent=1))
    sshkeys.pin(fdir / "known_hosts", host, port, host_pub)
    return _node(labels, RUNNING)


def namespace_setup(mountpoint: str, uid: int, gid: int, venv: str | None) -> str:
    """The shell that prepares a node's private mount namespace, then execs the node's sshd (``$0 "$@"``): a
    tmpfs at the mountpoint owned by the node's user (its sshfs mounts there) and, when the checkout is closed
    to the node's user, the head's venv bound read-only at VENV_IN_NODE."""
    setup = shlex.join(["mount", "-t", "tmpfs", "-o", f"size=1m,mode=0755,uid={int(uid)},gid={int(gid)}",
                        "fleetbook", mountpoint])
    if venv:
        setup += " && " + shlex.join(["mount", "--bind", "-o", "ro", venv, VENV_IN_NODE])
    return f'{setup} && exec "$0" "$@"'


def _remove_user(user: str) -> None:
    try:
        pwd.getpwnam(user)
    except KeyError:
        return
    subprocess.run(["userdel", user], capture_output=True)


def ensure_head_address(c, fleet: str) -> dict:
    head_json = fleet_dir(c, fleet) / "head" / "head.json"
    if head_json.exists():
        return json.loads(head_json.read_text())
    port = setting(c, "local.head_port")
    net = netns.read(fleet_dir(c, fleet))
    head = {"host": net["gateway"] if net else allocate_address(c, port), "port": port}
    head_json.write_text(json.dumps(head))
    return head


def _fuse_access(mode: str) -> None:
    """Node users must be able to open /dev/fuse (Debian's default is 0666; some machines have 0600)."""
    if mode == "user":
        if os.stat("/dev/fuse").st_mode & 0o006 != 0o006:
            os.chmod("/dev/fuse", 0o666)
    elif not os.access("/dev/fuse", os.R_OK | os.W_OK):
        raise ProviderError("/dev/fuse is not open to you: run `sudo chmod 0666 /dev/fuse` (Debian's default) or ./setup.sh")


def create(c, spec: FleetSpec) -> list[Node]:
    _check_tools()
    check_name(spec.name, LOCAL_MAX_FLEET_NAME)
    mode = isolation(c)
    _fuse_access(mode)
    existing = list_nodes(c, spec.name)
    alive = [n for n in existing if n.state != TERMINATED]
    gap = spec.count - len(alive)
    if spec.dry_run or gap <= 0:
        return existing
    if mode == "user":
        shared_mountpoint(c)  # a bad setting ends here, before anything is made
    created = []
    try:
        ensure_fleet(c, spec.name)
        if use_netns(c, mode):
            netns.ensure_bridge(state_dir(c), fleet_dir(c, spec.name), spec.name)
        _start_head(c, spec.name, fresh=not alive)
        for dead in (n for n in existing if n.state == TERMINATED):  # a vanished node is gone, as in a cloud
            _remove_node(c, spec.name, dead)
        # issue 13: a replacement gets a new name (never a vanished node's), so a run's record tells them apart
        used = {n.labels.get("index") for n in existing}
        mark = fleet_dir(c, spec.name) / "next_index"
        floor = int(mark.read_text()) if mark.exists() and mark.read_text().strip().isdigit() else 0
        indices = [i for i in range(floor, floor + spec.count + len(existing) + 1) if i not in used][:gap]
        mark.write_text(f"{max(indices) + 1}\n")
        taken: set[str] = set()
        net = netns.read(fleet_dir(c, spec.name))
        for index in indices:
            host = netns.node_address(net, index) if net else allocate_address(c, setting(c, "local.port"), taken)
            taken.add(host)
            created.append(_create_node(c, spec.name, index, host, mode, net))
    except BaseException:
        for node in created:  # nothing half-created stays behind
            _remove_node(c, spec.name, node)
        if not alive:  # a fleet that did not exist before goes as a whole: its head, keys and folders
            terminate(c, spec.name)
        raise
    return list_nodes(c, spec.name)


def _start_head(c, fleet: str, fresh: bool) -> None:
    """The head's sshd takes its address at create, so that no other fleet can be given it.  Another fleet of
    this machine (another state folder) may take a free address between our choice and our daemon's bind: a
    fleet without nodes yet then simply chooses again."""
    from playbooks.ssh import sftp_head as head
    for attempt in range(5):
        try:
            ensure_head_address(c, fleet)
            head.start(c, fleet)
            return
        except head.AddressTaken:
            if not fresh or attempt == 4:
                raise
            (fleet_dir(c, fleet) / "head" / "head.json").unlink(missing_ok=True)


def wait_ready(c, name: str, timeout: float, only: set[str] | None = None) -> list[Node]:
    deadline = time.monotonic() + timeout
    while True:
        nodes = [n for n in list_nodes(c, name) if only is None or n.name in only]
        waiting = [n.name for n in nodes if n.state != RUNNING]
        if not waiting:
            return nodes
        if time.monotonic() > deadline:
            raise NodesNotReady(waiting)
        time.sleep(0.1)


def kill_node(c, name: str, node: str) -> None:
    """Make one node vanish as a whole, like a preempted VM: its daemon and every process of it die."""
    ndir = node_dir(c, name, node)
    labels = _read_labels(ndir) or {}
    doomed = node_processes(name, node, labels.get("user") if labels.get("isolation") == "user" else None)
    listener = sshd_alive(procs.read_pid(ndir / "sshd.pid") or labels.get("pid"), ndir / "sshd_config")
    if listener:
        doomed.append(listener)
    procs.kill_all(doomed)
    if labels.get("isolation") == "none":
        unmount_dead(labels.get("mountpoint", ""))


def unmount_dead(mountpoint: str) -> None:
    if _is_fuse_mount(mountpoint):
        subprocess.run(["fusermount3", "-u", "-z", mountpoint], capture_output=True)


def _is_fuse_mount(path: str) -> bool:
    if not path:
        return False
    try:
        with open("/proc/self/mounts") as f:
            return any(line.split()[1] == path for line in f)
    except OSError:
        return False


def _remove_node(c, name: str, node: Node) -> None:
    kill_node(c, name, node.name)
    labels = node.labels or {}
    if labels.get("netns"):
        netns.remove_node(labels["netns"])
    if labels.get("isolation") == "user":
        _remove_user(labels["user"])
    sshkeys.unpin(fleet_dir(c, name) / "known_hosts", node.host, node.port)
    shutil.rmtree(node_dir(c, name, node.name), ignore_errors=True)


def terminate(c, name: str, dry_run: bool = False) -> int:
    from playbooks.ssh import sftp_head as head  # the local head's sshd lives and dies with the fleet
    nodes = list_nodes(c, name)
    removed = len(nodes)
    if dry_run:
        return removed
    for _ in range(3):  # re-list until nothing remains
        for node in nodes:
            _remove_node(c, name, node)
        nodes = list_nodes(c, name)
        if not nodes:
            break
    head.stop(c, name)
    netns.remove_bridge(fleet_dir(c, name))
    shutil.rmtree(fleet_dir(c, name), ignore_errors=True)
    shutil.rmtree(nodes_dir(c, name), ignore_errors=True)
    for empty in (public_fleet_dir(c, name), public_dir(c)) if os.geteuid() == 0 else ():
        # rmdir, never rmtree: the head's chroot was in here
        try:
            empty.rmdir()
        except OSError:
            pass
    if nodes:
        raise ProviderError(f"{len(nodes)} node(s) of {name} would not go away: {', '.join(n.name for n in nodes)}")
    return removed
