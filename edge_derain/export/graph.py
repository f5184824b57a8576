"""Small ONNX graph helpers shared by the graph passes (export, FP16, Q/DQ) and the stages after them."""
from __future__ import annotations

import os
from pathlib import Path

import onnx


def load_onnx(path: str | os.PathLike, error: type[Exception] = ValueError) -> onnx.ModelProto:
    """Read an ONNX file without its external data; a missing file is a FileNotFoundError and an unreadable
    one (truncated, not ONNX) an ``error``, each one line that says how to get a good file."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"ONNX file {path} does not exist; export the model first (edge-derain export)")
    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as exc:  # protobuf raises several unrelated types for a corrupt file
        detail = " ".join(str(exc).split())[:200] or "no detail"
        raise error(f"{path} is not a readable ONNX model ({type(exc).__name__}: {detail}); re-export it "
                    f"(edge-derain export)") from None
    if not model.graph.node:
        raise error(f"{path} holds no graph nodes; re-export the model (edge-derain export)")
    return model


def read_metadata(model: onnx.ModelProto) -> dict[str, str]:
    """The model's metadata_props as a dict (``input_multiple``, ``edge_derain.precision``, ...)."""
    return {prop.key: prop.value for prop in model.metadata_props}


def set_metadata(model: onnx.ModelProto, props: dict[str, str]) -> None:
    """Add or overwrite metadata_props entries in place."""
    existing = {prop.key: prop for prop in model.metadata_props}
    for key, value in props.items():
        if key in existing:
            existing[key].value = value
        else:
            model.metadata_props.add(key=key, value=value)


class UniqueNamer:
    """Hands out tensor/node names not used anywhere in ``model`` (``base``, ``base_1``, ...)."""

    def __init__(self, model: onnx.ModelProto):
        graph = model.graph
        self.used = {t.name for t in graph.initializer} | {v.name for v in [*graph.input, *graph.output]}
        for node in graph.node:
            self.used.update([node.name, *node.input, *node.output])

    def __call__(self, base: str) -> str:
        name, suffix = base, 1
        while name in self.used:
            name, suffix = f"{base}_{suffix}", suffix + 1
        self.used.add(name)
        return name
