"""What the cloud providers (gcp, aws) share, one module per concern; no cloud SDK is imported here, so the cost
and the checks stay cheap for ``invoke progress``.

``names`` (labels, their checks, the TTL deadline), ``prices`` (types, USD per hour, the estimate and capacity
lines), ``cost`` (cost so far, cached listing), ``boot`` (the startup script), ``hostkeys`` (the fleet key, pinned
host keys, readiness), ``tunnels`` (this machine as the head, through reverse tunnels), ``head_boot`` (the head
instance's label, mode and boot script), ``head_mount`` (the nodes' mount of a head instance; imported by
itself, not re-exported here).  The names below are re-exported so a provider reads ``cc.<name>``.
"""
from playbooks.providers.cloud.boot import aws_user_data, startup_script  # noqa: F401
from playbooks.providers.cloud.cost import _COST_CACHE, cost_so_far, run_cost  # noqa: F401
from playbooks.providers.cloud.head_boot import (HEAD_AUTHORIZED, HEAD_CHROOT, HEAD_DATA, HEAD_SFTP_USER,  # noqa: F401
                                                 ROLE_LABEL, aws_head_user_data, head_authorized_keys, head_labels,
                                                 head_match_block, head_mode, head_name, head_script, is_head)
from playbooks.providers.cloud.hostkeys import (forget_hosts, known_entry, parse_console_host_keys,  # noqa: F401
                                                pin_keys, public_key, scan_host_key, ssh_answers, wait_ready)
from playbooks.providers.cloud.names import (DEADLINE_LABEL, FLEET_LABEL, IMAGE_HASH_LABEL,  # noqa: F401
                                             LABEL_VALUE_RE, NETWORK_TAG, SPOT_LABEL, check_labels, check_name,
                                             check_spec,
                                             deadline, fleet_labels, node_facts, region_of, split_list)
from playbooks.providers.cloud.prices import (TYPE_SETTINGS, capacity_line, estimate, machine_types,  # noqa: F401
                                              price_per_hour)
from playbooks.providers.cloud.tunnels import (close_tunnels, install_head_access, start_tunnel,  # noqa: F401
                                               stop_head, tunnel_head)
from playbooks.providers.types import TYPE_KEY, ZONE_KEY  # noqa: F401
