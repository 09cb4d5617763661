#!/usr/bin/env bash
# Installs what fleetbook needs on a Debian machine (as root, or as a user with sudo), then runs `invoke demo`.
#   ./setup.sh            install + demo
#   ./setup.sh --no-demo  install only
# apt: openssh-server, openssh-client, sshfs, fuse3, python3-venv (only those missing); a virtual environment
# in .venv/ with the exact versions pinned in requirements.lock, then the project itself (editable).
# The venv is made from Debian's /usr/bin/python3, so that the local fleet's per-node users can run it too.
# Packages go in with uv (seconds) when it can run, else with pip (minutes); FLEETBOOK_INSTALLER=pip forces pip.
# requirements.lock is made from pyproject.toml by:
#   uv pip compile pyproject.toml --all-extras --universal --python-version 3.11 -o requirements.lock
set -euo pipefail
cd "$(dirname "$0")"
SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"
t0=$(date +%s)

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
t1=$(date +%s)

if [ ! -x .venv/bin/python ]; then /usr/bin/python3 -m venv .venv; fi
PY=.venv/bin/python
uv_bin() {  # a uv that runs here: the one on PATH, else one installed into the venv with pip
  if command -v uv >/dev/null && uv --version >/dev/null 2>&1; then command -v uv; return; fi
  if [ -x .venv/bin/uv ] || $PY -m pip install -q --disable-pip-version-check uv >/dev/null 2>&1; then
    .venv/bin/uv --version >/dev/null 2>&1 && echo .venv/bin/uv
  fi
}
UV=""
[ "${FLEETBOOK_INSTALLER:-uv}" = "pip" ] || UV=$(uv_bin || true)
if [ -n "$UV" ] && "$UV" pip install -q --python "$PY" -r requirements.lock \
    && "$UV" pip install -q --python "$PY" --no-deps -e .; then
  how="uv"
else
  [ -z "$UV" ] || echo "setup: uv failed; installing with pip instead (a few minutes)"
  $PY -m pip install -q --disable-pip-version-check -r requirements.lock
  $PY -m pip install -q --disable-pip-version-check --no-deps -e .
  how="pip"
fi
t2=$(date +%s)
echo "setup: done in $(( t2 - t0 )) s (system packages $(( t1 - t0 )) s, Python packages with $how $(( t2 - t1 )) s);" \
     "the tools are in .venv/bin (source .venv/bin/activate)"

if [ "${1:-}" != "--no-demo" ]; then
  .venv/bin/invoke demo
fi
