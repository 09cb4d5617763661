"""Mount the head's shared disk on every node over sshfs (and unmount it).

Each node mounts ``<head>:<shared root>`` at its mountpoint with the fleet's node key (SFTP only), the head's
pinned host key, keep-alives and reconnect.  The mounts are made in parallel, at most fleet.max_parallel at once.
"""
from __future__ import annotations

from invoke import task
from invoke.exceptions import Exit
from rich.console import Console

from playbooks.engines.launch import is_mounted  # one shell test of a mount, shared with preflight
from playbooks.ssh import sftp_head as local_head
from playbooks.fleet import nodes_or_exit, provider_of
from playbooks.settings import setting
from playbooks.settings.errors import user_errors
from playbooks.ssh.fanout import fan_out, q, run_checked, show_failures
from playbooks.ssh.sshd import AEAD_CIPHERS, config_word

console = Console()


def home_file_option(node, option: str, rel: str) -> str:
    """``-o Option=<the node's home>/rel`` for the node's ssh (or sshfs, which hands it on), as shell words: the
    home is the node's own folder on a local fleet (a path of this checkout's, maybe with a space), else $HOME;
    the path is one word of ssh's config syntax (``sshd.config_word``) once the shell has expanded it."""
    h = node.labels.get("home")
    if h:
        return "-o " + q(f"{option}={config_word(f'{h}/{rel}')}")
    return f'-o "{option}=\\"$HOME/{rel}\\""'


def head_for(c, fleet: str, provider: str):
    """Where the nodes mount from: the provider's ``head`` hook (default: this machine's SFTP-only sshd)."""
    return provider_of(c, provider).head(c, fleet)


def repair_dead(mp: str) -> str:
    """Shell: a dead sshfs mount at ``mp`` (already quoted) is lazily unmounted, and "repaired: <why>" said.  A
    dead mount is still listed, but every call on it, ``mkdir -p`` included, fails with "Transport endpoint is
    not connected" (its sshfs died) or hangs (its link is down): ``statfs`` (never cached), bounded, tells."""
    return (f"if {is_mounted(mp)} && ! why=$(timeout 10 stat -f {mp} 2>&1 >/dev/null); then why=${{why##*: }}; "
            f"echo \"repaired: ${{why:-no answer within 10 s}}\"; fusermount3 -u -z {mp}; fi")


def ssh_options(head) -> list[str]:
    """The ssh options of a node's link to the head (sshfs passes them to its ssh): keep-alives, the pinned host
    key only, the node key only, the cheap key exchange; AES-GCM first (``sshd.AEAD_CIPHERS``, AEAD ciphers only)
    and no compression (whatever a node's ssh_config says: inputs are JPEGs and the like)."""
    return ["ServerAliveInterval=5", "ServerAliveCountMax=3", "BatchMode=yes", "StrictHostKeyChecking=yes",
            "IdentitiesOnly=yes", f"Port={head.port}", "KexAlgorithms=curve25519-sha256",
            f"Ciphers={AEAD_CIPHERS}", "Compression=no"]


def mount_command(node, head) -> str:
    mp = q(node.mountpoint)
    ssh_opts = ssh_options(head)
    # no directory cache: a folder the head deleted and made again must not look stale on the nodes;
    # larger SFTP reads and writes (sshfs' default 32 KiB costs a request per 32 KiB of every input and output;
    # sshfs 3.7 caps both at 64 KiB whatever is asked): bench/test_diskcost.py
    # (longer entry/attr/negative timeouts and kernel_cache measured no gain: every item's names are new)
    # sshfs splits -o at commas: a comma inside a value (the cipher list) is escaped for it ("\\,")
    opts = q(",".join(["reconnect", *(o.replace(",", "\\,") for o in ssh_opts), "dir_cache=no", "max_read=131072",
                       "max_write=131072"]))
    keys = (f"{home_file_option(node, 'IdentityFile', '.ssh/fleet_head')} "
            f"{home_file_option(node, 'UserKnownHostsFile', '.ssh/known_hosts')}")
    target = q(f"{head.user}@{head.host}:{head.remote_path}")
    # sshfs hides why ssh gave up (a changed host key shows as "Connection reset by peer"): on failure, one
    # plain ssh to the head's SFTP subsystem says it on stderr, where remote.error_line finds it
    why = (f"ssh {' '.join('-o ' + q(o) for o in ssh_opts)} {keys} {q(f'{head.user}@{head.host}')} -s sftp "
           "</dev/null 2>&1 | tail -3 >&2")
    return (f"{repair_dead(mp)}; mkdir -p {mp} && if {is_mounted(mp)} && ls {mp} >/dev/null 2>&1; then echo already; else "
            f"{{ ! {is_mounted(mp)} || fusermount3 -u -z {mp}; }} && "
            f"{{ sshfs -o {opts} {keys} {target} {mp} && {is_mounted(mp)} && echo mounted || {{ {why}; false; }}; }}; fi")


def repaired(output: str) -> str | None:
    """Why a node's mount was repaired (``mount_command``'s "repaired: ..." line), or None."""
    for line in (output or "").splitlines():
        if line.startswith("repaired: "):
            return line[len("repaired: "):]
    return None


def unmount_command(node) -> str:
    mp = q(node.mountpoint)
    return (f"if {is_mounted(mp)}; then "
            f"fusermount3 -u {mp} 2>/dev/null || fusermount3 -u -z {mp}; echo unmounted; else echo not-mounted; fi")


def mount_all(c, fleet: str, nodes, provider: str = ""):
    head = head_for(c, fleet, provider)
    timeout = setting(c, "fleet.ssh_timeout")
    return fan_out(c, fleet, nodes, lambda conn, n: run_checked(conn, mount_command(n, head), timeout).strip(),
                   step="mount")


@task(help={"name": "fleet name (default: fleet.name)", "provider": "local, gcp or aws (default: fleet.provider)"})
@user_errors
def mount(c, name="", provider=""):
    """Mount the shared disk (shared.root) on every node."""
    name, nodes = nodes_or_exit(c, name, provider)
    results = mount_all(c, name, nodes, provider)
    ok = sum(r.ok for r in results)
    console.print(f"shared disk mounted on {ok}/{len(nodes)} node(s) at {nodes[0].mountpoint}")
    for r in results:
        why = repaired(r.value) if r.ok else None
        if why:
            console.print(f"{r.node.name}: its mount was dead ({why}): unmounted and mounted again", markup=False)
    if show_failures(results):
        raise Exit("some nodes could not mount the shared disk (see the table above)")


@task(help={"name": "fleet name (default: fleet.name)", "provider": "local, gcp or aws (default: fleet.provider)"})
@user_errors
def unmount(c, name="", provider=""):
    """Unmount the shared disk from every node."""
    name, nodes = nodes_or_exit(c, name, provider)
    timeout = setting(c, "fleet.ssh_timeout")
    results = fan_out(c, name, nodes, lambda conn, n: run_checked(conn, unmount_command(n), timeout).strip(),
                      step="unmount")
    console.print(f"shared disk unmounted from {sum(r.ok for r in results)}/{len(nodes)} node(s)")
    if show_failures(results):
        raise Exit("some nodes could not unmount (see the table above)")
