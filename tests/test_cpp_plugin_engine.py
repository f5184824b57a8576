"""The C++ plugin library (plugins/, CMake) builds TensorRT-RTX engines on this CPU-only machine.

``libedge_derain_plugins.so`` is compiled against each TensorRT header set (``TENSORRT_INCLUDE_DIR``, else
10.3.0 and 11.1 from ../shared/third_party/tensorrt-headers; see tests/plugin_build.py), loaded into the builder's plugin registry
with ``IPluginRegistry.load_library`` - the Python plugin is not registered in that build - and an
exported EfficientDeRain plugin graph is built into FP32 and FP16 engines.

Small hand-made graphs with one ``TransposedAttention`` node (dense with 2 heads, dual, multi with two
top-k values) are built the same way, FP16 through the builder's FP16 conversion.

Where the plugins came from is checked two ways: the network's plugin layers are not instances of the
Python plugin classes (``implementation == "library"``), and graphs with an invalid dilation or an
invalid attention field are rejected with the C++ plugins' own wording, which the Python plugins do
not use.

The CMake build lives in pytest's cache directory, shared with tests/test_plugins_build.py, so only the
first run compiles (about 20 s per header set on two cores); later runs rebuild only what changed.
"""
from __future__ import annotations

import ctypes
from pathlib import Path

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
from onnx import TensorProto, helper, numpy_helper  # noqa: E402

from edge_derain.engine.builder import (PLUGIN_LIBRARY_NAME, OnnxParseError, ShapeProfile,  # noqa: E402
                                        build_engine)
from edge_derain.engine.flavour import TensorRTUnavailable, detect_tensorrt  # noqa: E402
from plugin_build import HEADER_SET_LABELS, build_plugins  # noqa: E402

PROFILE = ShapeProfile((1, 3, 64, 64), (1, 3, 256, 256), (2, 3, 512, 512))
# Every test here builds engines with the C++ plugins, against each TensorRT header set (the first
# compiles plugins/, about 20 s per set on two cores, unless pytest's cache already holds the build).
pytestmark = pytest.mark.slow


def _rtx():
    """The RTX flavour, or a skip: ahead-of-time builds without a GPU need TensorRT-RTX."""
    try:
        flavour = detect_tensorrt()
    except TensorRTUnavailable as exc:
        pytest.skip(str(exc))
    if not flavour.supports_targets:
        pytest.skip(f"{flavour.label} cannot build engines without a GPU; these tests need TensorRT-RTX")
    return flavour


@pytest.fixture(scope="module", params=HEADER_SET_LABELS)
def plugin_library(request, pytestconfig) -> Path:
    """libedge_derain_plugins.so compiled against each TensorRT header set (10.3 = JetPack 6, 11.x)."""
    _rtx()
    library = build_plugins(getattr(pytestconfig, "cache", None), request.param) / PLUGIN_LIBRARY_NAME
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


# ---- TransposedAttention ---------------------------------------------------------------------------

ATTENTION_CHANNELS = 16
ATTENTION_PROFILE = ShapeProfile((1, ATTENTION_CHANNELS, 8, 8), (1, ATTENTION_CHANNELS, 32, 32),
                                 (2, ATTENTION_CHANNELS, 64, 64), input_name="x")
ATTENTION_CASES = {
    # name: (num_heads, mode, topk, branch weights or None)
    "dense-2heads": (2, "dense", None, None),
    "dual": (1, "dual", [11], [0.5, 0.5]),  # DDSA: dense + top int(0.7 * C_h)
    "multi": (2, "multi", [4, 6], [0.2, 0.3]),
}


def attention_graph(path: Path, num_heads: int, mode: str, topk: list[int] | None,
                    branch_weights: list[float] | None) -> Path:
    """x (N, 16, H, W) -> q, k, v by three 1x1 convs -> one TransposedAttention node -> o."""
    rng = np.random.default_rng(0)
    channels = ATTENTION_CHANNELS
    initializers = [numpy_helper.from_array(rng.standard_normal((channels, channels, 1, 1)).astype(np.float32), name)
                    for name in ("wq", "wk", "wv")]
    initializers.append(numpy_helper.from_array(rng.uniform(0.5, 2.0, num_heads).astype(np.float32), "temperature"))
    inputs = ["q", "k", "v", "temperature"]
    if branch_weights is not None:
        initializers.append(numpy_helper.from_array(np.asarray(branch_weights, np.float32), "branch_weights"))
        inputs.append("branch_weights")
    attributes = dict(num_heads=num_heads, mode=mode, eps=1e-12, plugin_version="1", plugin_namespace="")
    if topk is not None:
        attributes["topk"] = topk
    nodes = [helper.make_node("Conv", ["x", f"w{t}"], [t], name=f"proj_{t}") for t in "qkv"]
    nodes.append(helper.make_node("TransposedAttention", inputs, ["o"], name="attention", domain="edge_derain",
                                  **attributes))
    shape = ["N", channels, "H", "W"]
    graph = helper.make_graph(nodes, path.stem, [helper.make_tensor_value_info("x", TensorProto.FLOAT, shape)],
                              [helper.make_tensor_value_info("o", TensorProto.FLOAT, shape)], initializers)
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17),
                                                      helper.make_opsetid("edge_derain", 1)]), str(path))
    return path


@pytest.mark.parametrize("precision", ["fp32", "fp16"])
@pytest.mark.parametrize("case", ATTENTION_CASES, ids=list(ATTENTION_CASES))
def test_rtx_builds_attention_with_the_cpp_plugin(plugin_library, tmp_path, case, precision):
    num_heads, mode, topk, weights = ATTENTION_CASES[case]
    graph = attention_graph(tmp_path / f"{case}.onnx", num_heads, mode, topk, weights)
    log_path = tmp_path / "build.log"
    result = build_engine(graph, tmp_path / f"{case}_{precision}.engine", precision, ATTENTION_PROFILE, "sm86",
                          verbose_log_path=log_path, plugin_library=plugin_library)
    assert result.plugin_library == plugin_library.resolve()
    assert result.plugins == [{"layer": "attention", "onnx_nodes": ["attention"], "plugin": "TransposedAttention",
                               "version": "1", "namespace": "", "implementation": "library"}]
    (plugin_layer,) = result.plugin_layers
    # The layer lists q, k, v (its constant temperature / branch weights are baked into the engine) and,
    # after the output, its workspace. The FP16 graph stores the parameters in FP16 too.
    dtype = "Float" if precision == "fp32" else "Half"
    assert plugin_layer.input_dtypes == (dtype,) * 3 and plugin_layer.output_dtypes[0] == dtype
    assert "attention" not in (result.fp32_nodes or {})  # the node itself runs in FP16 in the fp16 graph
    engine = result.engine_path.read_bytes()
    assert len(engine) == result.engine_bytes > 0 and b"accelerators={sm86 }" in engine
    assert "Found registered plugin: TransposedAttention" in log_path.read_text()


@pytest.mark.parametrize("mode,topk,weights,message,python_wording", [
    # createPlugin rejects the fields themselves
    ("dual", [3, 4], [0.5, 0.5], "mode 'dual' takes exactly 1 topk value, got 2", "takes exactly one topk values"),
    # getOutputShapes, once C is known (C_h = 16 for one head); the parser calls it
    ("sparse", [17], None, "topk 17 exceeds the 16 channels per head", "topk [17] exceeds"),
], ids=["dual-two-topk", "topk-above-head"])
def test_invalid_attention_is_rejected_in_the_cpp_plugins_words(plugin_library, tmp_path, mode, topk, weights,
                                                                message, python_wording):
    graph = attention_graph(tmp_path / "bad.onnx", 1, mode, topk, weights)
    log_path = tmp_path / "bad.log"
    with pytest.raises(OnnxParseError, match="could not parse bad.onnx"):
        build_engine(graph, tmp_path / "bad.engine", "fp32", ATTENTION_PROFILE, "sm86", verbose_log_path=log_path,
                     plugin_library=plugin_library)
    log_text = log_path.read_text()
    assert f"TransposedAttention plugin: {message}" in log_text  # plugins/trt/TransposedAttentionPlugin.cpp
    assert python_wording not in log_text  # edge_derain/engine/python_plugins.py's wording


def test_engine_cache_keys_on_the_plugin_implementation_it_builds_with(plugin_library, efderain_plugin_graph,
                                                                        tmp_path, monkeypatch):
    """The cache builds with the library its key names (and the Python plugin when it names that)."""
    import hashlib

    from edge_derain.engine import cache as cache_mod

    flavour = _rtx()
    cache = cache_mod.EngineCache(tmp_path)
    monkeypatch.setenv("EDGE_DERAIN_PLUGIN_LIB", str(plugin_library))
    native = cache.get_or_build(efderain_plugin_graph, "fp32", PROFILE, "sm86", flavour=flavour)
    assert native.key.plugin_implementation == "library"
    assert native.key.plugin_hash == hashlib.sha256(plugin_library.read_bytes()).hexdigest()
    assert [p["implementation"] for p in native.sidecar["plugins"]] == ["library"]
    assert native.sidecar["plugin_library"] == str(plugin_library.resolve())

    monkeypatch.delenv("EDGE_DERAIN_PLUGIN_LIB")
    monkeypatch.setattr(cache_mod, "find_plugin_library", lambda: None)  # ignore a checkout's build/plugins
    python = cache.get_or_build(efderain_plugin_graph, "fp32", PROFILE, "sm86", flavour=flavour)
    assert python.built and python.engine_path != native.engine_path
    assert python.key.plugin_implementation == "python"
    assert [p["implementation"] for p in python.sidecar["plugins"]] == ["python"]


def test_runtime_loads_the_library_the_sidecar_records(plugin_library, efderain_plugin_graph, tmp_path, monkeypatch):
    """Without $EDGE_DERAIN_PLUGIN_LIB or a checkout build, the TensorRT backend loads the library the engine was
    built with (recorded in its sidecar), then stops at CUDA on this GPU-less machine. In a fresh process: a
    process's plugin registry takes one library with our creators."""
    import subprocess
    import sys

    from edge_derain.engine import cache as cache_mod
    from edge_derain.engine.flavour import list_devices

    pytest.importorskip("cuda.bindings.runtime", reason="cuda-python is not installed")
    if list_devices():
        pytest.skip("a GPU is present: the engine would really load")
    monkeypatch.setenv("EDGE_DERAIN_PLUGIN_LIB", str(plugin_library))
    engine = cache_mod.EngineCache(tmp_path).get_or_build(efderain_plugin_graph, "fp32", PROFILE, "sm86",
                                                          flavour=_rtx())
    monkeypatch.delenv("EDGE_DERAIN_PLUGIN_LIB")
    code = ("from edge_derain.backends import trt_backend\n"
            "from edge_derain.engine import builder, cache\n"
            "from edge_derain.engine.flavour import CudaDevice\n"
            "builder.find_plugin_library = lambda: None  # no checkout build/plugins\n"
            "cache.list_devices = lambda: [CudaDevice(0, 'RTX A4000', (8, 6), 16 << 30)]\n"
            "try:\n"
            f"    trt_backend.TensorRTBackend({str(engine.engine_path)!r})\n"
            "except trt_backend.CudaError as exc:\n"
            "    print(exc)\n"
            "print(*(path for _, path in builder._LOADED_LIBRARIES))\n")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    failure, loaded = result.stdout.splitlines()
    assert failure.startswith("cudaSetDevice(0) failed") and loaded == str(plugin_library.resolve())
