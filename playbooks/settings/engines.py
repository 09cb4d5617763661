"""Settings of the scale-out engines (``dask``, ``batch``), with their defaults; merged into config.DEFAULTS."""
from __future__ import annotations

ENGINE_DEFAULTS = {
    "dask": {
        "scheduler_host": "",        # "" = 127.0.0.1 on a local fleet; a cloud fleet needs an address both ways (VPN)
        "port": 8786,                # scheduler port on the head (checked free before starting)
        "dashboard_port": 8787,      # dashboard (needs bokeh on the head; else no dashboard)
        "nworkers": 0,               # worker processes per node; 0 = the node's cores (local fleet: local.cores_per_node)
        "nthreads": 1,               # threads per worker process (the workloads are CPU-bound: 1)
        "chunksize": 0,              # items per task; 0 = workload --chunksize, else chosen from the measured costs
        "per_task_overhead_us": 0.0,  # 0 = measure Dask's own per-task cost on the cluster (no-op tasks)
        "item_seconds": 0.0,         # 0 = time one item on the head before submitting
        "max_in_flight": 0,          # tasks submitted at once; 0 = 4 x the cluster's worker threads
        "retries": 2,                # extra attempts of a chunk whose task raised
        "mount_check_s": 5.0,        # seconds between two looks at the workers' mounts in a run (a dead one: remounted)
        "start_timeout": 60.0,       # seconds to wait for the scheduler and every worker
        "idle_timeout": "4h",        # the scheduler exits after this long without work (a safety net); "" = never
    },
    "batch": {
        "region": "",                 # "" = aws.region (else us-east-1)
        "name": "fleetbook",          # prefix of every resource setup creates: <name>-spot, <name>-queue, <name>-job
        "image": "",                  # container image of the jobs (docker/README.md: build and push); required
        "instance_types": "optimal",  # comma-separated instance types or families for the compute environment
        "max_vcpus": 256,
        "bid_percentage": 100,        # highest spot price as a share of on-demand
        "subnets": "",                # comma-separated subnet ids; "" = the default VPC's subnets
        "security_groups": "",        # comma-separated group ids; "" = the default VPC's default group
        "bucket": "",                 # the bucket the jobs may read and write (job role policy); "" = from --src
        "src": "",                    # s3://bucket/prefix of the inputs
        "dst": "",                    # s3://bucket/prefix of the outputs
        "shards": 256,
        "vcpus": 2,                   # per job
        "memory_mib": 4096,           # per job
        "threads": 8,                 # items at once inside a job, on threads (the workload's --threads): S3 waits
        "attempts": 3,                # Batch retries of a job (a reclaimed spot instance is retried)
        "job_timeout_s": 3600,
        "job_start_s": 60.0,          # per-job start cost (placement, image pull, interpreter start), for the plan
        "item_seconds": 0.0,          # expected seconds per item, for the plan; 0 = unknown
        "wait_timeout": 600.0,        # seconds to wait for a compute environment / queue to change state
    },
}
