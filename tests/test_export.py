"""ONNX export: plugin graph structure, portable rewrite numerics on ONNX Runtime, ORT backend errors."""
from __future__ import annotations

import numpy as np
import onnx
import pytest
import torch
from torch import nn

pytest.importorskip("onnxruntime")
pytest.importorskip("onnx_graphsurgeon")

import edge_derain.ops as ops  # noqa: E402
from edge_derain.backends import TorchBackend  # noqa: E402
from edge_derain.backends.ort_backend import OnnxRuntimeBackend, resolve_providers  # noqa: E402
from edge_derain.compare import compare_backends  # noqa: E402
from edge_derain.export import export_model, list_custom_nodes, make_portable, plugin_and_portable_paths  # noqa: E402
from edge_derain.export.onnx_export import trace_to_onnx  # noqa: E402
from edge_derain.models import DerainNet, create_model  # noqa: E402
from edge_derain.ops.onnx import DOMAIN, export_dilation_filter  # noqa: E402

FP32_REL_TOL = 1e-4


def _rel_err(out: np.ndarray, ref: np.ndarray) -> float:
    return float(np.abs(out - ref).max() / np.abs(ref).max())


def _ort_session(model: onnx.ModelProto):
    import onnxruntime as ort

    return ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])


@pytest.fixture(scope="module")
def efderain_export(tmp_path_factory):
    torch.manual_seed(0)
    model = create_model("efderain", width=0.25).eval()
    result = export_model(model, tmp_path_factory.mktemp("export") / "efderain_w025")
    return model, result


# ---------------------------------------------------------------------------------------- EfficientDeRain


@pytest.mark.parametrize("batch", [1, 2])
def test_portable_graph_matches_pytorch_on_onnxruntime(efderain_export, batch):
    model, result = efderain_export
    ort_backend = OnnxRuntimeBackend(result.portable_path, providers="auto")
    torch_backend = TorchBackend(model)
    rng = np.random.default_rng(batch)
    # Multiples of 16 go straight through; 37x53 exercises Backend.run's reflect pad + crop.
    for h, w in [(32, 48), (64, 64), (48, 80), (37, 53)]:
        x = rng.random((batch, 3, h, w), dtype=np.float32)
        out, ref = ort_backend.run(x), torch_backend.run(x)
        assert out.shape == ref.shape == (batch, 3, h, w)
        assert _rel_err(out, ref) <= FP32_REL_TOL, (h, w)
    report = compare_backends(ort_backend, torch_backend, sizes=[(45, 70)], batch=batch, atol=1e-5, rtol=1e-4)
    assert report["passed"], report


def test_plugin_graph_structure(efderain_export):
    _, result = efderain_export
    assert result.plugin_path.name == "efderain_w025.onnx"
    assert result.portable_path.name == "efderain_w025.portable.onnx"
    assert result.custom_nodes == "1 DilationFilter"
    plugin = onnx.load(str(result.plugin_path))
    portable = onnx.load(str(result.portable_path))
    for graph in (plugin, portable):
        onnx.checker.check_model(graph)
        assert [i.name for i in graph.graph.input] == ["image"]
        assert [o.name for o in graph.graph.output] == ["derained"]
        for value in (graph.graph.input[0], graph.graph.output[0]):
            dims = value.type.tensor_type.shape.dim
            assert [d.dim_param or d.dim_value for d in dims] == ["batch", 3, "height", "width"]

    (node,) = list_custom_nodes(plugin)
    assert (node.op_type, node.domain) == ("DilationFilter", DOMAIN)
    attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
    assert attrs == {"dilations": [1, 2, 3, 4], "plugin_version": b"1", "plugin_namespace": b""}
    assert node.input[0] == "image"  # the filter runs on the network input itself (spec §1.4)
    assert {o.domain: o.version for o in plugin.opset_import} == {"": 17, DOMAIN: 1}
    # The custom node's output is typed so shape inference continues through the fusion conv.
    typed = {v.name: v for v in plugin.graph.value_info}
    dims = typed[node.output[0]].type.tensor_type.shape.dim
    assert len(dims) == 4 and dims[1].dim_value == 12

    assert list_custom_nodes(portable) == []
    assert DOMAIN not in {o.domain for o in portable.opset_import}
    convs = [n for n in portable.graph.node if n.op_type == "Conv" and n.input[0] == "image"
             and any(a.name == "group" and a.i == 3 for a in n.attribute)]
    assert sorted(onnx.helper.get_attribute_value(next(a for a in n.attribute if a.name == "dilations"))[0]
                  for n in convs) == [1, 2, 3, 4]

    for graph, kind in ((plugin, "plugin"), (portable, "portable")):
        meta = {p.key: p.value for p in graph.metadata_props}
        assert meta["graph_kind"] == kind
        assert meta["model"] == "efderain" and meta["input_multiple"] == "16" and meta["opset"] == "17"
        assert '"width": 0.25' in meta["config"] and meta["edge_derain_version"]


def test_custom_dilations_and_opset18(tmp_path):
    torch.manual_seed(1)
    model = create_model("efderain", width=0.125, dilations=(1, 3)).eval()
    result = export_model(model, tmp_path / "narrow.onnx", opset=18, sample_size=(32, 48))
    (node,) = list_custom_nodes(onnx.load(str(result.plugin_path)))
    assert list(node.attribute[0].ints) == [1, 3]
    x = np.random.default_rng(3).random((1, 3, 48, 32), dtype=np.float32)
    out = OnnxRuntimeBackend(result.portable_path).run(x)
    assert _rel_err(out, TorchBackend(model).run(x)) <= FP32_REL_TOL


class _TwoOutputNet(DerainNet):
    """A DerainNet whose core also returns a half-resolution training output."""

    input_multiple = 4

    def __init__(self):
        super().__init__()
        self.body = nn.Conv2d(3, 3, 3, padding=1)
        self.aux = nn.Conv2d(3, 3, 1)

    def core(self, x):
        out = self.body(x)
        return out, self.aux(nn.functional.avg_pool2d(out, 2))


def test_only_the_first_core_output_is_exported(tmp_path):
    model = _TwoOutputNet().eval()
    result = export_model(model, tmp_path / "two", portable=False)
    assert result.portable_path is None and result.custom_nodes == ""
    assert not plugin_and_portable_paths(tmp_path / "two")[1].exists()
    graph = onnx.load(str(result.plugin_path))
    assert [o.name for o in graph.graph.output] == ["derained"]
    assert "AveragePool" not in {n.op_type for n in graph.graph.node}
    x = np.random.default_rng(0).random((1, 3, 12, 20), dtype=np.float32)
    out = _ort_session(graph).run(None, {"image": x})[0]
    ref = model.core(torch.from_numpy(x))[0].detach().numpy()
    assert _rel_err(out, ref) <= FP32_REL_TOL


def test_export_argument_errors(tmp_path):
    model = create_model("efderain", width=0.125)
    with pytest.raises(ValueError, match="opset must be an int >= 17"):
        export_model(model, tmp_path / "m", opset=13)
    with pytest.raises(ValueError, match="sample_size must be positive multiples of 16"):
        export_model(model, tmp_path / "m", sample_size=(30, 64))
    with pytest.raises(ValueError, match="expected a DerainNet"):
        export_model(nn.Conv2d(3, 3, 1), tmp_path / "m")
    assert plugin_and_portable_paths("a/b.portable.onnx") == plugin_and_portable_paths("a/b")


# ----------------------------------------------------------------------------- standalone custom nodes


class _FilterOnly(nn.Module):
    def __init__(self, dilations):
        super().__init__()
        self.dilations = dilations

    def forward(self, image, kernels):
        return ops.dilation_filter(image, kernels, self.dilations)


@pytest.mark.parametrize("dilations", [(1, 2, 3, 4), (2, 5)])
def test_dilation_filter_rewrite_matches_op(dilations):
    gen = torch.Generator().manual_seed(0)
    sample = (torch.rand(1, 3, 16, 16, generator=gen), torch.randn(1, 27, 16, 16, generator=gen))
    plugin = trace_to_onnx(_FilterOnly(dilations), sample, ["image", "kernels"], ["filtered"])
    (node,) = list_custom_nodes(plugin)
    assert node.op_type == "DilationFilter" and list(node.input) == ["image", "kernels"]
    portable = make_portable(plugin)
    onnx.checker.check_model(portable)
    assert {n.op_type for n in portable.graph.node} == {"Conv", "Mul", "Shape", "Concat", "Reshape", "ReduceSum"}
    session = _ort_session(portable)
    for n, h, w in [(1, 16, 16), (2, 13, 17), (1, 9, 31)]:  # odd sizes: the graph is fully dynamic
        image = torch.rand(n, 3, h, w, generator=gen)
        kernels = torch.randn(n, 27, h, w, generator=gen)
        out = session.run(None, {"image": image.numpy(), "kernels": kernels.numpy()})[0]
        ref = ops.dilation_filter(image, kernels, dilations).numpy()
        assert out.shape == (n, 3 * len(dilations), h, w)
        assert _rel_err(out, ref) <= FP32_REL_TOL


class _Attention(nn.Module):
    """Projects x to q, k, v and calls the public op, like an MDTA / TKSA / DDSA block."""

    def __init__(self, channels, heads, mode, topk, weights, chunk, temperature_shape):
        super().__init__()
        self.heads, self.mode, self.topk, self.chunk = heads, mode, topk, chunk
        self.qkv = nn.Conv2d(channels, 3 * channels, 1)
        self.temperature = nn.Parameter(torch.rand(temperature_shape) + 0.5)
        self.branch_weights = None if weights is None else nn.Parameter(torch.rand(weights) + 0.1)

    def forward(self, x):
        qkv = self.qkv(x)
        if self.chunk:
            q, k, v = qkv.chunk(3, dim=1)
        else:
            c = x.shape[1]
            q, k, v = qkv[:, :c], qkv[:, c:2 * c], qkv[:, 2 * c:]
        return ops.transposed_attention(q, k, v, self.temperature, self.heads, self.mode, self.topk,
                                        self.branch_weights)


def _attention_case(mode, heads, channels=8):
    per_head = channels // heads
    if mode == "dense":
        return None, None
    if mode == "sparse":
        return ops.topk_from_ratios(per_head, [0.6]), 1
    if mode == "dual":
        return ops.topk_from_ratios(per_head, [0.7]), 2
    topk = ops.topk_from_ratios(per_head, [1 / 2, 2 / 3, 3 / 4, 4 / 5])
    return topk, len(topk)


@pytest.mark.parametrize("heads", [1, 2])
@pytest.mark.parametrize("mode", ["dense", "sparse", "dual", "multi"])
def test_transposed_attention_rewrite_matches_op(mode, heads):
    torch.manual_seed(10 * heads + len(mode))
    topk, weights = _attention_case(mode, heads)
    # Alternate the two temperature layouts and the two ways blocks split q, k, v.
    module = _Attention(8, heads, mode, topk, weights, chunk=heads == 2,
                        temperature_shape=(heads, 1, 1) if mode in ("dense", "dual") else (heads,)).eval()
    plugin = trace_to_onnx(module, (torch.rand(1, 8, 8, 12),), ["x"], ["out"])
    (node,) = list_custom_nodes(plugin)
    attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
    assert node.op_type == "TransposedAttention" and node.domain == DOMAIN
    assert attrs["num_heads"] == heads and attrs["mode"] == mode.encode()
    assert attrs["plugin_version"] == b"1" and attrs["plugin_namespace"] == b""
    assert attrs.get("topk", []) == (topk or [])
    assert len(node.input) == (5 if weights else 4)
    initializers = {t.name: t for t in plugin.graph.initializer}
    assert list(initializers[node.input[3]].dims) == [heads]  # temperature as the plugin's (h,)

    portable = make_portable(plugin)
    onnx.checker.check_model(portable)
    assert list_custom_nodes(portable) == []
    ops_used = {n.op_type for n in portable.graph.node}
    assert {"ReduceL2", "MatMul", "Softmax"} <= ops_used
    assert ("TopK" in ops_used) == (mode != "dense")
    session = _ort_session(portable)
    for n, h, w in [(1, 8, 12), (2, 5, 7)]:
        x = torch.rand(n, 8, h, w)
        with torch.no_grad():
            ref = module(x).numpy()
        out = session.run(None, {"x": x.numpy()})[0]
        assert _rel_err(out, ref) <= FP32_REL_TOL, (n, h, w)


def test_make_portable_rejects_unknown_custom_op():
    node = onnx.helper.make_node("Mystery", ["x"], ["y"], domain=DOMAIN)
    graph = onnx.helper.make_graph([node], "g", [onnx.helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [1])],
                                   [onnx.helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [1])])
    model = onnx.helper.make_model(graph, opset_imports=[onnx.helper.make_opsetid("", 17),
                                                         onnx.helper.make_opsetid(DOMAIN, 1)])
    with pytest.raises(ValueError, match="no portable rewrite for custom op.*Mystery"):
        make_portable(model)


@pytest.mark.parametrize("attribute, value, problem", [
    ("mode", b"bogus", "mode 'bogus' is not one of"),
    ("topk", [9], r"topk=\[9\] is outside \[1, 4\]"),
    ("num_heads", 3, "num_heads=3 does not divide the 8 channels"),
])
def test_make_portable_rejects_inconsistent_attention_node(attribute, value, problem):
    module = _Attention(8, 2, "sparse", [2], None, chunk=False, temperature_shape=(2,)).eval()
    plugin = trace_to_onnx(module, (torch.rand(1, 8, 4, 4),), ["x"], ["out"])
    (node,) = list_custom_nodes(plugin)
    attr = next(a for a in node.attribute if a.name == attribute)
    attr.CopyFrom(onnx.helper.make_attribute(attribute, value))
    with pytest.raises(ValueError, match=f"cannot rewrite TransposedAttention node .*{problem}"):
        make_portable(plugin)


def test_export_path_refuses_reentrant_dispatch():
    from edge_derain.ops.onnx import _running_forward

    with _running_forward(), pytest.raises(RuntimeError, match="guard the dispatch with"):
        export_dilation_filter(torch.rand(1, 3, 4, 4), torch.rand(1, 27, 4, 4))


# --------------------------------------------------------------------------------------- ORT backend


def test_ort_backend_refuses_plugin_graph(efderain_export):
    _, result = efderain_export
    with pytest.raises(ValueError) as info:
        OnnxRuntimeBackend(result.plugin_path)
    message = str(info.value)
    assert "\n" not in message
    assert "contains 1 DilationFilter custom nodes that ONNX Runtime cannot run" in message
    assert message.endswith(f"use the portable graph {result.portable_path}")


def test_ort_backend_input_checks(efderain_export, tmp_path):
    _, result = efderain_export
    backend = OnnxRuntimeBackend(result.portable_path, providers=["CPUExecutionProvider"], threads=1)
    assert backend.input_multiple == 16 and backend.precision == "fp32"
    with pytest.raises(ValueError, match=r"expected an \(N, 3, H, W\)"):
        backend.run(np.random.rand(1, 4, 32, 32).astype(np.float32))
    with pytest.raises(ValueError, match="multiples of 16, got 30x32; call run"):
        backend.infer(np.random.rand(1, 3, 30, 32).astype(np.float32))
    with pytest.raises(FileNotFoundError, match="does not exist"):
        OnnxRuntimeBackend(tmp_path / "missing.onnx")
    with pytest.raises(ValueError, match="threads must be a positive int"):
        OnnxRuntimeBackend(result.portable_path, threads=0)


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_ort_backend_static_graph_shape_error(tmp_path):
    conv = nn.Conv2d(3, 3, 3, padding=1).eval()
    path = tmp_path / "static.onnx"
    with torch.no_grad():
        torch.onnx.export(conv, (torch.rand(1, 3, 32, 32),), str(path), dynamo=False, opset_version=17,
                          input_names=["image"], output_names=["derained"])
    backend = OnnxRuntimeBackend(path)  # no metadata: falls back to multiples of 16
    assert backend.input_multiple == 16
    with pytest.raises(ValueError, match=r"expects input 'image' of shape 1x3x32x32, got 1x3x48x32; re-export"):
        backend.run(np.random.rand(1, 3, 48, 20).astype(np.float32))


def test_resolve_providers():
    cpu, cuda = "CPUExecutionProvider", "CUDAExecutionProvider"
    assert resolve_providers("auto", [cpu]) == [cpu]
    assert resolve_providers("auto", [cuda, cpu]) == [cuda, cpu]
    assert resolve_providers([cpu], [cuda, cpu]) == [cpu]
    with pytest.raises(ValueError, match="CUDAExecutionProvider not available"):
        resolve_providers([cuda], [cpu])
    with pytest.raises(ValueError, match="providers must be 'auto'"):
        resolve_providers("cuda", [cpu])


def test_exported_graph_cache_is_keyed_by_the_exporter_code(tmp_path, monkeypatch):
    """A change of exporter or model code exports again instead of serving the graph the old code wrote."""
    import edge_derain.export as export
    from edge_derain.export.onnx_export import exporter_digest
    from edge_derain.gst.select import exported_onnx

    monkeypatch.setenv("EDGE_DERAIN_CACHE", str(tmp_path / "edge_derain"))
    assert len(exporter_digest()) == 12 and exporter_digest() == exporter_digest()
    first = exported_onnx("efderain_w025")
    assert all(p.is_file() for p in first) and exporter_digest() in first[0].name
    monkeypatch.setattr(export, "exporter_digest", lambda: "0" * 12)
    second = exported_onnx("efderain_w025")
    assert second[0] != first[0] and second[0].is_file() and "0" * 12 in second[0].name
