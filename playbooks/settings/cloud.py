"""Settings of the cloud providers (``gcp``, ``aws``) and of the image bake (``image``), with their defaults.

The lead merges ``CLOUD_DEFAULTS`` into ``playbooks.settings.defaults.DEFAULTS``, so each key can come from ``invoke.yaml``
or from the environment (``gcp.project`` is ``INVOKE_GCP_PROJECT``, ``aws.ssh_cidr`` is ``INVOKE_AWS_SSH_CIDR``).
Lists are comma-separated strings (the environment cannot hold a list).  A price of 0 means "use the built-in
table below for this machine type"; a machine type missing from the table has an unknown cost.

A fleet may use several zones and machine types (``gcp.zones`` + ``gcp.machine_types``, ``aws.subnets`` +
``aws.instance_types``): with more than one, fleet.create sends one request that lets the cloud place the nodes
where it has capacity (GCP: a regional bulkInsert, AWS: an EC2 Fleet); see docs/cloud.md section 10.
"""
from __future__ import annotations

# USD per machine-hour, (spot, on-demand); rough list prices (us-central1 / us-east-1, late 2025).  Override
# per project with gcp.price_spot / gcp.price_on_demand (or the aws.* twins), or extend the tables in invoke.yaml.
# A key may also be "<zone or region>/<type>" (e.g. "europe-west4/e2-standard-4", "us-east-1b/c6i.large"): the most
# specific entry wins, so each node is priced by its own type and zone.
GCP_PRICES = {
    "e2-micro": [0.0025, 0.0084],
    "e2-small": [0.0050, 0.0168],
    "e2-medium": [0.0100, 0.0335],
    "e2-standard-2": [0.0201, 0.0670],
    "e2-standard-4": [0.0402, 0.1340],
    "e2-standard-8": [0.0804, 0.2681],
    "n2-standard-2": [0.0237, 0.0971],
    "n2-standard-4": [0.0474, 0.1942],
    "n2d-standard-2": [0.0203, 0.0845],
    "n2d-standard-4": [0.0406, 0.1690],
    "e2-highcpu-4": [0.0297, 0.0989],
    "e2-highcpu-8": [0.0593, 0.1978],
    "c2d-standard-4": [0.0359, 0.1815],
}
AWS_PRICES = {
    "t3.micro": [0.0031, 0.0104],
    "t3.small": [0.0062, 0.0208],
    "t3.medium": [0.0125, 0.0416],
    "c6i.large": [0.0340, 0.0850],
    "c6i.xlarge": [0.0680, 0.1700],
    "c7i.xlarge": [0.0700, 0.1785],
    "m6i.large": [0.0380, 0.0960],
    "c6a.large": [0.0300, 0.0765],
    "c6a.xlarge": [0.0600, 0.1530],
    "m6a.large": [0.0350, 0.0864],
    "c7i.large": [0.0350, 0.0893],
    "m7i.large": [0.0400, 0.1008],
    "c5.large": [0.0330, 0.0850],
    "m5.large": [0.0370, 0.0960],
}

CLOUD_DEFAULTS = {
    "gcp": {
        "project": "",              # "" = the project of the application-default credentials
        "zone": "us-central1-a",    # where fleet.create puts the nodes (and a head instance) when zones is ""
        "zones": "",                # zones of ONE region the nodes may use ("" = zone); more than one => one
                                    # regional bulkInsert; also what list_all scans ("" = every zone)
        "machine_type": "e2-standard-2",
        "machine_types": "",        # machine types the nodes may use ("" = machine_type); more than one => one
                                    # regional bulkInsert with an instanceFlexibilityPolicy
        "target_shape": "ANY",      # regional bulkInsert: ANY (wherever there is capacity: batch work),
                                    # BALANCED (spread evenly) or ANY_SINGLE_ZONE (all in one zone)
        "image": "",                # full image path/URL; "" = newest baked image, else image_family below
        "image_family": "debian-12",
        "image_project": "debian-cloud",
        "disk_gb": 20,
        "network": "global/networks/default",
        "subnetwork": "",           # "" = the network's auto subnetwork
        "endpoint": "",             # another Compute endpoint (a fake or a proxy); plain http:// => no credentials
        "credentials": "",          # "" = application-default; "anonymous"; or a service-account JSON path
        "ssh_source_ranges": "",    # comma-separated CIDRs that may reach port 22 (your address/32); required
        "firewall": True,           # create/keep the firewall rule fleetbook-ssh (tag fleetbook)
        "user": "fleet",            # login user, created by the guest agent from the ssh-keys metadata
        "ssh_port": 22,
        "head": "tunnel",           # how nodes reach the head's disk: tunnel (ssh -R from this machine) or
                                    # instance (one on-demand VM created with the fleet, mounted over the VPC)
        "tunnel_port": 2299,        # node-side loopback port of the reverse tunnel to the head
        "head_machine_type": "e2-standard-2",  # head = instance: its machine type (never spot)
        "head_disk_gb": 100,        # head = instance: its boot disk, which holds the shared disk
        "price_spot": 0.0,          # USD per node-hour; 0 = GCP_PRICES[machine_type]
        "price_on_demand": 0.0,
        "prices": GCP_PRICES,
        "operation_timeout": 300.0,  # seconds to wait for one zone/global operation
    },
    "aws": {
        "region": "us-east-1",
        "regions": "",              # comma-separated regions that list_all/fleet.down --all scan ("" = region)
        "instance_type": "t3.small",
        "instance_types": "",       # instance types the nodes may use ("" = instance_type); with several types
                                    # or subnets fleet.create sends one EC2 Fleet (price-capacity-optimized)
        # "" => newest baked image, else this public Debian 12 AMI resolved by EC2 itself through SSM
        "ami": "resolve:ssm:/aws/service/debian/release/12/latest/amd64",
        "subnet": "",               # "" = the default VPC's default subnet of the availability zone EC2 picks
        "subnets": "",              # subnets (one per availability zone, one VPC) the nodes may use ("" = subnet)
        "ssh_cidr": "",             # CIDR that may reach port 22 (your address/32); required
        "security_group": "fleetbook-ssh",
        "user": "admin",            # Debian AMIs: admin; Ubuntu: ubuntu; Amazon Linux: ec2-user
        "ssh_port": 22,
        "head": "tunnel",           # tunnel | instance (see gcp.head)
        "tunnel_port": 2299,
        "head_instance_type": "t3.medium",  # head = instance: its instance type (on-demand)
        "head_disk_gb": 100,
        "disk_gb": 20,
        "price_spot": 0.0,
        "price_on_demand": 0.0,
        "prices": AWS_PRICES,
        "waiter_timeout": 300.0,    # seconds for every boto3 waiter (running, stopped, terminated, image)
        "node_instance_profile": "",  # an IAM instance profile for the nodes (a bucket run: their own S3 rights)
    },
    "image": {
        "provider": "",             # "" = fleet.provider
        "family": "fleetbook",      # GCP image family / AWS image name prefix of baked images
        # setup steps run on the template instance over SSH, in order; the image is keyed by their hash.
        # One step per line (a string, so INVOKE_IMAGE_STEPS works); invoke.yaml may give a list instead.
        "steps": "\n".join([
            "sudo apt-get update -q",
            "sudo DEBIAN_FRONTEND=noninteractive apt-get install -y -q python3 python3-venv python3-pip sshfs fuse3",
            "sudo python3 -m pip install --break-system-packages -q numpy pillow opencv-python-headless "
            "scikit-learn scikit-image",
        ]),
        "use_baked": True,          # fleet.create uses the newest baked image when no image is set
        "timeout": 1800.0,          # seconds for the whole bake
    },
}
