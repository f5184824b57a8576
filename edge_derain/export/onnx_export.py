"""PyTorch -> ONNX: the TensorRT-plugin graph and its portable (standard-ONNX) twin.

``export_model`` traces ``model.core(x)[0]`` — the padded-size network without the pad/crop of
``forward`` (the pipeline pads frames once, outside the engine) and without auxiliary training
outputs — with dynamic batch, height and width. Two files come out:

* ``<out>.onnx`` — the plugin graph: custom operators are single ``edge_derain`` nodes
  (``DilationFilter``, ``TransposedAttention``) that TensorRT maps onto our plugins.
* ``<out>.portable.onnx`` — the same network with every custom node rewritten into standard ONNX
  (``passes.make_portable``); it runs on ONNX Runtime or TensorRT without the plugin library. The
  ``.portable.onnx`` suffix keeps both beside each other and still ends in ``.onnx`` for tools that
  dispatch on the extension.

Both graphs carry metadata_props so a backend can rebuild the pre-processing and trace the file
back to its model: ``model`` (registry name), ``config`` (JSON for ``create_model``),
``input_multiple``, ``receptive_radius`` (the overlap tiled inference needs), ``edge_derain_version``,
``opset`` and ``graph_kind`` (``plugin``/``portable``).
"""
from __future__ import annotations

import io
import json
import warnings
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from .. import __version__
from ..utils import atomic_write_bytes
from .graph import set_metadata
from .passes import describe_custom_nodes, make_portable

INPUT_NAME = "image"
OUTPUT_NAME = "derained"
MIN_OPSET = 17
PORTABLE_SUFFIX = ".portable.onnx"


@dataclass(frozen=True)
class ExportResult:
    plugin_path: Path
    portable_path: Path | None
    custom_nodes: str  # e.g. "1 DilationFilter"; empty when the model needs no plugin

    def summary(self) -> str:
        lines = [f"plugin graph:   {self.plugin_path} ({self.custom_nodes or 'no custom nodes'})"]
        if self.portable_path is not None:
            lines.append(f"portable graph: {self.portable_path}")
        return "\n".join(lines)


class _CoreOutput(nn.Module):
    """``model.core(x)[0]``: the deployable output only."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return self.model.core(image)[0]


def plugin_and_portable_paths(out_path: str | Path) -> tuple[Path, Path]:
    """``out`` or ``out.onnx`` -> (``out.onnx``, ``out.portable.onnx``)."""
    out_path = Path(out_path)
    name = out_path.name
    for suffix in (PORTABLE_SUFFIX, ".onnx"):
        if name.endswith(suffix):
            name = name[: -len(suffix)]
            break
    if not name:
        raise ValueError(f"output path {str(out_path)!r} has no file name; pass e.g. exports/efderain_w025.onnx")
    return out_path.with_name(name + ".onnx"), out_path.with_name(name + PORTABLE_SUFFIX)


def portable_path_for(plugin_path: str | Path) -> Path:
    return plugin_and_portable_paths(plugin_path)[1]


def _finish(model, props: dict[str, str]):
    """Set metadata, infer shapes and run the ONNX checker; return the model with inferred shapes."""
    import onnx

    set_metadata(model, props)
    model = onnx.shape_inference.infer_shapes(model, check_type=True)
    onnx.checker.check_model(model)
    return model


def trace_to_onnx(module: nn.Module, sample_args: tuple[torch.Tensor, ...], input_names: list[str],
                  output_names: list[str], opset: int = MIN_OPSET):
    """Trace ``module`` (already in eval mode) into an ONNX model with the ops' custom nodes.

    Every 4-D input and output gets symbolic dims 0, 2, 3 (``batch``, ``height``, ``width``): all
    tensors at the interface share them. ``autograd_inlining=False`` is required by the custom-node
    Functions (see ``edge_derain.ops.onnx``); constant folding is on.
    """
    import onnx

    dynamic = {0: "batch", 2: "height", 3: "width"}
    dynamic_axes = {name: dynamic for name in [*input_names, *output_names]}
    buffer = io.BytesIO()
    with torch.no_grad(), warnings.catch_warnings():
        # The ops validate shapes with Python comparisons; static channel counts are intended.
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        # The TorchScript exporter is the deliberate choice (see edge_derain.ops.onnx); silence its
        # own deprecation notices.
        warnings.filterwarnings("ignore", message=".*legacy TorchScript-based ONNX export", category=DeprecationWarning)
        warnings.filterwarnings("ignore", category=DeprecationWarning, module=r"torch\.onnx")
        torch.onnx.export(module, sample_args, buffer, dynamo=False, opset_version=opset,
                          input_names=input_names, output_names=output_names, dynamic_axes=dynamic_axes,
                          do_constant_folding=True, autograd_inlining=False)
    return onnx.load_from_string(buffer.getvalue())


def export_model(model: nn.Module, out_path: str | Path, opset: int = MIN_OPSET, portable: bool = True,
                 sample_size: tuple[int, int] | None = None, batch: int = 1, seed: int = 0) -> ExportResult:
    """Export ``model`` (a ``DerainNet``) to ``<out>.onnx`` and, if ``portable``, ``<out>.portable.onnx``.

    ``sample_size`` is the (H, W) traced with (default: 4 x ``input_multiple`` per side); the graph
    stays dynamic in batch, height and width, so any multiple of ``input_multiple`` runs. Tracing
    uses a random input in [0, 1], never zeros, so no branch is traced on degenerate values. Files
    are written atomically: a failed export leaves any previous files untouched.
    """
    if not isinstance(model, nn.Module) or not hasattr(model, "core"):
        raise ValueError(f"expected a DerainNet (with .core), got {type(model).__name__}; "
                         "build it with edge_derain.models.create_model or checkpoint.load_model")
    if isinstance(batch, bool) or not isinstance(batch, int) or batch < 1:
        raise ValueError(f"batch must be a positive int (the traced batch size; the graph stays dynamic), "
                         f"got {batch!r}")
    if isinstance(opset, bool) or not isinstance(opset, int) or opset < MIN_OPSET:
        raise ValueError(f"opset must be an int >= {MIN_OPSET} (Softmax/Reduce* semantics the passes rely on), "
                         f"got {opset!r}")
    multiple = int(getattr(model, "input_multiple", 1))
    h, w = sample_size or (4 * multiple, 4 * multiple)
    if h <= 0 or w <= 0 or h % multiple or w % multiple:
        raise ValueError(f"sample_size must be positive multiples of {multiple}, got {h}x{w}; "
                         f"e.g. {4 * multiple}x{4 * multiple}")
    plugin_path, portable_path = plugin_and_portable_paths(out_path)

    param = next(model.parameters(), None)
    device = param.device if param is not None else torch.device("cpu")
    generator = torch.Generator().manual_seed(seed)
    sample = torch.rand(batch, 3, h, w, generator=generator).to(device)
    was_training = model.training
    try:
        plugin = trace_to_onnx(_CoreOutput(model).eval(), (sample,), [INPUT_NAME], [OUTPUT_NAME], opset)
    finally:
        model.train(was_training)

    props = {
        "model": getattr(model, "model_name", "") or type(model).__name__,
        "config": json.dumps(getattr(model, "model_config", {}), sort_keys=True, default=str),
        "input_multiple": str(multiple),
        "receptive_radius": str(int(getattr(model, "receptive_radius", 64))),
        "edge_derain_version": __version__,
        "opset": str(opset),
    }
    plugin.producer_name, plugin.producer_version = "edge_derain", __version__
    portable_model = _finish(make_portable(plugin), {**props, "graph_kind": "portable"}) if portable else None
    plugin = _finish(plugin, {**props, "graph_kind": "plugin"})
    atomic_write_bytes(plugin_path, plugin.SerializeToString())
    if portable_model is not None:
        atomic_write_bytes(portable_path, portable_model.SerializeToString())
    return ExportResult(plugin_path, portable_path if portable else None, describe_custom_nodes(plugin))


def exporter_digest() -> str:
    """A short hash of the code that shapes an exported graph (models, custom operators, export passes), so
    that caches of exported graphs are keyed by it as well as by the weights: a change of exporter or of
    a model's metadata (``receptive_radius``) then exports again instead of serving the old graph."""
    from ..utils import files_sha256

    package = Path(__file__).resolve().parents[1]
    return files_sha256([path for folder in ("models", "ops", "export")
                         for path in sorted((package / folder).glob("*.py"))], package)[:12]
