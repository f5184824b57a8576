"""Sub-commands that compare and time backends: ``compare`` (errors on the same random inputs) and ``bench``
(latency and FPS per backend, resolution and batch)."""
from __future__ import annotations

from .common import add_device, print_written, sizes


def cmd_compare(args) -> int:
    from ..backends import open_backend
    from ..compare import compare_backends, print_compare_report
    from ..utils import atomic_write_json

    tested = open_backend(args.backend, weights=args.weights, device=args.device)
    reference = open_backend(args.reference, weights=args.weights, device=args.device)
    report = compare_backends(tested, reference, sizes=sizes(args.sizes), batch=args.batch, seed=args.seed,
                              atol=args.atol, rtol=args.rtol)
    print_compare_report(report)
    if args.json:
        atomic_write_json(args.json, report)
    return 0 if report["passed"] else 1


def cmd_bench(args) -> int:
    from ..backends import open_backend
    from ..bench import print_benchmark, run_benchmark, write_benchmark

    backends = {}
    for spec in args.backend:
        name, _, target = spec.partition("=")
        backends[name] = open_backend(target or name, weights=args.weights, device=args.device)
    results = run_benchmark(backends, sizes(args.res), batch=args.batch, warmup=args.warmup, iters=args.iters)
    print_benchmark(results)
    json_path, png_path = write_benchmark(results, args.out)
    print_written(json_path, png_path)
    return 0


def register(sub) -> None:
    p = sub.add_parser("compare", help="run the same random inputs through two backends and report errors")
    p.add_argument("--backend", required=True, help="backend under test: torch, a .onnx or a .engine")
    p.add_argument("--reference", default="torch", help="reference backend (default: PyTorch with --weights)")
    p.add_argument("--weights", default=None)
    add_device(p)
    p.add_argument("--sizes", nargs="+", default=["64x64", "61x90"], help="input sizes HxW")
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--atol", type=float, default=1e-4)
    p.add_argument("--rtol", type=float, default=1e-3)
    p.add_argument("--json", default=None, help="also write the report as JSON")
    p.set_defaults(func=cmd_compare)

    p = sub.add_parser("bench", help="latency (median, p90, p99) and FPS per backend and resolution; JSON + PNG")
    p.add_argument("--backend", nargs="+", default=["torch"],
                   help="NAME=SPEC or SPEC entries: torch, a .onnx, a .engine (e.g. torch ort=model.portable.onnx)")
    p.add_argument("--weights", default=None)
    add_device(p)
    p.add_argument("--res", nargs="+", default=["480x640"], help="resolutions HxW")
    p.add_argument("--batch", type=int, nargs="+", default=[1],
                   help="batch sizes, e.g. 1 2 4 8 (the streams of a multi-camera run): frames/s per batch size")
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--iters", type=int, default=20)
    p.add_argument("--out", default="bench_out")
    p.set_defaults(func=cmd_bench)
