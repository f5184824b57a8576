"""Latency benchmark: every backend at every resolution, reported as median / p90 / p99 and frames/s.

Each timed call is one ``Backend.run`` on a host-memory float32 batch, the way the pipeline calls
it: padding, host<->device copies and synchronisation are included, so the numbers are end-to-end
per frame. Inputs are seeded uniform random batches (never zeros, which some kernels short-cut);
two of them alternate so no backend can reuse a cached result.
"""
from __future__ import annotations

import platform
import time
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np

from .backends.base import Backend
from .utils import atomic_path, atomic_write_json, console, git_commit, have_matplotlib

JSON_NAME = "benchmark.json"
PLOT_NAME = "benchmark.png"
INPUT_POOL = 2


def _check_count(name: str, value, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{name} must be an int >= {minimum}, got {value!r}")
    return value


def latency_stats(times_ms: Sequence[float], batch: int) -> dict:
    """Median / p90 / p99 / mean / min / max in ms and frames/s at the median."""
    t = np.asarray(times_ms, dtype=np.float64)
    median = float(np.median(t))
    return {"median_ms": median, "p90_ms": float(np.percentile(t, 90)), "p99_ms": float(np.percentile(t, 99)),
            "mean_ms": float(t.mean()), "min_ms": float(t.min()), "max_ms": float(t.max()),
            "fps": batch * 1000.0 / median}


def run_benchmark(backends: Mapping[str, Backend], resolutions: Sequence[tuple[int, int]],
                  batch: int | Sequence[int] = 1, warmup: int = 3, iters: int = 20, seed: int = 0,
                  progress: bool = True) -> dict:
    """Time ``iters`` calls (after ``warmup`` untimed ones) per backend, resolution and batch size.

    Several batch sizes (e.g. ``[1, 2, 4, 8]``, the streams of a multi-camera run) show the batching gain:
    each row's ``fps`` counts frames, so throughput per batch size compares directly.
    """
    from tqdm import tqdm

    if not backends:
        raise ValueError("no backends to benchmark; pass e.g. {'torch': TorchBackend(model)}")
    if not resolutions:
        raise ValueError("no resolutions to benchmark; pass e.g. [(480, 640), (720, 1280)]")
    batches = [batch] if isinstance(batch, (int, np.integer)) and not isinstance(batch, bool) else list(batch)
    if not batches:
        raise ValueError("no batch sizes to benchmark; pass e.g. [1, 2, 4, 8]")
    for size in batches:
        _check_count("batch", size, 1)
    _check_count("warmup", warmup, 0)
    _check_count("iters", iters, 1)
    sizes = []
    for res in resolutions:
        if len(res) != 2 or any(isinstance(s, bool) or not isinstance(s, (int, np.integer)) or s < 1 for s in res):
            raise ValueError(f"resolutions must be (height, width) pairs of positive ints, got {res!r}")
        sizes.append((int(res[0]), int(res[1])))

    rng = np.random.default_rng(seed)
    pools = {(n, size): [rng.random((n, 3, *size), dtype=np.float32) for _ in range(INPUT_POOL)]
             for n in batches for size in sizes}
    rows = []
    bar = tqdm(total=len(backends) * len(sizes) * len(batches) * (warmup + iters), desc="benchmark", unit="run",
               disable=not progress)
    for name, backend in backends.items():
        for n in batches:
            for h, w in sizes:
                bar.set_postfix_str(f"{name} {n}x{h}x{w}")
                pool = pools[(n, (h, w))]
                times = []
                for call in range(warmup + iters):
                    start = time.perf_counter()
                    backend.run(pool[call % INPUT_POOL])
                    if call >= warmup:
                        times.append((time.perf_counter() - start) * 1000.0)
                    bar.update()
                rows.append({"backend": name, "description": repr(backend), "batch": n, "height": h, "width": w,
                             **latency_stats(times, n)})
    bar.close()
    return {
        "batch": batches[0] if len(batches) == 1 else batches, "warmup": warmup, "iters": iters, "seed": seed,
        "environment": {"platform": platform.platform(), "processor": platform.processor() or platform.machine(),
                        "python": platform.python_version(), "numpy": np.__version__, "git_commit": git_commit()},
        "results": rows,
    }


def plot_benchmark(results: dict, path: str | Path) -> Path:
    """Median latency vs resolution (megapixels), one line per backend; error bars up to p90."""
    # A bare Figure renders with Agg and leaves pyplot's global backend and figure list alone.
    from matplotlib.figure import Figure

    fig = Figure(figsize=(7, 4.5))
    ax = fig.subplots()
    rows = results["results"]
    several = len({r.get("batch", 1) for r in rows}) > 1
    for name, n in dict.fromkeys((r["backend"], r.get("batch", 1)) for r in rows):
        mine = sorted((r for r in rows if r["backend"] == name and r.get("batch", 1) == n),
                      key=lambda r: r["height"] * r["width"])
        mpix = [r["height"] * r["width"] / 1e6 for r in mine]
        median = [r["median_ms"] for r in mine]
        above = [r["p90_ms"] - r["median_ms"] for r in mine]
        ax.errorbar(mpix, median, yerr=[[0.0] * len(mine), above], marker="o", capsize=3,
                    label=f"{name}, batch {n}" if several else name)
    labelled = sorted({(r["height"], r["width"]) for r in rows}, key=lambda s: s[0] * s[1])
    ax.set_xticks([h * w / 1e6 for h, w in labelled], [f"{h}x{w}" for h, w in labelled], rotation=30)
    ax.set_xlabel("input resolution" if several else f"input resolution (batch {results['batch']})")
    ax.set_ylabel("latency per call, ms (median, bar to p90)")
    ax.set_title("edge_derain latency per frame")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    path = Path(path)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=120)
    return path


def write_benchmark(results: dict, out_dir: str | Path) -> tuple[Path, Path | None]:
    """Write ``benchmark.json`` and ``benchmark.png`` into ``out_dir``; return both paths (the PNG's is None
    without matplotlib)."""
    out_dir = Path(out_dir)
    json_path = out_dir / JSON_NAME
    atomic_write_json(json_path, results)
    return json_path, plot_benchmark(results, out_dir / PLOT_NAME) if have_matplotlib() else None


def print_benchmark(results: dict) -> None:
    from rich.table import Table

    table = Table(title=f"latency per call, {results['iters']} runs after {results['warmup']} warm-up")
    for column in ("backend", "batch", "resolution", "median ms", "p90 ms", "p99 ms", "frames/s"):
        table.add_column(column, justify="left" if column in ("backend", "resolution") else "right")
    for r in results["results"]:
        table.add_row(r["backend"], str(r.get("batch", results["batch"])), f"{r['height']}x{r['width']}",
                      f"{r['median_ms']:.2f}", f"{r['p90_ms']:.2f}", f"{r['p99_ms']:.2f}", f"{r['fps']:.1f}")
    console().print(table)
