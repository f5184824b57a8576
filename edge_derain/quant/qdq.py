"""Explicit INT8 for TensorRT: Q/DQ written onto the FP32 plugin and portable graphs, and checked.

TensorRT's explicit quantization takes INT8 from ``QuantizeLinear``/``DequantizeLinear`` (Q/DQ) pairs in
the ONNX; implicit calibrators are deprecated (gone in TensorRT-RTX and 11.x). TensorRT accepts Q/DQ
that are INT8, symmetric (zero point 0), per-tensor for activations and per-output-channel (axis 0)
for weights, with the bias left in float. The placement here is NVIDIA's recommended one: Q/DQ on the
*inputs* of every quantized convolution (activation and weight) and nowhere else; TensorRT fuses the
conv with its bias and ReLU and moves the next conv's Q up into its output.

:func:`insert_qdq` writes the same Q/DQ onto the FP32 plugin graph *and* the FP32 portable graph (the conv
names and tensors are shared by both exports), for all convs or for a mixed-precision subset. Consumers
that are not quantized convs — the ``DilationFilter`` plugin, which runs FP32/FP16, or its portable
expansion — keep reading the float tensor; the plugin's output feeds the next conv's Q/DQ.
:func:`qdq_problems` / :func:`check_trt_qdq` say whether a graph is INT8 that TensorRT accepts.

Where the scales come from is :mod:`.workflow` (``calibrate``); the scales themselves are :mod:`.table`.
The names that lived here before the split (calibration, graph queries, scales) still import from here.
"""
from __future__ import annotations

import copy
import json
from typing import Iterable

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from ..export.graph import UniqueNamer, set_metadata
from .graphs import (INT8_CONVS_KEY, PRECISION_KEY, QDQ_OPS, check_fp32_graph, graph_input,  # noqa: F401
                     quantizable_convs, quantized_convs_of, resolve_graphs)
from .ort_calibration import DEFAULT_PERCENTILE, ENTROPY_WARNING, METHODS, ort_quantize  # noqa: F401
from .table import QMAX, QuantTable, constant_array, quantize_weight, read_quant_table, weight_scales  # noqa: F401

#: Moved to :mod:`.workflow` (which imports this module); resolved on first use for the old import path.
_WORKFLOW_NAMES = ("BudgetUnreachable", "CalibrationResult", "ENGINES", "MODELOPT_UNAVAILABLE", "calibrate",
                   "holdout_drops")


def __getattr__(name: str):
    if name in _WORKFLOW_NAMES:
        from . import workflow

        return getattr(workflow, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def insert_qdq(model: onnx.ModelProto, table: QuantTable, convs: Iterable[str]) -> onnx.ModelProto:
    """A copy of FP32 ``model`` with INT8 Q/DQ on the inputs and weights of ``convs`` (other convs stay FP32).

    Activations get one shared per-tensor Q/DQ pair per tensor, read only by quantized convs; every
    other consumer (a plugin, an unquantized conv, the portable dilation filter) keeps the float
    tensor. Weights become INT8 initializers with a per-channel DQ on axis 0 (scales from the table,
    else :func:`weight_scales`). Biases stay float. Works on the plugin and the portable graph alike.
    """
    convs = list(dict.fromkeys(convs))
    if not convs:
        raise ValueError("no convs to quantize: an INT8 graph without Q/DQ would be the FP32 graph; build FP16 instead")
    out = copy.deepcopy(model)
    graph = out.graph
    by_name = {node.name: node for node in graph.node}
    missing = [name for name in convs if name not in by_name or by_name[name].op_type != "Conv"]
    if missing:
        raise ValueError(f"conv {missing[0]!r} is not in the graph: the scales are from another export; calibrate "
                         "this export again")
    writer = _QdqWriter(out, table)
    nodes: list[onnx.NodeProto] = []
    wanted = set(convs)
    for node in graph.node:
        if node.name in wanted:
            node.input[0] = writer.activation(node.input[0], node.name, nodes)
            node.input[1] = writer.weight(node, nodes)
        nodes.append(node)
    del graph.node[:]
    graph.node.extend(nodes)
    still_used = {name for node in graph.node for name in node.input}
    kept = [t for t in graph.initializer if t.name not in writer.weight_dq or t.name in still_used]
    del graph.initializer[:]
    graph.initializer.extend(kept + writer.new_initializers)
    set_metadata(out, {PRECISION_KEY: "int8", INT8_CONVS_KEY: json.dumps(convs)})
    onnx.checker.check_model(out)
    return out


class _QdqWriter:
    """The Q/DQ nodes and INT8 initializers of one graph: one Q/DQ pair per activation tensor, one DQ per weight,
    each written once however many quantized convs read it."""

    def __init__(self, model: onnx.ModelProto, table: QuantTable):
        self.table = table
        self.initializers = {t.name: t for t in model.graph.initializer}
        self.names = UniqueNamer(model)
        self.new_initializers: list[onnx.TensorProto] = []
        self.activation_dq: dict[str, str] = {}
        self.weight_dq: dict[str, str] = {}

    def activation(self, tensor: str, conv: str, nodes: list[onnx.NodeProto]) -> str:
        """The dequantized twin of activation ``tensor`` (input of ``conv``); its Q/DQ appended to ``nodes``."""
        if tensor in self.activation_dq:
            return self.activation_dq[tensor]
        if tensor not in self.table.activations:
            raise ValueError(f"no activation scale for {tensor!r} (input of {conv}); the scales are "
                             "from another model or export; calibrate this one again")
        scale = float(self.table.activations[tensor])
        if not np.isfinite(scale) or scale <= 0:
            raise ValueError(f"activation scale of {tensor!r} is {scale}; scales must be finite and > 0")
        names = self.names
        scale_name, zp_name = names(f"{tensor}_scale"), names(f"{tensor}_zero_point")
        self.new_initializers += [numpy_helper.from_array(np.array(scale, np.float32), scale_name),
                                  numpy_helper.from_array(np.zeros((), dtype=np.int8), zp_name)]
        quantized = names(f"{tensor}_QuantizeLinear_Output")
        dequantized = names(f"{tensor}_DequantizeLinear_Output")
        nodes += [helper.make_node("QuantizeLinear", [tensor, scale_name, zp_name], [quantized],
                                   name=names(f"{tensor}_QuantizeLinear")),
                  helper.make_node("DequantizeLinear", [quantized, scale_name, zp_name], [dequantized],
                                   name=names(f"{tensor}_DequantizeLinear"))]
        self.activation_dq[tensor] = dequantized
        return dequantized

    def weight(self, conv: onnx.NodeProto, nodes: list[onnx.NodeProto]) -> str:
        """The dequantized INT8 twin of ``conv``'s weight; its DQ appended to ``nodes``."""
        weight_name = conv.input[1]
        if weight_name in self.weight_dq:
            return self.weight_dq[weight_name]
        weight = constant_array(self.initializers, weight_name, f"weight of {conv.name}").astype(np.float32)
        scales = np.asarray(self.table.weights[conv.name] if conv.name in self.table.weights
                            else weight_scales(weight), dtype=np.float32)
        if scales.shape != (weight.shape[0],):
            raise ValueError(f"{conv.name} has {weight.shape[0]} output channels but {scales.size} weight "
                             "scales; the scales are from another model, calibrate this one again")
        names = self.names
        q_name, scale_name = names(f"{weight_name}_quantized"), names(f"{weight_name}_scale")
        zp_name = names(f"{weight_name}_zero_point")
        dequantized = names(f"{weight_name}_DequantizeLinear_Output")
        self.new_initializers += [numpy_helper.from_array(quantize_weight(weight, scales), q_name),
                                  numpy_helper.from_array(scales, scale_name),
                                  numpy_helper.from_array(np.zeros(scales.shape, np.int8), zp_name)]
        nodes.append(helper.make_node("DequantizeLinear", [q_name, scale_name, zp_name], [dequantized],
                                      name=names(f"{weight_name}_DequantizeLinear"), axis=0))
        self.weight_dq[weight_name] = dequantized
        return dequantized


# --------------------------------------------------------------------------------------------------
# checks


def qdq_problems(model: onnx.ModelProto) -> list[str]:
    """Why ``model`` is not TensorRT-compatible explicit INT8; [] when it is.

    Checks: every INT8 conv (the metadata list, else every conv reading a DQ) has a DQ<-Q on its
    activation and a DQ of an INT8 constant on its weight (per-channel on axis 0, one scale per
    output channel); every Q/DQ has an INT8 zero point equal to 0 and finite positive scales; no bias
    is quantized (no INT32 tensors feed a DQ or a conv bias).
    """
    graph = model.graph
    producer = {out: node for node in graph.node for out in node.output}
    initializers = {t.name: t for t in graph.initializer}
    problems: list[str] = []
    for node in graph.node:
        if node.op_type not in QDQ_OPS:
            continue
        if len(node.input) < 3 or node.input[2] not in initializers:
            problems.append(f"{node.name} has no constant zero point (the default is uint8)")
            continue
        zero_point, scale = numpy_helper.to_array(initializers[node.input[2]]), initializers.get(node.input[1])
        if zero_point.dtype != np.int8 or zero_point.any():
            problems.append(f"{node.name} zero point is {zero_point.dtype} {zero_point.reshape(-1)[:4]}, not INT8 0")
        if scale is None or not (np.isfinite(numpy_helper.to_array(scale)).all()
                                 and (numpy_helper.to_array(scale) > 0).all()):
            problems.append(f"{node.name} scale is not a finite positive constant")
        if node.op_type == "DequantizeLinear" and node.input[0] in initializers \
                and initializers[node.input[0]].data_type == TensorProto.INT32:
            problems.append(f"{node.name} dequantizes an INT32 tensor (a quantized bias)")
    convs = quantized_convs_of(model) or [
        node.name for node in graph.node if node.op_type == "Conv"
        and any(getattr(producer.get(i), "op_type", None) == "DequantizeLinear" for i in node.input)]
    by_name = {node.name: node for node in graph.node}
    for name in convs:
        conv = by_name.get(name)
        if conv is None:
            problems.append(f"INT8 conv {name} is missing from the graph")
            continue
        dq = producer.get(conv.input[0])
        if dq is None or dq.op_type != "DequantizeLinear" \
                or getattr(producer.get(dq.input[0]), "op_type", None) != "QuantizeLinear":
            problems.append(f"{name} has no Q/DQ on its activation input")
        dq = producer.get(conv.input[1])
        if dq is None or dq.op_type != "DequantizeLinear" or dq.input[0] not in initializers \
                or initializers[dq.input[0]].data_type != TensorProto.INT8:
            problems.append(f"{name} has no DQ of an INT8 constant on its weight")
        else:
            weight = initializers[dq.input[0]]
            scales = numpy_helper.to_array(initializers[dq.input[1]]) if dq.input[1] in initializers else None
            axis = next((helper.get_attribute_value(a) for a in dq.attribute if a.name == "axis"), 1)
            if scales is None or (scales.size > 1 and (axis != 0 or scales.size != weight.dims[0])):
                problems.append(f"{name} weight scales are not per output channel on axis 0")
        if len(conv.input) > 2 and conv.input[2]:
            bias = conv.input[2]
            if bias in producer and producer[bias].op_type == "DequantizeLinear" \
                    or bias in initializers and initializers[bias].data_type != TensorProto.FLOAT:
                problems.append(f"{name} bias is quantized; TensorRT needs a float bias")
    return problems


def check_trt_qdq(model: onnx.ModelProto, what: str) -> None:
    """One-line ValueError naming the first problems when ``model`` is not TensorRT-compatible INT8."""
    problems = qdq_problems(model)
    if problems:
        more = f" (and {len(problems) - 2} more)" if len(problems) > 2 else ""
        raise ValueError(f"{what} is not TensorRT-compatible explicit INT8: {'; '.join(problems[:2])}{more}")

