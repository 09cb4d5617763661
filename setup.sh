#!/usr/bin/env bash
# Installs what fleetbook needs on a Debian machine (as root, or as a user with sudo), then runs `invoke demo`.
#   ./setup.sh            install + demo
#   ./setup.sh --no-demo  install only
# apt: openssh-server, openssh-client, sshfs, fuse3, python3-venv (only those missing); a virtual environment
# in .venv/ with the project and all its extras.  The venv is made from Debian's /usr/bin/python3, so that the
# local fleet's per-node users can run it too.
set -euo pipefail
cd "$(dirname "$0")"
SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"

need=()
command -v /usr/sbin/sshd >/dev/null || need+=(openssh-server)
command -v ssh >/dev/null || need+=(openssh-client)
command -v sshfs >/dev/null || need+=(sshfs)
command -v fusermount3 >/dev/null || need+=(fuse3)
command -v findmnt >/dev/null || need+=(util-linux)
/usr/bin/python3 -c "import ensurepip, venv" 2>/dev/null || need+=(python3-venv)
if [ ${#need[@]} -gt 0 ]; then
  echo "setup: apt-get install ${need[*]}"
  $SUDO apt-get update -qq
  $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
fi
# Debian gives /dev/fuse mode 0666; some machines have 0600, which stops non-root sshfs mounts
if [ -e /dev/fuse ] && [ "$(stat -c %a /dev/fuse)" != "666" ]; then $SUDO chmod 0666 /dev/fuse; fi

if [ ! -x .venv/bin/python ]; then /usr/bin/python3 -m venv .venv; fi
.venv/bin/python -m pip install -q --upgrade pip
.venv/bin/python -m pip install -q -e '.[all]'
echo "setup: done; the tools are in .venv/bin (source .venv/bin/activate)"

if [ "${1:-}" != "--no-demo" ]; then
  .venv/bin/invoke demo
fi
