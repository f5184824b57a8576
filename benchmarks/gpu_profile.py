"""Nsight Compute stage times and compute-sanitizer memcheck of the CUDA kernels (``gpu_check.py --nsight``
and ``--sanitizer``; both need an NVIDIA GPU and the CUDA toolkit's ``ncu`` / ``compute-sanitizer``).

* :func:`nsight_stage_times` profiles each case of ``NSIGHT_CASES`` in its own process under ``ncu``
  (``python benchmarks/gpu_profile.py profile-attention ...`` launches the four attention kernels a few
  times) and reads, per kernel (stage): ``gpu__time_duration`` (Nsight locks the clocks to base, so times
  are a little above the CUDA-event timings of gpu_check), achieved occupancy, registers per thread, and
  DRAM and SM throughput as % of peak.
* :func:`sanitizer_memcheck` runs both operators over ``SANITIZER_ATTENTION_CASES`` and the small
  dilation-filter cases (all modes, head sizes 4-96, odd and aligned sizes, fp32 and fp16) under
  ``compute-sanitizer --tool memcheck`` (``python benchmarks/gpu_profile.py sanitize-cases ...``), with
  PyTorch's caching allocator off so every tensor is its own allocation and an access past its end is
  caught, and checks every output against the PyTorch operator too.
"""
from __future__ import annotations

import argparse
import csv
import os
import re
import shutil
import statistics
import subprocess
import sys
from pathlib import Path
from typing import Sequence

HERE = Path(__file__).resolve().parent
# Kernel (function) name -> stage, in launch order (plugins/kernels/transposed_attention.cu).
STAGES = (("gram_partials_kernel", "gram"), ("reduce_partials_kernel", "reduce"),
          ("attention_rows_kernel", "rows"), ("apply_attention_kernel", "apply"))
NSIGHT_METRICS = {
    "gpu__time_duration.sum": "time_us",
    "sm__warps_active.avg.pct_of_peak_sustained_active": "achieved_occupancy_pct",
    "launch__registers_per_thread": "registers_per_thread",
    "dram__throughput.avg.pct_of_peak_sustained_elapsed": "dram_throughput_pct",
    "sm__throughput.avg.pct_of_peak_sustained_elapsed": "sm_throughput_pct",
}
_TIME_UNITS_US = {"nsecond": 1e-3, "ns": 1e-3, "usecond": 1.0, "us": 1.0, "msecond": 1e3, "ms": 1e3,
                  "second": 1e6, "s": 1e6}
# (N, heads, C_h, H, W, mode, top-k ratios), as gpu_check.ATTENTION_CASES: the cases BENCHMARKS.md breaks down.
NSIGHT_CASES = (
    (1, 1, 8, 540, 960, "dense", ()),
    (1, 1, 48, 540, 960, "dense", ()),
    (1, 1, 96, 540, 960, "dense", ()),
    (1, 2, 24, 540, 960, "dual", (0.7,)),
)
NSIGHT_DTYPES = ("float32", "float16")
PROFILED_CALLS = 3
_MODE_RATIOS = {"dense": (), "sparse": (0.5,), "dual": (0.7,), "multi": (1 / 2, 2 / 3, 3 / 4, 4 / 5)}
# Every mode x head size x (odd, aligned) size, 1-2 heads: small enough for memcheck's slowdown.
SANITIZER_ATTENTION_CASES = tuple(
    (n, heads, per_head, h, w, mode, _MODE_RATIOS[mode])
    for mode in ("dense", "sparse", "dual", "multi")
    for per_head in (4, 8, 12, 24, 32, 48, 64, 96)
    for n, heads, h, w in ((1, 1, 37, 53), (2, 2, 32, 64)))
SANITIZER_DTYPES = ("float32", "float16")


def case_label(case: tuple) -> str:
    n, heads, per_head, h, w, mode, _ = case
    return f"{n}x{heads}x{per_head}x{h}x{w} {mode}"


# ------------------------------------------------------------------------------------------ Nsight Compute

def parse_ncu_csv(text: str) -> list[dict]:
    """Rows of ``ncu --csv --page details`` output: one dict per (kernel launch, metric)."""
    lines = text.splitlines()
    start = next((i for i, line in enumerate(lines) if line.startswith('"ID"')), None)
    if start is None:
        return []
    return [row for row in csv.DictReader(lines[start:]) if row.get("Metric Name")]


def metric_value(row: dict) -> float:
    value = float(row["Metric Value"].replace(",", ""))
    if row["Metric Name"].startswith("gpu__time_duration"):
        unit = row.get("Metric Unit", "nsecond").strip()
        if unit not in _TIME_UNITS_US:
            raise ValueError(f"unexpected time unit {unit!r} in the ncu report")
        value *= _TIME_UNITS_US[unit]
    return value


def stage_metrics(rows: Sequence[dict]) -> dict[str, dict[str, float]]:
    """Per stage, the median over its launches of every metric of ``NSIGHT_METRICS``."""
    samples: dict[str, dict[str, list[float]]] = {}
    for row in rows:
        stage = next((name for kernel, name in STAGES if kernel in row.get("Kernel Name", "")), None)
        key = NSIGHT_METRICS.get(row["Metric Name"])
        if stage is None or key is None:
            continue
        samples.setdefault(stage, {}).setdefault(key, []).append(metric_value(row))
    return {stage: {key: statistics.median(values) for key, values in metrics.items()}
            for stage, metrics in sorted(samples.items(), key=lambda item: [s for _, s in STAGES].index(item[0]))}


def _tool(name: str) -> str | None:
    found = shutil.which(name)
    if found is None and Path("/usr/local/cuda/bin", name).exists():
        found = str(Path("/usr/local/cuda/bin", name))
    return found


def _child(*args: str) -> list[str]:
    return [sys.executable, str(HERE / "gpu_profile.py"), *args]


def nsight_stage_times(lib_path: Path, cases: Sequence[tuple] = NSIGHT_CASES,
                       dtypes: Sequence[str] = NSIGHT_DTYPES) -> dict:
    """Profile every (case, dtype) under ``ncu``; returns the ``nsight`` section of the gpu_check report."""
    ncu = _tool("ncu")
    if ncu is None:
        return {"status": "skipped: ncu (Nsight Compute) is not on PATH or in /usr/local/cuda/bin"}
    version = subprocess.run([ncu, "--version"], capture_output=True, text=True).stdout.strip().splitlines()
    kernels = "|".join(kernel for kernel, _ in STAGES)
    rows = []
    for index, case in enumerate(cases):
        for dtype in dtypes:
            command = [ncu, "--csv", "--page", "details", "--target-processes", "all",
                       "--metrics", ",".join(NSIGHT_METRICS), "--kernel-name", f"regex:{kernels}",
                       *_child("profile-attention", "--lib", str(lib_path), "--case", str(index), "--dtype", dtype)]
            print(f"ncu: {case_label(case)} {dtype}", flush=True)
            done = subprocess.run(command, capture_output=True, text=True)
            row = {"case": case_label(case), "dtype": dtype}
            stages = stage_metrics(parse_ncu_csv(done.stdout))
            if done.returncode != 0 or len(stages) != len(STAGES):
                tail = (done.stderr or done.stdout).strip().splitlines()[-3:]
                row["status"] = f"FAIL (ncu exit {done.returncode}): " + " | ".join(tail)
            else:
                row.update(status="ok", stages=stages)
            rows.append(row)
    status = "ok" if all(r["status"] == "ok" for r in rows) else "FAIL"
    return {"status": status, "tool": version[-1] if version else ncu,
            "clock_control": "ncu default (base clocks)", "calls_per_case": PROFILED_CALLS, "rows": rows}


def profile_attention(lib_path: Path, case_index: int, dtype: str) -> None:
    """Child under ncu: launch one NSIGHT_CASES case PROFILED_CALLS times and exit."""
    import torch

    from edge_derain.engine import kernel_lib
    from gpu_check import attention_call

    lib = kernel_lib.load_kernel_library(lib_path)
    call = attention_call(lib, NSIGHT_CASES[case_index], dtype, torch.Generator(device="cuda").manual_seed(0))
    for _ in range(PROFILED_CALLS):
        call.launch(lib)
    torch.cuda.synchronize()


# ------------------------------------------------------------------------------------------ compute-sanitizer

def sanitizer_error_count(text: str) -> int | None:
    """The count of compute-sanitizer's closing "ERROR SUMMARY: N errors" line, None when there is none."""
    found = re.findall(r"ERROR SUMMARY:\s*([\d,]+)\s+error", text)
    return int(found[-1].replace(",", "")) if found else None


def sanitizer_memcheck(lib_path: Path) -> dict:
    """Both operators' kernels under ``compute-sanitizer --tool memcheck``; the ``sanitizer`` report section."""
    sanitizer = _tool("compute-sanitizer")
    if sanitizer is None:
        return {"status": "skipped: compute-sanitizer is not on PATH or in /usr/local/cuda/bin"}
    version = subprocess.run([sanitizer, "--version"], capture_output=True, text=True).stdout.strip().splitlines()
    env = {**os.environ, "PYTORCH_NO_CUDA_MEMORY_CACHING": "1"}
    command = [sanitizer, "--tool", "memcheck", "--print-limit", "20",
               *_child("sanitize-cases", "--lib", str(lib_path))]
    print(f"compute-sanitizer memcheck over {len(SANITIZER_ATTENTION_CASES) * len(SANITIZER_DTYPES)} attention and "
          f"the small dilation-filter cases (slow)", flush=True)
    done = subprocess.run(command, capture_output=True, text=True, env=env)
    output = done.stdout + done.stderr
    errors = sanitizer_error_count(output)
    launched = re.findall(r"sanitized cases: (\d+) launched, (\d+) outside tolerance", output)
    ok = done.returncode == 0 and errors == 0 and launched and launched[-1][1] == "0"
    return {"status": "ok" if ok else "FAIL", "tool": version[-1] if version else sanitizer, "errors": errors,
            "cases_launched": int(launched[-1][0]) if launched else 0,
            "cases_outside_tolerance": int(launched[-1][1]) if launched else None,
            "exit_code": done.returncode, "output_tail": output.strip().splitlines()[-25:]}


def sanitize_cases(lib_path: Path) -> int:
    """Child under compute-sanitizer: every sanitizer case once, checked against the PyTorch operators."""
    import torch

    from edge_derain.engine import kernel_lib
    from edge_derain.ops import dilation_filter, transposed_attention
    from gpu_check import ATTENTION_TOLERANCES, DEFAULT_CASES, TOLERANCES, attention_call

    lib = kernel_lib.load_kernel_library(lib_path)
    gen = torch.Generator(device="cuda").manual_seed(0)
    launched = outside = 0
    for shape, dilations in DEFAULT_CASES[:3]:  # the odd and multi-batch sizes
        for dtype in SANITIZER_DTYPES:
            image = torch.rand(shape, device="cuda", generator=gen).to(getattr(torch, dtype))
            kernels = torch.randn((shape[0], 9 * shape[1], *shape[2:]), device="cuda", generator=gen).to(image.dtype)
            out = torch.full((shape[0], shape[1] * len(dilations), *shape[2:]), float("nan"), device="cuda",
                             dtype=image.dtype)
            kernel_lib.launch_dilation_filter(image.data_ptr(), kernels.data_ptr(), out.data_ptr(), dtype, *shape,
                                              dilations, torch.cuda.current_stream().cuda_stream, lib=lib)
            expected = dilation_filter(image.float(), kernels.float(), dilations)
            launched += 1
            outside += bool((out.float() - expected).abs().max() / expected.abs().max() > TOLERANCES[dtype])
    for case in SANITIZER_ATTENTION_CASES:
        for dtype in SANITIZER_DTYPES:
            call = attention_call(lib, case, dtype, gen)
            call.launch(lib)
            q, k, v, temperature, heads, mode, topk, weights = call.torch_args()
            expected = transposed_attention(q.float(), k.float(), v.float(), temperature, heads, mode, topk, weights)
            launched += 1
            outside += bool((call.out.float() - expected).abs().max() / expected.abs().max()
                            > ATTENTION_TOLERANCES[dtype])
    torch.cuda.synchronize()
    print(f"sanitized cases: {launched} launched, {outside} outside tolerance", flush=True)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("profile-attention", help="(run under ncu) launch one NSIGHT_CASES case")
    p.add_argument("--lib", type=Path, required=True)
    p.add_argument("--case", type=int, required=True, choices=range(len(NSIGHT_CASES)))
    p.add_argument("--dtype", choices=NSIGHT_DTYPES, default="float32")
    p = sub.add_parser("sanitize-cases", help="(run under compute-sanitizer) launch every sanitizer case")
    p.add_argument("--lib", type=Path, required=True)
    args = parser.parse_args(argv)
    if args.command == "profile-attention":
        profile_attention(args.lib, args.case, args.dtype)
        return 0
    return sanitize_cases(args.lib)


if __name__ == "__main__":
    sys.exit(main())
