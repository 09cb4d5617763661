"""What runs on a cloud node at every boot: python3 and sshfs, the shared mountpoint, the TTL power-off."""
from __future__ import annotations

import json


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
