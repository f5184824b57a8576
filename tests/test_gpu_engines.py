"""benchmarks/gpu_engines.py (``gpu_check.py --only engine``): where no TensorRT can build for a GPU it says
why in one row, and its rows render into BENCHMARKS.md's engine table. The run itself needs such a GPU."""
from __future__ import annotations

import sys
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"
sys.path.insert(0, str(BENCHMARKS))

import gpu_check  # noqa: E402
import gpu_engines  # noqa: E402


def test_engine_check_says_why_nothing_can_run_here():
    from edge_derain.engine.flavour import list_devices

    if list_devices():
        pytest.skip("a GPU is present: the check would build and run engines")
    [row] = gpu_engines.engine_check()
    assert row["status"].startswith("skipped (") and "no CUDA GPU is visible" in row["status"]
    assert not gpu_check.failures({"checks": {"engine": [row]}})  # a skip is not a failure


def test_engine_rows_render_into_the_benchmarks_table():
    rows = [{"case": "efderain_w025 720x1280", "dtype": "fp16", "status": "ok", "tensorrt": "tensorrt 10.3.0",
             "typing": "weak", "max_abs_err": 3.1e-3, "min_psnr_db": 52.4, "kernel_ms": 4.2, "torch_ms": 21.0,
             "speedup": 5.0},
            {"case": "elf_lw 720x1280", "dtype": "fp32", "status": "FAIL", "error": "EngineBuildError: ..."}]
    report = {"device": "Orin", "compute_capability": "8.7", "torch": "2.5.0", "kernels_version": "1.0.0",
              "kernels_sha256": "ab" * 32, "iters": 50, "warmup": 10, "checks": {"engine": rows},
              "dates": {"engine": "2026-12-04"}}
    table = gpu_check.markdown_sections(report)["gpu_check_engine"]
    assert "`python benchmarks/gpu_check.py --only engine`" in table and "2026-12-04, Orin (sm_87)" in table
    assert "| efderain_w025 720x1280 | fp16 | ok | tensorrt 10.3.0 | weak | 3.1e-03 | 52.4 | 4.20 | 21.00 | 5.0 |" in table
    assert "| elf_lw 720x1280 | fp32 | FAIL | — | — | — |" in table
    assert gpu_check.failures(report) == ["engine elf_lw 720x1280 fp32"]
