"""The ``calibrate`` workflow: an FP32 export -> explicit INT8 plugin and portable graphs, with a record.

How a model gets its scales (:func:`calibrate`):

1. ONNX Runtime cannot run our plugin nodes, so the **portable graph** is calibrated: ORT's
   ``quantize_static`` (the default engine, :func:`.ort_calibration.ort_quantize`) with QDQ format, ``QInt8``
   activations and weights, ``per_channel=True``, ``ActivationSymmetric``/``WeightSymmetric``,
   ``QuantizeBias=False`` and no ``quant_pre_process`` (it adds stray opset imports). ORT's defaults
   (asymmetric zero points, int32 bias) are rejected by TensorRT.
2. :func:`.table.read_quant_table` reads the resulting scales: per conv input tensor (``amax / 127``) and per
   conv the per-channel weight scales.
3. :func:`.qdq.insert_qdq` writes the same Q/DQ onto the FP32 plugin graph *and* the FP32 portable graph,
   for all convs or for the mixed-precision subset an accuracy budget (``max_drop_db``) leaves in INT8.

Alternatively the activation scales come from a legacy TensorRT calibration cache
(``legacy_cache``) and the weight scales from the weights (the same formula ORT uses).
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx

from ..export.graph import read_metadata
from .graphs import check_fp32_graph, graph_input, quantizable_convs, resolve_graphs
from .ort_calibration import DEFAULT_PERCENTILE, METHODS, ort_quantize
from .qdq import check_trt_qdq, insert_qdq
from .table import QuantTable, read_quant_table

ENGINES = ("ort", "modelopt")
MODELOPT_UNAVAILABLE = (
    "--engine modelopt is not available: NVIDIA ModelOpt's ONNX PTQ costs over 1 GB of dependencies, pins an older "
    "onnx, rewrites its input file in place and cannot calibrate a graph with a custom op ONNX Runtime cannot run "
    "(our plugin graph); use --engine ort (the default)")


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
    from ..utils import atomic_write_json
    from .calibration_set import CalibrationSet
    from .sensitivity import conv_macs, int8_coverage

    _check_options(engine, method, max_drop_db, cache, calib_dir)
    graphs = _Fp32Export.load(onnx_path)
    calib_set = None
    if calib_dir is not None:
        calib_set = CalibrationSet.load(calib_dir)
        calib_set.check_for_model(graphs.input_multiple, graphs.input_channels)
    table = _scales(graphs, calib_set, cache, method, percentile)
    pairs = calib_set.holdout_pairs() if calib_set is not None else []
    macs = conv_macs(graphs.portable, graphs.convs)

    plugin_out, portable_out = plugin_and_portable_paths(out)
    stem = plugin_out.name[: -len(".onnx")]
    plan_path, int8_convs = None, graphs.convs
    if max_drop_db is not None:
        plan_path = plugin_out.with_name(f"{stem}.plan.json")
        int8_convs = _budgeted_convs(graphs, table, pairs, max_drop_db, groups, macs, plan_path)
    portable_q = _write_int8_graphs(graphs, table, int8_convs, plugin_out, portable_out)

    record = {
        "plugin_graph": str(plugin_out), "portable_graph": str(portable_out),
        "source_graphs": {"plugin": str(graphs.plugin_path), "portable": str(graphs.portable_path)},
        "model": graphs.metadata.get("model"), "config": graphs.metadata.get("config"),
        "engine": engine, "method": None if cache is not None else method,
        "percentile": percentile if cache is None and method == "percentile" else None,
        "calibration_set": calib_set.describe() if calib_set is not None else None,
        "legacy_cache": str(cache) if cache is not None else None,
        "quantizable_convs": len(graphs.convs), "int8_convs": int8_convs,
        "int8_coverage": int8_coverage(macs, int8_convs), "max_drop_db": max_drop_db,
        "plan": str(plan_path) if plan_path else None,
        "scales": table.to_dict(),
    }
    if pairs:
        record["holdout"] = holdout_drops(graphs.portable, portable_q, pairs)
    record_path = plugin_out.with_name(f"{stem}.calibration.json")
    atomic_write_json(record_path, record)
    return CalibrationResult(plugin_out, portable_out, record_path, record, plan_path)


def _check_options(engine: str, method: str, max_drop_db: float | None, cache, calib_dir) -> None:
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


@dataclass
class _Fp32Export:
    """The FP32 plugin and portable graphs of one export, checked to match, and what calibration reads of them."""

    plugin_path: Path
    portable_path: Path
    plugin: onnx.ModelProto
    portable: onnx.ModelProto
    convs: list[str]  # the quantizable convs, in graph order
    metadata: dict

    @classmethod
    def load(cls, onnx_path: str | os.PathLike) -> "_Fp32Export":
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
        return cls(plugin_path, portable_path, plugin, portable, convs, read_metadata(plugin))

    @property
    def input_multiple(self) -> int:
        return int(self.metadata.get("input_multiple", 1))

    @property
    def input_channels(self) -> int:
        dims = graph_input(self.plugin).type.tensor_type.shape.dim
        return dims[1].dim_value if len(dims) == 4 and dims[1].dim_value else 3


def _scales(graphs: _Fp32Export, calib_set, cache, method: str, percentile: float) -> QuantTable:
    """From the legacy TensorRT ``cache`` if given, else ORT calibration on the set's ``calib`` split."""
    from .legacy_cache import read_calibration_cache, table_from_cache

    if cache is not None:
        return table_from_cache(read_calibration_cache(cache), graphs.plugin, graphs.convs)
    quantized = ort_quantize(graphs.portable_path, graphs.convs, calib_set.inputs("calib"), method, percentile)
    return read_quant_table(quantized, graphs.convs, source=f"onnxruntime quantize_static ({method}"
                            + (f", {percentile}th percentile)" if method == "percentile" else ")"))


def _budgeted_convs(graphs: _Fp32Export, table: QuantTable, pairs, max_drop_db: float, groups: str, macs,
                    plan_path: Path) -> list[str]:
    """The convs that stay INT8 within the accuracy budget (the plan written to ``plan_path``)."""
    from ..utils import atomic_write_json
    from .sensitivity import plan_mixed_precision

    if not pairs:
        raise ValueError("--max-drop-db measures PSNR against clean targets on the set's held-out split, and this "
                         "set has none (footage has no ground truth); generate the default set with "
                         "'edge-derain calibrate collect --data DIR'")
    plan = plan_mixed_precision(graphs.portable, table, graphs.convs, pairs, max_drop_db, by=groups, macs=macs)
    atomic_write_json(plan_path, plan.to_dict())
    if not plan.met:
        raise BudgetUnreachable(f"{plan.reason} (plan: {plan_path})")
    return plan.int8_convs


def _write_int8_graphs(graphs: _Fp32Export, table: QuantTable, int8_convs: list[str], plugin_out: Path,
                       portable_out: Path) -> onnx.ModelProto:
    """Q/DQ on both graphs, checked for TensorRT and written; returns the INT8 portable graph."""
    from ..utils import atomic_write_bytes

    plugin_q, portable_q = insert_qdq(graphs.plugin, table, int8_convs), insert_qdq(graphs.portable, table, int8_convs)
    check_trt_qdq(plugin_q, plugin_out.name)
    check_trt_qdq(portable_q, portable_out.name)
    atomic_write_bytes(plugin_out, plugin_q.SerializeToString())
    atomic_write_bytes(portable_out, portable_q.SerializeToString())
    return portable_q


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

