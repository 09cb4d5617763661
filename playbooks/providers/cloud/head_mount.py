"""The ``head(c, fleet)`` hook of a fleet with a head instance: the nodes mount the shared root from it.

(Reading the run state and counting on a head instance is not a provider's job: see ``playbooks/runs/head_instance.py``.)
"""
from __future__ import annotations

from playbooks.providers.cloud.head_boot import HEAD_DATA, HEAD_SFTP_USER
from playbooks.providers.cloud.tunnels import install_head_access
from playbooks.providers.types import RUNNING, Node, ProviderError
from playbooks.settings import setting
from playbooks.settings.defaults import fleet_dir


def instance_head(c, provider: str, fleet: str, head_node: Node, internal: str, list_nodes):
    """The ``head(c, fleet)`` hook with a head instance: every running node gets the nodes' key and the head's
    host key (pinned for this fleet from the cloud) under the head's internal address; they mount that."""
    from playbooks.ssh.sftp_head import Head
    from playbooks.ssh.keys import host_entry
    port = setting(c, f"{provider}.ssh_port")
    kh = fleet_dir(c, fleet) / "known_hosts"
    entry = host_entry(head_node.host, head_node.port)
    line = next((ln for ln in (kh.read_text().splitlines() if kh.exists() else [])
                 if ln.split(" ", 1)[0] == entry), None)
    if line is None:
        raise ProviderError(f"fleet {fleet}: the head instance's host key is not pinned yet: run "
                            f"`invoke fleet.create --provider {provider} --name {fleet} -n N` (it waits for the head)")
    nodes = [n for n in list_nodes(c, fleet) if n.state == RUNNING]
    install_head_access(c, fleet, nodes, host_entry(internal, port), line.split(" ", 1)[1])
    return Head(host=internal, port=port, user=HEAD_SFTP_USER, remote_path=f"/{HEAD_DATA}")
