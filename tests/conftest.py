"""The fixtures every test module here can ask for by name.

fleet_fixtures: a fleet's own state folder and shared root (``fleet_base``), for tests on a real local fleet.
cloud_fixtures: a moto server (and a CreateFleet layer over it) and the GCE fake on loopback, a real sshd for
the fake's VMs, and Invoke contexts pointing at them.  transfer_fixtures: a counting proxy before moto or the GCS
emulator, trees of files to move.  Their plain helpers (``make_ctx``, ``invoke_cli``, ``free_port``, ...) are
imported by name.
"""
from tests.support.cloud import (aws_ctx, aws_env, aws_fleet_ctx, ec2_fleet, fleet_sshd, gce, gcp_ctx,  # noqa: F401
                            head_root, isolated_env, moto_ami, moto_endpoint)
from tests.support.fleet import fleet_base  # noqa: F401
from tests.support.transfer import counting_s3, gcs_emulator  # noqa: F401
