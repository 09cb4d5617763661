"""Run state on the shared disk, what must be kept, demo inputs."""
