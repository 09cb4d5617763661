"""OpenSSH daemons of this machine: their config, their start, whether one still runs (the local nodes' sshds
and the head's SFTP-only sshd use the same three)."""
from __future__ import annotations

import os
import subprocess
from pathlib import Path

import psutil
from invoke.exceptions import Exit

from playbooks.ssh import daemons as procs

SSHD = "/usr/sbin/sshd"
# The node->head link's ciphers, cheapest first on a CPU with AES instructions (x86 AES-NI, ARMv8 crypto):
# AES-GCM costs a fraction of OpenSSH's default chacha20-poly1305 per byte (bench/test_diskcost.py
# test_sftp_request_and_byte_cost).  AEAD ciphers only, each in OpenSSH's own default list: never weaker.
AEAD_CIPHERS = "aes128-gcm@openssh.com,aes256-gcm@openssh.com,chacha20-poly1305@openssh.com"


def config_word(value) -> str:
    """``value`` as one word of an OpenSSH config line (sshd_config, or ``ssh -o``): OpenSSH splits its lines into
    words as a shell does, so a path with a space (a checkout in "~/My Projects") is double-quoted, its quotes and
    backslashes escaped; a plain one is left as it is."""
    text = str(value)
    if text and not any(ch in text for ch in " \t\"'\\#"):
        return text
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


class SshdRejected(Exit):
    """sshd -t refused a config (typed; an Exit so that a step shows its one line)."""


def sshd_alive(pid: int | None, cfg: Path) -> psutil.Process | None:
    """The process ``pid`` if it is the sshd started with ``cfg`` (a recycled pid is not ours).  Its command line
    is read whole: sshd rewrites it as one title ("sshd: /usr/sbin/sshd -D -e -f <cfg> [listener] ..."), which
    psutil splits at spaces, a space in ``cfg`` too."""
    return procs.ours(pid, lambda proc: f" -f {cfg}" in " ".join(proc.cmdline()))


def sshd_config(*, listen: str, port: int, host_key: Path, pid_file: Path, authorized: Path, user: str,
                extra: list[str]) -> str:
    lines = [
        f"ListenAddress {listen}:{port}", f"HostKey {config_word(host_key)}", f"PidFile {config_word(pid_file)}",
        f"AuthorizedKeysFile {config_word(authorized)}", f"AllowUsers {user}",
        "PubkeyAuthentication yes", "PasswordAuthentication no", "KbdInteractiveAuthentication no",
        "UsePAM no", "StrictModes no", "PrintMotd no", "X11Forwarding no", "PermitTunnel no",
        "PermitUserEnvironment no", "MaxStartups 100:30:200", "MaxSessions 64", "LogLevel ERROR",
        "KexAlgorithms curve25519-sha256,curve25519-sha256@libssh.org",
    ]
    return "\n".join(lines + extra) + "\n"


def start_sshd(cfg: Path, log: Path, wrapper: list[str] | None = None) -> int:
    if os.geteuid() == 0:
        Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)
    check = subprocess.run([SSHD, "-t", "-f", str(cfg)], capture_output=True, text=True)
    if check.returncode != 0:
        raise SshdRejected(f"sshd rejected {cfg}: {check.stderr.strip().splitlines()[-1]}")
    return procs.detach([*(wrapper or []), SSHD, "-D", "-e", "-f", str(cfg)], log)
