"""TensorRT backend: everything that can be checked without a GPU.

* loading: sidecar missing, no GPU (``NoCudaDevice``), wrong GPU / TensorRT (``EngineMismatchError``) and a
  compatible engine reaching CUDA, all one-line errors; the sidecar records the export's input_multiple
  (real TensorRT-RTX engines built on this CPU machine);
* the run path (pinned buffers, H2D, set_input_shape / set_tensor_address / execute_async_v3, D2H,
  growth-only reallocation, FP16 I/O) through ``EngineExecutor`` with a fake CUDA runtime whose "device"
  memory is host memory and a fake execution context that computes ``1 - x`` from the device pointers.
"""
from __future__ import annotations

import ctypes
import enum
import math
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
from onnx import TensorProto, helper, numpy_helper  # noqa: E402

from edge_derain.backends import trt_backend  # noqa: E402
from edge_derain.backends.trt_backend import (CudaError, EngineExecutor, EngineLoadError, TensorRTBackend,  # noqa: E402
                                              check_profile_shape, cuda_check, numpy_dtype)
from edge_derain.engine import cache as cache_mod  # noqa: E402
from edge_derain.engine.builder import PLUGIN_LIBRARY_ENV, ShapeProfile  # noqa: E402
from edge_derain.engine.cache import EngineCache, EngineMismatchError, sidecar_path  # noqa: E402
from edge_derain.engine.flavour import CudaDevice, NoCudaDevice, TensorRTUnavailable, detect_tensorrt, list_devices  # noqa: E402

PROFILE = ShapeProfile((1, 3, 16, 16), (1, 3, 32, 32), (2, 3, 64, 64))


def assert_one_line(exc: BaseException):
    assert str(exc) and "\n" not in str(exc)


# ------------------------------------------------------------------------------------------------
# pure helpers


def test_numpy_dtype_by_name():
    names = SimpleNamespace
    assert numpy_dtype(names(name="FLOAT")) == np.float32
    assert numpy_dtype(names(name="HALF")) == np.float16
    assert numpy_dtype(names(name="INT64")) == np.int64
    for unsupported in ("BF16", "FP8", "INT4"):
        with pytest.raises(ValueError, match=f"{unsupported} has no numpy equivalent") as err:
            numpy_dtype(names(name=unsupported))
        assert_one_line(err.value)


def test_numpy_dtype_of_the_installed_tensorrt():
    try:
        trt = detect_tensorrt().module
    except TensorRTUnavailable as exc:
        pytest.skip(str(exc))
    assert numpy_dtype(trt.DataType.FLOAT) == np.float32 and numpy_dtype(trt.DataType.HALF) == np.float16
    with pytest.raises(ValueError):
        numpy_dtype(trt.DataType.BF16)


def test_check_profile_shape():
    check_profile_shape("image", (1, 3, 16, 16), PROFILE.min, PROFILE.max)
    check_profile_shape("image", (2, 3, 64, 48), PROFILE.min, PROFILE.max)
    for shape in [(1, 3, 80, 64), (3, 3, 32, 32), (1, 3, 8, 32), (1, 3, 32)]:
        with pytest.raises(ValueError, match=r"outside the engine's optimisation profile \(min 1x3x16x16, "
                                             r"max 2x3x64x64\)") as err:
            check_profile_shape("image", shape, PROFILE.min, PROFILE.max)
        assert_one_line(err.value)
        assert "x".join(map(str, shape)) in str(err.value)


# ------------------------------------------------------------------------------------------------
# a fake CUDA runtime (host memory stands in for device memory) and a fake TensorRT context


class FakeCudart:
    class cudaError_t(enum.Enum):
        cudaSuccess = 0
        cudaErrorMemoryAllocation = 2

    class cudaMemcpyKind(enum.Enum):
        cudaMemcpyHostToDevice = 1
        cudaMemcpyDeviceToHost = 2

    def __init__(self):
        self.blocks: dict[int, ctypes.Array] = {}
        self.host, self.device = set(), set()
        self.copies: list[tuple[str, int]] = []
        self.synced = 0
        self.fail_malloc = False

    def _alloc(self, nbytes, pool):
        block = ctypes.create_string_buffer(nbytes)
        pointer = ctypes.addressof(block)
        self.blocks[pointer] = block
        pool.add(pointer)
        return (self.cudaError_t.cudaSuccess, pointer)

    def cudaMallocHost(self, nbytes):
        return self._alloc(nbytes, self.host)

    def cudaMalloc(self, nbytes):
        if self.fail_malloc:
            return (self.cudaError_t.cudaErrorMemoryAllocation, None)
        return self._alloc(nbytes, self.device)

    def _free(self, pointer, pool):
        pool.remove(pointer)
        del self.blocks[pointer]
        return (self.cudaError_t.cudaSuccess,)

    def cudaFreeHost(self, pointer):
        return self._free(pointer, self.host)

    def cudaFree(self, pointer):
        return self._free(pointer, self.device)

    def cudaMemcpyAsync(self, dst, src, nbytes, kind, stream):
        h2d = kind == self.cudaMemcpyKind.cudaMemcpyHostToDevice
        assert (dst in self.device and src in self.host) if h2d else (dst in self.host and src in self.device)
        assert stream == 7
        ctypes.memmove(dst, src, nbytes)
        self.copies.append((kind.name, nbytes))
        return (self.cudaError_t.cudaSuccess,)

    def cudaStreamSynchronize(self, stream):
        self.synced += 1
        return (self.cudaError_t.cudaSuccess,)

    def cudaSetDevice(self, device):
        return (self.cudaError_t.cudaSuccess,)

    def cudaGetErrorName(self, error):
        return (self.cudaError_t.cudaSuccess, error.name.encode())

    def cudaGetErrorString(self, error):
        return (self.cudaError_t.cudaSuccess, b"out of memory")


class IOMode(enum.Enum):
    INPUT = 1
    OUTPUT = 2


class DataType(enum.Enum):
    FLOAT = 0
    HALF = 1


FAKE_TRT = SimpleNamespace(TensorIOMode=IOMode)


class FakeEngine:
    def __init__(self, dtype=DataType.FLOAT, outputs=("derained",)):
        self.tensors = {"image": (IOMode.INPUT, dtype), **{name: (IOMode.OUTPUT, dtype) for name in outputs}}
        self.num_io_tensors = len(self.tensors)

    def get_tensor_name(self, index):
        return list(self.tensors)[index]

    def get_tensor_mode(self, name):
        return self.tensors[name][0]

    def get_tensor_dtype(self, name):
        return self.tensors[name][1]

    def get_tensor_profile_shape(self, name, profile):
        assert name == "image" and profile == 0
        return [list(PROFILE.min), list(PROFILE.opt), list(PROFILE.max)]


class FakeContext:
    """Computes ``1 - image`` into every output, reading and writing through the bound addresses."""

    def __init__(self, engine: FakeEngine, errors: list[str]):
        self.engine, self.errors = engine, errors
        self.input_shape = None
        self.addresses: dict[str, int] = {}
        self.shape_calls: list[tuple] = []
        self.fail_execute = False

    def set_input_shape(self, name, shape):
        self.shape_calls.append(tuple(shape))
        self.input_shape = tuple(shape)
        return True

    def get_tensor_shape(self, name):
        return self.input_shape

    def set_tensor_address(self, name, pointer):
        self.addresses[name] = pointer
        return True

    def _array(self, name):
        dtype = numpy_dtype(self.engine.get_tensor_dtype(name))
        count = math.prod(self.input_shape)
        raw = (ctypes.c_char * (count * dtype.itemsize)).from_address(self.addresses[name])
        return np.frombuffer(raw, dtype=dtype, count=count).reshape(self.input_shape)

    def execute_async_v3(self, stream):
        assert stream == 7
        if self.fail_execute:
            self.errors.append("IExecutionContext::enqueueV3: Error Code 1: Cuda Runtime (an illegal memory access)")
            return False
        image = self._array("image").astype(np.float32)
        for name, (mode, _) in self.engine.tensors.items():
            if mode == IOMode.OUTPUT:
                self._array(name)[...] = 1.0 - image
        return True


def make_executor(dtype=DataType.FLOAT, outputs=("derained",)):
    cudart, engine, errors = FakeCudart(), FakeEngine(dtype, outputs), []
    context = FakeContext(engine, errors)
    return EngineExecutor(FAKE_TRT, engine, context, cudart, stream=7, errors=errors), cudart, context


def test_executor_runs_through_pinned_and_device_buffers():
    executor, cudart, context = make_executor()
    batch = np.random.default_rng(0).random((1, 3, 32, 48), dtype=np.float32)
    out = executor(batch)
    np.testing.assert_array_equal(out, 1.0 - batch)
    assert out.dtype == np.float32 and context.shape_calls == [(1, 3, 32, 48)]
    assert cudart.copies == [("cudaMemcpyHostToDevice", batch.nbytes), ("cudaMemcpyDeviceToHost", batch.nbytes)]
    assert cudart.synced == 1
    # the addresses TensorRT got are device buffers, one per I/O tensor
    assert set(context.addresses.values()) <= cudart.device and len(context.addresses) == 2


def test_executor_reallocates_only_when_shapes_grow():
    executor, cudart, context = make_executor()
    rng = np.random.default_rng(1)
    sizes = [(1, 3, 32, 32), (1, 3, 16, 16), (1, 3, 32, 32), (2, 3, 64, 64), (1, 3, 16, 32)]
    for shape in sizes:
        batch = rng.random(shape, dtype=np.float32)
        out = executor(batch)  # the result must not alias the reused pinned buffer
        np.testing.assert_array_equal(out, 1.0 - batch)
    assert executor.buffers["image"].allocations == 2 and executor.buffers["derained"].allocations == 2
    assert executor.buffers["image"].capacity == 2 * 3 * 64 * 64 * 4
    assert len(cudart.host) == len(cudart.device) == 2  # the smaller first buffers were freed
    assert context.shape_calls == sizes
    executor.free()
    assert not cudart.host and not cudart.device and not cudart.blocks


def test_executor_fp16_engine_converts_numpy_in_and_out():
    executor, cudart, _ = make_executor(DataType.HALF)
    batch = np.random.default_rng(2).random((1, 3, 16, 16), dtype=np.float32)
    out = executor(batch)
    expected = (1.0 - batch.astype(np.float16).astype(np.float32)).astype(np.float16).astype(np.float32)
    assert out.dtype == np.float32
    np.testing.assert_array_equal(out, expected)
    assert not np.array_equal(out, 1.0 - batch)  # the values really went through FP16
    assert cudart.copies[0] == ("cudaMemcpyHostToDevice", batch.size * 2)


def test_executor_binds_every_output_and_returns_derained():
    executor, _, context = make_executor(outputs=("aux", "derained"))
    batch = np.random.default_rng(3).random((1, 3, 16, 16), dtype=np.float32)
    np.testing.assert_array_equal(executor(batch), 1.0 - batch)
    assert executor.output_name == "derained" and set(context.addresses) == {"image", "aux", "derained"}


def test_executor_errors_are_one_line():
    executor, cudart, context = make_executor()
    with pytest.raises(ValueError, match="outside the engine's optimisation profile") as err:
        executor(np.zeros((1, 3, 128, 128), np.float32))
    assert_one_line(err.value)
    assert executor.buffers["image"].allocations == 0  # refused before touching memory

    context.fail_execute = True
    with pytest.raises(EngineLoadError, match="failed to run the engine on input 1x3x16x16: .*illegal memory") as err:
        executor(np.ones((1, 3, 16, 16), np.float32))
    assert_one_line(err.value)

    cudart.fail_malloc = True
    executor.buffers["image"].free()
    with pytest.raises(CudaError, match=r"cudaMalloc\(6144\) failed: cudaErrorMemoryAllocation") as err:
        executor(np.ones((2, 3, 16, 16), np.float32))
    assert_one_line(err.value)


def test_executor_refuses_engines_that_are_not_image_to_image():
    cudart, errors = FakeCudart(), []
    engine = FakeEngine(outputs=())
    with pytest.raises(EngineLoadError, match="expected one image input and at least one output"):
        EngineExecutor(FAKE_TRT, engine, FakeContext(engine, errors), cudart, 7, errors=errors)


def test_cuda_check_unpacks_results():
    cudart = FakeCudart()
    ok = cudart.cudaError_t.cudaSuccess
    assert cuda_check(cudart, (ok, 42), "x") == 42
    assert cuda_check(cudart, (ok,), "x") is None
    with pytest.raises(CudaError, match=r"^cudaMalloc\(8\) failed: cudaErrorMemoryAllocation \(out of memory\)$"):
        cuda_check(cudart, (cudart.cudaError_t.cudaErrorMemoryAllocation, None), "cudaMalloc(8)")


# ------------------------------------------------------------------------------------------------
# loading real TensorRT-RTX engines (built here, on the CPU) up to the point that needs a GPU


def _flavour():
    try:
        return detect_tensorrt()
    except TensorRTUnavailable as exc:
        pytest.skip(str(exc))


@pytest.fixture(scope="module")
def cached_engine(tmp_path_factory):
    """An fp32 sm86 engine of image -> Conv -> Relu with ``input_multiple = 8`` in its ONNX metadata."""
    flavour = _flavour()
    if not flavour.supports_targets:
        pytest.skip("building for sm86 without that GPU needs TensorRT-RTX")
    root = tmp_path_factory.mktemp("trt_backend")
    weight = numpy_helper.from_array(np.random.default_rng(0).standard_normal((3, 3, 3, 3)).astype(np.float32), "w")
    graph = helper.make_graph(
        [helper.make_node("Conv", ["image", "w"], ["c"], pads=[1, 1, 1, 1]), helper.make_node("Relu", ["c"], ["derained"])],
        "g", [helper.make_tensor_value_info("image", TensorProto.FLOAT, ["N", 3, "H", "W"])],
        [helper.make_tensor_value_info("derained", TensorProto.FLOAT, ["N", 3, "H", "W"])], [weight])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.metadata_props.add(key="input_multiple", value="8")
    onnx.save(model, str(root / "tiny.onnx"))
    return EngineCache(root / "cache").get_or_build(root / "tiny.onnx", "fp32", PROFILE, "sm86", flavour=flavour)


def _no_gpu():
    if list_devices():
        pytest.skip("a GPU is present: these tests cover machines without one")


def test_sidecar_records_what_the_runtime_needs(cached_engine):
    sidecar = cached_engine.sidecar
    assert sidecar["input_multiple"] == 8 and sidecar["plugins"] == [] and sidecar["fp32_nodes"] is None


def test_missing_engine_or_sidecar(tmp_path, cached_engine):
    with pytest.raises(FileNotFoundError, match="build it with 'edge-derain build'"):
        TensorRTBackend(tmp_path / "none.engine")
    orphan = tmp_path / "orphan.engine"
    orphan.write_bytes(cached_engine.engine_path.read_bytes())
    with pytest.raises(FileNotFoundError, match="has no sidecar orphan.engine.json") as err:
        TensorRTBackend(orphan)
    assert_one_line(err.value)


def test_no_gpu_is_a_one_line_error(cached_engine):
    _no_gpu()
    with pytest.raises(NoCudaDevice, match=r"no CUDA device 0 on this machine \(0 found\)") as err:
        TensorRTBackend(cached_engine.engine_path)
    assert_one_line(err.value)
    with pytest.raises(ValueError, match="device must be a CUDA device index"):
        TensorRTBackend(cached_engine.engine_path, device=-1)


def test_engine_for_another_gpu_is_refused_before_deserialising(cached_engine, monkeypatch):
    _no_gpu()
    monkeypatch.setattr(cache_mod, "list_devices", lambda: [CudaDevice(0, "Orin", (8, 7), 8 << 30)])
    flavour = _flavour()
    with pytest.raises(EngineMismatchError) as err:
        TensorRTBackend(cached_engine.engine_path)
    assert_one_line(err.value)
    assert str(err.value).startswith(f"engine built for sm86 / {flavour.name} {flavour.version} but this device is "
                                     f"sm87 / {flavour.name} {flavour.version}; rebuild with: edge-derain build")

    # another TensorRT version on a matching GPU is refused the same way
    sidecar = sidecar_path(cached_engine.engine_path)
    text = sidecar.read_text()
    monkeypatch.setattr(cache_mod, "list_devices", lambda: [CudaDevice(0, "RTX A4000", (8, 6), 16 << 30)])
    try:
        sidecar.write_text(text.replace(f'"version": "{flavour.version}"', '"version": "0.0.1"'))
        with pytest.raises(EngineMismatchError, match=f"/ {flavour.name} 0.0.1 but this device is sm86 /"):
            TensorRTBackend(cached_engine.engine_path)
    finally:
        sidecar.write_text(text)


def test_compatible_engine_goes_on_to_cuda(cached_engine, monkeypatch):
    """With a matching (faked) device the backend passes the sidecar check and stops at CUDA."""
    _no_gpu()
    pytest.importorskip("cuda.bindings.runtime", reason="cuda-python is not installed")
    monkeypatch.setattr(cache_mod, "list_devices", lambda: [CudaDevice(0, "RTX A4000", (8, 6), 16 << 30)])
    with pytest.raises(CudaError, match=r"^cudaSetDevice\(0\) failed: cudaError") as err:
        TensorRTBackend(cached_engine.engine_path)
    assert_one_line(err.value)


def test_plugin_library_from_the_environment_must_exist(cached_engine, monkeypatch, tmp_path):
    _no_gpu()
    monkeypatch.setattr(cache_mod, "list_devices", lambda: [CudaDevice(0, "RTX A4000", (8, 6), 16 << 30)])
    monkeypatch.setenv(PLUGIN_LIBRARY_ENV, str(tmp_path / "missing.so"))
    monkeypatch.setattr(trt_backend, "import_cudart", lambda: FakeCudart())
    sidecar = sidecar_path(cached_engine.engine_path)
    text = sidecar.read_text()
    try:  # an engine built with the C++ plugin library loads the library named by the environment
        sidecar.write_text(text.replace('"plugins": []', '"plugins": [{"plugin": "DilationFilter"}]')
                           .replace('"plugin_implementation": "none"', '"plugin_implementation": "library"'))
        with pytest.raises(FileNotFoundError, match=f"{PLUGIN_LIBRARY_ENV}=.*missing.so does not exist") as err:
            TensorRTBackend(cached_engine.engine_path)
        assert_one_line(err.value)
    finally:
        sidecar.write_text(text)


def test_a_library_without_plugin_entry_points_is_refused():
    import ctypes.util

    from edge_derain.engine.builder import load_plugin_library
    from edge_derain.engine.flavour import TensorRTSetupError

    trt = _flavour().module
    libm = ctypes.util.find_library("m")
    path = next((Path(d) / libm for d in ("/lib/x86_64-linux-gnu", "/usr/lib/x86_64-linux-gnu", "/lib64", "/usr/lib")
                 if libm and (Path(d) / libm).is_file()), None)
    if path is None:
        pytest.skip("no libm to stand in for a foreign shared library")
    with pytest.raises(TensorRTSetupError, match="could not load the plugin library .*libm") as err:
        load_plugin_library(trt, path)
    assert_one_line(err.value)
