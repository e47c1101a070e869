#!/usr/bin/env bash
# First-contact check of a machine with one CUDA GPU, at most 10 minutes after set-up (every step has
# its own timeout; dev/gpu_check.py): versions; the CUDA-only tests; the COCO config's detector (s /
# iteration, peak memory, fp32 and AMP), the features stage on ~200 fake COCO images at 640x480, ZSD +
# GZSD evaluation, one generator epoch on a COCO-sized synthetic bank (fp32, bf16) and the synthesis
# benchmark at COCO's sizes. One JSON summary on stdout (also OUT/summary.json), with the same keys
# when a step fails. Logs and figures: $ZSDET_GPU_CHECK_DIR (default: a new temp folder, named in it).
#
#   bash dev/env.sh                    # once, on the GPU machine (keeps a detectron2 that is already importable)
#   bash dev/gpu_check.sh
#   bash dev/gpu_check.sh --cpu-dry-run   # every step on the CPU with tiny sizes (about a minute)
#
# Exit status: 0 when every step passed, 1 when a step failed, 2 when no CUDA device is visible
# (nothing is run then; not with --cpu-dry-run) or the environment is missing.
set -uo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PY="${ZSDET_VENV:-$ROOT/.venv}/bin/python"
cd "$ROOT"
DRY_RUN=()
if [ "${1:-}" = "--cpu-dry-run" ]; then
  DRY_RUN=(--cpu-dry-run)
elif [ $# -gt 0 ]; then
  echo "usage: bash dev/gpu_check.sh [--cpu-dry-run]" >&2
  exit 2
fi

if [ ! -x "$PY" ]; then
  echo "gpu_check: $PY not found: run 'bash dev/env.sh' first" >&2
  exit 2
fi
if [ ${#DRY_RUN[@]} -eq 0 ] && ! probe=$("$PY" -c '
import sys, torch
if not torch.cuda.is_available():
    sys.exit(f"torch {torch.__version__} (built for CUDA {torch.version.cuda}) sees no CUDA device")
' 2>&1); then
  echo "gpu_check: no CUDA device visible: $(echo "$probe" | tail -n 1)." >&2
  echo "gpu_check: this check needs a machine with one NVIDIA GPU (and CUDA_VISIBLE_DEVICES not empty); nothing was run." >&2
  exit 2
fi
OUT="${ZSDET_GPU_CHECK_DIR:-$(mktemp -d -t zsdet_gpu_check.XXXXXX)}"
mkdir -p "$OUT"
exec "$PY" dev/gpu_check.py --out "$OUT" "${DRY_RUN[@]}"
