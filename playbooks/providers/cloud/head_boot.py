"""The head instance's identity and boot (provider side): its label and name, the ``<provider>.head`` mode, the
SFTP-only login it serves the shared root with, and the script that sets that up at every boot."""
from __future__ import annotations

import json

from playbooks.providers.cloud.boot import startup_script
from playbooks.providers.cloud.hostkeys import public_key
from playbooks.providers.cloud.names import check_labels, fleet_labels
from playbooks.providers.types import ProviderError
from playbooks.settings.defaults import fleet_dir

ROLE_LABEL = "role"                   # role=head marks the head instance; nodes carry no role
HEAD_CHROOT = "/srv/fleetbook"        # root-owned: sshd chroots the nodes' SFTP login here
HEAD_DATA = "data"                    # the shared root is HEAD_CHROOT/data, owned by the SFTP user
HEAD_SFTP_USER = "fleetsftp"          # the nodes' (and the operator's SFTP) login on the head: SFTP only
HEAD_AUTHORIZED = "/etc/fleetbook/head_authorized_keys"


def head_mode(c, provider: str, spec_head: str = "") -> str:
    mode = str(spec_head or c.config[provider].get("head", "tunnel"))
    if mode not in ("tunnel", "instance"):
        raise ProviderError(f"{provider}.head / --head is {mode!r}: choose tunnel or instance (docs/cloud.md, section 8)")
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
