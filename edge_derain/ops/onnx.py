"""Export-time path of the two custom operators: single ONNX nodes for the TensorRT plugins.

While ``torch.onnx.export`` traces a model, the public ops (``dilation_filter``,
``transposed_attention``) hand over to :func:`export_dilation_filter` / :func:`export_transposed_attention`.
These run the efficient op for the traced values, but the exporter records one node in the
``edge_derain`` domain instead of the op's dozens of primitive ops:

* ``DilationFilter(image, kernels) -> out`` with attributes ``dilations`` (ints), ``plugin_version="1"``,
  ``plugin_namespace=""``; ``out`` is (N, C * len(dilations), H, W).
* ``TransposedAttention(q, k, v, temperature[, branch_weights]) -> o`` with ``num_heads`` (int), ``mode``
  (string), ``topk`` (ints, omitted for ``mode="dense"`` which has no sparse branch), ``eps`` (float),
  ``plugin_version="1"``, ``plugin_namespace=""``; ``temperature`` is flattened to (num_heads,) and
  ``o`` has q's shape.

TensorRT's ONNX parser turns an unknown node into the plugin registered under its op type, version
``plugin_version`` and namespace ``plugin_namespace``; the attributes become the plugin fields.
``edge_derain.export.passes`` rewrites both nodes back into standard ONNX (the portable graph).

Exporter choice: the TorchScript exporter (``torch.onnx.export(..., dynamo=False)``) with
``torch.autograd.Function.symbolic``. A ``symbolic`` receives the op's Python attributes (dilations,
mode, top-k) as plain values, so they become node attributes with no tensor plumbing, and
``dynamic_axes`` yields symbolic batch/height/width dims throughout. The dynamo exporter would need a
``torch.library`` op plus an onnxscript translation table, and onnxscript is not part of the
project's ``onnx`` extra. Export with ``autograd_inlining=False`` (``edge_derain.export`` does):
the tracer also records each Function's forward as a nested block, and with inlining on, torch 2.13's
peephole pass crashes on that block for the dilation filter (``IndexError: Argument passed to at()
was not in the map``, triggered by the op's ``0 + H`` slice bounds); our Functions all have a
``symbolic``, so nothing needs inlining.

The public ops hand over when :func:`emit_custom_node` is true (first lines of each op). It is False
inside the Functions' own forward, which must run the real op rather than recurse.
"""
from __future__ import annotations

import contextlib
import threading
from typing import Sequence

import torch

DOMAIN = "edge_derain"
PLUGIN_VERSION = "1"
PLUGIN_NAMESPACE = ""
DILATION_FILTER = "DilationFilter"
TRANSPOSED_ATTENTION = "TransposedAttention"
CUSTOM_OPS = (DILATION_FILTER, TRANSPOSED_ATTENTION)

_forward_state = threading.local()


@contextlib.contextmanager
def _running_forward():
    depth = getattr(_forward_state, "depth", 0)
    _forward_state.depth = depth + 1
    try:
        yield
    finally:
        _forward_state.depth = depth


def _in_forward() -> bool:
    return getattr(_forward_state, "depth", 0) > 0


def emit_custom_node() -> bool:
    """True while ``torch.onnx.export`` traces, except inside a custom node's own forward."""
    return torch.onnx.is_in_onnx_export() and not _in_forward()


def _check_not_reentrant(op: str) -> None:
    if _in_forward():
        raise RuntimeError(f"{op} dispatched to its ONNX export path from inside the custom node's forward, "
                           f"which would recurse forever; guard the dispatch with "
                           f"edge_derain.ops.onnx.emit_custom_node() instead of torch.onnx.is_in_onnx_export()")


def _typed_like(out, reference, channels: int | None = None):
    """Give a custom node's output ``reference``'s dtype and (symbolic) shape, optionally new channels.

    The exporter cannot infer shapes through an unknown op; without this the downstream layers
    lose their shapes and ONNX shape inference stops at the custom node.
    """
    ref_type = reference.type()
    sizes = ref_type.varyingSizes()
    if sizes is not None and channels is not None:
        sizes = [sizes[0], channels, *sizes[2:]]
    out.setType(ref_type.with_sizes(sizes) if sizes is not None else ref_type)
    return out


class DilationFilterFunction(torch.autograd.Function):
    """Runs :func:`~edge_derain.ops.dilation_filter`; exports as one ``edge_derain::DilationFilter``."""

    @staticmethod
    def forward(ctx, image: torch.Tensor, kernels: torch.Tensor, dilations: tuple[int, ...]) -> torch.Tensor:
        from .dilation_filter import dilation_filter

        with _running_forward():
            return dilation_filter(image, kernels, dilations)

    @staticmethod
    def symbolic(g, image, kernels, dilations):
        out = g.op(f"{DOMAIN}::{DILATION_FILTER}", image, kernels, dilations_i=list(dilations),
                   plugin_version_s=PLUGIN_VERSION, plugin_namespace_s=PLUGIN_NAMESPACE)
        sizes = image.type().varyingSizes()
        channels = sizes[1] if sizes else None
        return _typed_like(out, image, None if channels is None else channels * len(dilations))


class TransposedAttentionFunction(torch.autograd.Function):
    """Runs :func:`~edge_derain.ops.transposed_attention`; exports as one ``edge_derain::TransposedAttention``."""

    @staticmethod
    def forward(ctx, q, k, v, temperature, branch_weights, num_heads: int, mode: str,
                topk: tuple[int, ...], eps: float) -> torch.Tensor:
        from .transposed_attention import transposed_attention

        with _running_forward():
            return transposed_attention(q, k, v, temperature, num_heads, mode, list(topk) or None,
                                        branch_weights, eps)

    @staticmethod
    def symbolic(g, q, k, v, temperature, branch_weights, num_heads, mode, topk, eps):
        inputs = [q, k, v, temperature]
        if branch_weights is not None and not branch_weights.node().mustBeNone():
            inputs.append(branch_weights)
        attributes = {"num_heads_i": num_heads, "mode_s": mode, "eps_f": eps,
                      "plugin_version_s": PLUGIN_VERSION, "plugin_namespace_s": PLUGIN_NAMESPACE}
        if topk:
            attributes["topk_i"] = list(topk)
        out = g.op(f"{DOMAIN}::{TRANSPOSED_ATTENTION}", *inputs, **attributes)
        return _typed_like(out, q)


def export_dilation_filter(image: torch.Tensor, kernels: torch.Tensor,
                           dilations: Sequence[int] = (1, 2, 3, 4)) -> torch.Tensor:
    """:func:`~edge_derain.ops.dilation_filter` recorded as one ``DilationFilter`` node when exported."""
    from .dilation_filter import check_dilation_filter_inputs

    _check_not_reentrant("dilation_filter")
    check_dilation_filter_inputs(image, kernels, dilations)
    return DilationFilterFunction.apply(image, kernels, tuple(int(d) for d in dilations))


def export_transposed_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, temperature: torch.Tensor,
                                num_heads: int, mode: str = "dense", topk: Sequence[int] | None = None,
                                branch_weights: torch.Tensor | None = None, eps: float = 1e-12) -> torch.Tensor:
    """:func:`~edge_derain.ops.transposed_attention` recorded as one ``TransposedAttention`` node when exported.

    ``temperature`` is passed as (num_heads,) — the plugin's layout. A (h,) parameter keeps its
    state-dict name as the initializer name; Restormer's (h, 1, 1) is reshaped, and the exporter
    folds that into a new initializer named after the node.
    """
    from .transposed_attention import check_transposed_attention_inputs

    _check_not_reentrant("transposed_attention")
    check_transposed_attention_inputs(q, k, v, temperature, num_heads, mode, topk, branch_weights, eps)
    if temperature.dim() != 1:
        temperature = temperature.reshape(int(num_heads))
    return TransposedAttentionFunction.apply(q, k, v, temperature, branch_weights, int(num_heads), mode,
                                             tuple(int(t) for t in topk or ()), float(eps))
