"""INT8 and FP16 accuracy drop of shipped weights, on ONNX Runtime (CPU), through the documented workflow of
calibration/README.md.

    OMP_NUM_THREADS=1 python benchmarks/precision_cpu.py --data ../shared/data                # the default
    OMP_NUM_THREADS=1 python benchmarks/precision_cpu.py --data ../shared/data --weights efderain_w025

Runs the ``edge-derain`` commands a user runs, in a scratch folder, and gathers what they write:

1. ``edge-derain export --weights W``; ``edge-derain calibrate collect --data DATA`` (the default recipe);
2. ``edge-derain calibrate`` with each method (minmax, percentile, entropy): the held-out split's FP32
   PSNR-Y and its INT8 and FP16 drops, from each ``*.calibration.json``;
3. ``edge-derain calibrate --max-drop-db 0.3``: how much of the conv MACs the budget keeps in INT8;
4. ``edge-derain eval --precisions fp32,fp16,int8 --backend ort`` on ``DATA/val``;
5. ONNX Runtime's entropy calibrator at 2048 histogram bins (``quantize_static`` always uses its default
   128, so this step calls the calibrator directly, puts the resulting scales on the graph with
   ``edge_derain.quant.qdq.insert_qdq`` and measures the same held-out drop).

Writes ``benchmarks/results/precision_cpu_<W>.json`` and the ``precision_cpu_<W>`` table of ``BENCHMARKS.md``
(one per shipped model: the drops differ by architecture); ``calibration/README.md`` and
``edge_derain/quant/ort_calibration.py`` quote them.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Sequence

from reporting import (RESULTS, ROOT, add_output_options, describe_machine, environment, load_results, markdown_table,
                       publish)

NAME = "precision_cpu"
METHODS = ("minmax", "percentile", "entropy")
BUDGET_DB = 0.3
ENTROPY_BINS = 2048


def edge_derain(*args: str) -> None:
    """Run one ``edge-derain`` command (as ``python -m edge_derain``), failing loudly."""
    command = [sys.executable, "-m", "edge_derain", *args]
    print("$ edge-derain " + " ".join(args), flush=True)
    subprocess.run(command, cwd=ROOT, check=True)


def entropy_at_bins(plugin_onnx: Path, calib_dir: Path, bins: int, work: Path) -> dict:
    """Held-out drops with activation ranges from ORT's entropy calibrator at ``bins`` histogram bins."""
    import numpy as np
    import onnx
    from onnxruntime.quantization import CalibrationDataReader, CalibrationMethod, create_calibrator

    from edge_derain.quant.calibration_set import CalibrationSet
    from edge_derain.quant.graphs import graph_input, quantizable_convs, resolve_graphs
    from edge_derain.quant.qdq import insert_qdq
    from edge_derain.quant.table import QMAX, QuantTable
    from edge_derain.quant.workflow import holdout_drops

    _, portable_path = resolve_graphs(plugin_onnx)
    portable = onnx.load(str(portable_path))
    convs = quantizable_convs(portable)
    conv_inputs = {node.input[0] for node in portable.graph.node if node.name in convs}
    calib_set = CalibrationSet.load(calib_dir)
    input_name = graph_input(portable).name

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.frames = iter(calib_set.inputs("calib"))

        def get_next(self):
            frame = next(self.frames, None)
            return None if frame is None else {input_name: frame}

    calibrator = create_calibrator(str(portable_path), ["Conv"], augmented_model_path=str(work / "augmented.onnx"),
                                   calibrate_method=CalibrationMethod.Entropy,
                                   extra_options={"num_bins": bins, "symmetric": True})
    calibrator.collect_data(Reader())
    ranges = calibrator.compute_data()
    scales = {}
    for tensor in conv_inputs:
        low, high = (float(np.asarray(v).reshape(-1)[0]) for v in ranges[tensor].range_value)
        scales[tensor] = max(abs(low), abs(high)) / QMAX
    table = QuantTable(scales, {}, f"onnxruntime EntropyCalibrater, {bins} bins")
    quantized = insert_qdq(portable, table, convs)
    return holdout_drops(portable, quantized, calib_set.holdout_pairs())


def results_name(weights: str) -> str:
    """``precision_cpu_<shipped name or checkpoint stem>``: the JSON's stem and the BENCHMARKS.md section."""
    return f"{NAME}_{Path(weights).stem}"


def measure(data: Path, weights: str) -> dict:
    with tempfile.TemporaryDirectory(prefix="edge_derain_precision_") as scratch:
        work = Path(scratch)
        onnx_path, calib = work / "model.onnx", work / "calib"
        edge_derain("export", "--weights", weights, "--out", str(work / "model"))
        edge_derain("calibrate", "collect", "--data", str(data), "--out", str(calib))
        methods = {}
        for method in METHODS:
            out = work / f"model.int8.{method}"
            edge_derain("calibrate", "--onnx", str(onnx_path), "--calib", str(calib), "--method", method,
                        "--out", str(out))
            methods[method] = json.loads(out.with_name(out.name + ".calibration.json").read_text())["holdout"]
        budget_out = work / "model.int8.budget"
        edge_derain("calibrate", "--onnx", str(onnx_path), "--calib", str(calib), "--max-drop-db", str(BUDGET_DB),
                    "--out", str(budget_out))
        budget = json.loads(budget_out.with_name(budget_out.name + ".calibration.json").read_text())
        edge_derain("eval", "--precisions", "fp32,fp16,int8", "--backend", "ort", "--onnx", str(onnx_path),
                    "--int8", str(work / "model.int8.minmax.onnx"), "--data", str(data / "val"),
                    "--out", str(work / "eval"))
        report = json.loads((work / "eval" / "precision_report.json").read_text())
        print(f"entropy calibration at {ENTROPY_BINS} bins (ORT calibrator API)", flush=True)
        entropy_bins = entropy_at_bins(onnx_path, calib, ENTROPY_BINS, work)
        manifest = json.loads((calib / "manifest.json").read_text())
    return {
        "weights": weights, "model": report.get("model") or budget.get("model"),
        "calibration_set": {"origin": manifest.get("origin"),
                            "frames": {split: sum(f["split"] == split for f in manifest["frames"])
                                       for split in ("calib", "holdout")}},
        "holdout_by_method": methods,
        "holdout_entropy_bins": {"bins": ENTROPY_BINS, **entropy_bins},
        "budget": {"max_drop_db": BUDGET_DB, "int8_convs": len(budget["int8_convs"]),
                   "quantizable_convs": budget["quantizable_convs"], "int8_coverage": budget["int8_coverage"]},
        "val": {"count": report["count"], "data": report["data"],
                **{p: {"psnr_y": e["mean"]["psnr_y"], "drop_psnr_y": e["drop"]["psnr_y"], "measured": e.get("measured")}
                   for p, e in report["precisions"].items()}},
        "environment": environment(),
    }


def _db(value: float) -> str:
    return f"{round(value, 3) + 0.0:+.3f} dB"  # + 0.0: no "-0.000" for a drop that rounds to zero


def markdown(results: dict) -> str:
    rows = []
    for method, h in results["holdout_by_method"].items():
        rows.append([f"held-out split of the calibration set ({h['count']} crops), `--method {method}`",
                     f"{h['fp32_psnr_y']:.2f} dB", _db(h["int8_drop_db"]), _db(h["fp16_drop_db"])])
    e = results["holdout_entropy_bins"]
    rows.append([f"same split, entropy at {e['bins']} histogram bins (ORT calibrator API)",
                 f"{e['fp32_psnr_y']:.2f} dB", _db(e["int8_drop_db"]), "—"])
    v = results["val"]
    rows.append([f"`val/` ({v['count']} pairs, `edge-derain eval --precisions fp32,fp16,int8 --backend ort`)",
                 f"{v['fp32']['psnr_y']:.2f} dB", _db(v["int8"]["drop_psnr_y"]), _db(v["fp16"]["drop_psnr_y"])])
    b = results["budget"]
    weights = results["weights"]
    return (f"`python benchmarks/precision_cpu.py --data ../shared/data --weights {weights}` "
            f"([JSON](benchmarks/results/{results_name(weights)}.json)): `{weights}`, "
            f"{describe_machine(results['environment'])}. "
            f"Drop = FP32 minus the precision (positive = worse).\n\n"
            + markdown_table(["set", "FP32 PSNR-Y", "INT8 drop", "FP16 drop"], rows)
            + f"\n\n`--max-drop-db {b['max_drop_db']}` keeps {b['int8_convs']} of {b['quantizable_convs']} convs "
              "in INT8 "
              f"({100 * b['int8_coverage']:.0f} % of conv MACs).")


def main(argv: Sequence[str] | None = None) -> int:
    from edge_derain.checkpoint import DEFAULT_WEIGHTS

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, help="data directory (../shared/data layout)")
    parser.add_argument("--weights", default=DEFAULT_WEIGHTS,
                        help="shipped name or .safetensors to measure (default: %(default)s, the shipped default)")
    add_output_options(parser, f"{NAME}_<W>", default_from="--weights")
    args = parser.parse_args(argv)
    name = results_name(args.weights)
    out = args.out or RESULTS / f"{name}.json"
    if args.render:
        results = load_results(out)
    elif args.data is None:
        parser.error("--data DIR is required (the data directory, e.g. ../shared/data)")
    else:
        results = measure(args.data.resolve(), args.weights)
    publish(name, out, results, markdown(results), rendered_only=args.render)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
