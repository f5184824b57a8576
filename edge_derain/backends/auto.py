"""What ``--backend auto`` runs on this machine, and why.

In order: TensorRT when a flavour is installed *and can build engines for the local GPU* (full
tensorrt builds for the GPU it runs on; TensorRT-RTX only for the compute capabilities it lists, which
leave out Jetson Orin's sm_87 and Hopper's sm_90); else ONNX Runtime, with its CUDA provider when that
is installed and a GPU is visible, on the CPU otherwise; else PyTorch.

:func:`choose_backend` decides from explicit facts (testable with any GPU, flavour or provider list);
:func:`auto_backend` gathers the facts of this machine. ``edge-derain info`` prints the choice and
its reason; ``run`` and ``demo`` follow it.
"""
from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from typing import Sequence

from ..engine.flavour import CudaDevice, TensorRTFlavour
from .ort_backend import CPU_PROVIDER, CUDA_PROVIDER


@dataclass(frozen=True)
class AutoChoice:
    kind: str  # "trt" | "ort" | "torch"
    reason: str  # one line: why this kind, and why not the ones before it
    providers: tuple[str, ...] = ()  # ONNX Runtime execution providers, in order (kind "ort")


def tensorrt_blocker(tensorrt: TensorRTFlavour | Exception, devices: Sequence[CudaDevice]) -> str | None:
    """Why TensorRT cannot build engines for the local GPU here, or None when it can."""
    if isinstance(tensorrt, Exception):
        return f"TensorRT is not usable ({tensorrt})"
    if not devices:
        return f"{tensorrt.label} is installed but no CUDA GPU is visible to run engines on"
    local = devices[0]
    if tensorrt.supports_targets and local.target not in tensorrt.supported_targets():
        return (f"{tensorrt.label} cannot build for the local {local.name} ({local.target}; it targets "
                f"{', '.join(tensorrt.supported_targets())}): install the TensorRT of that platform (JetPack's "
                "tensorrt on a Jetson, NVIDIA's tensorrt wheel on a desktop or server)")
    return None


def choose_backend(tensorrt: TensorRTFlavour | Exception, devices: Sequence[CudaDevice],
                   ort_providers: Sequence[str] | None) -> AutoChoice:
    """The backend ``auto`` runs given the TensorRT flavour (or why there is none), the visible CUDA
    devices and ONNX Runtime's available providers (None: onnxruntime is not installed)."""
    blocker = tensorrt_blocker(tensorrt, devices)
    if blocker is None:
        local = devices[0]
        return AutoChoice("trt", f"{tensorrt.label} builds engines for the local {local.name} ({local.target})")
    if ort_providers is not None:
        if CUDA_PROVIDER in ort_providers and devices:
            return AutoChoice("ort", f"ONNX Runtime with its CUDA provider on {devices[0].name}, because {blocker}",
                              (CUDA_PROVIDER, CPU_PROVIDER))
        where = "no CUDA GPU is visible" if not devices else "this onnxruntime has no CUDA provider"
        return AutoChoice("ort", f"ONNX Runtime on the CPU ({where}), because {blocker}", (CPU_PROVIDER,))
    return AutoChoice("torch", f"PyTorch, because onnxruntime is not installed and {blocker}")


def auto_backend() -> AutoChoice:
    """:func:`choose_backend` with this machine's GPUs, TensorRT flavour and ONNX Runtime build."""
    from ..engine.flavour import (TensorRTSetupError, TensorRTUnavailable, detect_tensorrt,
                                  ensure_plugin_node_support, list_devices)

    devices = list_devices()
    tensorrt: TensorRTFlavour | Exception
    try:
        tensorrt = detect_tensorrt()
        ensure_plugin_node_support(tensorrt)  # an RTX install that would abort on our plugin nodes
    except (TensorRTUnavailable, TensorRTSetupError) as exc:
        tensorrt = exc
    providers = None
    if importlib.util.find_spec("onnxruntime") is not None:
        import onnxruntime

        providers = list(onnxruntime.get_available_providers())
    return choose_backend(tensorrt, devices, providers)
