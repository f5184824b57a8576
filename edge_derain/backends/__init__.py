"""Inference backends behind one interface: ``Backend.run(np.ndarray) -> np.ndarray``.

``open_backend(spec)`` picks one from a string, so every command that runs a model takes the same
``torch`` | ``model.onnx`` | ``model.engine`` argument. Heavy runtimes are imported only when chosen.
"""
from __future__ import annotations

from pathlib import Path

from .base import Backend, pad_to_multiple_np
from .torch_backend import TorchBackend


def open_backend(spec: str, weights: str | None = None, device: str = "cpu") -> Backend:
    """``"torch"`` (PyTorch with ``weights``), a ``.onnx`` file (ONNX Runtime) or a ``.engine`` (TensorRT)."""
    if spec == "torch":
        from ..checkpoint import load_model

        return TorchBackend(load_model(weights, device=device), device=device)
    suffix = Path(spec).suffix.lower()
    if suffix == ".onnx":
        from .ort_backend import OnnxRuntimeBackend

        return OnnxRuntimeBackend(spec, providers="auto" if device != "cpu" else ["CPUExecutionProvider"])
    if suffix in (".engine", ".plan", ".trt"):
        from .trt_backend import TensorRTBackend

        return TensorRTBackend(spec)
    raise ValueError(f"unknown backend {spec!r}; use 'torch', a .onnx file (ONNX Runtime) or a .engine file (TensorRT)")


__all__ = ["Backend", "TorchBackend", "open_backend", "pad_to_multiple_np"]
