"""CPU latency of every registered model, PyTorch eager vs ONNX Runtime on its portable graph.

    python benchmarks/models_cpu.py --res 256x256 --out bench_models

Models without shipped weights run with their initial weights: latency does not depend on the values.
Writes benchmark.json and benchmark.png (``edge_derain.bench``) into --out.
"""
from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import torch

from edge_derain.backends import TorchBackend
from edge_derain.backends.ort_backend import OnnxRuntimeBackend
from edge_derain.bench import print_benchmark, run_benchmark, write_benchmark
from edge_derain.checkpoint import load_model
from edge_derain.export import export_model
from edge_derain.models import create_model, list_models


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", default=[m.name for m in list_models()])
    parser.add_argument("--res", default="256x256", help="HxW")
    parser.add_argument("--iters", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--out", default="bench_models")
    args = parser.parse_args(argv)
    height, width = (int(v) for v in args.res.split("x"))
    backends = {}
    with tempfile.TemporaryDirectory() as work:
        for name in args.models:
            torch.manual_seed(0)
            model = load_model() if name == "efderain" else create_model(name)  # efderain: the shipped w0.25
            label = "efderain_w025" if name == "efderain" else name
            portable = export_model(model, Path(work) / name).portable_path
            backends[f"{label} torch"] = TorchBackend(model)
            backends[f"{label} ort"] = OnnxRuntimeBackend(portable, providers=["CPUExecutionProvider"])
        results = run_benchmark(backends, [(height, width)], warmup=args.warmup, iters=args.iters)
    print_benchmark(results)
    json_path, png_path = write_benchmark(results, args.out)
    print(f"wrote {json_path} and {png_path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
