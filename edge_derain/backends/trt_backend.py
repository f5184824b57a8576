"""TensorRT backend: runs an engine built by ``edge_derain.engine`` on an NVIDIA GPU.

Loading follows the engine stage's contract:

1. the engine's JSON sidecar is read and checked against this device (TensorRT flavour + version and
   compute capability) *before* deserialising, so a wrong engine fails with one line naming the rebuild
   command (``EngineMismatchError``) and a machine without a GPU with ``NoCudaDevice``;
2. the plugins are made available as the sidecar records the engine was built: the C++ library
   (``$EDGE_DERAIN_PLUGIN_LIB`` or the CMake build ``build/plugins/libedge_derain_plugins.so``), the
   Python plugin, or none for a graph without plugin nodes;
3. the engine is deserialised and one execution context is created.

Each :meth:`~edge_derain.backends.base.Backend.run` then does, on one CUDA stream (cuda-python): copy
the batch into a pinned host buffer (converting to the engine's input dtype, e.g. FP16), async H2D,
``set_input_shape`` + ``set_tensor_address`` + ``execute_async_v3``, async D2H, stream sync. Buffers are
reused and only reallocated when a larger shape arrives. The same runtime API serves tensorrt 10.x/11.x
and TensorRT-RTX.

A backend owns one execution context and one stream: use it from one thread at a time (it sets its
CUDA device on every call, so that thread may differ from the one that created it).
"""
from __future__ import annotations

import ctypes
import hashlib
import logging
import math
from pathlib import Path
from typing import Sequence

import numpy as np

from .base import Backend

log = logging.getLogger(__name__)

#: Output tensor the exporter names; an engine with several outputs returns this one.
OUTPUT_NAME = "derained"
_NUMPY_DTYPES = {"FLOAT": np.float32, "HALF": np.float16, "INT8": np.int8, "UINT8": np.uint8,
                 "INT32": np.int32, "INT64": np.int64, "BOOL": np.bool_}
_CUDA_PYTHON_HINT = ("pip install 'cuda-python>=12' matching the driver's CUDA major version "
                     "(12.x for JetPack 6 / CUDA 12 drivers, 13.x for CUDA 13)")


class CudaError(RuntimeError):
    """A CUDA runtime call failed."""


class EngineLoadError(RuntimeError):
    """TensorRT could not deserialise or set up an engine."""


def numpy_dtype(trt_dtype) -> np.dtype:
    """numpy dtype of a TensorRT ``DataType`` member (matched by name, so every flavour's enum works)."""
    name = getattr(trt_dtype, "name", str(trt_dtype))
    if name not in _NUMPY_DTYPES:
        raise ValueError(f"engine I/O tensor type {name} has no numpy equivalent; rebuild the engine from an ONNX "
                         "with float32 (or float16) inputs and outputs")
    return np.dtype(_NUMPY_DTYPES[name])


def _shape_text(shape: Sequence[int]) -> str:
    return "x".join(str(int(d)) for d in shape)


def check_profile_shape(name: str, shape: Sequence[int], min_shape: Sequence[int], max_shape: Sequence[int]) -> None:
    """One-line ValueError unless ``min_shape <= shape <= max_shape`` in every dimension."""
    shape, min_shape, max_shape = tuple(shape), tuple(min_shape), tuple(max_shape)
    if len(shape) != len(min_shape) or not all(lo <= d <= hi for d, lo, hi in zip(shape, min_shape, max_shape)):
        raise ValueError(f"input {name!r} of shape {_shape_text(shape)} is outside the engine's optimisation profile "
                         f"(min {_shape_text(min_shape)}, max {_shape_text(max_shape)}); resize the input or rebuild "
                         f"the engine with a profile that covers it (edge-derain build --shapes MIN:OPT:MAX)")


def import_cudart():
    """cuda-python's runtime module (``cuda.bindings.runtime``; ``cuda.cudart`` before cuda-python 12.6)."""
    try:
        from cuda.bindings import runtime as cudart
    except ImportError:
        try:
            from cuda import cudart
        except ImportError:
            raise ImportError(f"the TensorRT backend needs cuda-python: {_CUDA_PYTHON_HINT}") from None
    return cudart


def cuda_check(cudart, result, what: str):
    """Unpack a cuda-python ``(error, *values)`` tuple: the value (or None), or a one-line CudaError."""
    error = result[0]
    if error != cudart.cudaError_t.cudaSuccess:
        name = cudart.cudaGetErrorName(error)[1].decode(errors="replace")
        text = cudart.cudaGetErrorString(error)[1].decode(errors="replace")
        hint = f"; {_CUDA_PYTHON_HINT}" if name == "cudaErrorInsufficientDriver" else ""
        raise CudaError(f"{what} failed: {name} ({text}){hint}")
    return result[1] if len(result) == 2 else (result[1:] or None)


class _Buffer:
    """A pinned host buffer and a device buffer for one I/O tensor, grown (never shrunk) on demand."""

    def __init__(self, cudart, dtype: np.dtype):
        self.cudart, self.dtype = cudart, np.dtype(dtype)
        self.capacity = 0  # bytes
        self.host = self.device = 0  # pointers
        self.allocations = 0

    def reserve(self, shape: Sequence[int]) -> int:
        """Make room for ``shape``; return its size in bytes."""
        nbytes = math.prod(shape) * self.dtype.itemsize
        if nbytes > self.capacity:
            self.free()
            self.host = cuda_check(self.cudart, self.cudart.cudaMallocHost(nbytes), f"cudaMallocHost({nbytes})")
            self.device = cuda_check(self.cudart, self.cudart.cudaMalloc(nbytes), f"cudaMalloc({nbytes})")
            self.capacity = nbytes
            self.allocations += 1
        return nbytes

    def host_array(self, shape: Sequence[int]) -> np.ndarray:
        """The pinned host memory as an array of ``shape`` (a view: valid until the next reserve)."""
        count = math.prod(shape)
        raw = (ctypes.c_char * (count * self.dtype.itemsize)).from_address(self.host)
        return np.frombuffer(raw, dtype=self.dtype, count=count).reshape(tuple(shape))

    def free(self) -> None:
        if self.host:
            cuda_check(self.cudart, self.cudart.cudaFreeHost(self.host), "cudaFreeHost")
        if self.device:
            cuda_check(self.cudart, self.cudart.cudaFree(self.device), "cudaFree")
        self.host = self.device = 0
        self.capacity = 0


class EngineExecutor:
    """Runs one deserialised engine's execution context on one CUDA stream.

    ``trt`` is the TensorRT module (for ``TensorIOMode``), ``errors`` the list the TensorRT logger
    appends error messages to (quoted in exceptions). The engine must have one input (the image).
    """

    def __init__(self, trt, engine, context, cudart, stream, device: int = 0, errors: list[str] | None = None):
        self.trt, self.engine, self.context, self.cudart = trt, engine, context, cudart
        self.stream, self.device = stream, device
        self.errors = errors if errors is not None else []
        names = [engine.get_tensor_name(i) for i in range(engine.num_io_tensors)]
        inputs = [n for n in names if engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
        self.outputs = [n for n in names if engine.get_tensor_mode(n) == trt.TensorIOMode.OUTPUT]
        if len(inputs) != 1 or not self.outputs:
            raise EngineLoadError(f"engine has inputs {inputs} and outputs {self.outputs}; expected one image input "
                                  "and at least one output, as 'edge-derain export' writes them")
        self.input_name = inputs[0]
        self.output_name = OUTPUT_NAME if OUTPUT_NAME in self.outputs else self.outputs[0]
        profile = engine.get_tensor_profile_shape(self.input_name, 0)
        self.profile = tuple(tuple(int(d) for d in shape) for shape in profile)  # (min, opt, max)
        self.buffers = {name: _Buffer(cudart, numpy_dtype(engine.get_tensor_dtype(name))) for name in names}
        floats = (np.dtype(np.float32), np.dtype(np.float16))
        if self.buffers[self.input_name].dtype not in floats or self.buffers[self.output_name].dtype not in floats:
            raise EngineLoadError(f"engine image I/O is {self.buffers[self.input_name].dtype} -> "
                                  f"{self.buffers[self.output_name].dtype}; expected float32 or float16")

    def _fail(self, what: str) -> EngineLoadError:
        detail = "; ".join(self.errors[-3:]) or "no TensorRT error was logged"
        return EngineLoadError(f"{what}: {detail}")

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        cudart, context, stream = self.cudart, self.context, self.stream
        min_shape, _, max_shape = self.profile
        check_profile_shape(self.input_name, batch.shape, min_shape, max_shape)
        # The calling thread (e.g. a GStreamer streaming thread) may not have this device current.
        cuda_check(cudart, cudart.cudaSetDevice(self.device), f"cudaSetDevice({self.device})")
        self.errors.clear()

        source = self.buffers[self.input_name]
        in_bytes = source.reserve(batch.shape)
        np.copyto(source.host_array(batch.shape), batch, casting="same_kind")  # float32 -> engine dtype
        if not context.set_input_shape(self.input_name, tuple(batch.shape)):
            raise self._fail(f"TensorRT rejected input shape {_shape_text(batch.shape)}")
        shapes = {}
        for name in self.outputs:
            shape = tuple(int(d) for d in context.get_tensor_shape(name))
            if any(d < 0 for d in shape):
                raise self._fail(f"TensorRT could not infer the shape of output {name!r} ({shape})")
            shapes[name] = shape
            self.buffers[name].reserve(shape)
        for name, buffer in self.buffers.items():
            if not context.set_tensor_address(name, buffer.device):
                raise self._fail(f"TensorRT rejected the device address of {name!r}")

        h2d, d2h = cudart.cudaMemcpyKind.cudaMemcpyHostToDevice, cudart.cudaMemcpyKind.cudaMemcpyDeviceToHost
        cuda_check(cudart, cudart.cudaMemcpyAsync(source.device, source.host, in_bytes, h2d, stream),
                   "cudaMemcpyAsync (input to device)")
        if not context.execute_async_v3(int(stream)):
            raise self._fail(f"TensorRT failed to run the engine on input {_shape_text(batch.shape)}")
        target = self.buffers[self.output_name]
        out_shape = shapes[self.output_name]
        out_bytes = math.prod(out_shape) * target.dtype.itemsize
        cuda_check(cudart, cudart.cudaMemcpyAsync(target.host, target.device, out_bytes, d2h, stream),
                   "cudaMemcpyAsync (output to host)")
        cuda_check(cudart, cudart.cudaStreamSynchronize(stream), "cudaStreamSynchronize")
        # A copy: the pinned buffer is overwritten by the next call.
        return np.array(target.host_array(out_shape), dtype=np.float32)

    def free(self) -> None:
        for buffer in self.buffers.values():
            buffer.free()


def _make_logger(trt):
    class _Logger(trt.ILogger):
        """Forwards TensorRT messages to Python logging and keeps the errors for exceptions."""

        def __init__(self):
            trt.ILogger.__init__(self)
            self.errors: list[str] = []

        def log(self, severity, msg):
            text = " ".join(str(msg).split())
            if severity in (trt.ILogger.Severity.ERROR, trt.ILogger.Severity.INTERNAL_ERROR):
                self.errors.append(text)
                log.error("TensorRT: %s", text)
            elif severity == trt.ILogger.Severity.WARNING:
                log.warning("TensorRT: %s", text)
            else:
                log.debug("TensorRT: %s", text)

    return _Logger()


class TensorRTBackend(Backend):
    """Run a serialized engine (with its ``.engine.json`` sidecar) on CUDA device ``device``.

    ``input_multiple`` and ``precision`` come from the sidecar; an engine whose ONNX had no
    ``input_multiple`` metadata pads to multiples of 16 (the base default, with a warning).
    """

    name = "tensorrt"
    _executor = None
    _stream = None

    def __init__(self, engine_path: str | Path, device: int = 0):
        from ..engine.cache import DeviceFingerprint, check_engine_compatible, read_sidecar
        from ..engine.flavour import detect_tensorrt

        self.engine_path = Path(engine_path)
        if not self.engine_path.is_file():
            raise FileNotFoundError(f"engine {self.engine_path} not found; build it with 'edge-derain build'")
        if isinstance(device, bool) or not isinstance(device, int) or device < 0:
            raise ValueError(f"device must be a CUDA device index (0, 1, ...), got {device!r}")
        self.device = device
        self.sidecar = read_sidecar(self.engine_path)
        flavour = detect_tensorrt()
        check_engine_compatible(self.sidecar, DeviceFingerprint.current(flavour, device))
        self.precision = self.sidecar["key"]["precision"]
        if isinstance(self.sidecar.get("receptive_radius"), int):
            self.receptive_radius = self.sidecar["receptive_radius"]
        multiple = self.sidecar.get("input_multiple")
        if multiple:
            self.input_multiple = int(multiple)
        else:
            log.warning("%s records no input_multiple; padding inputs to multiples of %d",
                        self.engine_path.name, self.input_multiple)

        trt = flavour.module
        cudart = import_cudart()
        self.plugin_source = self._provide_plugins(trt)
        cuda_check(cudart, cudart.cudaSetDevice(device), f"cudaSetDevice({device})")
        self._cudart = cudart
        self._stream = cuda_check(cudart, cudart.cudaStreamCreateWithFlags(cudart.cudaStreamNonBlocking),
                                  "cudaStreamCreateWithFlags")
        self._logger = _make_logger(trt)
        self._runtime = trt.Runtime(self._logger)  # must outlive the engine
        try:
            self._engine = self._runtime.deserialize_cuda_engine(self.engine_path.read_bytes())
            if self._engine is None:
                raise EngineLoadError(f"{flavour.label} could not deserialise {self.engine_path.name}: "
                                      + ("; ".join(self._logger.errors) or "no error was logged"))
            self._context = self._engine.create_execution_context()
            if self._context is None:
                raise EngineLoadError(f"{flavour.label} could not create an execution context for "
                                      f"{self.engine_path.name}: " + ("; ".join(self._logger.errors) or "no detail"))
            self._executor = EngineExecutor(trt, self._engine, self._context, cudart, self._stream, device,
                                            self._logger.errors)
        except Exception:
            self.close()
            raise

    def _provide_plugins(self, trt) -> str:
        """Make the engine's plugin creators available; returns 'python' or the library path."""
        from ..engine.plugin_library import find_plugin_library, load_plugin_library
        from ..engine.python_plugins import register_python_plugins

        implementation = self.sidecar["key"].get("plugin_implementation", "python")
        if implementation == "none":
            return "none"  # built from a graph without plugin nodes
        if implementation == "library":  # the engine was built (or adopted) with the C++ plugin library
            recorded = self.sidecar.get("plugin_library")
            library = find_plugin_library() or (Path(recorded) if recorded and Path(recorded).is_file() else None)
            if library is None:
                raise FileNotFoundError(f"{self.engine_path.name} was built with the C++ plugin library "
                                        f"{recorded or ''}; set EDGE_DERAIN_PLUGIN_LIB to that "
                                        "libedge_derain_plugins.so (or rebuild the engine here)")
            if hashlib.sha256(library.read_bytes()).hexdigest() != self.sidecar["key"].get("plugin_hash"):
                log.warning("%s differs from the plugin library %s was built with; rebuild the engine if it fails to "
                            "load", library, self.engine_path.name)
            return str(load_plugin_library(trt, library))
        register_python_plugins(trt)
        return "python"

    @property
    def profile(self) -> tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...]]:
        """The input's optimisation profile (min, opt, max) as the engine reports it."""
        return self._executor.profile

    def infer(self, batch: np.ndarray) -> np.ndarray:
        if self._executor is None:
            raise RuntimeError(f"{self!r} is closed; create a new TensorRTBackend")
        h, w = batch.shape[-2:]
        if h % self.input_multiple or w % self.input_multiple:
            raise ValueError(f"{self.engine_path.name} needs H and W that are multiples of {self.input_multiple}, got "
                             f"{h}x{w}; call run(), which pads, instead of infer()")
        return self._executor(batch)

    def close(self) -> None:
        """Release the context, engine, buffers and stream (also done when the backend is collected)."""
        executor, self._executor = self._executor, None
        if executor is not None:
            executor.free()
        # TensorRT objects go before the stream, the context before its engine.
        self._context = self._engine = self._runtime = None
        stream, self._stream = self._stream, None
        if stream is not None:
            cuda_check(self._cudart, self._cudart.cudaStreamDestroy(stream), "cudaStreamDestroy")

    def __enter__(self) -> "TensorRTBackend":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __del__(self):
        try:
            self.close()
        except Exception:  # interpreter shutdown: CUDA may already be gone; nothing left to report to
            pass

    def __repr__(self) -> str:
        return f"TensorRTBackend({self.engine_path.name}, device={self.device}, precision={self.precision})"
