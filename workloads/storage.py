"""storage: ``python workloads/storage.py WORKLOAD [workload options]``, the same as ``python
workloads/WORKLOAD.py [options]``, for runs on object-store paths:

    python workloads/storage.py resize --src s3://bucket/src --dst s3://bucket/out --shard 3/256 --threads 8

How such a run goes (one listing of each prefix, batches through a local temp folder, one PUT per output) is in
``fw_objstore.py``, which every workload's command line uses for ``s3://`` paths.
"""
from __future__ import annotations

import sys

import fleetwork


def main(workload_name: str, argv: list[str] | None = None) -> int:
    """Command line: ``storage.py WORKLOAD [workload options]``, the same as ``WORKLOAD.py [options]``."""
    return fleetwork.main(fleetwork.load(workload_name), argv)


if __name__ == "__main__":
    if len(sys.argv) < 2 or sys.argv[1].startswith("-"):
        print("usage: storage.py WORKLOAD --src s3://bucket/src --dst s3://bucket/out [--shard k/n] ...",
              file=sys.stderr)
        sys.exit(2)
    sys.exit(main(sys.argv[1], sys.argv[2:]))
