"""What an ONNX file carries, read before a build: its inputs, the precision it is in (FP16 tensors, Q/DQ
nodes), custom ops, the exporter's metadata and a content hash; and the profile checked against its input."""
from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, field
from pathlib import Path

from .errors import OnnxParseError
from .profile import ShapeProfile, check_profile_multiple


@dataclass(frozen=True)
class OnnxSummary:
    path: Path
    inputs: dict[str, tuple]  # name -> dims (int or symbolic str)
    has_fp16: bool
    has_qdq: bool
    custom_ops: tuple[str, ...]  # "domain::op" of nodes outside the standard ONNX domains
    metadata: dict = field(default_factory=dict)  # metadata_props, e.g. input_multiple from the exporter


def inspect_onnx(path: str | os.PathLike) -> OnnxSummary:
    """Read an ONNX file's inputs and the precision it carries; one-line OnnxParseError when unreadable."""
    import onnx

    from ..export.graph import load_onnx, read_metadata

    path = Path(path)
    model = load_onnx(path, OnnxParseError)
    fp16 = onnx.TensorProto.FLOAT16
    graph = model.graph
    initializer_names = {t.name for t in graph.initializer}
    inputs = {}
    for value in graph.input:
        if value.name in initializer_names:
            continue
        dims = tuple(d.dim_value if d.HasField("dim_value") else (d.dim_param or "?")
                     for d in value.type.tensor_type.shape.dim)
        inputs[value.name] = dims
    typed_values = list(graph.input) + list(graph.output) + list(graph.value_info)
    has_fp16 = (any(t.data_type == fp16 for t in graph.initializer)
                or any(v.type.tensor_type.elem_type == fp16 for v in typed_values)
                or any(n.op_type == "Cast" and any(a.name == "to" and a.i == fp16 for a in n.attribute)
                       for n in graph.node))
    has_qdq = any(n.op_type in ("QuantizeLinear", "DequantizeLinear") for n in graph.node)
    custom = sorted({f"{n.domain}::{n.op_type}" for n in graph.node if n.domain not in ("", "ai.onnx")})
    metadata = read_metadata(model)
    return OnnxSummary(path, inputs, has_fp16, has_qdq, tuple(custom), metadata)


def onnx_sha256(path: str | os.PathLike) -> str:
    """SHA-256 over the ONNX file and, in name order, any external-data files it references."""
    import onnx

    path = Path(path)
    digest = hashlib.sha256(path.read_bytes())
    model = onnx.load(str(path), load_external_data=False)
    locations = sorted({entry.value for tensor in model.graph.initializer for entry in tensor.external_data
                        if entry.key == "location"})
    for location in locations:
        digest.update(location.encode())
        digest.update((path.parent / location).read_bytes())
    return digest.hexdigest()


def positive_int_prop(onnx_metadata: dict, key: str) -> int | None:
    """An exporter metadata prop (``input_multiple``, ``receptive_radius``) as a positive int, None when
    absent or malformed."""
    try:
        value = int(onnx_metadata[key])
    except (KeyError, TypeError, ValueError):
        return None
    return value if value > 0 else None


def input_multiple_of(onnx_metadata: dict) -> int | None:
    """The exporter's ``input_multiple`` metadata prop as an int, None when absent or malformed."""
    return positive_int_prop(onnx_metadata, "input_multiple")


def resolve_shapes(summary: OnnxSummary, shapes: ShapeProfile | None) -> ShapeProfile:
    """Check ``shapes`` against the ONNX input; without one, use the input's static shape."""
    name = shapes.input_name if shapes else "image"
    if name not in summary.inputs:
        raise ValueError(f"{summary.path.name} has no input {name!r} (inputs: {', '.join(summary.inputs)}); "
                         f"pass ShapeProfile(..., input_name=<one of them>)")
    dims = summary.inputs[name]
    if shapes is None:
        if not all(isinstance(d, int) and d > 0 for d in dims):
            raise ValueError(f"input {name!r} of {summary.path.name} has dynamic shape {dims}; pass "
                             "shapes=ShapeProfile(min, opt, max)")
        return ShapeProfile.static(dims, name)
    if len(dims) != len(shapes.min):
        raise ValueError(f"profile for {name!r} has rank {len(shapes.min)} but the ONNX input is {dims}")
    for axis, d in enumerate(dims):
        if isinstance(d, int) and d > 0 and not shapes.min[axis] == shapes.max[axis] == d:
            raise ValueError(f"profile {shapes.label} conflicts with the ONNX input {name!r} {dims} "
                             f"at axis {axis} (fixed to {d})")
    check_profile_multiple(shapes, input_multiple_of(summary.metadata), summary.path.name)
    return shapes
