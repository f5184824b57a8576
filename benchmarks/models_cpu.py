"""CPU latency of the registered models, PyTorch eager vs ONNX Runtime on each portable graph.

    python benchmarks/models_cpu.py --res 256x256                    # every model -> models_cpu.json
    python benchmarks/models_cpu.py --models efderain --res 480x640 720x1280 --iters 15 --warmup 3 \\
        --name efderain_cpu                                           # the shipped model at camera sizes

``efderain`` runs the shipped weights (``efderain_w025``); models without shipped weights run with their
initial weights, which does not change latency. Timing is ``edge_derain.bench.run_benchmark`` (the code
behind ``edge-derain bench``): batch 1, fp32, medians/p90/p99 after warm-up. ``--threads N`` gives both
runtimes N threads (default: their own defaults, all cores).

Writes ``benchmarks/results/<name>.json`` and ``.png`` and the ``<name>`` table of ``BENCHMARKS.md``.
"""
from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path
from typing import Sequence

from reporting import RESULTS, describe_machine, environment, load_results, markdown_table, publish

# Registry name -> the shipped weights it is measured with: efderain's registry width is 1.0, the shipped 0.25.
SHIPPED_WEIGHTS = {"efderain": "efderain_w025"}


def parse_resolution(text: str) -> tuple[int, int]:
    try:
        height, width = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"resolution {text!r} must look like HxW, e.g. 480x640") from None
    if height < 1 or width < 1:
        raise argparse.ArgumentTypeError(f"resolution {text!r} must be positive")
    return height, width


def measure(models: Sequence[str], resolutions: Sequence[tuple[int, int]], warmup: int, iters: int,
            threads: int | None) -> dict:
    import torch

    from edge_derain.backends import TorchBackend
    from edge_derain.backends.ort_backend import OnnxRuntimeBackend
    from edge_derain.bench import run_benchmark
    from edge_derain.checkpoint import load_model
    from edge_derain.export import export_model
    from edge_derain.models import create_model

    if threads is not None:
        torch.set_num_threads(threads)
    env = environment(threads)  # load average before the exports and runs below
    backends = {}
    with tempfile.TemporaryDirectory() as work:
        for name in models:
            torch.manual_seed(0)
            shipped = SHIPPED_WEIGHTS.get(name)
            model = load_model(shipped) if shipped else create_model(name)
            label = shipped or name
            portable = export_model(model, Path(work) / name).portable_path
            backends[f"{label} torch"] = TorchBackend(model)
            backends[f"{label} ort"] = OnnxRuntimeBackend(portable, providers=["CPUExecutionProvider"],
                                                          threads=threads)
        results = run_benchmark(backends, resolutions, warmup=warmup, iters=iters)
    results["environment"].update(env)
    return results


def markdown(results: dict, command: str, json_name: str) -> str:
    rows = {}
    for r in results["results"]:
        label, runtime = r["backend"].rsplit(" ", 1)
        rows.setdefault((label, r["height"], r["width"]), {})[runtime] = r
    lines = []
    for (label, h, w), by in rows.items():
        torch_row, ort_row = by["torch"], by["ort"]
        lines.append([f"`{label}`", f"{h}×{w}", f"{torch_row['median_ms']:.1f} / {torch_row['p90_ms']:.1f}",
                      f"{ort_row['median_ms']:.1f} / {ort_row['p90_ms']:.1f}",
                      f"{torch_row['median_ms'] / ort_row['median_ms']:.2f}×", f"{ort_row['fps']:.2f}"])
    env = results["environment"]
    return (f"`{command}` ([JSON](benchmarks/results/{json_name}.json), [plot](benchmarks/results/{json_name}.png)): "
            f"{results['iters']} runs after {results['warmup']} warm-up, batch 1, fp32; {describe_machine(env)}; "
            f"torch {env.get('torch', '?')}, onnxruntime {env.get('onnxruntime', '?')} (CPUExecutionProvider).\n\n"
            + markdown_table(["model", "resolution", "torch ms median / p90", "ORT ms median / p90",
                              "ORT speed-up", "ORT frames/s"], lines))


def main(argv: Sequence[str] | None = None) -> int:
    from edge_derain.models import list_models

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", default=[m.name for m in list_models()])
    parser.add_argument("--res", nargs="+", type=parse_resolution, default=[(256, 256)], help="HxW sizes")
    parser.add_argument("--iters", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--threads", type=int, default=None, help="CPU threads for both runtimes")
    parser.add_argument("--name", default="models_cpu", help="results name: benchmarks/results/NAME.json")
    parser.add_argument("--out", type=Path, default=None, help="results JSON (default: benchmarks/results/NAME.json)")
    parser.add_argument("--render", action="store_true",
                        help="measure nothing: re-render the BENCHMARKS.md table from the results JSON")
    args = parser.parse_args(argv)
    out = args.out or RESULTS / f"{args.name}.json"
    if args.render:
        results = load_results(out)
    else:
        results = measure(args.models, args.res, args.warmup, args.iters, args.threads)
        results["command"] = " ".join(["python benchmarks/models_cpu.py", *(sys.argv[1:] if argv is None else argv)])
    table = markdown(results, results.get("command", "python benchmarks/models_cpu.py"), args.name)
    publish(args.name, out, results, table, rendered_only=args.render)
    if not args.render:
        from edge_derain.bench import plot_benchmark

        print(f"wrote {plot_benchmark(results, out.with_suffix('.png'))}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
