"""ONNX Runtime backend: runs the portable graph (``<model>.portable.onnx``) on CUDA or CPU.

ONNX Runtime cannot run the plugin graph's ``edge_derain`` custom nodes (those are TensorRT plugins),
so such a graph is refused up front with a one-line error naming the portable file to use instead.
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Sequence

import numpy as np

from .base import Backend

log = logging.getLogger(__name__)

CUDA_PROVIDER = "CUDAExecutionProvider"
CPU_PROVIDER = "CPUExecutionProvider"
_NUMPY_TYPES = {"tensor(float)": np.float32, "tensor(float16)": np.float16}


def resolve_providers(providers: str | Sequence[str], available: Sequence[str]) -> list[str]:
    """``"auto"`` -> CUDA then CPU when CUDA is available, else CPU; a list is checked against ``available``."""
    if isinstance(providers, str):
        if providers != "auto":
            raise ValueError(f"providers must be 'auto' or a list of provider names, got {providers!r}; "
                             f"available here: {', '.join(available)}")
        return [CUDA_PROVIDER, CPU_PROVIDER] if CUDA_PROVIDER in available else [CPU_PROVIDER]
    providers = list(providers)
    missing = [p for p in providers if p not in available]
    if not providers or missing:
        raise ValueError(f"execution provider(s) {', '.join(missing) or '(none given)'} not available in this "
                         f"onnxruntime build; available: {', '.join(available)}")
    return providers


class OnnxRuntimeBackend(Backend):
    """Run an exported ONNX graph with ONNX Runtime.

    ``input_multiple`` comes from the graph's metadata (written by ``export_model``); a graph without
    it is assumed to need multiples of 16, the base ``Backend`` default.
    """

    name = "onnxruntime"

    def __init__(self, onnx_path: str | Path, providers: str | Sequence[str] = "auto", threads: int | None = None):
        import onnxruntime as ort

        from ..export.graph import load_onnx, read_metadata
        from ..export.onnx_export import portable_path_for
        from ..export.passes import describe_custom_nodes

        self.path = Path(onnx_path)
        graph = load_onnx(self.path)
        custom = describe_custom_nodes(graph)
        if custom:
            raise ValueError(f"{self.path} contains {custom} custom nodes that ONNX Runtime cannot run; "
                             f"use the portable graph {portable_path_for(self.path)}")
        metadata = read_metadata(graph)
        if "input_multiple" in metadata:
            self.input_multiple = int(metadata["input_multiple"])
        else:
            log.warning("%s has no input_multiple metadata; padding inputs to multiples of %d",
                        self.path, self.input_multiple)
        if metadata.get("receptive_radius", "").isdigit():
            self.receptive_radius = int(metadata["receptive_radius"])
        self.metadata = metadata
        del graph

        options = ort.SessionOptions()
        if threads is not None:
            if isinstance(threads, bool) or not isinstance(threads, int) or threads < 1:
                raise ValueError(f"threads must be a positive int or None (onnxruntime's default), got {threads!r}")
            options.intra_op_num_threads = threads
        self.providers = resolve_providers(providers, ort.get_available_providers())
        try:
            self.session = ort.InferenceSession(str(self.path), sess_options=options, providers=self.providers)
        except Exception as exc:  # onnxruntime's pybind errors (InvalidGraph, Fail, ...) share no useful base
            detail = " ".join(str(exc).split())[:300]
            raise ValueError(f"ONNX Runtime cannot load {self.path} ({detail}); re-export it (edge-derain export)") \
                from None
        inputs, outputs = self.session.get_inputs(), self.session.get_outputs()
        if len(inputs) != 1:
            raise ValueError(f"{self.path} has {len(inputs)} inputs ({', '.join(i.name for i in inputs)}); "
                             "expected one image input, as written by 'edge-derain export'")
        self.input = inputs[0]
        self.output_name = outputs[0].name
        if self.input.type not in _NUMPY_TYPES:
            raise ValueError(f"{self.path} input {self.input.name!r} is {self.input.type}; expected float or float16")
        self.input_dtype = _NUMPY_TYPES[self.input.type]
        # Converted graphs record their precision (FP16 graphs keep FP32 I/O by default, so the input
        # dtype alone would call them fp32); older graphs fall back to the input dtype.
        self.precision = metadata.get("edge_derain.precision",
                                      "fp16" if self.input_dtype == np.float16 else "fp32")

    def _check_shape(self, batch: np.ndarray) -> None:
        expected = self.input.shape
        static_mismatch = any(isinstance(dim, int) and dim != got for dim, got in zip(expected, batch.shape))
        if len(expected) != batch.ndim or static_mismatch:
            shown = "x".join(str(d) if isinstance(d, int) else "?" for d in expected)
            raise ValueError(f"{self.path.name} expects input {self.input.name!r} of shape {shown}, got "
                             f"{'x'.join(map(str, batch.shape))}; re-export with dynamic shapes or resize the input")
        h, w = batch.shape[-2:]
        if h % self.input_multiple or w % self.input_multiple:
            raise ValueError(f"{self.path.name} needs H and W that are multiples of {self.input_multiple}, got "
                             f"{h}x{w}; call run(), which pads, instead of infer()")

    def infer(self, batch: np.ndarray) -> np.ndarray:
        self._check_shape(batch)
        feed = {self.input.name: np.ascontiguousarray(batch, dtype=self.input_dtype)}
        return self.session.run([self.output_name], feed)[0].astype(np.float32, copy=False)

    def __repr__(self) -> str:
        return f"OnnxRuntimeBackend({self.path.name}, providers={self.providers}, precision={self.precision})"
