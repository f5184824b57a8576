"""Which TensorRT is installed, what its API can do, and which CUDA devices this machine has.

Three flavours share one Python API shape but differ in what the builder accepts:

* ``tensorrt`` 10.x (JetPack 6 ships 10.3): builder precision flags (``BuilderFlag.FP16/INT8``) and
  implicit INT8 calibrators still exist; it builds only for the GPU it runs on.
* ``tensorrt`` 11.x: strongly typed networks only (FP16 as casts in the graph, INT8 as Q/DQ).
* ``tensorrt_rtx`` (TensorRT for RTX): strongly typed only, but builds ahead of time on a CPU-only
  machine for chosen compute capabilities (``IBuilderConfig.set_compute_capability``).

Capabilities are detected from the module's attributes rather than from version numbers, so a
release that adds or drops an API is described correctly without a table to maintain.
"""
from __future__ import annotations

import ctypes
import functools
import importlib
import importlib.util
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

#: Environment variable that forces a flavour when both are installed (``tensorrt`` or ``tensorrt_rtx``).
FLAVOUR_ENV = "EDGE_DERAIN_TENSORRT"

#: Import names per flavour, in the order tried. NVIDIA's PyPI wheels install TensorRT-RTX as
#: ``tensorrt_rtx_bindings``; the wheels inside the TensorRT-RTX SDK archive install it as ``tensorrt_rtx``.
_IMPORT_NAMES = {"tensorrt": ("tensorrt",), "tensorrt_rtx": ("tensorrt_rtx", "tensorrt_rtx_bindings")}

INSTALL_HINT = ("install TensorRT-RTX for CPU ahead-of-time builds (pip install tensorrt_rtx_cu13_libs "
                "tensorrt_rtx_cu13_bindings) or use the tensorrt package of JetPack / NVIDIA's tensorrt wheel")

# CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR / _MINOR of the CUDA driver API.
_CU_ATTR_CC_MAJOR = 75
_CU_ATTR_CC_MINOR = 76


class TensorRTUnavailable(ImportError):
    """No usable TensorRT module is installed."""


class TensorRTSetupError(RuntimeError):
    """TensorRT is installed but a known installation defect would make it fail."""


class NoCudaDevice(RuntimeError):
    """An operation needs a CUDA GPU and this machine has none."""


@dataclass(frozen=True)
class TensorRTFlavour:
    """One installed TensorRT flavour and the API features the builder depends on."""

    name: str  # "tensorrt" | "tensorrt_rtx"
    version: str
    module: Any = field(repr=False, compare=False, hash=False)
    has_precision_flags: bool  # BuilderFlag.FP16 / INT8 exist (tensorrt 10.x)
    supports_targets: bool  # can build for compute capabilities other than the local GPU's

    @property
    def label(self) -> str:
        return f"{self.name} {self.version}"

    def supported_targets(self) -> tuple[str, ...]:
        """Compute capabilities this builder can target ahead of time, as ``sm86``-style names."""
        if not self.supports_targets:
            return ()
        members = self.module.ComputeCapability.__members__
        return tuple(sorted((name.lower() for name in members if name.startswith("SM")),
                            key=lambda t: int(t[2:])))


def _describe(name: str, module) -> TensorRTFlavour:
    flags = module.BuilderFlag.__members__
    return TensorRTFlavour(
        name=name,
        version=str(getattr(module, "__version__", "unknown")),
        module=module,
        has_precision_flags="FP16" in flags,
        supports_targets=hasattr(module, "ComputeCapability")
        and hasattr(module.IBuilderConfig, "set_compute_capability"),
    )


def detect_tensorrt(prefer: str | None = None) -> TensorRTFlavour:
    """The installed TensorRT flavour: ``tensorrt`` if importable, else TensorRT-RTX.

    ``prefer`` (or the ``EDGE_DERAIN_TENSORRT`` environment variable) forces one flavour, e.g. to build
    ahead of time with TensorRT-RTX on a desktop that also has ``tensorrt``.
    """
    return _detect(prefer or os.environ.get(FLAVOUR_ENV) or None)


@functools.lru_cache(maxsize=None)
def _detect(prefer: str | None) -> TensorRTFlavour:
    if prefer is not None and prefer not in _IMPORT_NAMES:
        raise ValueError(f"unknown TensorRT flavour {prefer!r}; choose one of {', '.join(_IMPORT_NAMES)}")
    order = [prefer] if prefer else list(_IMPORT_NAMES)
    for name in order:
        for import_name in _IMPORT_NAMES[name]:
            try:
                module = importlib.import_module(import_name)
            except ImportError:
                continue
            return _describe(name, module)
    missing = f"{prefer} is not importable" if prefer else "neither tensorrt nor tensorrt_rtx is importable"
    raise TensorRTUnavailable(f"{missing}; {INSTALL_HINT}")


def rtx_plugin_symlink_fix() -> str | None:
    """The shell command that lets TensorRT-RTX's ONNX parser import plugin nodes, or None if not needed.

    The parser of the PyPI wheels dlopens ``libtensorrt_rtx.so`` (unversioned) when it meets a plugin
    node, but the ``tensorrt_rtx_libs`` wheel ships only ``libtensorrt_rtx.so.1``; without the link
    the process aborts inside the parser. A symlink beside the library is enough (no LD_LIBRARY_PATH).
    """
    spec = importlib.util.find_spec("tensorrt_rtx_libs")
    if spec is None or not spec.submodule_search_locations:
        return None  # SDK-archive install: libraries come from the loader path, with their dev links
    libs = Path(next(iter(spec.submodule_search_locations)))
    link = libs / "libtensorrt_rtx.so"
    versioned = sorted(libs.glob("libtensorrt_rtx.so.[0-9]*"), key=lambda p: len(p.name))
    if not versioned or link.exists():
        return None
    return f"ln -sf {versioned[0].name} {link}"


def ensure_plugin_node_support(flavour: TensorRTFlavour) -> None:
    """Raise TensorRTSetupError when parsing an ONNX plugin node would abort the process."""
    if flavour.name != "tensorrt_rtx":
        return
    fix = rtx_plugin_symlink_fix()
    if fix:
        raise TensorRTSetupError("TensorRT-RTX's ONNX parser aborts on plugin nodes because libtensorrt_rtx.so "
                                 f"is missing beside libtensorrt_rtx.so.1; run: {fix}")


@dataclass(frozen=True)
class CudaDevice:
    index: int
    name: str
    compute_capability: tuple[int, int]
    total_memory: int  # bytes

    @property
    def target(self) -> str:
        """The compute capability as a build target name, e.g. ``sm87`` for Jetson Orin."""
        return f"sm{self.compute_capability[0]}{self.compute_capability[1]}"


def _load_cuda_driver():
    names = ("nvcuda.dll",) if sys.platform.startswith("win") else ("libcuda.so.1", "libcuda.so")
    for name in names:
        try:
            return ctypes.CDLL(name)
        except OSError:
            continue
    return None


def list_devices() -> list[CudaDevice]:
    """CUDA devices visible to this process (honours CUDA_VISIBLE_DEVICES); [] without a driver or GPU.

    Uses the CUDA driver library through ctypes, which every NVIDIA driver install (desktop or
    Jetson) provides, so neither cuda-python nor nvidia-smi is needed.
    """
    cuda = _load_cuda_driver()
    if cuda is None or cuda.cuInit(0) != 0:
        return []
    count = ctypes.c_int(0)
    if cuda.cuDeviceGetCount(ctypes.byref(count)) != 0:
        return []
    devices = []
    for index in range(count.value):
        handle = ctypes.c_int(0)
        name = ctypes.create_string_buffer(256)
        major, minor = ctypes.c_int(0), ctypes.c_int(0)
        memory = ctypes.c_size_t(0)
        calls = (cuda.cuDeviceGet(ctypes.byref(handle), index),
                 cuda.cuDeviceGetName(name, len(name), handle),
                 cuda.cuDeviceGetAttribute(ctypes.byref(major), _CU_ATTR_CC_MAJOR, handle),
                 cuda.cuDeviceGetAttribute(ctypes.byref(minor), _CU_ATTR_CC_MINOR, handle),
                 cuda.cuDeviceTotalMem_v2(ctypes.byref(memory), handle))
        if any(calls):
            continue
        devices.append(CudaDevice(index, name.value.decode(errors="replace"), (major.value, minor.value),
                                  memory.value))
    return devices
