"""Graph passes on exported ONNX models (onnx-graphsurgeon).

:func:`make_portable` rewrites every ``edge_derain`` custom node (the TensorRT-plugin graph) into
standard ONNX ops, so ONNX Runtime, TensorRT without our plugin library, and any other runtime can
run the model:

* ``DilationFilter`` -> spec §1.3: per dilation ``d`` a grouped Conv (group C, dilation d, pads d) with a
  constant one-hot weight (9C, 1, 3, 3) gathers the nine neighbours into the kernel layout ``9c + tap``;
  Mul by the kernels, Reshape to (N, C, 9, H, W), ReduceSum over the taps; Concat the dilations in
  dilation-major order.
* ``TransposedAttention`` -> spec §2.5: Reshape to heads (N, h, C_h, H*W), ReduceL2 -> Max(eps) -> Div,
  MatMul(q̂, Transpose(k̂)), Mul(τ); per sparse branch TopK(k constant) -> Slice the k-th value ->
  GreaterOrEqual -> Where(-inf); Softmax; Mul(w_m); Sum; MatMul(v); Reshape back to q's shape.

Batch, height and width stay symbolic: the reshapes use ``0``/``-1`` or ``Shape`` of a live tensor,
never the sizes seen at export time. Only the channel count must be static (as it is for the plugins).
"""
from __future__ import annotations

from collections import Counter

import numpy as np
import onnx

from ..ops.onnx import CUSTOM_OPS, DILATION_FILTER, DOMAIN, TRANSPOSED_ATTENTION

TAPS = 9


def _is_custom(domain: str, op_type: str) -> bool:
    return domain == DOMAIN or op_type in CUSTOM_OPS


def list_custom_nodes(model: onnx.ModelProto) -> list[onnx.NodeProto]:
    """The nodes of ``model`` that only the edge_derain TensorRT plugins can run, in graph order."""
    return [node for node in model.graph.node if _is_custom(node.domain, node.op_type)]


def describe_custom_nodes(model: onnx.ModelProto) -> str:
    """E.g. ``"2 DilationFilter, 10 TransposedAttention"``; empty when there are none."""
    counts = Counter(node.op_type for node in list_custom_nodes(model))
    return ", ".join(f"{count} {op}" for op, count in sorted(counts.items()))


def default_opset(model: onnx.ModelProto) -> int:
    for entry in model.opset_import:
        if entry.domain in ("", "ai.onnx"):
            return entry.version
    raise ValueError("the model imports no default ONNX opset; re-export it with torch.onnx.export")


class _Builder:
    """Adds nodes and constants to a graphsurgeon graph under a common name prefix."""

    def __init__(self, graph, prefix: str, dtype: np.dtype, opset: int):
        import onnx_graphsurgeon as gs

        self.gs, self.graph, self.prefix, self.dtype, self.opset = gs, graph, prefix, dtype, opset
        self.count = 0

    def _name(self, what: str) -> str:
        self.count += 1
        return f"{self.prefix}/{what}_{self.count}"

    def const(self, what: str, values):
        return self.gs.Constant(self._name(what), np.ascontiguousarray(values))

    def scalar(self, what: str, value: float):
        return self.const(what, np.array(value, dtype=self.dtype))

    def ints(self, what: str, values):
        return self.const(what, np.asarray(values, dtype=np.int64))

    def op(self, op: str, inputs: list, attrs: dict | None = None, outputs: list | None = None, num_outputs: int = 1):
        name = self._name(op)
        if outputs is None:
            outputs = [self.gs.Variable(f"{name}_output_{i}") for i in range(num_outputs)]
        self.graph.nodes.append(self.gs.Node(op=op, name=name, attrs=attrs or {}, inputs=inputs, outputs=outputs))
        return outputs[0] if len(outputs) == 1 else outputs

    def reduce(self, op: str, x, axes: list[int], keepdims: int):
        # Opset 18 moved the axes of ReduceL2 & co. from an attribute to an input (ReduceSum: opset 13).
        if op == "ReduceSum" or self.opset >= 18:
            return self.op(op, [x, self.ints("axes", axes)], {"keepdims": keepdims})
        return self.op(op, [x], {"axes": axes, "keepdims": keepdims})

    def reshape_or_fold(self, x, shape: list[int]):
        """Reshape ``x``; computed now when it is a constant (trained τ and branch weights are)."""
        if isinstance(x, self.gs.Constant):
            return self.const("reshaped", x.values.reshape(shape))
        return self.op("Reshape", [x, self.ints("shape", shape)])

    def element_or_fold(self, x, index: int):
        """Element ``index`` of a 1-D tensor as shape (1,)."""
        if isinstance(x, self.gs.Constant):
            return self.const("element", x.values[index:index + 1])
        return self.op("Slice", [x, self.ints("starts", [index]), self.ints("ends", [index + 1]),
                                 self.ints("axes", [0])])


def _detach(node):
    """Take ``node`` out of the graph's data flow (cleanup() removes it) and return its outputs."""
    outputs = list(node.outputs)
    node.inputs.clear()
    node.outputs.clear()
    return outputs


def _float_dtype(tensor) -> np.dtype:
    return np.dtype(tensor.dtype) if tensor.dtype is not None else np.dtype(np.float32)


def _static_channels(tensor, node, what: str) -> int:
    shape = tensor.shape
    if shape is None or len(shape) != 4 or not isinstance(shape[1], (int, np.integer)):
        raise ValueError(f"cannot rewrite {node.op} node {node.name!r}: the channel count of its {what} "
                         f"input is not static (shape {shape}); export with a fixed channel dimension")
    return int(shape[1])


def _one_hot_tap_weight(channels: int, dtype: np.dtype) -> np.ndarray:
    """(9C, 1, 3, 3): output channel 9c + 3i + j copies tap (i, j) of colour c (spec §1.3)."""
    taps = np.eye(TAPS, dtype=dtype).reshape(TAPS, 1, 3, 3)
    return np.tile(taps, (channels, 1, 1, 1))


def _expand_dilation_filter(graph, node, opset: int) -> None:
    image, kernels = node.inputs
    channels = _static_channels(image, node, "image")
    dilations = [int(d) for d in node.attrs.get("dilations", [1, 2, 3, 4])]
    b = _Builder(graph, node.name or DILATION_FILTER, _float_dtype(image), opset)
    (out,) = _detach(node)

    weight = b.const("one_hot_taps", _one_hot_tap_weight(channels, b.dtype))
    batch = b.op("Shape", [kernels], {"end": 1})
    height_width = b.op("Shape", [kernels], {"start": 2})
    tap_shape = b.op("Concat", [batch, b.ints("colour_taps", [channels, TAPS]), height_width], {"axis": 0})
    filtered = []
    for d in dilations:
        neighbours = b.op("Conv", [image, weight], {"group": channels, "dilations": [d, d], "pads": [d] * 4,
                                                    "kernel_shape": [3, 3], "strides": [1, 1]})
        weighted = b.op("Reshape", [b.op("Mul", [neighbours, kernels]), tap_shape])
        filtered.append(b.reduce("ReduceSum", weighted, [2], keepdims=0))
    b.op("Concat", filtered, {"axis": 1}, outputs=[out])


def _check_attention_attributes(node, channels: int, heads: int, mode: str, topk: list[int]) -> None:
    from ..ops.transposed_attention import MODES

    problem = None
    if heads < 1 or channels % heads:
        problem = f"num_heads={heads} does not divide the {channels} channels"
    elif mode not in MODES:
        problem = f"mode {mode!r} is not one of {', '.join(MODES)}"
    elif (len(topk) != {"dense": 0, "sparse": 1, "dual": 1}[mode]) if mode != "multi" else not topk:
        problem = f"mode {mode!r} does not take topk={topk}"
    elif not all(1 <= t <= channels // heads for t in topk):
        problem = f"topk={topk} is outside [1, {channels // heads}] (channels per head)"
    if problem:
        raise ValueError(f"cannot rewrite TransposedAttention node {node.name!r}: {problem}; re-export the model")


def _expand_transposed_attention(graph, node, opset: int) -> None:
    from ..ops.transposed_attention import branch_topks

    q, k, v, temperature = node.inputs[:4]
    branch_weights = node.inputs[4] if len(node.inputs) > 4 else None
    heads = int(node.attrs["num_heads"])
    mode = node.attrs.get("mode", "dense")
    topk = [int(t) for t in node.attrs.get("topk", [])]
    eps = float(node.attrs.get("eps", 1e-12))
    channels = _static_channels(q, node, "q")
    _check_attention_attributes(node, channels, heads, mode, topk)
    channels_per_head = channels // heads
    b = _Builder(graph, node.name or TRANSPOSED_ATTENTION, _float_dtype(q), opset)
    (out,) = _detach(node)

    head_shape = b.ints("head_shape", [0, heads, channels_per_head, -1])
    q_heads, k_heads, v_heads = (b.op("Reshape", [t, head_shape]) for t in (q, k, v))
    eps_const = b.scalar("eps", eps)

    def normalised(x):
        norm = b.op("Max", [b.reduce("ReduceL2", x, [-1], keepdims=1), eps_const])
        return b.op("Div", [x, norm])

    k_hat_t = b.op("Transpose", [normalised(k_heads)], {"perm": [0, 1, 3, 2]})
    scores = b.op("MatMul", [normalised(q_heads), k_hat_t])
    scores = b.op("Mul", [scores, b.reshape_or_fold(temperature, [heads, 1, 1])])

    maps = []
    for index, kth in enumerate(branch_topks(mode, topk or None)):
        logits = scores
        if kth is not None:
            values, _ = b.op("TopK", [scores, b.ints("k", [kth])], {"axis": -1, "largest": 1, "sorted": 1},
                             num_outputs=2)
            kth_largest = b.op("Slice", [values, b.ints("starts", [kth - 1]), b.ints("ends", [kth]),
                                         b.ints("axes", [-1])])
            keep = b.op("GreaterOrEqual", [scores, kth_largest])
            logits = b.op("Where", [keep, scores, b.scalar("minus_inf", -np.inf)])
        attention = b.op("Softmax", [logits], {"axis": -1})
        if branch_weights is not None:
            attention = b.op("Mul", [attention, b.element_or_fold(branch_weights, index)])
        maps.append(attention)
    combined = maps[0] if len(maps) == 1 else b.op("Sum", maps)
    b.op("Reshape", [b.op("MatMul", [combined, v_heads]), b.op("Shape", [q])], outputs=[out])


_EXPANSIONS = {DILATION_FILTER: _expand_dilation_filter, TRANSPOSED_ATTENTION: _expand_transposed_attention}


def make_portable(model: onnx.ModelProto) -> onnx.ModelProto:
    """Rewrite every custom node into standard ONNX; fold constants and infer shapes.

    Metadata props are carried over unchanged. Raises ValueError for an unknown custom op.
    """
    import onnx_graphsurgeon as gs

    opset = default_opset(model)
    if opset < 17:
        raise ValueError(f"the model uses ONNX opset {opset}; re-export it with opset >= 17")
    unknown = sorted({n.op_type for n in list_custom_nodes(model)} - set(_EXPANSIONS))
    if unknown:
        raise ValueError(f"no portable rewrite for custom op(s) {', '.join(unknown)}; "
                         f"known: {', '.join(sorted(_EXPANSIONS))}")
    graph = gs.import_onnx(onnx.shape_inference.infer_shapes(model))
    # Folding Shape->Gather first turns channel counts computed from shapes (qkv.chunk) into constants.
    graph.fold_constants().cleanup()
    graph = gs.import_onnx(onnx.shape_inference.infer_shapes(gs.export_onnx(graph)))
    for node in [n for n in graph.nodes if _is_custom(n.domain, n.op)]:
        _EXPANSIONS[node.op](graph, node, opset)
    graph.cleanup().toposort()
    graph.fold_constants().cleanup()
    graph.import_domains = [d for d in graph.import_domains or [] if d.domain != DOMAIN]

    portable = gs.export_onnx(graph)
    # Drop the shapes typed onto the custom nodes' outputs at export; inference recomputes them from
    # the standard ops (data_prop follows Shape -> Concat into the Reshape targets).
    portable.graph.ClearField("value_info")
    portable = onnx.shape_inference.infer_shapes(portable, check_type=True, strict_mode=True, data_prop=True)
    portable.ir_version = model.ir_version
    portable.producer_name, portable.producer_version = model.producer_name, model.producer_version
    for prop in model.metadata_props:
        portable.metadata_props.add(key=prop.key, value=prop.value)
    return portable
