"""The Transformer models (ELF, ELF-LW, DDSA) through the TensorRT compile path with the Python
TransposedAttention plugin, on this CPU-only machine: TensorRT-RTX engines of their plugin graphs in FP32
and FP16, the plugin's field parsing and shape checks, and its enqueue hand-off to the kernel library.

The kernels' numerics are checked in tests/test_plugins_build.py (host path) and on a GPU by
benchmarks/gpu_check.py; running the engines needs a GPU.
"""
from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
import torch

onnx = pytest.importorskip("onnx")
from onnx import TensorProto, helper, numpy_helper  # noqa: E402

from edge_derain.engine import ShapeProfile, build_engine, python_plugins  # noqa: E402
from edge_derain.engine.builder import OnnxParseError  # noqa: E402
from edge_derain.engine.python_plugins import (AttentionConfig, attention_config_from_fields,  # noqa: E402
                                               check_attention_runtime_shapes)
from edge_derain.export import export_model  # noqa: E402
from edge_derain.models import create_model  # noqa: E402

PROFILE = ShapeProfile((1, 3, 64, 64), (1, 3, 128, 128), (1, 3, 256, 256))


@pytest.fixture(scope="module", params=["elf_lw", "elf", "ddsa"])
def exported(request, tmp_path_factory):
    torch.manual_seed(0)
    model = create_model(request.param).eval()
    return request.param, export_model(model, tmp_path_factory.mktemp("onnx") / request.param)


@pytest.mark.slow
@pytest.mark.parametrize("precision,dtype", [("fp32", "Float"), ("fp16", "Half")])
def test_plugin_graph_builds_with_the_attention_plugin(rtx, exported, tmp_path, precision, dtype):
    name, result = exported
    nodes = [n for n in onnx.load(str(result.plugin_path)).graph.node if n.op_type == "TransposedAttention"]
    assert nodes, f"{name} exported no TransposedAttention node"
    built = build_engine(result.plugin_path, tmp_path / f"{name}.engine", precision=precision, shapes=PROFILE,
                         target="sm86", flavour=rtx)
    assert built.engine_path.stat().st_size > 100_000
    assert sorted(p["layer"] for p in built.plugins) == sorted(n.name for n in nodes)
    assert {(p["plugin"], p["implementation"]) for p in built.plugins} == {("TransposedAttention", "python")}
    attention_layers = [layer for layer in built.layers if layer.plugin == "TransposedAttention"]
    assert attention_layers and all(dtype in layer.input_dtypes for layer in attention_layers)


def _attention_graph(mode: str, topk: list[int], heads: int = 2, channels: int = 16, weights: int | None = None):
    """image -> three 1x1 convs (q, k, v) -> TransposedAttention -> y, dynamic H and W."""
    rng = np.random.default_rng(0)
    inits = [numpy_helper.from_array(rng.standard_normal((channels, 3, 1, 1)).astype(np.float32), f"w_{t}")
             for t in "qkv"]
    inits.append(numpy_helper.from_array(np.ones(heads, np.float32), "temperature"))
    inputs = ["q", "k", "v", "temperature"]
    if weights:
        inits.append(numpy_helper.from_array(np.full(weights, 0.5, np.float32), "branch_weights"))
        inputs.append("branch_weights")
    nodes = [helper.make_node("Conv", ["image", f"w_{t}"], [t]) for t in "qkv"]
    attributes = dict(num_heads=heads, mode=mode, eps=1e-12, plugin_version="1", plugin_namespace="")
    if topk:
        attributes["topk"] = topk
    nodes.append(helper.make_node("TransposedAttention", inputs, ["y"], name="attention", domain="edge_derain",
                                  **attributes))
    graph = helper.make_graph(nodes, "attention", [helper.make_tensor_value_info("image", TensorProto.FLOAT,
                                                                                 [1, 3, "h", "w"])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, channels, "h", "w"])],
                              initializer=inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("edge_derain", 1)])


@pytest.mark.parametrize("mode,topk,weights", [("dense", [], None), ("sparse", [3], None), ("dual", [5], 2),
                                               ("multi", [4, 6], 2)])
def test_every_mode_builds(rtx, tmp_path, mode, topk, weights):
    path = tmp_path / f"{mode}.onnx"
    onnx.save(_attention_graph(mode, topk, weights=weights), str(path))
    built = build_engine(path, tmp_path / f"{mode}.engine", precision="fp32", shapes=PROFILE, target="sm86",
                         flavour=rtx)
    assert [p["plugin"] for p in built.plugins] == ["TransposedAttention"]


@pytest.mark.parametrize("mode,topk,weights,problem", [
    ("dual", [5, 6], 2, "mode 'dual' takes exactly one topk values"),
    ("dual", [5], None, "mode 'dual' takes 5 inputs"),
    ("sparse", [9], None, r"topk \[9\] exceeds the 8 channels per head"),
])
def test_bad_attention_node_fails_in_one_line(rtx, tmp_path, mode, topk, weights, problem):
    path = tmp_path / "bad.onnx"
    onnx.save(_attention_graph(mode, topk, weights=weights), str(path))
    with pytest.raises(OnnxParseError, match=problem) as info:
        build_engine(path, tmp_path / "bad.engine", precision="fp32", shapes=PROFILE, target="sm86", flavour=rtx)
    assert "\n" not in str(info.value)


def _field(name, data):
    return SimpleNamespace(name=name, data=data)


def test_fields_parse_and_validate():
    fields = [_field("num_heads", np.array([3], np.int32)), _field("mode", np.frombuffer(b"dual\0", np.int8)),
              _field("topk", np.array([5], np.int32)), _field("eps", np.array([1e-6], np.float32)),
              _field("plugin_version", b"1")]
    config = attention_config_from_fields(fields)
    assert (config.num_heads, config.mode, config.topk, config.num_branches) == (3, "dual", (5,), 2)
    assert config.eps == pytest.approx(1e-6) and config.needs_weights
    assert attention_config_from_fields([_field("num_heads", np.array([1], np.int32))]).mode == "dense"
    with pytest.raises(ValueError, match="no num_heads attribute"):
        attention_config_from_fields([_field("mode", b"dense")])
    with pytest.raises(ValueError, match="unknown attribute 'ratio'"):
        attention_config_from_fields([_field("num_heads", np.array([1])), _field("ratio", np.array([0.5]))])
    with pytest.raises(ValueError, match="mode 'topk' is unknown"):
        AttentionConfig(1, "topk", (2,))
    with pytest.raises(ValueError, match="mode 'multi' takes 1 or more topk values"):
        AttentionConfig(1, "multi", ())
    config = AttentionConfig(2, "multi", (3, 4))
    check_attention_runtime_shapes(config, [(1, 16, 5, 7)] * 3 + [(2,), (2,)])
    with pytest.raises(ValueError, match=r"temperature has shape \(3,\), expected \(2,\)"):
        check_attention_runtime_shapes(config, [(1, 16, 5, 7)] * 3 + [(3,), (2,)])
    with pytest.raises(ValueError, match="not divisible by num_heads=2"):
        check_attention_runtime_shapes(config, [(1, 15, 5, 7)] * 3 + [(2,), (2,)])
    with pytest.raises(ValueError, match="more than the plugin's 96"):
        check_attention_runtime_shapes(AttentionConfig(1), [(1, 128, 5, 7)] * 3 + [(1,)])


def test_plugin_round_trips_and_hands_pointers_to_kernel_lib(rtx, monkeypatch, plugin_desc):
    from edge_derain.engine import kernel_lib

    trt = rtx.module
    creator = python_plugins.register_python_plugins(trt)["TransposedAttention"]
    plugin = creator.create_plugin("att", trt.PluginFieldCollection([
        trt.PluginField("num_heads", np.array([2], np.int32), trt.PluginFieldType.INT32),
        trt.PluginField("mode", np.frombuffer(b"multi", np.int8).copy(), trt.PluginFieldType.CHAR),
        trt.PluginField("topk", np.array([3, 5], np.int32), trt.PluginFieldType.INT32)]), trt.TensorRTPhase.BUILD)
    again = creator.create_plugin("att2", plugin.clone().get_fields_to_serialize(), trt.TensorRTPhase.RUNTIME)
    assert again.config == plugin.config == AttentionConfig(2, "multi", (3, 5))

    calls = []
    monkeypatch.setattr(kernel_lib, "load_kernel_library", lambda: "loaded-lib")
    monkeypatch.setattr(kernel_lib, "launch_transposed_attention", lambda *args, **kw: calls.append((args, kw)))

    def desc(shape, dtype):
        return plugin_desc(trt, shape, dtype)

    half, single = trt.DataType.HALF, trt.DataType.FLOAT
    data = [desc((1, 16, 6, 5), half)] * 3
    inputs = data + [desc((2,), single), desc((2,), single)]
    plugin.on_shape_change(inputs, [data[0]])
    plugin.enqueue(inputs, [data[0]], [0x10, 0x20, 0x30, 0x40, 0x50], [0x60], 0x70, 0x77)
    size = kernel_lib.transposed_attention_workspace_size(1, 16, 6, 5, 2)
    assert size > 0
    assert calls == [((0x10, 0x20, 0x30, 0x40, 0x50, 0x60, 1, 0, 1, 16, 6, 5, 2, "multi", (3, 5), float(np.float32(1e-12)), 0x70, size,
                       0x77), {"lib": "loaded-lib"})]
