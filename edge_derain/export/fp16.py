"""FP32 ONNX -> strongly typed FP16 ONNX, with the FP16-fragile nodes kept in FP32.

Strongly typed TensorRT builders (TensorRT-RTX, tensorrt 11.x) run every layer in exactly the dtype the
ONNX gives it, so an FP16 engine needs an FP16 graph. :func:`convert_to_fp16` makes one:

* float initializers and ``Constant`` values become FP16 (finite values beyond ±65504 are clamped, with
  a warning); a constant that also feeds an FP32 node keeps an FP32 copy;
* with ``keep_io_fp32`` (default) the graph inputs and outputs stay FP32 and a ``Cast`` sits behind
  each input and before each output, so callers feed and read float32 as before;
* the ``edge_derain`` custom nodes (``DilationFilter``, ``TransposedAttention``) run in FP16: their
  plugins take FP16 I/O and accumulate in FP32 (spec §1.2, §2.4);
* FP16-fragile nodes (:func:`fragile_nodes`) stay FP32, fenced by ``Cast`` nodes: reductions that sum
  squares or many elements (spec §2.4: the squares of 1088·1920 values of ~1 sum to 2e6 > 65504), the
  arithmetic on those sums up to the division that normalises by them, softmax inputs, layer-norm
  statistics, spatial means and float shape arithmetic. ``Resize``, pooling, convolutions and the
  element-wise ops run in FP16.

The FP32 nodes and why each was kept are recorded in the metadata prop ``edge_derain.fp32_nodes``
(JSON ``{node name: reason}``, read back with :func:`fp32_nodes_of`); ``edge_derain.precision`` is
``"fp16"``. Subgraphs (``If``/``Loop``) and Q/DQ graphs are refused; our exports contain neither.
"""
from __future__ import annotations

import json
import logging
import math
from collections import defaultdict
from typing import Iterable

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from .graph import UniqueNamer, read_metadata, set_metadata

log = logging.getLogger(__name__)

FLOAT, FLOAT16 = TensorProto.FLOAT, TensorProto.FLOAT16
FP32_NODES_KEY = "edge_derain.fp32_nodes"
PRECISION_KEY = "edge_derain.precision"
FP16_MAX = float(np.finfo(np.float16).max)
#: A sum of n FP16 values stays finite while their mean is below 65504 / n; up to 64 elements that is
#: ~1000, far above the activations of these networks. Longer (or dynamic, i.e. spatial) reductions
#: run in FP32.
SMALL_REDUCTION = 64

_STANDARD_DOMAINS = ("", "ai.onnx")
# Squares, exponentials and products overflow FP16 whatever the reduced extent.
_ALWAYS_FP32_REDUCTIONS = {"ReduceL2", "ReduceSumSquare", "ReduceLogSumExp", "ReduceProd"}
# Sums and means overflow (or lose all precision) when they run over many elements.
_EXTENT_REDUCTIONS = {"ReduceSum", "ReduceMean", "ReduceL1", "ReduceLogSum"}
# Reductions whose result can itself exceed the FP16 range: the arithmetic on it stays FP32 too.
_UNBOUNDED_REDUCTIONS = {"ReduceSum", "ReduceSumSquare", "ReduceL1", "ReduceL2", "ReduceProd"}
_ALWAYS_FP32_OPS = {
    "Softmax": "softmax input",
    "LogSoftmax": "softmax input",
    "LayerNormalization": "layer-norm statistics",
    "GroupNormalization": "group-norm statistics",
    "InstanceNormalization": "instance-norm statistics",
    "MeanVarianceNormalization": "normalisation statistics",
    "LpNormalization": "L2 norm",
    "GlobalAveragePool": "spatial mean over a dynamic number of elements",
    "GlobalLpPool": "spatial Lp norm",
}
# Ops through which a reduction statistic (a large sum, a variance) is still a statistic.
_STATISTIC_PASSTHROUGH = {"Add", "Sub", "Max", "Min", "Clip", "Sqrt", "Reciprocal", "Pow", "Abs", "Neg",
                          "Identity", "Reshape", "Squeeze", "Unsqueeze", "Expand"}
# Ops that combine a statistic with data (x / norm, x * rsqrt(var)): kept FP32, their result is bounded.
_STATISTIC_SINKS = {"Div", "Mul"}
# Inputs the ONNX spec types as float32 whatever the node's data type.
_FP32_INPUTS = {("Resize", 1), ("Resize", 2), ("Upsample", 1)}
# Ops that read only the shape of their input: they take it in whichever dtype it comes.
_SHAPE_READERS = {"Shape", "Size"}


# --------------------------------------------------------------------------------------------------
# graph queries


class _Graph:
    """Producers, consumers, constants, dtypes and shapes of a graph's tensors."""

    def __init__(self, model: onnx.ModelProto):
        self.nodes = list(model.graph.node)
        self.producer = {out: node for node in self.nodes for out in node.output if out}
        self.consumers: dict[str, list[tuple[onnx.NodeProto, int]]] = defaultdict(list)
        for node in self.nodes:
            for index, name in enumerate(node.input):
                if name:
                    self.consumers[name].append((node, index))
        self.initializers = {t.name: t for t in model.graph.initializer}
        self.elem_type, self.shape = _inferred_types(model)

    def is_float(self, name: str) -> bool:
        return self.elem_type.get(name) == FLOAT

    def is_constant(self, name: str) -> bool:
        return name in self.initializers or getattr(self.producer.get(name), "op_type", None) == "Constant"

    def constant(self, name: str) -> np.ndarray | None:
        if name in self.initializers:
            return numpy_helper.to_array(self.initializers[name])
        node = self.producer.get(name)
        return _constant_node_value(node) if node is not None and node.op_type == "Constant" else None


def _inferred_types(model: onnx.ModelProto) -> tuple[dict[str, int], dict[str, list[int | None]]]:
    """Element type and shape (None for unknown dims) of every tensor ONNX shape inference can type.

    Custom ops have no schema, so inference stops at them unless their outputs carry value_info (our
    exporter adds it); untyped custom outputs are assumed float when a float goes in, as for our
    plugins, and inference runs again from there.
    """
    work = onnx.ModelProto()
    work.CopyFrom(model)
    custom = [n for n in work.graph.node if n.domain not in _STANDARD_DOMAINS]
    for _ in range(len(custom) + 1):
        graph = onnx.shape_inference.infer_shapes(work, data_prop=True).graph
        elem_type: dict[str, int] = {}
        shape: dict[str, list[int | None]] = {}
        for value in [*graph.input, *graph.output, *graph.value_info]:
            tensor_type = value.type.tensor_type
            elem_type[value.name] = tensor_type.elem_type
            if tensor_type.HasField("shape"):
                shape[value.name] = [d.dim_value if d.HasField("dim_value") else None for d in tensor_type.shape.dim]
        for tensor in work.graph.initializer:
            elem_type[tensor.name] = tensor.data_type
            shape[tensor.name] = list(tensor.dims)
        for node in work.graph.node:
            if node.op_type == "Constant":
                value = _constant_node_value(node)
                if value is not None:
                    elem_type[node.output[0]] = helper.np_dtype_to_tensor_dtype(value.dtype)
        untyped = [o for n in custom if any(elem_type.get(i) == FLOAT for i in n.input if i)
                   for o in n.output if not elem_type.get(o)]
        if not untyped:
            break
        work.graph.value_info.extend(helper.make_tensor_value_info(o, FLOAT, None) for o in untyped)
    return elem_type, shape


def _constant_node_value(node: onnx.NodeProto) -> np.ndarray | None:
    for attr in node.attribute:
        if attr.name == "value":
            return numpy_helper.to_array(attr.t)
        if attr.name == "value_float":
            return np.array(attr.f, dtype=np.float32)
        if attr.name == "value_floats":
            return np.array(list(attr.floats), dtype=np.float32)
        if attr.name == "value_int":
            return np.array(attr.i, dtype=np.int64)
        if attr.name == "value_ints":
            return np.array(list(attr.ints), dtype=np.int64)
    return None


def _attr(node: onnx.NodeProto, name: str, default=None):
    for attr in node.attribute:
        if attr.name == name:
            return helper.get_attribute_value(attr)
    return default


def _reduced_extent(g: _Graph, node: onnx.NodeProto) -> int | None:
    """How many elements each output of a Reduce* node sums over; None when not static."""
    shape = g.shape.get(node.input[0])
    if shape is None:
        return None
    axes = _attr(node, "axes")
    if axes is None and len(node.input) > 1 and node.input[1]:
        constant = g.constant(node.input[1])
        if constant is None:
            return None  # axes computed at run time
        axes = constant.reshape(-1).tolist()
    if not axes:
        if _attr(node, "noop_with_empty_axes", 0):
            return 1
        axes = range(len(shape))
    dims = [shape[int(a) % len(shape)] for a in axes] if shape else [None]
    return None if any(d is None for d in dims) else math.prod(dims)


def _is_square(g: _Graph, node: onnx.NodeProto | None) -> bool:
    if node is None:
        return False
    if node.op_type == "Mul":
        return len(node.input) == 2 and node.input[0] == node.input[1]
    if node.op_type == "Pow":
        exponent = g.constant(node.input[1])
        return exponent is not None and exponent.size == 1 and float(exponent.reshape(-1)[0]) == 2.0
    return False


def _centring_subs(g: _Graph) -> dict[str, onnx.NodeProto]:
    """``Sub(x, ReduceMean(x))`` nodes (by name) -> their ReduceMean: the centring step of a layer norm."""
    out = {}
    for node in g.nodes:
        if node.op_type != "Sub":
            continue
        mean = g.producer.get(node.input[1])
        if mean is not None and mean.op_type == "ReduceMean" and mean.input[0] == node.input[0]:
            out[node.name] = mean
    return out


def fragile_nodes(model: onnx.ModelProto) -> dict[str, str]:
    """Nodes of an FP32 graph that must stay FP32 in an FP16 engine -> why.

    Needs unique node names (``convert_to_fp16`` names unnamed nodes before calling this).
    """
    g = _Graph(model)
    reasons: dict[str, str] = {}

    def keep(node: onnx.NodeProto, reason: str) -> None:
        reasons.setdefault(node.name, reason)

    centring = _centring_subs(g)
    # tensors holding a sum or variance that may exceed FP16
    statistics = _keep_fragile_ops(g, keep) + _keep_spelled_out_layer_norms(g, centring, keep)
    _keep_statistic_arithmetic(g, centring, statistics, keep)
    _keep_shape_arithmetic(g, keep)
    return reasons


def _keep_fragile_ops(g: _Graph, keep) -> list[str]:
    """Ops that are fragile by themselves (softmax, norms, long or squaring reductions) and the squares that feed
    a kept reduction; returns the outputs of the reductions whose result may exceed FP16."""
    statistics = []
    for node in g.nodes:
        if node.domain not in _STANDARD_DOMAINS:
            continue
        op = node.op_type
        if op in _ALWAYS_FP32_OPS:
            keep(node, _ALWAYS_FP32_OPS[op])
        elif op in _ALWAYS_FP32_REDUCTIONS:
            keep(node, f"{op} overflows FP16 (squares/exponentials/products)")
        elif op in _EXTENT_REDUCTIONS:
            extent = _reduced_extent(g, node)
            if extent is not None and extent <= SMALL_REDUCTION:
                continue
            keep(node, f"{op} over {extent if extent is not None else 'a dynamic number of'} elements")
        else:
            continue
        if op in _UNBOUNDED_REDUCTIONS:
            statistics.extend(node.output)
        source = g.producer.get(node.input[0])
        if op.startswith("Reduce") and _is_square(g, source):
            keep(source, f"squares feeding the FP32 {op}")
    return statistics


def _keep_spelled_out_layer_norms(g: _Graph, centring: dict[str, onnx.NodeProto], keep) -> list[str]:
    """Layer norm spelled out (Restormer's channel LayerNorm, torch.var): mean, centring, square, mean of
    squares; then + eps -> Sqrt -> Div through the statistic propagation. Returns the variances."""
    statistics = []
    for node in g.nodes:
        if node.op_type != "ReduceMean":
            continue
        square = g.producer.get(node.input[0])
        if not _is_square(g, square) or square.input[0] not in g.producer:
            continue
        sub = g.producer[square.input[0]]
        if sub.name not in centring:
            continue
        for part in (centring[sub.name], sub, square, node):
            keep(part, "layer-norm statistics")
        statistics.extend(node.output)
    return statistics


def _keep_statistic_arithmetic(g: _Graph, centring: dict[str, onnx.NodeProto], statistics: list[str],
                               keep) -> None:
    """The arithmetic on the ``statistics`` tensors up to (and including) the division that normalises by them."""
    seen: set[str] = set()
    while statistics:
        tensor = statistics.pop()
        if tensor in seen:
            continue
        seen.add(tensor)
        for consumer, _ in g.consumers.get(tensor, []):
            if consumer.domain not in _STANDARD_DOMAINS:
                continue
            if consumer.op_type in _STATISTIC_PASSTHROUGH:
                keep(consumer, "arithmetic on a reduction statistic")
                statistics.extend(consumer.output)
            elif consumer.op_type in _STATISTIC_SINKS:
                keep(consumer, "normalises by a reduction statistic")
                dividend = g.producer.get(consumer.input[0])
                if consumer.op_type == "Div" and dividend is not None and dividend.name in centring:
                    keep(dividend, "layer-norm statistics")
                    keep(centring[dividend.name], "layer-norm statistics")


def _keep_shape_arithmetic(g: _Graph, keep) -> None:
    """Float arithmetic on sizes (Shape -> Cast -> Mul -> Cast back): FP16 holds integers exactly only up
    to 2048. Graph order is topological, so one pass follows the sizes from every Shape/Size."""
    sizes: set[str] = set()
    for node in g.nodes:
        if node.op_type in ("Shape", "Size"):
            sizes.update(node.output)
            continue
        inputs = [i for i in node.input if i]
        if node.op_type == "ConstantOfShape" or not any(i in sizes for i in inputs) \
                or not all(i in sizes or g.is_constant(i) for i in inputs):
            continue
        sizes.update(node.output)
        if any(g.is_float(o) for o in node.output):
            keep(node, "shape arithmetic")


# --------------------------------------------------------------------------------------------------
# conversion


def _check_convertible(model: onnx.ModelProto) -> None:
    graph = model.graph
    if not graph.node:
        raise ValueError("the ONNX model has no nodes; export the model first")
    if any(t.data_type == FLOAT16 for t in graph.initializer) or any(
            v.type.tensor_type.elem_type == FLOAT16 for v in [*graph.input, *graph.output, *graph.value_info]):
        raise ValueError("the ONNX model already carries FP16 tensors; convert the FP32 export instead")
    if any(n.op_type in ("QuantizeLinear", "DequantizeLinear") for n in graph.node):
        raise ValueError("the ONNX model carries Q/DQ (INT8) nodes; build it with precision='int8' instead of "
                         "converting it to FP16")
    nested = [n.name or n.op_type for n in graph.node
              if any(a.type in (onnx.AttributeProto.GRAPH, onnx.AttributeProto.GRAPHS) for a in n.attribute)]
    if nested:
        raise ValueError(f"FP16 conversion does not handle subgraphs (node {nested[0]}); export without "
                         "data-dependent control flow")


def _name_nodes(graph: onnx.GraphProto) -> None:
    """Give every node a unique name: the FP32 node list and TensorRT's layer metadata refer to them."""
    used: set[str] = set()
    for index, node in enumerate(graph.node):
        name = node.name or f"{node.op_type}_{index}"
        base, suffix = name, 1
        while name in used:
            name, suffix = f"{base}_{suffix}", suffix + 1
        node.name = name
        used.add(name)


def _to_fp16_array(values: np.ndarray, what: str) -> np.ndarray:
    finite = np.isfinite(values)
    overflow = int(np.count_nonzero(finite & (np.abs(values) > FP16_MAX)))
    if overflow:
        log.warning("%s: %d value(s) beyond the FP16 range clamped to ±%g", what, overflow, FP16_MAX)
        values = np.where(finite, np.clip(values, -FP16_MAX, FP16_MAX), values)
    return values.astype(np.float16)


def _fp16_tensor(values: np.ndarray, name: str) -> onnx.TensorProto:
    return numpy_helper.from_array(_to_fp16_array(values, name), name)


def _retype_fp16_node(node: onnx.NodeProto) -> None:
    """Attributes that fix a float32 output dtype: Cast(to), ConstantOfShape(value), dtype attributes."""
    for attr in node.attribute:
        if attr.type == onnx.AttributeProto.INT and attr.name in ("to", "dtype") and attr.i == FLOAT:
            attr.i = FLOAT16
        elif node.op_type == "ConstantOfShape" and attr.name == "value" and attr.t.data_type == FLOAT:
            attr.t.CopyFrom(_fp16_tensor(numpy_helper.to_array(attr.t), f"{node.name}.value"))


def convert_to_fp16(model: onnx.ModelProto, keep_io_fp32: bool = True,
                    keep_fp32: str | Iterable[str] = "auto") -> onnx.ModelProto:
    """A strongly typed FP16 copy of the FP32 ``model`` (the input is not modified).

    ``keep_fp32="auto"`` keeps :func:`fragile_nodes` in FP32; an iterable of node names keeps exactly
    those (an empty one converts every node, e.g. to show what the automatic choice protects against).
    The result passes ``onnx.checker`` and records the FP32 nodes in ``edge_derain.fp32_nodes``.
    """
    if not isinstance(model, onnx.ModelProto):
        raise ValueError(f"expected an onnx.ModelProto, got {type(model).__name__}; load the file with onnx.load")
    _check_convertible(model)
    out = onnx.ModelProto()
    out.CopyFrom(model)
    _name_nodes(out.graph)
    fp32_reasons = _fp32_reasons(out, keep_fp32)
    conversion = _Fp16Conversion(out, fp32_reasons, io_type=FLOAT if keep_io_fp32 else FLOAT16)
    output_casts = conversion.redirect_retyped_outputs()
    fp16_constant = conversion.convert_constants()
    conversion.insert_casts(fp16_constant, output_casts)
    conversion.retype_io_and_value_info()
    set_metadata(out, {FP32_NODES_KEY: json.dumps(fp32_reasons, sort_keys=True), PRECISION_KEY: "fp16"})
    out = onnx.shape_inference.infer_shapes(out, check_type=True, strict_mode=True, data_prop=True)
    onnx.checker.check_model(out)
    return out


def _fp32_reasons(model: onnx.ModelProto, keep_fp32: str | Iterable[str]) -> dict[str, str]:
    """{node name: why it stays FP32}: :func:`fragile_nodes` for ``"auto"``, else the names requested."""
    if isinstance(keep_fp32, str):
        if keep_fp32 != "auto":
            raise ValueError(f"keep_fp32 must be 'auto' or an iterable of node names, got {keep_fp32!r}")
        return fragile_nodes(model)
    requested = list(keep_fp32)
    unknown = sorted(set(requested) - {n.name for n in model.graph.node})
    if unknown:
        raise ValueError(f"keep_fp32 names node(s) not in the graph: {', '.join(unknown)}")
    return {name: "requested" for name in requested}


class _Fp16Conversion:
    """One FP16 conversion of a named-node graph copy, in place: the dtype each node runs in, constants
    converted (or copied) to FP16, Casts where a tensor's dtype differs from what its consumer runs in."""

    def __init__(self, model: onnx.ModelProto, fp32_reasons: dict[str, str], io_type: int):
        self.graph = model.graph
        self.g = _Graph(model)
        self.namer = UniqueNamer(model)
        self.fp32_reasons, self.io_type = fp32_reasons, io_type
        self.initializer_names = set(self.g.initializers)
        self.constant_nodes = {n.output[0]: n for n in self.graph.node
                               if n.op_type == "Constant" and self.g.is_float(n.output[0])}
        self.flexible = {name for name in self.initializer_names if self.g.is_float(name)} | set(self.constant_nodes)
        self.tensor_type = self._tensor_types()

    def node_type(self, node: onnx.NodeProto) -> int:
        return FLOAT if node.name in self.fp32_reasons else FLOAT16

    def wanted(self, node: onnx.NodeProto, index: int) -> int:
        return FLOAT if (node.op_type, index) in _FP32_INPUTS else self.node_type(node)

    def _tensor_types(self) -> dict[str, int]:
        """The dtype of every float tensor that is not a constant."""
        tensor_type: dict[str, int] = {}
        for value in self.graph.input:
            if value.name not in self.initializer_names and self.g.is_float(value.name):
                tensor_type[value.name] = self.io_type
        for node in self.graph.node:
            if node.op_type != "Constant":
                tensor_type.update((o, self.node_type(node)) for o in node.output if self.g.is_float(o))
        return tensor_type

    def redirect_retyped_outputs(self) -> list[onnx.NodeProto]:
        """A graph output of the wrong dtype: its producer writes an internal tensor, a Cast (returned, appended
        last) writes the output."""
        g, output_casts = self.g, []
        for value in self.graph.output:
            name = value.name
            if not g.is_float(name) or self.tensor_type.get(name, self.io_type) == self.io_type:
                continue
            if name not in g.producer or name in self.flexible:
                raise ValueError(f"graph output {name!r} is a graph input or constant; FP16 conversion cannot "
                                 "retype it")
            internal = self.namer(f"{name}_{'fp16' if self.tensor_type[name] == FLOAT16 else 'fp32'}")
            producer = g.producer[name]
            producer.output[list(producer.output).index(name)] = internal
            for consumer, index in g.consumers.get(name, []):
                consumer.input[index] = internal
            self.tensor_type[internal] = self.tensor_type[name]
            g.elem_type[internal] = FLOAT
            output_casts.append(helper.make_node("Cast", [internal], [name], name=self.namer(f"{name}_cast_output"),
                                                 to=self.io_type))
        return output_casts

    def convert_constants(self) -> dict[str, str]:
        """Constants: FP16 in place when every use is FP16, an FP16 copy beside the FP32 one when mixed.
        Returns {constant: the name of its FP16 version}."""
        uses: dict[str, set[int]] = defaultdict(set)
        for node in self.graph.node:
            for index, name in enumerate(node.input):
                if name in self.flexible and node.op_type not in _SHAPE_READERS:
                    uses[name].add(self.wanted(node, index))
        fp16_constant: dict[str, str] = {}
        new_initializers = []
        for name, kinds in uses.items():
            if FLOAT16 not in kinds:
                continue
            values = self.g.constant(name)
            if kinds == {FLOAT16}:
                converted = _fp16_tensor(values, name)
                if name in self.constant_nodes:
                    node = self.constant_nodes[name]
                    del node.attribute[:]
                    node.attribute.append(helper.make_attribute("value", converted))
                else:
                    self.g.initializers[name].CopyFrom(converted)
                fp16_constant[name] = name
            else:
                fp16_constant[name] = self.namer(f"{name}_fp16")
                new_initializers.append(_fp16_tensor(values, fp16_constant[name]))
        self.graph.initializer.extend(new_initializers)
        return fp16_constant

    def insert_casts(self, fp16_constant: dict[str, str], output_casts: list[onnx.NodeProto]) -> None:
        """Rebuild the node list: each input in the dtype its node runs in (one Cast per tensor and dtype)."""
        casts: dict[tuple[str, int], str] = {}
        nodes = []
        for node in self.graph.node:
            if node.op_type == "Constant" and node.output[0] in self.constant_nodes:
                nodes.append(node)
                continue
            for index, name in enumerate(node.input):
                if not name or not self.g.is_float(name) or node.op_type in _SHAPE_READERS:
                    continue
                want = self.wanted(node, index)
                if name in self.flexible:
                    if want == FLOAT16:
                        node.input[index] = fp16_constant[name]
                elif self.tensor_type[name] != want:
                    if (name, want) not in casts:
                        suffix = "fp16" if want == FLOAT16 else "fp32"
                        casts[(name, want)] = self.namer(f"{name}_{suffix}")
                        nodes.append(helper.make_node("Cast", [name], [casts[(name, want)]],
                                                      name=self.namer(f"{name}_cast_{suffix}"), to=want))
                    node.input[index] = casts[(name, want)]
            if self.node_type(node) == FLOAT16:
                _retype_fp16_node(node)
            nodes.append(node)
        nodes.extend(output_casts)
        del self.graph.node[:]
        self.graph.node.extend(nodes)

    def retype_io_and_value_info(self) -> None:
        """Inputs/outputs as requested; custom nodes keep their exported value_info (their shapes cannot be
        inferred) retyped; everything else is inferred again."""
        graph = self.graph
        for value in [*graph.input, *graph.output]:
            if value.name not in self.initializer_names and value.type.tensor_type.elem_type == FLOAT:
                value.type.tensor_type.elem_type = self.io_type
        custom_outputs = {o for n in graph.node if n.domain not in _STANDARD_DOMAINS for o in n.output}
        kept = [v for v in graph.value_info if v.name in custom_outputs]
        for value in kept:
            if value.type.tensor_type.elem_type == FLOAT:
                value.type.tensor_type.elem_type = self.tensor_type.get(value.name, FLOAT)
        del graph.value_info[:]
        graph.value_info.extend(kept)


def fp32_nodes_of(model: onnx.ModelProto) -> dict[str, str]:
    """The FP32 nodes (name -> reason) that :func:`convert_to_fp16` recorded; {} for other graphs."""
    value = read_metadata(model).get(FP32_NODES_KEY)
    return json.loads(value) if value else {}
