#!/usr/bin/env bash
# The whole test suite: unit, provider (moto server, GCE fake) and end-to-end tests on a real local fleet, plus
# every benchmark once at the small scale (--benchmark-disable).  Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")"
exec .venv/bin/python -m pytest -q -p no:cacheprovider tests bench --benchmark-disable --bench-scale small "$@"
