"""The scales of an explicit INT8 model: per-tensor activation scales and per-output-channel weight scales
(symmetric INT8, ``scale = amax / 127``), read from a Q/DQ graph or computed from the weights."""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import onnx
from onnx import numpy_helper

QMAX = 127  # symmetric INT8: [-127, 127], scale = amax / 127 (TensorRT's convention too)


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



def constant_array(initializers: dict[str, onnx.TensorProto], name: str, what: str) -> np.ndarray:
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
            zero_point = constant_array(initializers, dq.input[2], f"zero point of {dq.name}") if len(dq.input) > 2 else None
            if zero_point is None or zero_point.dtype != np.int8 or zero_point.any():
                raise ValueError(f"{dq.name} is not symmetric INT8 (zero point {zero_point}); TensorRT needs INT8 "
                                 "with zero point 0, which onnxruntime's quantize_static gave with these settings")
        scale = float(constant_array(initializers, dq_input.input[1], f"scale of {dq_input.name}"))
        tensor = quantize.input[0]
        if tensor in table.activations and table.activations[tensor] != scale:
            raise ValueError(f"tensor {tensor!r} has two activation scales; quantize it with one Q/DQ pair")
        table.activations[tensor] = scale
        table.weights[name] = [float(s) for s in
                               constant_array(initializers, dq_weight.input[1], f"scale of {dq_weight.name}").reshape(-1)]
    return table



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

