#!/usr/bin/env bash
# Main job: the full zero-shot detection pipeline on the built-in synthetic shapes dataset.
# Creates or reuses .venv (dev/env.sh). Extra args go to tools/train_net.py (e.g. --stages evaluate).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
source "$ROOT/dev/env.sh"
cd "$ROOT"
exec "$ROOT/.venv/bin/python" tools/train_net.py --config-file configs/shapes/zsd_shapes_R18_FPN.yaml "$@"
