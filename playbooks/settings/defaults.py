"""Every setting of the project, with its default.

Invoke reads a key from the environment only when it has a default here: ``shared.root`` is
``INVOKE_SHARED_ROOT``, ``fleet.name`` is ``INVOKE_FLEET_NAME``.  Booleans from the environment are ``0``/``1``;
lists are comma-separated strings.  ``invoke.yaml`` at the top of the repository overrides these defaults, and
command-line flags override both.  Invoke's own ``run`` subtree is taken, so the job settings live under ``job``.
"""
from __future__ import annotations

import hashlib
import os
from pathlib import Path

from playbooks.settings.cloud import CLOUD_DEFAULTS
from playbooks.settings.engines import ENGINE_DEFAULTS

REPO = Path(__file__).resolve().parents[2]

DEFAULTS = {
    "fleet": {
        "name": "fleetbook",       # fleets are found by this label; every fleet task takes --name
        "provider": "local",       # local | gcp | aws
        "state_dir": "",           # keys, known_hosts, per-node state; "" = <repo>/.fleetbook/fleets
        "ssh_timeout": 20.0,       # seconds per host for connect and for each short command
        "exec_timeout": 600.0,     # seconds per node for `invoke exec` (a pip install can take minutes)
        "max_parallel": 16,        # cap on concurrent SSH connections in a fan-out
        "ready_timeout": 60.0,     # seconds to wait for every node to answer SSH
        "ttl_hours": 4.0,          # cloud nodes delete themselves after this
        "price_per_hour": 0.0,     # USD per node-hour, for the cost in `invoke progress` (0 = unknown)
    },
    "local": {
        "base_address": "127.0.1.10",  # node i listens on base + i (all of 127.0.0.0/8 answers on lo)
        "port": 2222,              # sshd port of each node when not root (as root: 22)
        "head_port": 2299,         # port of the fleet's own SFTP-only head sshd
        "isolation": "auto",       # auto | user | none: per-node Unix users + mount namespaces need root
        "cores_per_node": 1,       # what a local node counts as its cores (they share one machine)
        "netns": False,            # root only: each node in its own network namespace, linked by a veth to a
                                   # fleet bridge (10.213.<k>.0/24), so one node's link can be cut or slowed
        "public_dir": "/var/lib/fleetbook",  # root only: what the nodes' users and the head's sshd must reach
                                   # (node homes, the head's chroot), root-owned, wherever the checkout is
    },
    "shared": {
        "root": "data",            # the shared disk on the head, relative to the repo unless absolute
        "mountpoint": "/mnt/fleetbook",  # where every node mounts it (local non-root: <node dir>/mnt)
    },
    "job": {
        "workload": "resize",
        "src": "src",              # relative to shared.root
        "dst": "out",              # relative to shared.root
        "args": "",                # extra workload arguments, one shell-quoted string
        "lost_after": 30.0,        # seconds without a heartbeat before a node counts as lost
        "mount_wait": 60.0,        # seconds a node's workload waits for its dropped mount before it ends unhealthy
        "poll": 1.0,               # seconds between progress refreshes
        # issue 13 (playbooks/supervise.py): carry a run to its end, replacing lost and preempted nodes
        "until_done": False,       # `invoke run` supervises until every item is done (--until-done)
        "max_replacements": 10,    # no more replacement nodes than this in one run
        "budget_usd": 0.0,         # no new node once the run's projected cost would pass this (0 = no bound)
        "metadata_url": "",        # the nodes' metadata service for preemption notices ("" = the cloud's own)
        "item_delay": 0.0,         # testing: seconds each item waits before it is processed (a slow workload)
    },
    "data": {                      # invoke data.push / data.pull
        "threads": 0,              # files at once; 0 = the machine profile's measurement, else 8
        "part_mb": 8,              # objects above this go up in parts of exactly this size (S3 multipart)
        "s3_endpoint": "",         # another S3 endpoint (a proxy, MinIO); "" = boto's own (AWS_ENDPOINT_URL)
        "gcs_endpoint": "",        # another GCS endpoint; plain http:// = an emulator, sent no credentials
    },
    "bench": {
        "scale": "default",        # small | default | large
        "profile": "",             # "" = <repo>/.fleetbook/profile.json (this machine's, from `invoke bench`)
        "profiles": "",            # "" = <repo>/.fleetbook/profiles: one per machine type, `invoke bench --node`
        "node_timeout": 1800.0,    # seconds `invoke bench --node` may take on the node
    },
    "plan": {                      # `invoke plan`: what it compares and the figures it cannot measure
        "sizes": "1,2,5,10,20,50",  # fleet sizes to compare (comma-separated)
        "boot_s": -1.0,            # seconds until a new node answers SSH; -1 = by provider: local 1, gcp 60, aws 90
        "ssh_s": -1.0,             # one SSH fan-out round (connect + a command); -1 = local 0.15, cloud 0.5
        "uplink_mbps": 20.0,       # the operator's uplink: the tunnel head sends every input up it
        "downlink_mbps": 100.0,    # the operator's downlink: outputs come back down it
        "head_link_gbps": 1.0,     # a head instance's network link
        "shards": "16,64,256,1024,4096,65536",  # AWS Batch shard counts to compare (and batch.shards)
    },
    **CLOUD_DEFAULTS,              # gcp, aws, image: see cloud_config.py
    **ENGINE_DEFAULTS,             # dask, batch: see engine_config.py
}


def repo_path(value: str) -> Path:
    """A setting that names a path: absolute as given, else relative to the repository."""
    p = Path(value).expanduser()
    return p if p.is_absolute() else REPO / p


def shared_root(c) -> Path:
    return repo_path(c.config.shared.root).resolve()


def shared_mountpoint(c) -> str:
    """``shared.mountpoint``: an absolute, plain path (made on every node and named in shell commands), or a
    one-line error."""
    from playbooks.settings import SettingError      # settings/__init__ imports this module
    mp = str(c.config.shared.mountpoint)
    if not mp.startswith("/") or not all(ch.isalnum() or ch in "/._-" for ch in mp) or "/../" in mp + "/":
        raise SettingError(f"shared.mountpoint {mp!r} must be an absolute path of letters, digits and / . _ -, "
                   "e.g. /mnt/fleetbook")
    return os.path.normpath(mp)


def state_dir(c) -> Path:
    return repo_path(c.config.fleet.state_dir or ".fleetbook/fleets")


def fleet_dir(c, fleet: str) -> Path:
    """The fleet's own state on this machine (keys, known_hosts, the head, tunnels): ``<state_dir>/<fleet>``."""
    return state_dir(c) / fleet


def public_dir(c) -> Path:
    """Fleet material that other local users must reach: the nodes' homes and authorized_keys, the head's
    chroot.  As root, a root-owned, world-traversable folder below ``local.public_dir``, one per state folder
    (so a checkout below a closed home such as /root works); without root, the state folder itself (the
    daemons run as the operator).  The operator's private keys never live here: they stay in the state folder."""
    if os.geteuid() != 0:
        return state_dir(c)
    key = hashlib.sha256(str(state_dir(c).resolve()).encode()).hexdigest()[:12]
    return repo_path(str(c.config.local.public_dir)) / key


def public_fleet_dir(c, fleet: str) -> Path:
    """What of the fleet other local users must reach (``config.public_dir``): node folders, the head's chroot."""
    return public_dir(c) / fleet


def nodes_dir(c, fleet: str) -> Path:
    return public_fleet_dir(c, fleet) / "nodes"


def profile_path(c) -> Path:
    return repo_path(c.config.bench.profile or ".fleetbook/profile.json")
