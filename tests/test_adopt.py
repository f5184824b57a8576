"""edge-derain adopt: sidecars for engines built elsewhere (trtexec, DeepStream).

Deserialising needs the GPU, so here: the command stops in one line on a machine without one, and the
sidecar logic runs on a real TensorRT-RTX engine built on this CPU machine, with the facts the engine
inspector would report taken from the build; the TensorRT backend then accepts the engine up to CUDA.
"""
from __future__ import annotations

import json

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
from onnx import TensorProto, helper, numpy_helper  # noqa: E402

from edge_derain.cli import main  # noqa: E402
from edge_derain.engine import cache as cache_mod  # noqa: E402
from edge_derain.engine.adopt import EngineFacts, adopted_sidecar, engine_precision  # noqa: E402
from edge_derain.engine.builder import EngineLayer, ShapeProfile, build_engine, inspect_onnx  # noqa: E402
from edge_derain.engine.cache import (DeviceFingerprint, EngineCache, PluginUse, check_engine_compatible,  # noqa: E402
                                      read_sidecar, sidecar_path)
from edge_derain.engine.flavour import CudaDevice, list_devices  # noqa: E402
from edge_derain.utils import atomic_write_json  # noqa: E402

PROFILE = ShapeProfile((1, 3, 16, 16), (1, 3, 32, 32), (2, 3, 64, 64))
A4000 = CudaDevice(0, "RTX A4000", (8, 6), 16 << 30)


def plugin_graph(path):
    """image -> Conv -> DilationFilter -> Conv with the exporter's input_multiple metadata (8)."""
    rng = np.random.default_rng(3)
    weights = [numpy_helper.from_array(rng.standard_normal((27, 3, 1, 1)).astype(np.float32), "w1"),
               numpy_helper.from_array(rng.standard_normal((3, 12, 3, 3)).astype(np.float32), "w2")]
    nodes = [helper.make_node("Conv", ["image", "w1"], ["kernels"], name="kpn"),
             helper.make_node("DilationFilter", ["image", "kernels"], ["filtered"], name="filter", domain="edge_derain",
                              dilations=[1, 2, 3, 4], plugin_version="1", plugin_namespace=""),
             helper.make_node("Conv", ["filtered", "w2"], ["derained"], name="fusion", pads=[1, 1, 1, 1])]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("image", TensorProto.FLOAT, ["N", 3, "H", "W"])],
                              [helper.make_tensor_value_info("derained", TensorProto.FLOAT, ["N", 3, "H", "W"])], weights)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("edge_derain", 1)])
    model.metadata_props.add(key="input_multiple", value="8")
    onnx.save(model, str(path))
    return path


@pytest.fixture(scope="module")
def external(rtx, tmp_path_factory):
    """An FP16 sm86 engine built outside the cache (as trtexec would), with no sidecar, and its build facts."""
    root = tmp_path_factory.mktemp("adopt")
    onnx_path = plugin_graph(root / "model.onnx")
    result = build_engine(onnx_path, root / "external.engine", "fp16", PROFILE, "sm86", flavour=rtx)
    assert not sidecar_path(result.engine_path).exists()
    return onnx_path, result


def _no_gpu():
    if list_devices():
        pytest.skip("a GPU is present: this covers machines without one")


def test_adopt_without_a_gpu_is_one_clear_line(external, capsys):
    _no_gpu()
    onnx_path, result = external
    assert main(["adopt", str(result.engine_path), "--onnx", str(onnx_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.splitlines() == [err] and "Traceback" not in err
    assert err.startswith("edge-derain adopt: error: adopting external.engine means deserialising it on the GPU")
    assert not sidecar_path(result.engine_path).exists()
    assert main(["adopt", str(result.engine_path.with_name("missing.engine")), "--onnx", str(onnx_path)]) == 2
    assert "missing.engine not found" in capsys.readouterr().err


def test_adopted_sidecar_lets_the_runtime_take_the_engine(rtx, external, monkeypatch, tmp_path):
    onnx_path, result = external
    engine = tmp_path / "external.engine"
    engine.write_bytes(result.engine_path.read_bytes())
    summary = inspect_onnx(onnx_path)
    fingerprint = DeviceFingerprint(rtx.name, rtx.version, ("sm86",), A4000.name)
    facts = EngineFacts("image", PROFILE, ("derained",), result.layers)
    sidecar = adopted_sidecar(engine, onnx_path, summary, facts, fingerprint, PluginUse.for_graph(summary))
    key = sidecar["key"]
    assert key["precision"] == "fp16"  # read from the layers: FP16 convolutions and plugin
    assert key["shapes"] == PROFILE.to_dict() and key["typing"] is None
    assert key["plugin_implementation"] in ("python", "library") and key["plugin_hash"]
    assert sidecar["engine_bytes"] == engine.stat().st_size and sidecar["input_multiple"] == 8
    assert [p["plugin"] for p in sidecar["plugins"]] == ["DilationFilter"]
    assert sidecar["adopted"]["outputs"] == ["derained"] and sidecar["builder_flags"] is None
    atomic_write_json(sidecar_path(engine), sidecar)

    check_engine_compatible(read_sidecar(engine), fingerprint)
    [entry] = EngineCache(tmp_path).entries()
    assert entry.engine_path == engine and entry.problem is None
    # the TensorRT backend accepts it on a (faked) matching GPU and goes on to CUDA, which this machine lacks
    _no_gpu()
    pytest.importorskip("cuda.bindings.runtime", reason="cuda-python is not installed")
    from edge_derain.backends.trt_backend import CudaError, TensorRTBackend

    monkeypatch.setattr(cache_mod, "list_devices", lambda: [A4000])
    with pytest.raises(CudaError, match=r"^cudaSetDevice\(0\) failed"):
        TensorRTBackend(engine)


def test_adopted_sidecar_checks_the_engine_against_its_onnx(rtx, external):
    onnx_path, result = external
    summary = inspect_onnx(onnx_path)
    fingerprint = DeviceFingerprint(rtx.name, rtx.version, ("sm86",), None)
    plugins = PluginUse.for_graph(summary)

    def sidecar(facts, precision=None):
        return adopted_sidecar(result.engine_path, onnx_path, summary, facts, fingerprint, plugins, precision)

    with pytest.raises(ValueError, match="--precision int8 but the engine's layers run in fp16") as err:
        sidecar(EngineFacts("image", PROFILE, ("derained",), result.layers), "int8")
    assert "\n" not in str(err.value)
    with pytest.raises(ValueError, match="reports no layer data types .* pass --precision"):
        sidecar(EngineFacts("image", PROFILE, ("derained",), []))
    assert sidecar(EngineFacts("image", PROFILE, ("derained",), []), "int8")["key"]["precision"] == "int8"
    renamed = ShapeProfile(PROFILE.min, PROFILE.opt, PROFILE.max, "input")
    with pytest.raises(ValueError, match="input 'input' is not an input of model.onnx \\(image\\)"):
        sidecar(EngineFacts("input", renamed, ("derained",), result.layers))


def test_engine_precision_is_the_lowest_layer_type():
    def layer(*dtypes):
        return EngineLayer("l", "Convolution", dtypes, dtypes)

    assert engine_precision([layer("Float"), layer("Int8", "Half")]) == "int8"
    assert engine_precision([layer("Float"), layer("Half")]) == "fp16"
    assert engine_precision([layer("Float")]) == "fp32"
    assert engine_precision([]) is None
    assert json.dumps(engine_precision([layer("Int32")])) == "null"
