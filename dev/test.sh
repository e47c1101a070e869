#!/usr/bin/env bash
# Test suite: creates or reuses .venv (dev/env.sh), then runs pytest. Extra args go to pytest.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
source "$ROOT/dev/env.sh"
cd "$ROOT"
# Two pytest-xdist workers (a test file stays on one worker, so its module fixtures are built once).
exec "$ROOT/.venv/bin/python" -m pytest -q -p no:cacheprovider -n "${ZSDET_TEST_WORKERS:-2}" --dist loadfile "$@" tests
