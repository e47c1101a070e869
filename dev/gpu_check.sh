#!/usr/bin/env bash
# One-shot GPU check on a machine with one CUDA GPU, at most 8 minutes (the steps time out after
# 100 + 170 + 180 s): the CUDA-only tests, the synthesis benchmark on CUDA in fp32 and bf16, and
# the tiny detection pipeline on CUDA with bf16; then one JSON summary on stdout (each step's
# status, wall time and key numbers; dev/gpu_check_summary.py). Logs: $ZSDET_GPU_CHECK_DIR
# (default: a new temp folder, named in the summary).
#
#   bash dev/env.sh          # once, on the GPU machine (keeps a detectron2 that is already importable)
#   bash dev/gpu_check.sh
#
# Exit status: 0 when every step passed, 1 when a step failed, 2 when no CUDA device is visible
# (nothing is run then) or the environment is missing.
set -uo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PY="${ZSDET_VENV:-$ROOT/.venv}/bin/python"
cd "$ROOT"

if [ ! -x "$PY" ]; then
  echo "gpu_check: $PY not found: run 'bash dev/env.sh' first" >&2
  exit 2
fi
if ! probe=$("$PY" -c '
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

# step NAME TIMEOUT_S CMD...: runs CMD with its output in $OUT/NAME.log, records status and time
step() {
  local name=$1 limit=$2; shift 2
  local start=$SECONDS
  echo "gpu_check: $name ..." >&2
  timeout "$limit" "$@" >"$OUT/$name.log" 2>&1
  local rc=$?
  echo "$name $rc $((SECONDS - start))" >>"$OUT/steps.txt"
  echo "gpu_check: $name exit $rc in $((SECONDS - start)) s" >&2
}
: >"$OUT/steps.txt"

# 1. every test file with a CUDA-only test (skipped on CPU machines)
mapfile -t CUDA_TESTS < <(grep -rlE "cuda\.is_available\(\)" tests --include='test_*.py' | sort)
step cuda_tests 100 "$PY" -m pytest -q -p no:cacheprovider -rs --junitxml="$OUT/cuda_tests.xml" \
  "${CUDA_TESTS[@]}"
# 2. synthesis benchmark at the NUS-WIDE sizes, both implementations, fp32 and bf16
step bench_synthesis 170 "$PY" benchmarks/bench_synthesis.py --devices cuda --dtypes fp32,bf16 --iters 5
# 3. the whole tiny detection pipeline on the GPU, bf16 synthesis
step tiny_pipeline 180 "$PY" tools/train_net.py \
  --config-file configs/quick_schedules/zsd_shapes_tiny_instant_test.yaml \
  MODEL.DEVICE cuda SYNTHESIS.AMP_DTYPE bfloat16 OUTPUT_DIR "$OUT/tiny_pipeline"

"$PY" dev/gpu_check_summary.py "$OUT"
