"""Explicit INT8 for TensorRT: Q/DQ graphs calibrated on the portable graph, carried onto the plugin graph.

TensorRT's explicit quantization takes INT8 from ``QuantizeLinear``/``DequantizeLinear`` (Q/DQ) pairs in
the ONNX; implicit calibrators are deprecated (gone in TensorRT-RTX and 11.x). TensorRT accepts Q/DQ
that are INT8, symmetric (zero point 0), per-tensor for activations and per-output-channel (axis 0)
for weights, with the bias left in float. The placement here is NVIDIA's recommended one: Q/DQ on the
*inputs* of every quantized convolution (activation and weight) and nowhere else; TensorRT fuses the
conv with its bias and ReLU and moves the next conv's Q up into its output.

How a model gets its scales (:func:`calibrate`):

1. ONNX Runtime cannot run our plugin nodes, so the **portable graph** is calibrated: ORT's
   ``quantize_static`` (the default engine, :func:`ort_quantize`) with QDQ format, ``QInt8`` activations
   and weights, ``per_channel=True``, ``ActivationSymmetric``/``WeightSymmetric``, ``QuantizeBias=False``
   and no ``quant_pre_process`` (it adds stray opset imports). ORT's defaults (asymmetric zero points,
   int32 bias) are rejected by TensorRT.
2. :func:`read_quant_table` reads the resulting scales: per conv input tensor (``amax / 127``) and per
   conv the per-channel weight scales.
3. :func:`insert_qdq` writes the same Q/DQ onto the FP32 plugin graph *and* the FP32 portable graph
   (the conv names and tensors are shared by both exports), for all convs or for a mixed-precision
   subset. Consumers that are not quantized convs — the ``DilationFilter`` plugin, which runs FP32/FP16,
   or its portable expansion — keep reading the float tensor; the plugin's output feeds the next
   conv's Q/DQ.

Alternatively the activation scales come from a legacy TensorRT calibration cache
(``legacy_cache``) and the weight scales from the weights (the same formula ORT uses).
"""
from __future__ import annotations

import contextlib
import copy
import io
import json
import logging
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Iterator

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from ..export.graph import UniqueNamer, read_metadata, set_metadata

log = logging.getLogger(__name__)

#: ``--method`` -> ONNX Runtime CalibrationMethod member.
METHODS = {"minmax": "MinMax", "percentile": "Percentile", "entropy": "Entropy"}
ENGINES = ("ort", "modelopt")
MODELOPT_UNAVAILABLE = (
    "--engine modelopt is not available: NVIDIA ModelOpt's ONNX PTQ costs over 1 GB of dependencies, pins an older "
    "onnx, rewrites its input file in place and cannot calibrate a graph with a custom op ONNX Runtime cannot run "
    "(our plugin graph); use --engine ort (the default)")
# Both figures: benchmarks/precision_cpu.py (results/precision_cpu.json, rows 'entropy' and 'entropy at 2048 bins').
ENTROPY_WARNING = (
    "ONNX Runtime's entropy calibration is unreliable for restoration networks: at its default bin count "
    "(quantize_static cannot change it) it equals MinMax, and at 2048 bins it cost the shipped derain net 14.2 dB; "
    "prefer minmax or percentile")
DEFAULT_PERCENTILE = 99.999
QMAX = 127  # symmetric INT8: [-127, 127], scale = amax / 127 (TensorRT's convention too)
PRECISION_KEY = "edge_derain.precision"  # the key convert_to_fp16 sets to "fp16"
INT8_CONVS_KEY = "edge_derain.int8_convs"
_STANDARD_DOMAINS = ("", "ai.onnx")
_QDQ_OPS = ("QuantizeLinear", "DequantizeLinear")


@dataclass
class QuantTable:
    """The scales of an explicit INT8 model, keyed so they apply to the plugin and the portable graph.

    ``activations``: conv input tensor name -> per-tensor scale (``amax / 127``).
    ``weights``: conv node name -> per-output-channel weight scales; a conv missing here gets
    :func:`weight_scales` of its weight. ``source`` says where the activation scales came from.
    """

    activations: dict[str, float]
    weights: dict[str, list[float]] = field(default_factory=dict)
    source: str = ""

    def to_dict(self) -> dict:
        return {"source": self.source,
                "activations": {name: {"scale": scale, "amax": scale * QMAX}
                                for name, scale in self.activations.items()},
                "weights": self.weights}

    @classmethod
    def from_dict(cls, d: dict) -> "QuantTable":
        return cls({name: float(entry["scale"]) for name, entry in d["activations"].items()},
                   {name: [float(s) for s in scales] for name, scales in d.get("weights", {}).items()},
                   d.get("source", ""))


# --------------------------------------------------------------------------------------------------
# graph queries


def graph_input(model: onnx.ModelProto) -> onnx.ValueInfoProto:
    initializers = {t.name for t in model.graph.initializer}
    inputs = [value for value in model.graph.input if value.name not in initializers]
    if len(inputs) != 1:
        raise ValueError(f"expected one image input, the graph has {len(inputs)} "
                         f"({', '.join(v.name for v in inputs)}); export it with 'edge-derain export'")
    return inputs[0]


def check_fp32_graph(model: onnx.ModelProto, name: str) -> None:
    """One-line ValueError unless ``model`` is an FP32 graph without Q/DQ (the input calibration needs)."""
    if any(node.op_type in _QDQ_OPS for node in model.graph.node):
        raise ValueError(f"{name} already carries Q/DQ nodes; calibrate the FP32 export instead")
    if any(t.data_type == TensorProto.FLOAT16 for t in model.graph.initializer):
        raise ValueError(f"{name} is an FP16 graph; calibrate the FP32 export instead")
    if graph_input(model).type.tensor_type.elem_type != TensorProto.FLOAT:
        raise ValueError(f"{name} does not take a float32 input; calibrate the FP32 export")


def quantizable_convs(model: onnx.ModelProto) -> list[str]:
    """Names of the standard Conv nodes with constant weights, in graph order: what INT8 quantizes.

    Run on the plugin graph: the portable graph also holds the ``DilationFilter`` expansion's
    one-hot convolutions, which belong to the plugin (FP32/FP16) and stay unquantized.
    """
    initializers = {t.name for t in model.graph.initializer}
    convs = [node for node in model.graph.node if node.op_type == "Conv" and node.domain in _STANDARD_DOMAINS
             and len(node.input) > 1 and node.input[1] in initializers]
    names = [node.name for node in convs]
    if any(not name for name in names) or len(set(names)) != len(names):
        raise ValueError("the graph's Conv nodes need unique names to carry scales between the plugin and portable "
                         "graphs; export it with 'edge-derain export'")
    return names


def quantized_convs_of(model: onnx.ModelProto) -> list[str]:
    """The INT8 convs :func:`insert_qdq` recorded in the metadata; [] for other graphs."""
    value = read_metadata(model).get(INT8_CONVS_KEY)
    return json.loads(value) if value else []


# --------------------------------------------------------------------------------------------------
# calibration with ONNX Runtime


@contextlib.contextmanager
def _without_preprocess_advice() -> Iterator[None]:
    """quantize_static logs advice to run quant_pre_process, which we skip on purpose (stray opset imports)."""
    class _Drop(logging.Filter):
        def filter(self, record: logging.LogRecord) -> bool:
            return "pre-processing" not in record.getMessage()

    root = logging.getLogger()
    dropper = _Drop()
    root.addFilter(dropper)
    try:
        yield
    finally:
        root.removeFilter(dropper)


def ort_quantize(portable_path: str | os.PathLike, convs: list[str], frames: Iterable[np.ndarray],
                 method: str = "minmax", percentile: float = DEFAULT_PERCENTILE) -> onnx.ModelProto:
    """Calibrate the portable graph on ``frames`` ((1, 3, H, W) float32) with ORT; return ORT's Q/DQ model.

    ``quantize_static`` with TensorRT's constraints (see the module docstring), restricted to ``convs``
    and to conv *inputs* (``OpTypesToExcludeOutputQuantization=["Conv"]``: no Q/DQ on conv outputs,
    whose double rounding before the ReLU TensorRT does not need). Ranges are made symmetric
    (``CalibTensorRangeSymmetric``) so ``amax`` means ``max |x|`` as for TensorRT. Methods:
    ``minmax``; ``percentile`` (``percentile`` of ``|x|``, 99.999 by default); ``entropy`` — ORT's
    entropy calibration is unreliable (``ENTROPY_WARNING``), it is offered for comparison only.
    """
    from onnxruntime.quantization import (CalibrationDataReader, CalibrationMethod, QuantFormat, QuantType,
                                          quantize_static)

    if method not in METHODS:
        raise ValueError(f"calibration method must be one of {', '.join(METHODS)}, got {method!r}")
    if not 0.0 < float(percentile) <= 100.0:
        raise ValueError(f"percentile must be in (0, 100], got {percentile!r}; 99.999 is a good default")
    if method == "entropy":
        log.warning(ENTROPY_WARNING)
    input_name = graph_input(onnx.load(str(portable_path), load_external_data=False)).name

    class _Reader(CalibrationDataReader):
        def __init__(self):
            self.frames = iter(frames)
            self.count = 0

        def get_next(self):
            frame = next(self.frames, None)
            if frame is None:
                return None
            self.count += 1
            return {input_name: frame}

    reader = _Reader()
    chatter = io.StringIO()  # the histogram calibrators print their progress
    with tempfile.TemporaryDirectory(prefix="edge_derain_quant_") as scratch, _without_preprocess_advice(), \
            contextlib.redirect_stdout(chatter):
        out = Path(scratch) / "int8.onnx"
        quantize_static(
            str(portable_path), str(out), reader, quant_format=QuantFormat.QDQ, op_types_to_quantize=["Conv"],
            per_channel=True, reduce_range=False, activation_type=QuantType.QInt8, weight_type=QuantType.QInt8,
            nodes_to_quantize=list(convs), calibrate_method=getattr(CalibrationMethod, METHODS[method]),
            extra_options={"ActivationSymmetric": True, "WeightSymmetric": True, "QuantizeBias": False,
                           "OpTypesToExcludeOutputQuantization": ["Conv"], "CalibTensorRangeSymmetric": True,
                           "CalibPercentile": float(percentile),
                           # keeps weight scales at max|w| / 127 (the adjustment exists for int32 biases)
                           "QDQDisableWeightAdjustForInt32Bias": True})
        log.debug("onnxruntime calibration output: %s", chatter.getvalue().strip())
        if reader.count == 0:
            raise ValueError("the calibration set gave no frames; collect some with 'edge-derain calibrate collect'")
        return onnx.load(str(out))


def _constant(initializers: dict[str, onnx.TensorProto], name: str, what: str) -> np.ndarray:
    if name not in initializers:
        raise ValueError(f"{what} is not a constant initializer")
    return numpy_helper.to_array(initializers[name])


def read_quant_table(model: onnx.ModelProto, convs: list[str], source: str) -> QuantTable:
    """The activation and weight scales of ``convs`` in a Q/DQ graph (ORT's output or ours)."""
    producer = {out: node for node in model.graph.node for out in node.output}
    initializers = {t.name: t for t in model.graph.initializer}
    by_name = {node.name: node for node in model.graph.node}
    table = QuantTable({}, {}, source)
    for name in convs:
        if name not in by_name:
            raise ValueError(f"conv {name!r} is not in the quantized graph; re-export and calibrate again")
        conv = by_name[name]
        dq_input, dq_weight = producer.get(conv.input[0]), producer.get(conv.input[1])
        quantize = producer.get(dq_input.input[0]) if dq_input is not None else None
        if (dq_input is None or dq_input.op_type != "DequantizeLinear" or quantize is None
                or quantize.op_type != "QuantizeLinear" or dq_weight is None
                or dq_weight.op_type != "DequantizeLinear"):
            raise ValueError(f"conv {name!r} lacks Q/DQ on its input or weight in the calibrated graph")
        for dq in (dq_input, dq_weight):
            zero_point = _constant(initializers, dq.input[2], f"zero point of {dq.name}") if len(dq.input) > 2 else None
            if zero_point is None or zero_point.dtype != np.int8 or zero_point.any():
                raise ValueError(f"{dq.name} is not symmetric INT8 (zero point {zero_point}); TensorRT needs INT8 "
                                 "with zero point 0, which onnxruntime's quantize_static gave with these settings")
        scale = float(_constant(initializers, dq_input.input[1], f"scale of {dq_input.name}"))
        tensor = quantize.input[0]
        if tensor in table.activations and table.activations[tensor] != scale:
            raise ValueError(f"tensor {tensor!r} has two activation scales; quantize it with one Q/DQ pair")
        table.activations[tensor] = scale
        table.weights[name] = [float(s) for s in
                               _constant(initializers, dq_weight.input[1], f"scale of {dq_weight.name}").reshape(-1)]
    return table


# --------------------------------------------------------------------------------------------------
# Q/DQ insertion


def weight_scales(weight: np.ndarray) -> np.ndarray:
    """Per-output-channel symmetric INT8 scales ``max|w| / 127`` (computed as ORT does; 1.0 for zero channels)."""
    absmax = np.abs(weight.reshape(weight.shape[0], -1)).max(axis=1).astype(np.float64)
    scales = 2.0 * absmax / (2 * QMAX)
    scales[scales < np.finfo(np.float32).tiny] = 1.0
    return scales.astype(np.float32)


def quantize_weight(weight: np.ndarray, scales: np.ndarray) -> np.ndarray:
    """``round(w / s)`` per output channel (half to even, like QuantizeLinear), clipped to [-127, 127]."""
    shape = (-1,) + (1,) * (weight.ndim - 1)
    values = np.round(weight.astype(np.float32) / scales.astype(np.float32).reshape(shape))
    return np.clip(values, -QMAX, QMAX).astype(np.int8)


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
    initializers = {t.name: t for t in graph.initializer}
    names = UniqueNamer(out)
    zero = np.zeros((), dtype=np.int8)
    new_initializers: list[onnx.TensorProto] = []
    activation_dq: dict[str, str] = {}
    weight_dq: dict[str, str] = {}
    nodes: list[onnx.NodeProto] = []
    wanted = set(convs)
    for node in graph.node:
        if node.name in wanted:
            tensor = node.input[0]
            if tensor not in activation_dq:
                if tensor not in table.activations:
                    raise ValueError(f"no activation scale for {tensor!r} (input of {node.name}); the scales are "
                                     "from another model or export; calibrate this one again")
                scale = float(table.activations[tensor])
                if not np.isfinite(scale) or scale <= 0:
                    raise ValueError(f"activation scale of {tensor!r} is {scale}; scales must be finite and > 0")
                scale_name, zp_name = names(f"{tensor}_scale"), names(f"{tensor}_zero_point")
                new_initializers += [numpy_helper.from_array(np.array(scale, np.float32), scale_name),
                                     numpy_helper.from_array(zero, zp_name)]
                quantized = names(f"{tensor}_QuantizeLinear_Output")
                dequantized = names(f"{tensor}_DequantizeLinear_Output")
                nodes += [helper.make_node("QuantizeLinear", [tensor, scale_name, zp_name], [quantized],
                                           name=names(f"{tensor}_QuantizeLinear")),
                          helper.make_node("DequantizeLinear", [quantized, scale_name, zp_name], [dequantized],
                                           name=names(f"{tensor}_DequantizeLinear"))]
                activation_dq[tensor] = dequantized
            node.input[0] = activation_dq[tensor]

            weight_name = node.input[1]
            if weight_name not in weight_dq:
                weight = _constant(initializers, weight_name, f"weight of {node.name}").astype(np.float32)
                scales = np.asarray(table.weights[node.name] if node.name in table.weights else weight_scales(weight),
                                    dtype=np.float32)
                if scales.shape != (weight.shape[0],):
                    raise ValueError(f"{node.name} has {weight.shape[0]} output channels but {scales.size} weight "
                                     "scales; the scales are from another model, calibrate this one again")
                q_name, scale_name = names(f"{weight_name}_quantized"), names(f"{weight_name}_scale")
                zp_name = names(f"{weight_name}_zero_point")
                dequantized = names(f"{weight_name}_DequantizeLinear_Output")
                new_initializers += [numpy_helper.from_array(quantize_weight(weight, scales), q_name),
                                     numpy_helper.from_array(scales, scale_name),
                                     numpy_helper.from_array(np.zeros(scales.shape, np.int8), zp_name)]
                nodes.append(helper.make_node("DequantizeLinear", [q_name, scale_name, zp_name], [dequantized],
                                              name=names(f"{weight_name}_DequantizeLinear"), axis=0))
                weight_dq[weight_name] = dequantized
            node.input[1] = weight_dq[weight_name]
        nodes.append(node)
    del graph.node[:]
    graph.node.extend(nodes)
    still_used = {name for node in graph.node for name in node.input}
    kept = [t for t in graph.initializer if t.name not in weight_dq or t.name in still_used]
    del graph.initializer[:]
    graph.initializer.extend(kept + new_initializers)
    set_metadata(out, {PRECISION_KEY: "int8", INT8_CONVS_KEY: json.dumps(convs)})
    onnx.checker.check_model(out)
    return out


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
        if node.op_type not in _QDQ_OPS:
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


# --------------------------------------------------------------------------------------------------
# the calibrate command


@dataclass
class CalibrationResult:
    plugin_path: Path
    portable_path: Path
    record_path: Path
    record: dict
    plan_path: Path | None = None

    def summary(self) -> str:
        r = self.record
        lines = [f"INT8 plugin graph:   {self.plugin_path}", f"INT8 portable graph: {self.portable_path}",
                 f"record:              {self.record_path}"]
        if self.plan_path:
            lines.append(f"mixed-precision plan: {self.plan_path}")
        lines.append(f"scales from {r['scales']['source']}; {len(r['int8_convs'])}/{r['quantizable_convs']} convs in "
                     f"INT8, {100 * r['int8_coverage']:.1f}% of conv MACs")
        drop = r.get("holdout")
        if drop:
            lines.append(f"held-out split ({drop['count']} frames), PSNR-Y vs clean: "
                         f"FP32 {drop['fp32_psnr_y']:.2f} dB; "
                         f"INT8 drop {drop['int8_drop_db']:+.3f} dB; FP16 drop {drop['fp16_drop_db']:+.3f} dB")
            lines.append(f"  FP16 measured as: {drop['fp16_measured']}")
            lines.append(f"  INT8 measured as: {drop['int8_measured']}")
        else:
            lines.append("no held-out frames with clean targets: accuracy drop not measured "
                         "(use 'edge-derain eval --precisions' on a paired folder)")
        return "\n".join(lines)


class BudgetUnreachable(ValueError):
    """No INT8 plan meets the accuracy budget; the message says why."""


def resolve_graphs(onnx_path: str | os.PathLike) -> tuple[Path, Path]:
    """(plugin graph, portable graph) for an export; a graph without custom nodes serves as both."""
    from ..export.onnx_export import plugin_and_portable_paths
    from ..export.passes import list_custom_nodes

    onnx_path = Path(onnx_path)
    if not onnx_path.is_file():
        raise FileNotFoundError(f"ONNX file {onnx_path} not found; export the model first (edge-derain export)")
    plugin, portable = plugin_and_portable_paths(onnx_path)
    if not plugin.is_file():
        plugin = onnx_path
    if not portable.is_file():
        if list_custom_nodes(onnx.load(str(plugin), load_external_data=False)):
            raise FileNotFoundError(f"portable graph {portable} not found: calibration runs the portable twin of the "
                                    "plugin graph on ONNX Runtime; export again without --no-portable")
        portable = plugin
    return plugin, portable


def calibrate(onnx_path: str | os.PathLike, out: str | os.PathLike, calib_dir: str | os.PathLike | None = None,
              method: str = "minmax", percentile: float = DEFAULT_PERCENTILE, engine: str = "ort",
              cache: str | os.PathLike | None = None, max_drop_db: float | None = None,
              groups: str = "conv") -> CalibrationResult:
    """Explicit INT8 graphs for an export: ``<out>.onnx`` (plugin) and ``<out>.portable.onnx``, plus a record.

    ``onnx_path``: the FP32 plugin graph (its ``.portable.onnx`` twin must be beside it). Scales come
    from calibrating the portable graph on ``calib_dir``'s ``calib`` split with ORT (``method``:
    minmax | percentile | entropy — entropy is unreliable, see ``ENTROPY_WARNING``), or from a legacy
    TensorRT calibration ``cache``. ``max_drop_db`` runs the per-layer sensitivity analysis on the
    set's held-out split and leaves the most sensitive layer ``groups`` (``conv`` or ``stage``) in
    FP32 until the PSNR-Y drop fits (``<out>.plan.json``; :class:`BudgetUnreachable` if no INT8 layer
    fits). When the set has held-out frames with clean targets, the INT8 and FP16 PSNR-Y drops
    against FP32 are measured on ONNX Runtime (CPU) and recorded.
    """
    from ..export.onnx_export import plugin_and_portable_paths
    from ..utils import atomic_write_bytes, atomic_write_json
    from .calibration_set import CalibrationSet
    from .legacy_cache import read_calibration_cache, table_from_cache
    from .sensitivity import conv_macs, int8_coverage, plan_mixed_precision

    if engine == "modelopt":
        raise ValueError(MODELOPT_UNAVAILABLE)
    if engine not in ENGINES:
        raise ValueError(f"engine must be 'ort' (ONNX Runtime quantize_static), got {engine!r}")
    if method not in METHODS:
        raise ValueError(f"calibration method must be one of {', '.join(METHODS)}, got {method!r}")
    if max_drop_db is not None and not (np.isfinite(max_drop_db) and max_drop_db >= 0):
        raise ValueError(f"max_drop_db must be a finite number of dB >= 0, got {max_drop_db!r}")
    if cache is None and calib_dir is None:
        raise ValueError("pass a calibration set (--calib DIR, made by 'edge-derain calibrate collect') or a legacy "
                         "TensorRT calibration cache (--cache FILE)")
    plugin_path, portable_path = resolve_graphs(onnx_path)
    plugin, portable = onnx.load(str(plugin_path)), onnx.load(str(portable_path))
    check_fp32_graph(plugin, plugin_path.name)
    check_fp32_graph(portable, portable_path.name)
    convs = quantizable_convs(plugin)
    if not convs:
        raise ValueError(f"{plugin_path.name} has no Conv with constant weights, so there is nothing to quantize; "
                         "build it with --precision fp16 instead")
    portable_convs = {node.name for node in portable.graph.node if node.op_type == "Conv"}
    if not set(convs) <= portable_convs:
        raise ValueError(f"{portable_path.name} does not match {plugin_path.name} (conv "
                         f"{sorted(set(convs) - portable_convs)[0]!r} is missing); export both again")
    metadata = read_metadata(plugin)
    multiple = int(metadata.get("input_multiple", 1))
    dims = graph_input(plugin).type.tensor_type.shape.dim
    channels = dims[1].dim_value if len(dims) == 4 and dims[1].dim_value else 3

    calib_set = None
    if calib_dir is not None:
        calib_set = CalibrationSet.load(calib_dir)
        calib_set.check_for_model(multiple, channels)
    if cache is not None:
        table = table_from_cache(read_calibration_cache(cache), plugin, convs)
    else:
        table = read_quant_table(ort_quantize(portable_path, convs, calib_set.inputs("calib"), method, percentile),
                                 convs, source=f"onnxruntime quantize_static ({method}"
                                 + (f", {percentile}th percentile)" if method == "percentile" else ")"))
    pairs = calib_set.holdout_pairs() if calib_set is not None else []
    macs = conv_macs(portable, convs)

    plugin_out, portable_out = plugin_and_portable_paths(out)
    stem = plugin_out.name[: -len(".onnx")]
    plan_path = None
    int8_convs = convs
    if max_drop_db is not None:
        if not pairs:
            raise ValueError("--max-drop-db measures PSNR against clean targets on the set's held-out split, and this "
                             "set has none (footage has no ground truth); generate the default set with "
                             "'edge-derain calibrate collect --data DIR'")
        plan = plan_mixed_precision(portable, table, convs, pairs, max_drop_db, by=groups, macs=macs)
        plan_path = plugin_out.with_name(f"{stem}.plan.json")
        atomic_write_json(plan_path, plan.to_dict())
        if not plan.met:
            raise BudgetUnreachable(f"{plan.reason} (plan: {plan_path})")
        int8_convs = plan.int8_convs

    plugin_q, portable_q = insert_qdq(plugin, table, int8_convs), insert_qdq(portable, table, int8_convs)
    check_trt_qdq(plugin_q, plugin_out.name)
    check_trt_qdq(portable_q, portable_out.name)
    atomic_write_bytes(plugin_out, plugin_q.SerializeToString())
    atomic_write_bytes(portable_out, portable_q.SerializeToString())

    record = {
        "plugin_graph": str(plugin_out), "portable_graph": str(portable_out),
        "source_graphs": {"plugin": str(plugin_path), "portable": str(portable_path)},
        "model": metadata.get("model"), "config": metadata.get("config"),
        "engine": engine, "method": None if cache is not None else method,
        "percentile": percentile if cache is None and method == "percentile" else None,
        "calibration_set": calib_set.describe() if calib_set is not None else None,
        "legacy_cache": str(cache) if cache is not None else None,
        "quantizable_convs": len(convs), "int8_convs": int8_convs,
        "int8_coverage": int8_coverage(macs, int8_convs), "max_drop_db": max_drop_db,
        "plan": str(plan_path) if plan_path else None,
        "scales": table.to_dict(),
    }
    if pairs:
        record["holdout"] = holdout_drops(portable, portable_q, pairs)
    record_path = plugin_out.with_name(f"{stem}.calibration.json")
    atomic_write_json(record_path, record)
    return CalibrationResult(plugin_out, portable_out, record_path, record, plan_path)


def holdout_drops(portable: onnx.ModelProto, portable_int8: onnx.ModelProto, pairs) -> dict:
    """PSNR-Y of FP32, INT8 and FP16 on the held-out pairs (ONNX Runtime, CPU) and the drops against FP32."""
    from .report import fp16_graph_for_ort_cpu, int8_measured_statement
    from .sensitivity import psnr_y_per_pair

    fp16, fp16_statement = fp16_graph_for_ort_cpu(portable)
    fp32, int8, fp16 = (float(np.mean(psnr_y_per_pair(graph, pairs))) for graph in (portable, portable_int8, fp16))
    return {"count": len(pairs), "metric": "mean PSNR-Y against the clean targets",
            "fp32_psnr_y": fp32, "int8_psnr_y": int8, "fp16_psnr_y": fp16,
            "int8_drop_db": fp32 - int8, "fp16_drop_db": fp32 - fp16,
            "int8_measured": int8_measured_statement(portable_int8), "fp16_measured": fp16_statement}
