"""Compare two backends output by output (Polygraphy style): error statistics and a pass/fail verdict.

Typical use: PyTorch (the reference, backend ``b``) against ONNX Runtime or a TensorRT engine
(backend ``a``) on the same random batches. An element passes when it is within ``atol`` **or**
within ``rtol`` of the reference (Polygraphy's element-wise rule), so tiny absolute errors on
near-zero outputs and proportional errors on large ones are both accepted; an output passes when all
its elements do.
"""
from __future__ import annotations

import math
from typing import Sequence

import numpy as np

from .backends.base import Backend
from .utils import console

DEFAULT_SIZES = ((64, 64), (61, 90))  # one multiple of 16 and one that exercises the padding


def random_inputs(sizes: Sequence[tuple[int, int]], batch: int = 1, seed: int = 0) -> list[np.ndarray]:
    """Seeded uniform [0, 1) float32 batches, one per (H, W): image-like values, never all zeros."""
    rng = np.random.default_rng(seed)
    return [rng.random((batch, 3, int(h), int(w)), dtype=np.float32) for h, w in sizes]


def error_stats(output: np.ndarray, reference: np.ndarray, atol: float, rtol: float) -> dict:
    """Element-wise error of ``output`` against ``reference`` (same shape), with the pass/fail verdict.

    PSNR uses a peak of 1 on the raw outputs (no clipping to [0, 1]: out-of-range disagreements
    count); identical outputs give ``inf``.
    """
    if output.shape != reference.shape:
        raise ValueError(f"output shapes differ: {output.shape} vs reference {reference.shape}; "
                         "both backends must return the input's shape")
    out64, ref64 = output.astype(np.float64), reference.astype(np.float64)
    absdiff = np.abs(out64 - ref64)
    magnitude = np.abs(ref64)
    reldiff = np.divide(absdiff, magnitude, out=np.where(absdiff > 0, np.inf, 0.0), where=magnitude > 0)
    mismatches = int(np.count_nonzero((absdiff > atol) & (reldiff > rtol)))
    nonfinite = int(np.count_nonzero(~(np.isfinite(out64) & np.isfinite(ref64))))
    mse = float(np.mean(absdiff ** 2))
    return {
        "shape": list(output.shape),
        "max_abs_err": float(absdiff.max()),
        "mean_abs_err": float(absdiff.mean()),
        "max_rel_err": float(reldiff.max()),
        "psnr_db": math.inf if mse == 0 else 10.0 * math.log10(1.0 / mse),
        "mismatches": mismatches,
        "nonfinite": nonfinite,
        "passed": mismatches == 0 and nonfinite == 0,
    }


def compare_backends(a: Backend, b: Backend, inputs: list[np.ndarray] | None = None, seed: int = 0,
                     sizes: Sequence[tuple[int, int]] = DEFAULT_SIZES, batch: int = 1,
                     atol: float = 1e-4, rtol: float = 1e-3) -> dict:
    """Run both backends on each input and compare ``a``'s output with ``b``'s (the reference).

    ``inputs`` are (N, 3, H, W) float32 batches in [0, 1]; when None, :func:`random_inputs` makes one
    per ``sizes`` entry from ``seed``. The defaults suit FP32 backends; FP16 engines need roughly
    ``atol=1e-2, rtol=1e-2``. Returns a JSON-serialisable report with one entry per input.
    """
    for name, value in (("atol", atol), ("rtol", rtol)):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not value >= 0:
            raise ValueError(f"{name} must be a non-negative number, got {value!r}")
    if inputs is None:
        inputs = random_inputs(sizes, batch=batch, seed=seed)
    if not inputs:
        raise ValueError("no inputs to compare; pass inputs or at least one (H, W) in sizes")
    results = []
    for index, batch_array in enumerate(inputs):
        entry = {"input": index, **error_stats(a.run(batch_array), b.run(batch_array), atol, rtol)}
        entry["input_shape"] = list(batch_array.shape)
        results.append(entry)
    return {
        "backend": repr(a),
        "reference": repr(b),
        "atol": atol,
        "rtol": rtol,
        "results": results,
        "worst_max_abs_err": max(r["max_abs_err"] for r in results),
        "worst_max_rel_err": max(r["max_rel_err"] for r in results),
        "min_psnr_db": min(r["psnr_db"] for r in results),
        "passed": all(r["passed"] for r in results),
    }


def print_compare_report(report: dict) -> None:
    """One table row per input, then the verdict."""
    from rich.table import Table

    table = Table(title=f"{report['backend']} vs {report['reference']} (atol {report['atol']:g}, "
                        f"rtol {report['rtol']:g})")
    for column in ("input", "shape", "max abs", "mean abs", "max rel", "PSNR dB", "mismatches", "result"):
        table.add_column(column, justify="left" if column in ("input", "shape") else "right")
    for r in report["results"]:
        table.add_row(str(r["input"]), "x".join(map(str, r["input_shape"])), f"{r['max_abs_err']:.3e}",
                      f"{r['mean_abs_err']:.3e}", f"{r['max_rel_err']:.3e}", f"{r['psnr_db']:.2f}",
                      str(r["mismatches"] + r["nonfinite"]),
                      "[green]PASS" if r["passed"] else "[red]FAIL")
    out = console()
    out.print(table)
    verdict = "[green]PASSED" if report["passed"] else "[red]FAILED"
    out.print(f"{verdict}[/]: worst max abs {report['worst_max_abs_err']:.3e}, "
                  f"worst max rel {report['worst_max_rel_err']:.3e}, min PSNR {report['min_psnr_db']:.2f} dB")
