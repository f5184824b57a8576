"""The TensorRT engine path end to end on a GPU, as ``python benchmarks/gpu_check.py --only engine`` runs it.

For each shipped model: its plugin graph (exported once into the per-user cache) is built into fp32 and
fp16 engines for this GPU through the engine cache (what ``edge-derain build`` does; the Python plugin or
``$EDGE_DERAIN_PLUGIN_LIB``'s C++ library), loaded by the TensorRT backend, compared with PyTorch on the same
GPU on random frames (``edge-derain compare``: a 720p frame and an odd size that pads and crops) and timed
against it (``edge-derain bench``, 720p, host copies included on both sides).

No engine has been executed so far: the GPUs lent to this project (H100, H200) have no full TensorRT,
and TensorRT-RTX cannot build for their sm_90. Where no installed TensorRT can build for the GPU, the
check returns one row saying why (``backends.auto.tensorrt_blocker``), so the first machine with a
TensorRT that can (an RTX / L4 / A-series card with TensorRT-RTX or tensorrt, a Jetson with JetPack)
runs it unchanged.
"""
from __future__ import annotations

from pathlib import Path

#: What is run: the shipped models, and the error each precision may have against PyTorch FP32.
WEIGHTS = ("efderain_w025", "elf_lw")
TOLERANCES = {"fp32": (1e-3, 1e-3), "fp16": (2e-2, 2e-2)}  # (atol, rtol); outputs are images in [0, 1]
COMPARE_SIZES = ((720, 1280), (541, 963))
BENCH_SIZE = (720, 1280)


def engine_blocker() -> str | None:
    """Why no engine can be built and run on this machine's GPU 0, or None."""
    from edge_derain.backends.auto import tensorrt_blocker
    from edge_derain.engine.flavour import (TensorRTSetupError, TensorRTUnavailable, detect_tensorrt,
                                            ensure_plugin_node_support, list_devices)

    try:
        flavour = detect_tensorrt()
        ensure_plugin_node_support(flavour)
    except (TensorRTUnavailable, TensorRTSetupError) as exc:
        flavour = exc
    return tensorrt_blocker(flavour, list_devices())


def _engine_row(weights: str, precision: str, torch_backend, cache_root: Path | None, warmup: int, iters: int) -> dict:
    from edge_derain.backends.trt_backend import TensorRTBackend
    from edge_derain.bench import run_benchmark
    from edge_derain.compare import compare_backends
    from edge_derain.engine import EngineCache, ShapeProfile
    from edge_derain.gst.select import exported_onnx
    from edge_derain.utils import cache_dir

    atol, rtol = TOLERANCES[precision]
    plugin_graph, _ = exported_onnx(weights)
    profile = ShapeProfile((1, 3, 256, 256), (1, 3, *BENCH_SIZE), (1, 3, 1088, 1920))
    engine = EngineCache(cache_root or cache_dir("engines")).get_or_build(plugin_graph, precision, profile)
    with TensorRTBackend(engine.engine_path) as trt:
        report = compare_backends(trt, torch_backend, sizes=COMPARE_SIZES, atol=atol, rtol=rtol)
        timing = run_benchmark({"engine": trt, "torch": torch_backend}, [BENCH_SIZE], warmup=warmup, iters=iters,
                               progress=False)
    median = {row["backend"]: row["median_ms"] for row in timing["results"]}
    sidecar = engine.sidecar
    return {"status": "ok" if report["passed"] else "FAIL", "max_abs_err": report["worst_max_abs_err"],
            "min_psnr_db": report["min_psnr_db"], "tolerance": [atol, rtol], "kernel_ms": median["engine"],
            "torch_ms": median["torch"], "speedup": median["torch"] / median["engine"],
            "engine": str(engine.engine_path), "tensorrt": f"{engine.key.fingerprint.flavour} "
            f"{engine.key.fingerprint.version}", "typing": engine.key.typing,
            "plugin": engine.key.plugin_implementation, "build_seconds": sidecar.get("build_seconds"),
            "layer_datatypes": sidecar["layer_summary"]["datatypes"]}


def engine_check(warmup: int = 10, iters: int = 50, cache_root: Path | None = None) -> list[dict]:
    """One row per shipped model and precision (or one row saying why nothing could run)."""
    blocker = engine_blocker()
    if blocker is not None:
        return [{"case": "shipped models", "dtype": "fp32+fp16", "status": f"skipped ({blocker})"}]
    from edge_derain.backends import TorchBackend
    from edge_derain.checkpoint import load_model

    rows = []
    for weights in WEIGHTS:
        torch_backend = TorchBackend(load_model(weights, device="cuda"), device="cuda")
        for precision in TOLERANCES:
            row = {"case": f"{weights} {BENCH_SIZE[0]}x{BENCH_SIZE[1]}", "dtype": precision}
            try:
                row.update(_engine_row(weights, precision, torch_backend, cache_root, warmup, iters))
            except Exception as exc:  # a failed build or run is this row's result; the other rows still run
                row.update(status="FAIL", error=f"{type(exc).__name__}: {' '.join(str(exc).split())}")
            rows.append(row)
    return rows
