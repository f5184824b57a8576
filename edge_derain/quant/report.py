"""Accuracy-drop report: PSNR/SSIM (Y) per precision and the drop against FP32, per image and mean.

``edge-derain eval --precisions fp32,fp16,int8 --backend ort|trt`` evaluates the same export at every
precision on a paired folder and writes a table, ``precision_report.json`` and ``precision_report.png``
(the mean PSNR-Y drop against the median latency). Every precision records in ``measured`` exactly
what ran, because on a CPU not everything can run as it would on the GPU:

* ``ort`` (ONNX Runtime, CPU provider): FP32 is the portable graph. INT8 is the Q/DQ portable graph
  made by ``edge-derain calibrate``; ORT fuses what it can into integer kernels and runs the rest as
  simulated quantization (INT8-rounded weights and activations, FP32 arithmetic) — the statement
  counts which. FP16 is ``convert_to_fp16``'s graph, but the CPU provider has no FP16 convolution:
  run as is, ORT casts the FP16 weights up once and computes the whole graph in FP32 (its inserted
  casts remove the FP16 rounding between operators), which would measure FP16 *weights* only. So the
  FP16 graph is run with every FP16 operator wrapped in explicit casts
  (:func:`fp16_graph_for_ort_cpu`): each tensor between operators is rounded to FP16 as in an FP16
  engine, the arithmetic inside each operator is FP32; the statement says so.
* ``trt`` (TensorRT engines from the plugin graph, built or reused through the engine cache): needs a
  GPU to run; without one it stops with a one-line error before doing any work.

Latency is the median per-image time of ``evaluate`` on that backend; ORT CPU timings, INT8 and FP16
emulation included, say nothing about GPU speed.
"""
from __future__ import annotations

import collections
import os
import tempfile
from pathlib import Path
from typing import Sequence

import onnx
from onnx import TensorProto, helper

from ..utils import atomic_path, atomic_write_json, console, have_matplotlib
from ..export.graph import UniqueNamer, read_metadata
from .graphs import quantized_convs_of, resolve_graphs

PRECISIONS = ("fp32", "fp16", "int8")
BACKENDS = ("ort", "trt")
JSON_NAME, PNG_NAME = "precision_report.json", "precision_report.png"
_METRICS = ("psnr_y", "ssim_y")
# Ops that read only shapes or set their output type themselves: nothing to round around them.
_NOT_WRAPPED = {"Cast", "Constant", "Shape", "Size", "CastLike"}


def parse_precisions(text: str | Sequence[str]) -> list[str]:
    items = [p.strip().lower() for p in (text.split(",") if isinstance(text, str) else text) if p.strip()]
    unknown = [p for p in items if p not in PRECISIONS]
    if unknown or not items:
        raise ValueError(f"precisions must be a comma list of {', '.join(PRECISIONS)}, got {text!r}")
    if "fp32" not in items:
        raise ValueError(f"precisions {','.join(items)} lack fp32, the reference the drops are measured against; "
                         f"pass e.g. fp32,{','.join(items)}")
    return list(dict.fromkeys(["fp32", *items]))


def default_int8_path(plugin_path: str | os.PathLike) -> Path:
    """Where ``edge-derain calibrate`` puts the INT8 graph of ``<stem>.onnx`` by default: ``<stem>.int8.onnx``."""
    from ..export.onnx_export import plugin_and_portable_paths

    plugin = plugin_and_portable_paths(plugin_path)[0]
    return plugin.with_name(plugin.name[: -len(".onnx")] + ".int8.onnx")


# --------------------------------------------------------------------------------------------------
# what ONNX Runtime (CPU) runs


def _elem_types(model: onnx.ModelProto) -> dict[str, int]:
    inferred = onnx.shape_inference.infer_shapes(model).graph
    types = {v.name: v.type.tensor_type.elem_type for v in [*inferred.input, *inferred.output, *inferred.value_info]}
    types.update({t.name: t.data_type for t in model.graph.initializer})
    for node in model.graph.node:
        if node.op_type == "Constant":
            value = next((a.t for a in node.attribute if a.name == "value"), None)
            if value is not None:
                types[node.output[0]] = value.data_type
    return types


def fp32_compute_fp16_storage(model: onnx.ModelProto) -> onnx.ModelProto:
    """The FP16 graph with each operator that reads or writes FP16 wrapped in explicit Casts.

    Inputs of the operator are cast FP16 -> FP32 and its FP16 outputs FP32 -> FP16, so every tensor
    between operators keeps its FP16 rounding while the operator computes in FP32 — which ONNX
    Runtime's CPU provider (no FP16 convolution) then runs without merging the casts away.
    """
    types = _elem_types(model)
    out = onnx.ModelProto()
    out.CopyFrom(model)
    names = UniqueNamer(out)
    nodes = []
    for node in out.graph.node:
        fp16_in = [i for i, name in enumerate(node.input) if name and types.get(name) == TensorProto.FLOAT16]
        fp16_out = [i for i, name in enumerate(node.output) if name and types.get(name) == TensorProto.FLOAT16]
        if node.op_type in _NOT_WRAPPED or node.domain not in ("", "ai.onnx") or not (fp16_in or fp16_out):
            nodes.append(node)
            continue
        for i in fp16_in:
            wide = names(f"{node.name or node.op_type}/input{i}_fp32")
            nodes.append(helper.make_node("Cast", [node.input[i]], [wide], name=names(f"{wide}_cast"),
                                          to=TensorProto.FLOAT))
            node.input[i] = wide
        rounded = []
        for i in fp16_out:
            wide = names(f"{node.name or node.op_type}/output{i}_fp32")
            rounded.append(helper.make_node("Cast", [wide], [node.output[i]], name=names(f"{wide}_cast"),
                                            to=TensorProto.FLOAT16))
            node.output[i] = wide
        nodes += [node, *rounded]
    del out.graph.node[:]
    out.graph.node.extend(nodes)
    out.graph.ClearField("value_info")
    onnx.checker.check_model(out)
    return out


def fp16_graph_for_ort_cpu(fp32_model: onnx.ModelProto) -> tuple[onnx.ModelProto, str]:
    """(graph ORT CPU runs for FP16, statement of what that measures) for an FP32 portable graph."""
    from ..export.fp16 import convert_to_fp16, fp32_nodes_of

    fp16 = convert_to_fp16(fp32_model)
    kept = fp32_nodes_of(fp16)
    statement = (f"FP16 graph of convert_to_fp16 ({len(kept)} FP16-fragile node(s) kept FP32) on ONNX Runtime CPU, "
                 "which has no FP16 convolution and would otherwise compute everything in FP32 from FP16 weights; "
                 "each FP16 operator is wrapped in explicit casts, so every tensor between operators is rounded to "
                 "FP16 as in an FP16 engine while each operator computes in FP32 (TensorRT FP16 kernels multiply in "
                 "FP16 and accumulate in FP16 or FP32)")
    return fp32_compute_fp16_storage(fp16), statement


def ort_executed_ops(model: onnx.ModelProto) -> collections.Counter:
    """Op types of the graph ONNX Runtime's CPU provider actually runs (after its optimisations)."""
    import onnxruntime as ort

    with tempfile.TemporaryDirectory(prefix="edge_derain_ort_") as scratch:
        optimized = Path(scratch) / "optimized.onnx"
        options = ort.SessionOptions()
        options.log_severity_level = 3  # it warns that NCHWc-optimised files are machine-specific
        options.optimized_model_filepath = str(optimized)
        ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
        return collections.Counter(node.op_type for node in onnx.load(str(optimized)).graph.node)


def int8_measured_statement(model: onnx.ModelProto) -> str:
    """What running this Q/DQ graph on ONNX Runtime CPU measures, from the ops ORT actually executes."""
    convs = len(quantized_convs_of(model))
    integer = min(ort_executed_ops(model)["QLinearConv"], convs)
    return (f"INT8 Q/DQ graph ({convs} INT8 convs) on ONNX Runtime CPU: {integer} ran as integer QLinearConv "
            f"kernels, {convs - integer} as simulated quantization (INT8-rounded weights and activations dequantized "
            "into an FP32 conv, equal to INT8 arithmetic with exact INT32 accumulation up to FP32 rounding); "
            "TensorRT fuses requantization differently, so expect small differences on the GPU")


# --------------------------------------------------------------------------------------------------
# backends per precision


def _ort_backends(precisions: list[str], plugin: Path, portable: Path, int8_portable: Path | None, work: Path):
    from ..backends.ort_backend import CPU_PROVIDER, OnnxRuntimeBackend

    fp32 = onnx.load(str(portable))
    for precision in precisions:
        if precision == "fp32":
            path, measured = portable, "FP32 portable graph on ONNX Runtime CPU"
        elif precision == "fp16":
            graph, measured = fp16_graph_for_ort_cpu(fp32)
            path = work / f"{portable.stem}.fp16-on-cpu.onnx"
            onnx.save(graph, str(path))
        else:
            path, measured = int8_portable, int8_measured_statement(onnx.load(str(int8_portable)))
        described = f"convert_to_fp16({portable}), not saved" if precision == "fp16" else str(path)
        yield precision, OnnxRuntimeBackend(path, providers=[CPU_PROVIDER]), described, measured


def _profile_for(data_dir: Path, multiple: int):
    """An optimisation profile covering every (padded) image size of the paired folder."""
    from ..data import PairedFolderDataset, read_image_uint8
    from ..engine import ShapeProfile

    sizes = [read_image_uint8(rain).shape[:2] for rain, _ in PairedFolderDataset(data_dir).pairs]
    padded = [(-(-h // multiple) * multiple, -(-w // multiple) * multiple) for h, w in sizes]
    low = (1, 3, min(h for h, _ in padded), min(w for _, w in padded))
    high = (1, 3, max(h for h, _ in padded), max(w for _, w in padded))
    return ShapeProfile(low, high, high)


def _trt_backends(precisions: list[str], plugin: Path, int8_plugin: Path | None, data_dir: Path,
                  cache_dir: str | os.PathLike | None):
    from ..backends.trt_backend import TensorRTBackend
    from ..engine import EngineCache
    from ..utils import cache_dir as default_cache_dir

    cache = EngineCache(cache_dir or default_cache_dir("engines"))
    multiple = int(read_metadata(onnx.load(str(plugin), load_external_data=False))
                   .get("input_multiple", 16))
    shapes = _profile_for(data_dir, multiple)
    for precision in precisions:
        graph = int8_plugin if precision == "int8" else plugin
        engine = cache.get_or_build(graph, precision=precision, shapes=shapes)
        fingerprint = engine.sidecar["key"]["fingerprint"]
        summary = engine.sidecar["layer_summary"]
        measured = (f"{fingerprint['flavour']} {fingerprint['version']} {precision} engine of {Path(graph).name} "
                    f"({summary['count']} layers; datatypes {', '.join(summary['datatypes'])})")
        yield precision, TensorRTBackend(engine.engine_path), str(engine.engine_path), measured


def _require_gpu() -> None:
    from ..engine import NoCudaDevice, list_devices

    if not list_devices():
        raise NoCudaDevice("--backend trt runs TensorRT engines and needs an NVIDIA GPU, and this machine has none; "
                           "use --backend ort here (engines can still be built with 'edge-derain build')")


# --------------------------------------------------------------------------------------------------
# the report


def precision_report(onnx_path: str | os.PathLike, data_dir: str | os.PathLike,
                     precisions: str | Sequence[str] = PRECISIONS, backend: str = "ort",
                     int8_path: str | os.PathLike | None = None, limit: int | None = None, progress: bool = True,
                     cache_dir: str | os.PathLike | None = None, detector=None) -> dict:
    """Evaluate the export ``onnx_path`` (FP32 plugin graph) at each precision on the paired ``data_dir``.

    ``int8_path`` is the INT8 plugin graph from ``edge-derain calibrate`` (default ``<stem>.int8.onnx``
    beside ``onnx_path``; its portable twin is used on ORT). Returns the report dict (see
    :func:`write_precision_report`); drops are FP32 minus the precision, so positive means worse.
    With a ``detector`` every precision also gets detection scores (see ``evaluate``).
    """
    from ..evaluate import evaluate

    precisions = parse_precisions(precisions)
    if backend not in BACKENDS:
        raise ValueError(f"--precisions compares exported graphs on 'ort' (ONNX Runtime, CPU) or 'trt' (TensorRT "
                         f"engines, needs a GPU), got --backend {backend!r}")
    if backend == "trt":
        _require_gpu()
    plugin, portable = resolve_graphs(onnx_path)
    int8_plugin = int8_portable = None
    if "int8" in precisions:
        int8_path = Path(int8_path) if int8_path is not None else default_int8_path(plugin)
        if not int8_path.is_file():
            raise FileNotFoundError(f"INT8 graph {int8_path} not found; make it with 'edge-derain calibrate --onnx "
                                    f"{plugin} --calib DIR' or pass --int8 FILE")
        int8_plugin, int8_portable = resolve_graphs(int8_path)
        if not quantized_convs_of(onnx.load(str(int8_portable), load_external_data=False)):
            raise ValueError(f"{int8_portable.name} is not an INT8 graph of 'edge-derain calibrate' (no INT8 convs "
                             "recorded); calibrate the export first")
    data_dir = Path(data_dir)
    results, graphs, measured = {}, {}, {}
    with tempfile.TemporaryDirectory(prefix="edge_derain_precisions_") as work:
        runs = (_ort_backends(precisions, plugin, portable, int8_portable, Path(work)) if backend == "ort"
                else _trt_backends(precisions, plugin, int8_plugin, data_dir, cache_dir))
        for precision, runner, graph, statement in runs:
            graphs[precision], measured[precision] = graph, statement
            try:
                results[precision] = evaluate(runner, data_dir, limit=limit, progress=progress, detector=detector)
            finally:
                getattr(runner, "close", lambda: None)()
    return _assemble(results, graphs, measured, backend, data_dir, plugin)


def _assemble(results: dict, graphs: dict, measured: dict, backend: str, data_dir: Path, plugin: Path) -> dict:
    reference = results["fp32"]
    rows = {precision: {row["name"]: row for row in result["images"]} for precision, result in results.items()}
    images = []
    for row in reference["images"]:
        if not all(row["name"] in by_name for by_name in rows.values()):
            continue  # an image one of the runs could not take: listed under "failed"
        entry = {"name": row["name"]}
        for precision in results:
            other = rows[precision][row["name"]]
            values = {key: other[key] for key in _METRICS}
            if precision != "fp32":
                values.update({f"drop_{key}": row[key] - other[key] for key in _METRICS})
            entry[precision] = values
        images.append(entry)
    summary = {}
    for precision, result in results.items():
        mean = result["mean"]
        summary[precision] = {
            "graph": graphs[precision], "measured": measured[precision],
            "mean": {key: mean[key] for key in (*_METRICS, "psnr_rgb", "ssim_rgb")},
            "median_time_ms": mean["median_time_ms"],
            "drop": {key: reference["mean"][key] - mean[key] for key in _METRICS},
        }
        if "detection" in result:
            detection = result["detection"]["derained"]
            summary[precision]["detection"] = {
                **detection, "drop_f1": reference["detection"]["derained"]["f1"] - detection["f1"]}
    return {"backend": backend, "data": str(data_dir), "model_graph": str(plugin), "count": reference["count"],
            "reference": "fp32", "drop_definition": "FP32 minus precision (positive = worse)",
            "precisions": summary, "images": images,
            "failed": [dict(item, precision=p) for p, result in results.items() for item in result["failed"]]}


def print_precision_report(report: dict) -> None:
    from rich.table import Table

    precisions = list(report["precisions"])
    table = Table(title=f"PSNR-Y (dB) / SSIM-Y per precision and PSNR-Y drop vs FP32, {report['backend']} on "
                        f"{report['data']}")
    table.add_column("image", overflow="fold")
    for precision in precisions:
        table.add_column(precision, justify="right", no_wrap=True)
    for precision in precisions[1:]:
        table.add_column(f"{precision} drop", justify="right", no_wrap=True)

    def row(name: str, values: dict[str, dict]) -> list[str]:
        scores = [f"{values[p]['psnr_y']:.2f}/{values[p]['ssim_y']:.4f}" for p in precisions]
        return [name, *scores, *[f"{values[p]['drop_psnr_y']:+.3f}" for p in precisions[1:]]]

    for image in report["images"]:
        table.add_row(*row(image["name"], image))
    means = {p: {**e["mean"], "drop_psnr_y": e["drop"]["psnr_y"]} for p, e in report["precisions"].items()}
    table.add_row(*row("[bold]mean", means), end_section=True)
    out = console()
    out.print(table)
    for precision in precisions:
        entry = report["precisions"][precision]
        out.print(f"[bold]{precision}[/bold]: PSNR-Y {entry['mean']['psnr_y']:.2f} dB "
                      f"(drop {entry['drop']['psnr_y']:+.3f} dB, SSIM-Y drop {entry['drop']['ssim_y']:+.4f}), "
                      f"median {entry['median_time_ms']:.1f} ms/image. Measured: {entry['measured']}")
        if "detection" in entry:
            det = entry["detection"]
            out.print(f"  detector vs clean-image detections: F1 {det['f1']:.3f} (drop {det['drop_f1']:+.3f}), "
                          f"precision {det['precision']:.3f}, recall {det['recall']:.3f}, AP50 {det['ap50']:.3f}")


def plot_precision_report(report: dict, path: str | os.PathLike) -> Path:
    """Mean PSNR-Y drop against median latency, one point per precision."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6.5, 4.5))
    ax = fig.subplots()
    for precision, entry in report["precisions"].items():
        x, y = entry["median_time_ms"], entry["drop"]["psnr_y"]
        ax.scatter([x], [y], s=60)
        ax.annotate(precision, (x, y), textcoords="offset points", xytext=(6, 6))
    ax.axhline(0.0, color="grey", linewidth=0.8)
    ax.set_xlabel("median latency per image, ms (" + ("ONNX Runtime CPU, INT8/FP16 simulated: not GPU speed)"
                                                     if report["backend"] == "ort" else "TensorRT)"))
    ax.set_ylabel("PSNR-Y drop vs FP32, dB (higher = worse)")
    ax.set_title(f"accuracy drop vs latency ({report['count']} images)")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    path = Path(path)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=120)
    return path


def write_precision_report(report: dict, out_dir: str | os.PathLike) -> tuple[Path, Path | None]:
    """Write ``precision_report.json`` and ``precision_report.png`` into ``out_dir`` (the PNG's path is
    None without matplotlib)."""
    out_dir = Path(out_dir)
    json_path = out_dir / JSON_NAME
    atomic_write_json(json_path, report)
    return json_path, plot_precision_report(report, out_dir / PNG_NAME) if have_matplotlib() else None
