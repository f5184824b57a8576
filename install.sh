#!/usr/bin/env bash
# Set up edge_derain on a fresh Debian 12 / Ubuntu / JetPack machine: system packages, a virtualenv in
# .venv, PyTorch, and the package (editable, so plugins/ sources stay next to it).
#   bash install.sh        # run the tool (demo, train, export, build, pipelines)
#   bash install.sh dev    # plus the test dependencies
set -euo pipefail
cd "$(dirname "$0")"
MODE=${1:-user}
VENV=${EDGE_DERAIN_VENV:-.venv}
TORCH_SPEC=${EDGE_DERAIN_TORCH:-torch==2.13.0}

log() { printf '\033[1m[install]\033[0m %s\n' "$*"; }

if [ ! -x "$VENV/bin/python" ]; then
  log "creating virtualenv $VENV"
  python3 -m venv "$VENV"
fi
PY="$VENV/bin/python"
"$PY" -m pip install -q --upgrade pip

# torch first and pinned: on the project's CPU machines this version is a local CPU wheel, while an
# unpinned resolve would pull a multi-GB CUDA build. Jetson users install NVIDIA's JetPack torch wheel
# beforehand and set EDGE_DERAIN_TORCH to it (or to "torch" to keep what is installed).
if ! "$PY" -c "import torch" 2>/dev/null; then
  log "installing $TORCH_SPEC"
  "$PY" -m pip install -q "$TORCH_SPEC"
fi

EXTRAS="onnx,trt"
[ "$MODE" = "dev" ] && EXTRAS="$EXTRAS,dev"
log "installing edge_derain[$EXTRAS]"
"$PY" -m pip install -q -e ".[$EXTRAS]"

# TensorRT-RTX's ONNX parser aborts the process on any plugin node unless libtensorrt_rtx.so (the
# unversioned name it dlopens) sits beside libtensorrt_rtx.so.1; the wheel ships only the latter.
RTX_LIBS=$("$PY" -c "import importlib.util as u; s = u.find_spec('tensorrt_rtx_libs'); print(list(s.submodule_search_locations)[0] if s else '')")
if [ -n "$RTX_LIBS" ] && [ -e "$RTX_LIBS/libtensorrt_rtx.so.1" ] && [ ! -e "$RTX_LIBS/libtensorrt_rtx.so" ]; then
  log "linking $RTX_LIBS/libtensorrt_rtx.so -> libtensorrt_rtx.so.1"
  ln -sf libtensorrt_rtx.so.1 "$RTX_LIBS/libtensorrt_rtx.so"
fi

log "done: $VENV/bin/edge-derain is ready (try: $VENV/bin/edge-derain info)"
