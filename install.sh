#!/usr/bin/env bash
# Set up edge_derain on a fresh Debian 12 / Ubuntu / JetPack 6 machine: system packages, a virtualenv in
# .venv, PyTorch, and the package (editable, so plugins/ sources stay next to it).
#   bash install.sh        # run the tool (demo, train, export, build, pipelines)
#   bash install.sh dev    # plus the test dependencies
set -euo pipefail
cd "$(dirname "$0")"
MODE=${1:-user}
VENV=${EDGE_DERAIN_VENV:-.venv}

log() { printf '\033[1m[install]\033[0m %s\n' "$*"; }

# What this machine needs, decided by edge_derain/install_plan.py (tested on faked machines): on a Jetson
# a virtualenv with the system site packages (JetPack's tensorrt, gi, PyTorch) and no TensorRT-RTX; on
# x86_64 the TensorRT-RTX build of the driver's CUDA; cuda-python of the driver's CUDA major everywhere.
PLAN=$(python3 -m edge_derain.install_plan --torch "${EDGE_DERAIN_TORCH:-}") || exit 1
eval "$PLAN"

# GStreamer and PyGObject are not on PyPI for Linux: take them from the distribution (Jetson images
# already carry nvarguscamerasrc/nvvidconv in the same system GStreamer).
APT_PACKAGES="gstreamer1.0-tools gstreamer1.0-plugins-base gstreamer1.0-plugins-good gstreamer1.0-plugins-bad
  gstreamer1.0-plugins-ugly gstreamer1.0-libav gstreamer1.0-x gir1.2-gstreamer-1.0 gir1.2-gst-plugins-base-1.0
  gir1.2-gst-rtsp-server-1.0 python3-gi python3-gst-1.0 gstreamer1.0-python3-plugin-loader"
# The tests run a real MQTT broker for the detection events (edge_derain.fleet).
[ "$MODE" = "dev" ] && APT_PACKAGES="$APT_PACKAGES mosquitto"
missing=$(for p in $APT_PACKAGES; do dpkg -s "$p" >/dev/null 2>&1 || echo "$p"; done)
if [ -n "$missing" ] && command -v apt-get >/dev/null; then
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  log "installing system packages: $(echo $missing | tr '\n' ' ')"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq $missing >/dev/null
fi

if [ ! -x "$VENV/bin/python" ]; then
  log "creating virtualenv $VENV $PLAN_VENV_ARGS"
  python3 -m venv $PLAN_VENV_ARGS "$VENV"
elif [ "$PLAN_JETSON" = 1 ] && ! grep -q "include-system-site-packages = true" "$VENV/pyvenv.cfg"; then
  echo "install: $VENV cannot see JetPack's tensorrt and PyTorch; remove it (rm -rf $VENV) and run install.sh again" >&2
  exit 1
fi
PY="$VENV/bin/python"
"$PY" -m pip install -q --upgrade pip

# torch first and pinned: on the project's CPU machines this version is a local CPU wheel, while an
# unpinned resolve would pull a multi-GB CUDA build. On a Jetson the virtualenv sees JetPack's torch
# (NVIDIA's wheel, installed beforehand) and PLAN_TORCH is empty; EDGE_DERAIN_TORCH overrides both.
if ! "$PY" -c "import torch" 2>/dev/null; then
  log "installing $PLAN_TORCH"
  "$PY" -m pip install -q "$PLAN_TORCH"
fi

# OpenCV 5 keeps the HOG people detector (our offline default detector) in the contrib build, which
# cannot sit beside the plain wheel: both own the cv2 package.
if "$PY" -m pip show -q opencv-python-headless >/dev/null 2>&1 || "$PY" -m pip show -q opencv-python >/dev/null 2>&1; then
  log "replacing opencv-python with opencv-contrib-python-headless"
  "$PY" -m pip uninstall -q -y opencv-python-headless opencv-python opencv-contrib-python-headless || true
fi

# The trt extra's TensorRT-RTX and cuda-python come from the plan instead (matching the driver).
EXTRAS="onnx,fleet"
[ "$MODE" = "dev" ] && EXTRAS="$EXTRAS,dev"
log "installing edge_derain[$EXTRAS] $PLAN_PACKAGES"
"$PY" -m pip install -q -e ".[$EXTRAS]" $PLAN_PACKAGES

# Debian's PyGObject (gi) into the venv: its compiled module matches when the Python minor versions do.
# (A Jetson's virtualenv sees it through the system site packages.)
SITE=$("$PY" -c "import sysconfig; print(sysconfig.get_paths()['purelib'])")
if [ "$PLAN_EXPOSE_GI" = 1 ] && [ -d /usr/lib/python3/dist-packages/gi ] && [ ! -e "$SITE/gi" ]; then
  log "exposing the system's gi (PyGObject) to $VENV"
  ln -s /usr/lib/python3/dist-packages/gi "$SITE/gi"
fi

# TensorRT-RTX's ONNX parser aborts the process on any plugin node unless libtensorrt_rtx.so (the
# unversioned name it dlopens) sits beside libtensorrt_rtx.so.1; the wheel ships only the latter.
RTX_LIBS=$("$PY" -c "import importlib.util as u; s = u.find_spec('tensorrt_rtx_libs'); print(list(s.submodule_search_locations)[0] if s else '')")
if [ -n "$RTX_LIBS" ] && [ -e "$RTX_LIBS/libtensorrt_rtx.so.1" ] && [ ! -e "$RTX_LIBS/libtensorrt_rtx.so" ]; then
  log "linking $RTX_LIBS/libtensorrt_rtx.so -> libtensorrt_rtx.so.1"
  ln -sf libtensorrt_rtx.so.1 "$RTX_LIBS/libtensorrt_rtx.so"
fi

log "done: $VENV/bin/edge-derain is ready (try: $VENV/bin/edge-derain info)"
