"""Strongly typed FP16 graphs (edge_derain.export.fp16) and their TensorRT-RTX build.

Numerics run on ONNX Runtime's CPU provider, with one caveat: it has FP16 kernels for only a few ops
(Max, Concat, Reshape, Transpose, ...). Every other FP16 node - Conv, Resize, AveragePool, Mul, the
Reduce* ops, MatMul, Softmax - runs in FP32 between casts that ORT treats as "precision free" and removes
(onnxruntime issue #11831), so an FP16 graph on ORT CPU mostly computes in FP32 and never overflows
where TensorRT would. The converted graphs are therefore checked twice: run as they are (ORT can execute
them: the I/O and the plumbing are right), and through :func:`emulate_fp16_storage`, which computes each
node in FP32 and rounds every FP16 tensor to FP16 with an explicit Cast pair (ORT keeps those) - what
TensorRT's FP16 kernels do (FP16 storage, FP32 accumulation), overflow to inf included.

Thresholds:

* efderain FP16 vs FP32: PSNR >= 48.13 dB = 20·log10(255) over the reference output's range, i.e. an
  RMS error below one 8-bit grey level: the deployed output is 8-bit, so this is the point where FP16
  becomes visible. One FP16 rounding of a tensor costs ~80 dB; ~30 rounded activations adding up in
  quadrature, amplified through the network, give the ~79 dB measured here (random weights, emulated
  storage; ~86 dB on plain ORT CPU), so the bound leaves room for trained weights with larger dynamic
  range while a real defect (a wrong cast, a weight in the wrong dtype, an overflow) lands far below.
* the reduction chains at 1088x1920: the sums of squares (~2e6 and ~5e9) exceed FP16's 65504, so the
  automatic conversion must match the FP32 graph to FP16 precision (1e-2 relative) while the naive one
  (every node FP16) must be visibly wrong - that is what makes the test able to fail.
"""
from __future__ import annotations

import json
import logging
import math

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")
torch = pytest.importorskip("torch")
from onnx import TensorProto, helper, numpy_helper  # noqa: E402

from edge_derain.export import export_model, make_portable  # noqa: E402
from edge_derain.export.fp16 import (FP32_NODES_KEY, PRECISION_KEY, SMALL_REDUCTION, convert_to_fp16,  # noqa: E402
                                     fp32_nodes_of, fragile_nodes)

FLOAT, FLOAT16 = TensorProto.FLOAT, TensorProto.FLOAT16
EIGHT_BIT_PSNR = 20 * math.log10(255)  # RMS error of one 8-bit grey level
H1080, W1080 = 1088, 1920  # 1080p padded to a multiple of 16


def session(model: onnx.ModelProto):
    options = ort.SessionOptions()
    options.intra_op_num_threads = 2
    return ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])


def run(model: onnx.ModelProto, **feeds) -> np.ndarray:
    return session(model).run(None, feeds)[0]


def psnr_over_range(test: np.ndarray, reference: np.ndarray) -> float:
    mse = float(np.mean((test.astype(np.float64) - reference) ** 2))
    peak = float(reference.max() - reference.min())
    return math.inf if mse == 0 else 10 * math.log10(peak ** 2 / mse)


def natural_image(rng: np.random.Generator, n: int, h: int, w: int) -> np.ndarray:
    """Smooth colour gradients, hard-edged patches and fine noise in [0, 1]: the statistics that matter
    (large flat areas, sharp edges, texture) without needing image files."""
    yy, xx = np.mgrid[0:h, 0:w] / max(h, w)
    images = np.zeros((n, 3, h, w))
    for image in images:
        for _ in range(12):
            fy, fx = rng.normal(0, 6, 2)
            image += rng.uniform(0.02, 0.15, (3, 1, 1)) * np.cos(2 * np.pi * (fy * yy + fx * xx) + rng.uniform(0, 6.3))
        for _ in range(8):
            y0, x0 = rng.integers(0, h), rng.integers(0, w)
            image[:, y0:y0 + rng.integers(4, h // 2), x0:x0 + rng.integers(4, w // 2)] += rng.uniform(-0.3, 0.3, (3, 1, 1))
        image += rng.normal(0, 0.02, image.shape)
        image -= image.min()
        image /= image.max()
    return images.astype(np.float32)


def emulate_fp16_storage(model: onnx.ModelProto) -> onnx.ModelProto:
    """``model`` (FP16 graph, FP32 I/O) computed in FP32 with every FP16 tensor rounded through FP16."""
    emulated = onnx.shape_inference.infer_shapes(model)
    graph = emulated.graph
    types = {v.name: v.type.tensor_type.elem_type for v in [*graph.input, *graph.output, *graph.value_info]}
    assert all(types[v.name] != FLOAT16 for v in graph.input), "FP32 inputs expected"
    for tensor in graph.initializer:
        if tensor.data_type == FLOAT16:
            tensor.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(tensor).astype(np.float32), tensor.name))
    nodes = []
    for node in graph.node:
        rounding = []
        for index, name in enumerate(node.output):
            if types.get(name) != FLOAT16:
                continue
            node.output[index] = f"{name}/computed"
            if node.op_type == "Cast":  # already produces FP16: only widen it again
                rounding.append(helper.make_node("Cast", [f"{name}/computed"], [name], to=FLOAT))
            else:
                rounding += [helper.make_node("Cast", [f"{name}/computed"], [f"{name}/fp16"], to=FLOAT16),
                             helper.make_node("Cast", [f"{name}/fp16"], [name], to=FLOAT)]
        for attr in node.attribute:
            if attr.name == "value" and attr.t.data_type == FLOAT16:  # Constant nodes
                attr.t.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(attr.t).astype(np.float32), attr.t.name))
        nodes += [node, *rounding]
    del graph.node[:]
    graph.node.extend(nodes)
    del graph.value_info[:]
    return emulated


def float_types(model: onnx.ModelProto) -> dict[str, int]:
    """Element type of every float tensor in a (shape-inferred) model."""
    graph = model.graph
    types = {v.name: v.type.tensor_type.elem_type for v in [*graph.input, *graph.output, *graph.value_info]}
    types.update({t.name: t.data_type for t in graph.initializer})
    return {name: t for name, t in types.items() if t in (FLOAT, FLOAT16)}


# ------------------------------------------------------------------------------------------------
# EfficientDeRain


@pytest.fixture(scope="module")
def efderain(tmp_path_factory):
    """The exported plugin and portable graphs of efderain width 0.25.

    Shipped weights when present; otherwise random weights with PyTorch's default conv init: the
    model's own init (Xavier, gain 0.02) shrinks activations layer by layer until the output is nearly
    constant, which would make any FP16 comparison trivially pass.
    """
    from edge_derain.checkpoint import load_model
    from edge_derain.models import create_model

    try:
        model = load_model("efderain_w025")
    except FileNotFoundError:
        torch.manual_seed(0)
        model = create_model("efderain", width=0.25)
        for module in model.modules():
            if isinstance(module, torch.nn.Conv2d):
                module.reset_parameters()
    result = export_model(model.eval(), tmp_path_factory.mktemp("fp16") / "efderain.onnx")
    return model, result


def test_efderain_fp16_graph_structure(efderain):
    _, exported = efderain
    fp32 = onnx.load(str(exported.portable_path))
    fp16 = convert_to_fp16(fp32)
    onnx.checker.check_model(fp16, full_check=True)
    graph = fp16.graph
    assert [(v.name, v.type.tensor_type.elem_type) for v in graph.input] == [("image", FLOAT)]
    assert [(v.name, v.type.tensor_type.elem_type) for v in graph.output] == [("derained", FLOAT)]
    casts = [n for n in graph.node if n.op_type == "Cast"]
    assert sorted((list(n.input), list(n.output)) for n in casts) == [
        (["derained_fp16"], ["derained"]), (["image"], ["image_fp16"])]
    assert fp32_nodes_of(fp16) == {}  # convs, pools, resizes and the 9-tap ReduceSums all run in FP16
    metadata = {p.key: p.value for p in fp16.metadata_props}
    assert metadata[PRECISION_KEY] == "fp16" and metadata["input_multiple"] == "16"
    # Every weight is FP16; the only FP32 constants are Resize scales, which ONNX types as float32.
    consumers = {name: (n.op_type, i) for n in graph.node for i, name in enumerate(n.input)}
    fp32_constants = [t.name for t in graph.initializer if t.data_type == FLOAT]
    assert fp32_constants and all(consumers[name] == ("Resize", 2) for name in fp32_constants)
    assert sum(t.data_type == FLOAT16 for t in graph.initializer) >= 30
    # every activation between the two casts is FP16
    activations = {k: v for k, v in float_types(fp16).items() if k not in ("image", "derained", *fp32_constants)}
    assert activations and set(activations.values()) == {FLOAT16}
    assert fp32.graph.initializer[0].data_type == FLOAT  # the input model is left alone


def test_efderain_fp16_matches_fp32_on_natural_images(efderain):
    model, exported = efderain
    fp32 = onnx.load(str(exported.portable_path))
    fp16 = convert_to_fp16(fp32)
    s32, s16, emulated = session(fp32), session(fp16), session(emulate_fp16_storage(fp16))
    rng = np.random.default_rng(0)
    for n, h, w in [(1, 128, 192), (2, 96, 64)]:
        images = natural_image(rng, n, h, w)
        reference = s32.run(None, {"image": images})[0]
        with torch.no_grad():
            np.testing.assert_allclose(reference, model.core(torch.from_numpy(images))[0].numpy(), atol=1e-5)
        for runner in (s16, emulated):
            out = runner.run(None, {"image": images})[0]
            assert out.dtype == np.float32 and np.isfinite(out).all()
            if runner is emulated:
                # FP16 activations really were used. (Plain ORT CPU computes FP16 nodes in FP32, and the
                # shipped weights are stored in FP16, so its output may equal the FP32 graph's.)
                assert not np.array_equal(out, reference)
            assert psnr_over_range(out, reference) >= EIGHT_BIT_PSNR, (n, h, w, psnr_over_range(out, reference))


@pytest.mark.slow
def test_efderain_fp16_at_1080p_is_finite(efderain):
    """~8 s on ORT CPU: every activation of the padded 1080p frame rounded through FP16."""
    _, exported = efderain
    image = natural_image(np.random.default_rng(1), 1, H1080, W1080)
    out = run(emulate_fp16_storage(convert_to_fp16(onnx.load(str(exported.portable_path)))), image=image)
    assert out.shape == (1, 3, H1080, W1080) and np.isfinite(out).all()


def test_fp16_plugin_graph_builds_a_tensorrt_rtx_engine_with_half_plugin(efderain, tmp_path):
    from edge_derain.engine.builder import ShapeProfile, build_engine
    from edge_derain.engine.flavour import TensorRTUnavailable, detect_tensorrt

    try:
        flavour = detect_tensorrt()
    except TensorRTUnavailable as exc:
        pytest.skip(str(exc))
    if flavour.has_precision_flags or not flavour.supports_targets:
        pytest.skip(f"{flavour.label} is not a strongly typed ahead-of-time builder (TensorRT-RTX)")
    _, exported = efderain
    profile = ShapeProfile((1, 3, 64, 64), (1, 3, 256, 256), (1, 3, H1080, W1080))
    # an FP32 ONNX: build_engine converts it itself on strongly typed flavours
    result = build_engine(exported.plugin_path, tmp_path / "ef16.engine", "fp16", profile, "sm86")
    assert result.strongly_typed and result.fp32_nodes == {} and result.onnx_metadata["input_multiple"] == "16"
    (plugin_layer,) = result.plugin_layers
    assert plugin_layer.plugin == "DilationFilter" and result.plugins[0]["implementation"] == "python"
    assert plugin_layer.input_dtypes == ("Half", "Half") and plugin_layer.output_dtypes == ("Half",)
    assert "Half" in {d for layer in result.layers if not layer.plugin for d in layer.datatypes}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ef16.engine"]  # the converted ONNX was removed


# ------------------------------------------------------------------------------------------------
# FP16-fragile nodes


def attention_graph(channels: int = 4) -> onnx.ModelProto:
    """The plugin-free transposed attention of spec §2.5 (ReduceL2 -> Max(eps) -> Div -> MatMul -> Softmax
    -> MatMul), produced from a TransposedAttention node by the exporter's own portable rewrite."""
    dims = ["N", channels, "H", "W"]
    node = helper.make_node("TransposedAttention", ["q", "k", "v", "temperature"], ["o"], name="attention",
                            domain="edge_derain", num_heads=1, mode="dense", eps=1e-12, plugin_version="1",
                            plugin_namespace="")
    graph = helper.make_graph([node], "attention",
                              [helper.make_tensor_value_info(n, FLOAT, dims) for n in "qkv"],
                              [helper.make_tensor_value_info("o", FLOAT, dims)],
                              [numpy_helper.from_array(np.array([8.0], np.float32), "temperature")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("edge_derain", 1)])
    model.ir_version = 8
    return make_portable(model)


def test_reduce_l2_attention_chain_stays_finite_at_1080p_only_with_fp32_reductions():
    fp32 = attention_graph()
    auto = convert_to_fp16(fp32)
    kept = fp32_nodes_of(auto)
    kept_ops = sorted(n.op_type for n in auto.graph.node if n.name in kept)
    # both norms with their eps clamp and division, and the softmax
    assert kept_ops == ["Div", "Div", "Max", "Max", "ReduceL2", "ReduceL2", "Softmax"]
    assert all("MatMul" not in name for name in kept)  # the GEMMs on normalised values run in FP16

    rng = np.random.default_rng(0)
    # q and k mix the same 4 sources, so their channels correlate and the attention is far from uniform;
    # un-normalised DW-conv outputs: |q| ~ 50, so ||q|| over H·W ~ 50·sqrt(1088·1920) ~ 7e4 > 65504
    sources = rng.standard_normal((4, H1080 * W1080), dtype=np.float32)

    def mixed():
        mix = rng.uniform(-1, 1, (4, 4)).astype(np.float32)
        mix /= np.linalg.norm(mix, axis=1, keepdims=True)  # unit-variance channels
        return (50 * mix @ sources).reshape(1, 4, H1080, W1080)

    q, k = mixed(), mixed()
    v = rng.standard_normal((1, 4, H1080, W1080), dtype=np.float32)
    assert np.sqrt((q.astype(np.float64) ** 2).sum(axis=(2, 3))).min() > np.finfo(np.float16).max
    reference = run(fp32, q=q, k=k, v=v)
    for graph in (auto, emulate_fp16_storage(auto)):
        out = run(graph, q=q, k=k, v=v)
        assert np.isfinite(out).all()
        np.testing.assert_allclose(out, reference, rtol=1e-2, atol=1e-2 * np.abs(reference).max())

    # the same graph with every node FP16: the norms overflow to inf, q and k collapse to 0 and the
    # attention degenerates to a uniform average
    naive = run(emulate_fp16_storage(convert_to_fp16(fp32, keep_fp32=())), q=q, k=k, v=v)
    assert not np.allclose(naive, reference, rtol=0.1, atol=0.1 * np.abs(reference).max())


def test_sum_of_squares_chain_overflows_only_when_naive():
    """x / sqrt(sum_{H,W} x^2) with x ~ 1: the sum, ~2e6, is 30x FP16's largest value."""
    nodes = [helper.make_node("Pow", ["x", "two"], ["x2"], name="square"),
             helper.make_node("ReduceSum", ["x2", "axes"], ["s"], name="sum", keepdims=1),
             helper.make_node("Sqrt", ["s"], ["norm"], name="sqrt"),
             helper.make_node("Div", ["x", "norm"], ["y"], name="normalise"),
             helper.make_node("Relu", ["y"], ["out"], name="relu")]
    graph = helper.make_graph(nodes, "l2", [helper.make_tensor_value_info("x", FLOAT, ["N", 2, "H", "W"])],
                              [helper.make_tensor_value_info("out", FLOAT, ["N", 2, "H", "W"])],
                              [numpy_helper.from_array(np.array(2.0, np.float32), "two"),
                               numpy_helper.from_array(np.array([2, 3], np.int64), "axes")])
    fp32 = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    auto = convert_to_fp16(fp32)
    assert set(fp32_nodes_of(auto)) == {"square", "sum", "sqrt", "normalise"}  # Relu runs in FP16

    x = np.random.default_rng(1).uniform(0.5, 1.5, (1, 2, H1080, W1080)).astype(np.float32)
    reference = run(fp32, x=x)
    for graph in (auto, emulate_fp16_storage(auto)):
        out = run(graph, x=x)
        assert np.isfinite(out).all()
        np.testing.assert_allclose(out, reference, rtol=2e-3)
    naive = run(emulate_fp16_storage(convert_to_fp16(fp32, keep_fp32=())), x=x)
    assert np.all(naive == 0)  # x / inf: the overflowed norm wipes the output out


class _Block(torch.nn.Module):
    """Restormer channel LayerNorm, a spatial L2 norm, softmax attention over channels, a resize."""

    def __init__(self, channels: int = 8):
        super().__init__()
        self.weight = torch.nn.Parameter(torch.rand(channels) + 0.5)
        self.bias = torch.nn.Parameter(torch.rand(channels))
        self.conv = torch.nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x):
        mu = x.mean(1, keepdim=True)
        var = x.var(1, keepdim=True, unbiased=False)
        y = (x - mu) / torch.sqrt(var + 1e-5) * self.weight.view(1, -1, 1, 1) + self.bias.view(1, -1, 1, 1)
        y = self.conv(y)
        flat = y.flatten(2)
        attention = torch.softmax(flat @ flat.transpose(1, 2) / flat.shape[-1], dim=-1)
        y = (attention @ flat).view_as(y)
        y = torch.nn.functional.interpolate(y, scale_factor=2.0, mode="bilinear", align_corners=False)
        return y + x.pow(2).sum(dim=(2, 3), keepdim=True).sqrt().mean(dim=1, keepdim=True)


def _export_block() -> onnx.ModelProto:
    import io
    import warnings

    torch.manual_seed(0)
    buffer = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(_Block().eval(), (torch.rand(1, 8, 16, 16),), buffer, dynamo=False, opset_version=17,
                          input_names=["x"], output_names=["y"], dynamic_axes={"x": {0: "n", 2: "h", 3: "w"}})
    return onnx.load_from_string(buffer.getvalue())


def test_torch_exported_norms_and_softmax_stay_fp32():
    fp32 = _export_block()
    by_name = {n.name: n for n in fp32.graph.node}
    reasons = fragile_nodes(fp32)
    kept = {by_name[name].op_type for name in reasons}
    assert {"ReduceMean", "Sub", "Mul", "Sqrt", "Div", "Softmax", "Pow", "ReduceSum"} <= kept
    assert not kept & {"Conv", "Resize", "MatMul"}
    norm_parts = sorted(by_name[name].op_type for name, why in reasons.items() if why == "layer-norm statistics")
    assert norm_parts == ["Mul", "ReduceMean", "ReduceMean", "ReduceMean", "Sub", "Sub"]  # mean, var, centring
    # the affine part of the layer norm runs in FP16 again
    affine = [n for n in fp32.graph.node if n.op_type in ("Mul", "Add") and any(i in {t.name for t in fp32.graph.initializer}
                                                                              for i in n.input)]
    assert affine and not {n.name for n in affine} & set(reasons)

    fp16 = convert_to_fp16(fp32)
    assert json.loads({p.key: p.value for p in fp16.metadata_props}[FP32_NODES_KEY]) == reasons
    x = natural_image(np.random.default_rng(2), 1, 24, 32)
    x = np.concatenate([x, x[:, ::-1], 1 - x[:, :2]], axis=1)  # 8 channels
    reference = run(fp32, x=x)
    for graph in (fp16, emulate_fp16_storage(fp16)):
        out = run(graph, x=x)
        assert out.shape == (1, 8, 48, 64) and np.isfinite(out).all()
        assert psnr_over_range(out, reference) >= EIGHT_BIT_PSNR


def test_small_reductions_run_in_fp16_and_large_ones_in_fp32():
    nodes = [helper.make_node("ReduceSum", ["x", "taps"], ["s"], name="taps", keepdims=1),
             helper.make_node("ReduceMean", ["x"], ["m"], name="spatial", axes=[2, 3], keepdims=1),
             helper.make_node("Add", ["s", "m"], ["y"], name="add")]
    graph = helper.make_graph(nodes, "r", [helper.make_tensor_value_info("x", FLOAT, [1, SMALL_REDUCTION, "H", "W"])],
                              [helper.make_tensor_value_info("y", FLOAT, [1, 1, "H", "W"])],
                              [numpy_helper.from_array(np.array([1], np.int64), "taps")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    assert fragile_nodes(model) == {"spatial": "ReduceMean over a dynamic number of elements"}


def test_constants_shared_by_fp32_and_fp16_nodes_get_an_fp16_copy(caplog):
    scale = np.array([3.0, 1e5, -np.inf], np.float32).reshape(1, 3, 1, 1)
    nodes = [helper.make_node("Mul", ["x", "s"], ["a"], name="mul_fp32"),
             helper.make_node("Add", ["a", "s"], ["b"], name="add_fp16"),
             helper.make_node("Relu", ["b"], ["y"], name="relu")]
    graph = helper.make_graph(nodes, "c", [helper.make_tensor_value_info("x", FLOAT, [1, 3, 4, 4])],
                              [helper.make_tensor_value_info("y", FLOAT, [1, 3, 4, 4])],
                              [numpy_helper.from_array(scale, "s")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    with caplog.at_level(logging.WARNING, logger="edge_derain.export.fp16"):
        fp16 = convert_to_fp16(model, keep_fp32=["mul_fp32"])
    assert "1 value(s) beyond the FP16 range clamped" in caplog.text
    initializers = {t.name: numpy_helper.to_array(t) for t in fp16.graph.initializer}
    assert initializers["s"].dtype == np.float32 and initializers["s_fp16"].dtype == np.float16
    np.testing.assert_array_equal(initializers["s_fp16"].ravel(), [3.0, 65504.0, -np.inf])  # inf survives
    by_name = {n.name: n for n in fp16.graph.node}
    assert list(by_name["mul_fp32"].input) == ["x", "s"] and list(by_name["add_fp16"].input) == ["a_fp16", "s_fp16"]
    assert fp32_nodes_of(fp16) == {"mul_fp32": "requested"}
    x = np.random.default_rng(3).random((1, 3, 4, 4), dtype=np.float32)
    out = run(fp16, x=x)
    np.testing.assert_allclose(out[0, 0], 3 * x[0, 0] + 3, rtol=1e-3)  # channel 0: x * 3 + 3


def test_fp16_io_and_bad_arguments():
    graph = helper.make_graph([helper.make_node("Relu", ["x"], ["y"], name="relu")], "g",
                              [helper.make_tensor_value_info("x", FLOAT, [1, 4])],
                              [helper.make_tensor_value_info("y", FLOAT, [1, 4])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    fp16_io = convert_to_fp16(model, keep_io_fp32=False)
    assert fp16_io.graph.input[0].type.tensor_type.elem_type == FLOAT16
    assert [n.op_type for n in fp16_io.graph.node] == ["Relu"]  # no casts needed
    np.testing.assert_array_equal(run(fp16_io, x=np.array([[-1, 2, -3, 4]], np.float16)), [[0, 2, 0, 4]])

    with pytest.raises(ValueError, match="already carries FP16 tensors"):
        convert_to_fp16(fp16_io)
    with pytest.raises(ValueError, match="keep_fp32 names node"):
        convert_to_fp16(model, keep_fp32=["nope"])
    with pytest.raises(ValueError, match="keep_fp32 must be 'auto'"):
        convert_to_fp16(model, keep_fp32="all")
    with pytest.raises(ValueError, match="expected an onnx.ModelProto"):
        convert_to_fp16("model.onnx")
