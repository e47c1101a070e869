#!/usr/bin/env bash
# Create or reuse the project-local virtual environment (.venv) and install everything zsdet needs.
# Idempotent: a second run finds every piece in place and returns within seconds.
# Sourced by dev/demo.sh and dev/test.sh; usable alone: `bash dev/env.sh`.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${ZSDET_VENV:-$ROOT/.venv}"
PY="$VENV/bin/python"
STAMP="$VENV/.zsdet-installed"
# The torch build (docs/install.md): ZSDET_TORCH_SPEC, pip requirements; ZSDET_TORCH_INDEX_URL, the pip
# index of another build, e.g. https://download.pytorch.org/whl/cu118 for an NVIDIA driver of CUDA 11.8.
TORCH_SPEC="${ZSDET_TORCH_SPEC:-torch==2.14.1 torchvision==0.29.1}"
TORCH_INDEX="${ZSDET_TORCH_INDEX_URL:-}"
TORCH_STAMP="$VENV/.zsdet-torch"
D2_SDIST="pb1-detectron2==0.6"
# detectron2's runtime dependencies (its sdist pins black==21.4b2, which is not needed at run time).
D2_DEPS=("fvcore>=0.1.5,<0.1.6" "iopath>=0.1.7,<0.1.10" yacs "omegaconf>=2.1" "hydra-core>=1.1" termcolor tabulate cloudpickle matplotlib "pycocotools>=2.0.2" tensorboard future pydot)

log() { echo "[zsdet env] $*" >&2; }

fingerprint() {  # changes whenever setup.py, this script or the torch choice changes -> reinstall
  { cat "$ROOT/setup.py" "$ROOT/dev/env.sh"; echo "$TORCH_SPEC|$TORCH_INDEX"; } | sha256sum | cut -d' ' -f1
}

if [ ! -x "$PY" ]; then
  log "creating $VENV"
  "${PYTHON:-python3}" -m venv "$VENV"
fi

if [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$(fingerprint)" ]; then
  return 0 2>/dev/null || exit 0
fi

# pip's own failures stop the script (set -e); only the index-location warnings are filtered out.
pip_q() { "$PY" -m pip install -q --disable-pip-version-check "$@" 2> >(grep -v "^WARNING: Location" >&2); }

TORCH_CHOICE="$TORCH_SPEC|$TORCH_INDEX"
if "$PY" -c "import torch, torchvision" 2>/dev/null; then
  if [ ! -f "$TORCH_STAMP" ] && [ -z "${ZSDET_TORCH_SPEC:-}${ZSDET_TORCH_INDEX_URL:-}" ]; then
    echo "$TORCH_CHOICE" > "$TORCH_STAMP"  # installed before zsdet recorded its choice: kept
  fi
  if [ "$(cat "$TORCH_STAMP" 2>/dev/null)" != "$TORCH_CHOICE" ]; then
    log "torch choice changed to $TORCH_SPEC${TORCH_INDEX:+ from $TORCH_INDEX}: replacing torch $("$PY" -c 'import torch; print(torch.__version__)')"
    "$PY" -m pip uninstall -y -q torch torchvision
  fi
fi
if ! "$PY" -c "import torch, torchvision" 2>/dev/null; then
  log "installing $TORCH_SPEC${TORCH_INDEX:+ from $TORCH_INDEX}"
  pip_q $TORCH_SPEC ${TORCH_INDEX:+--index-url "$TORCH_INDEX"}
  echo "$TORCH_CHOICE" > "$TORCH_STAMP"
fi

if "$PY" -c "import detectron2" 2>/dev/null; then
  log "detectron2 already present: $("$PY" -c 'import detectron2, os; print(os.path.dirname(detectron2.__file__))') (kept)"
else
  log "building detectron2 from the $D2_SDIST sdist (about a minute)"
  "$PY" "$ROOT/dev/install_detectron2.py" --sdist "$D2_SDIST"
fi
pip_q "${D2_DEPS[@]}"

log "installing zsdet (editable) with its test extras"
pip_q --no-build-isolation -e "$ROOT[test]"
"$PY" -c "import zsdet, detectron2" || { log "import check failed"; exit 1; }
"$PY" "$ROOT/dev/check_cuda.py"  # a GPU machine whose torch cannot use its GPU: says why, exit 1
fingerprint > "$STAMP"
log "environment ready: $VENV"
