"""What INT8 calibration reads from an export: the plugin and portable graph pair, its one image input, that it
is FP32, and which convolutions it can quantize (or did)."""
from __future__ import annotations

import json
import os
from pathlib import Path

import onnx
from onnx import TensorProto

from ..export.graph import read_metadata

PRECISION_KEY = "edge_derain.precision"  # the key convert_to_fp16 sets to "fp16"
INT8_CONVS_KEY = "edge_derain.int8_convs"
STANDARD_DOMAINS = ("", "ai.onnx")
QDQ_OPS = ("QuantizeLinear", "DequantizeLinear")


def graph_input(model: onnx.ModelProto) -> onnx.ValueInfoProto:
    initializers = {t.name for t in model.graph.initializer}
    inputs = [value for value in model.graph.input if value.name not in initializers]
    if len(inputs) != 1:
        raise ValueError(f"expected one image input, the graph has {len(inputs)} "
                         f"({', '.join(v.name for v in inputs)}); export it with 'edge-derain export'")
    return inputs[0]


def check_fp32_graph(model: onnx.ModelProto, name: str) -> None:
    """One-line ValueError unless ``model`` is an FP32 graph without Q/DQ (the input calibration needs)."""
    if any(node.op_type in QDQ_OPS for node in model.graph.node):
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
    convs = [node for node in model.graph.node if node.op_type == "Conv" and node.domain in STANDARD_DOMAINS
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
