"""Batching gain of a multi-camera run on the CPU: frames/s per batch size (1, 2, 4, 8 streams per call).

    python benchmarks/batch_cpu.py

Times the default shipped model through ONNX Runtime (the portable graph, CPU provider, fp32) with
``edge_derain.bench.run_benchmark`` (what ``edge-derain bench --batch 1 2 4 8`` runs) at the
multi-camera frame size (360x640), all batch sizes side by side in one run. ``fps`` counts frames, so the
rows compare directly; the ratio column is each batch's throughput over batch 1's.

Writes ``benchmarks/results/batch_cpu.json`` and the ``batch_cpu`` table of ``BENCHMARKS.md``.
"""
from __future__ import annotations

import argparse
from pathlib import Path
from typing import Sequence

from reporting import add_output_options, describe_machine, environment, load_results, markdown_table, publish

NAME = "batch_cpu"


def measure(batches: Sequence[int], height: int, width: int, warmup: int, iters: int, threads: int) -> dict:
    from edge_derain.backends.ort_backend import OnnxRuntimeBackend
    from edge_derain.bench import run_benchmark
    from edge_derain.checkpoint import DEFAULT_WEIGHTS
    from edge_derain.gst.select import exported_onnx

    backend = OnnxRuntimeBackend(exported_onnx()[1], providers=["CPUExecutionProvider"], threads=threads)
    results = run_benchmark({"ort": backend}, [(height, width)], batch=list(batches), warmup=warmup, iters=iters)
    rows = [{k: row[k] for k in ("batch", "median_ms", "fps")} for row in results["results"]]
    return {"weights": DEFAULT_WEIGHTS, "backend": "onnxruntime CPUExecutionProvider, fp32", "height": height,
            "width": width, "warmup": warmup, "iters": iters, "rows": rows, "environment": environment(threads)}


def markdown(results: dict) -> str:
    base = next(r["fps"] for r in results["rows"] if r["batch"] == 1)
    table = markdown_table(
        ("streams per call (batch)", "median ms per call", "frames/s", "vs batch 1"),
        [(r["batch"], f"{r['median_ms']:.0f}", f"{r['fps']:.2f}", f"{r['fps'] / base:.2f}×") for r in results["rows"]])
    return (f"`python benchmarks/batch_cpu.py` ([JSON](benchmarks/results/{NAME}.json)): `{results['weights']}`, "
            f"{results['backend']}, {results['height']}x{results['width']}, {results['iters']} calls after "
            f"{results['warmup']} warm-up per batch size; {describe_machine(results['environment'])}.\n\n{table}")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, nargs="+", default=[1, 2, 4, 8])
    parser.add_argument("--res", default="360x640", help="HxW (default: %(default)s)")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--iters", type=int, default=8)
    parser.add_argument("--threads", type=int, default=2, help="ONNX Runtime intra-op threads")
    add_output_options(parser, NAME)
    args = parser.parse_args(argv)
    if args.render:
        results = load_results(args.out)
    else:
        height, width = (int(v) for v in args.res.lower().split("x"))
        results = measure(args.batch, height, width, args.warmup, args.iters, args.threads)
    publish(NAME, Path(args.out), results, markdown(results), rendered_only=args.render)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
