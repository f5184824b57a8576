"""The C++ plugin library (plugins/, CMake) builds TensorRT-RTX engines on this CPU-only machine.

``libedge_derain_plugins.so`` is compiled against the TensorRT headers named by ``TENSORRT_INCLUDE_DIR``
(or ``TENSORRT_ROOT``, or the system locations CMake searches), loaded into the builder's plugin registry
with ``IPluginRegistry.load_library`` - the Python plugin is not registered in that build - and an
exported EfficientDeRain plugin graph is built into FP32 and FP16 engines.

Where the plugin came from is checked two ways: the network's plugin layer is not an instance of the
Python plugin class (``implementation == "library"``), and a graph with an invalid dilation is
rejected with the C++ creator's own wording, which the Python plugin does not use.

The CMake build lives in pytest's cache directory, so only the first run compiles (about 10 s on two
cores for one CUDA architecture); later runs rebuild only what changed.
"""
from __future__ import annotations

import ctypes
import hashlib
import os
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
from onnx import TensorProto, helper, numpy_helper  # noqa: E402

from edge_derain.engine.builder import (PLUGIN_LIBRARY_NAME, OnnxParseError, ShapeProfile,  # noqa: E402
                                        build_engine)
from edge_derain.engine.flavour import TensorRTUnavailable, detect_tensorrt  # noqa: E402

PLUGINS = Path(__file__).resolve().parents[1] / "plugins"
PROFILE = ShapeProfile((1, 3, 64, 64), (1, 3, 256, 256), (2, 3, 512, 512))
# Where CMake's find_path looks besides the variables (see plugins/CMakeLists.txt).
_SYSTEM_INCLUDE_DIRS = ("/usr/include/x86_64-linux-gnu", "/usr/include/aarch64-linux-gnu", "/usr/include",
                        "/usr/local/TensorRT/include")


def tensorrt_include_dir() -> Path | None:
    candidates = [os.environ.get("TENSORRT_INCLUDE_DIR")]
    if os.environ.get("TENSORRT_ROOT"):
        candidates.append(str(Path(os.environ["TENSORRT_ROOT"]) / "include"))
    candidates += _SYSTEM_INCLUDE_DIRS
    for candidate in candidates:
        if candidate and (Path(candidate) / "NvInferRuntime.h").is_file():
            return Path(candidate)
    return None


def _requirements():
    """The RTX flavour and the TensorRT include dir, or a skip that says what is missing."""
    try:
        flavour = detect_tensorrt()
    except TensorRTUnavailable as exc:
        pytest.skip(str(exc))
    if not flavour.supports_targets:
        pytest.skip(f"{flavour.label} cannot build engines without a GPU; these tests need TensorRT-RTX")
    include = tensorrt_include_dir()
    if include is None:
        pytest.skip("TensorRT headers not found: set TENSORRT_INCLUDE_DIR to a TensorRT include/ directory "
                    "(with NvInferRuntime.h) to build the C++ plugin library")
    for tool in ("cmake", "nvcc"):
        if shutil.which(tool) is None and not (tool == "nvcc" and os.environ.get("CUDACXX")):
            pytest.skip(f"{tool} is not on PATH; it is needed to build plugins/")
    return flavour, include


@pytest.fixture(scope="module")
def plugin_library(pytestconfig) -> Path:
    _, include = _requirements()
    # One build directory per checkout and header set: CMake refuses a cache made for other sources.
    key = hashlib.sha256(f"{PLUGINS}\0{include}".encode()).hexdigest()[:12]
    build = pytestconfig.cache.mkdir(f"edge_derain_cpp_plugins_{key}")
    configure = ["cmake", "-S", str(PLUGINS), "-B", str(build), "-DCMAKE_BUILD_TYPE=Release",
                 "-DCMAKE_CUDA_ARCHITECTURES=86", f"-DTENSORRT_INCLUDE_DIR={include}"]
    compile_ = ["cmake", "--build", str(build), "--target", "edge_derain_plugins", "-j2"]
    for command in (configure, compile_):
        proc = subprocess.run(command, capture_output=True, text=True, timeout=600)
        assert proc.returncode == 0, f"{' '.join(command)} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    library = build / PLUGIN_LIBRARY_NAME
    assert library.is_file()
    return library


@pytest.fixture(scope="module")
def efderain_plugin_graph(tmp_path_factory) -> Path:
    import torch

    from edge_derain.export import export_model
    from edge_derain.models import create_model

    torch.manual_seed(0)
    result = export_model(create_model("efderain", width=0.25).eval(),
                          tmp_path_factory.mktemp("cpp_plugin") / "efderain.onnx", portable=False)
    assert result.custom_nodes == "1 DilationFilter"
    return result.plugin_path


def test_library_exports_the_tensorrt_entry_points(plugin_library):
    # Loads without libnvinfer / libtensorrt_rtx or a GPU: it links no TensorRT library and static cudart.
    library = ctypes.CDLL(str(plugin_library))
    for symbol in ("getCreators", "getPluginCreators", "setLoggerFinder"):
        assert hasattr(library, symbol), symbol


@pytest.mark.parametrize("precision", ["fp32", "fp16"])
def test_rtx_builds_efderain_with_the_cpp_plugin(plugin_library, efderain_plugin_graph, tmp_path, precision):
    log_path = tmp_path / "build.log"
    result = build_engine(efderain_plugin_graph, tmp_path / f"ef_{precision}.engine", precision, PROFILE, "sm86",
                          verbose_log_path=log_path, plugin_library=plugin_library)
    assert result.plugin_library == plugin_library.resolve()
    assert result.plugins == [{"layer": "/DilationFilter", "onnx_nodes": ["/DilationFilter"],
                               "plugin": "DilationFilter", "version": "1", "namespace": "",
                               "implementation": "library"}]
    (plugin_layer,) = result.plugin_layers
    dtype = "Float" if precision == "fp32" else "Half"
    assert plugin_layer.input_dtypes == (dtype, dtype) and plugin_layer.output_dtypes == (dtype,)
    engine = result.engine_path.read_bytes()
    assert len(engine) == result.engine_bytes > 0 and b"accelerators={sm86 }" in engine
    assert "Found registered plugin: DilationFilter" in log_path.read_text()


def test_invalid_dilation_is_rejected_in_the_cpp_creators_words(plugin_library, tmp_path):
    weights = numpy_helper.from_array(np.random.default_rng(0).standard_normal((27, 3, 1, 1)).astype(np.float32), "w")
    nodes = [helper.make_node("Conv", ["image", "w"], ["kernels"], name="kpn"),
             helper.make_node("DilationFilter", ["image", "kernels"], ["derained"], name="filter",
                              domain="edge_derain", dilations=[1, 0], plugin_version="1", plugin_namespace="")]
    graph = helper.make_graph(nodes, "bad", [helper.make_tensor_value_info("image", TensorProto.FLOAT, ["N", 3, "H", "W"])],
                              [helper.make_tensor_value_info("derained", TensorProto.FLOAT, ["N", 6, "H", "W"])],
                              [weights])
    path = tmp_path / "bad.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17),
                                                      helper.make_opsetid("edge_derain", 1)]), str(path))
    log_path = tmp_path / "bad.log"
    with pytest.raises(OnnxParseError, match="could not parse bad.onnx"):
        build_engine(path, tmp_path / "bad.engine", "fp32", PROFILE, "sm86", verbose_log_path=log_path,
                     plugin_library=plugin_library)
    log_text = log_path.read_text()
    assert "every dilation must be an integer >= 1, got 0" in log_text  # plugins/trt/DilationFilterPlugin.cpp
    assert "dilations must be positive integers" not in log_text  # the Python plugin's wording
