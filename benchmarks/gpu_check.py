"""GPU check of the CUDA kernels: correctness against the PyTorch operators and speed against the
device's copy bandwidth (the kernels are memory bound, so a D2D copy is their practical roofline) and
against PyTorch implementations of the same operator.

    python benchmarks/gpu_check.py                          # everything, ~5 min on an H100
    python benchmarks/gpu_check.py --only transposed_attention --only nsight

Needs an NVIDIA GPU visible to torch and nvcc (or --lib with a built libedge_derain_kernels.so). On a
machine without a CUDA GPU it prints "no CUDA GPU" and exits 0. Exit status 1 when a check fails.
Writes this run alone to ``benchmarks/results/gpu_check-<device>-<date>.json`` (commit it: old and new runs
stay side by side), and ``benchmarks/results/gpu_check.json`` (parts not run this time are kept from the
previous file of the same device and kernel sources), which renders the ``gpu_check_*`` tables of
``BENCHMARKS.md``.

Each entry of CHECKS is one operator, or the engine path: it returns a list of result rows (one per case)
that the table and the JSON report share. Two more parts (``gpu_profile.py``) need the CUDA toolkit's tools:
``sanitizer`` (compute-sanitizer memcheck over both operators) and ``nsight`` (Nsight Compute time,
occupancy, registers and throughput of each attention stage).

* dilation_filter: the fused kernel vs ``edge_derain.ops.dilation_filter`` (nine shifted slices per
  dilation, FP32 accumulation).
* transposed_attention: the four-stage kernel vs ``edge_derain.ops.transposed_attention`` (cuBLAS
  Gram and apply GEMMs, FP32 math) for numerics and time, and vs the spec §2.5 decomposed chain
  (``transposed_attention_reference``: normalise, MatMul, TopK masks, Softmax, MatMul) for time; at the
  head sizes the models use (C_h 8-96) up to 1080p/2 (540x960), all four modes.
* engine: the shipped models built into fp32/fp16 TensorRT engines for this GPU, run by the TensorRT
  backend, compared with and timed against PyTorch (``gpu_engines.py``; no engine has run yet: it needs
  a TensorRT that can build for the GPU, and says why in its row where there is none).
"""
from __future__ import annotations

import argparse
import dataclasses
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable, Sequence

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))  # runnable from a checkout without `pip install -e .`
if str(REPO_ROOT / "benchmarks") not in sys.path:
    sys.path.insert(0, str(REPO_ROOT / "benchmarks"))  # its siblings (reporting, gpu_profile), also when imported

import gpu_engines  # noqa: E402

DILATIONS = (1, 2, 3, 4)
# (N, C, H, W), dilations: odd sizes for the bounds checks, 720p/1080p at batch 1 and 4 for speed.
DEFAULT_CASES = (
    ((1, 3, 37, 53), DILATIONS),
    ((4, 3, 257, 263), DILATIONS),
    ((2, 3, 61, 47), (1, 3)),
    ((1, 3, 720, 1280), DILATIONS),
    ((1, 3, 1080, 1920), DILATIONS),
    ((4, 3, 1080, 1920), DILATIONS),
)
TOLERANCES = {"float32": 1e-5, "float16": 1e-2}  # max |kernel - reference| / max |reference|
# (N, heads, C_h, H, W, mode, top-k ratios): ELF / Restormer heads (C_h 8-96, dense), DDSA (dual, 0.7)
# and DRSformer (multi, 1/2 2/3 3/4 4/5); odd sizes for the bounds, 540x960 = 1080p at half resolution.
ATTENTION_CASES = (
    (1, 1, 8, 67, 45, "dense", ()),
    (2, 3, 12, 33, 71, "sparse", (0.5,)),
    (1, 1, 8, 540, 960, "dense", ()),
    (1, 2, 16, 540, 960, "dense", ()),
    (1, 1, 32, 540, 960, "dense", ()),
    (1, 1, 48, 540, 960, "dense", ()),
    (1, 1, 96, 540, 960, "dense", ()),
    (1, 8, 24, 270, 480, "dense", ()),
    (1, 1, 48, 540, 960, "dual", (0.7,)),
    (1, 2, 24, 540, 960, "dual", (0.7,)),
    (1, 1, 48, 540, 960, "multi", (1 / 2, 2 / 3, 3 / 4, 4 / 5)),
    (4, 1, 48, 270, 480, "dual", (0.7,)),
)
ATTENTION_TOLERANCES = {"float32": 1e-4, "float16": 5e-3}


@dataclasses.dataclass
class Context:
    """What every check gets: the built kernel library, the copy roofline and the timing settings."""
    lib: object  # ctypes.CDLL from edge_derain.engine.kernel_lib
    copy_gbps: float
    warmup: int
    iters: int
    cases: Sequence[tuple[tuple[int, int, int, int], tuple[int, ...]]]


@dataclasses.dataclass
class Check:
    name: str
    run: Callable[[Context], list[dict]]


def time_cuda_ms(fn: Callable[[], object], warmup: int, iters: int) -> float:
    """Median milliseconds of ``fn`` on the current stream, measured with CUDA events after warm-up."""
    import torch

    for _ in range(warmup):
        fn()
    torch.cuda.synchronize()
    times = []
    for _ in range(iters):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end))
    return statistics.median(times)


def copy_bandwidth_gbps(warmup: int, iters: int) -> float:
    """Device-to-device copy bandwidth (bytes read + written per second) over a buffer far larger
    than L2, the practical ceiling for memory-bound kernels."""
    import torch

    free, _ = torch.cuda.mem_get_info()
    nbytes = min(1 << 30, free // 4)
    src = torch.empty(nbytes, dtype=torch.uint8, device="cuda").random_()
    dst = torch.empty_like(src)
    ms = time_cuda_ms(lambda: dst.copy_(src), warmup, iters)
    del src, dst
    torch.cuda.empty_cache()
    return 2 * nbytes / (ms * 1e-3) / 1e9


def _dilation_filter_case(ctx: Context, shape: tuple[int, int, int, int], dilations: tuple[int, ...],
                          dtype_name: str, gen) -> dict:
    import torch

    from edge_derain.engine import kernel_lib
    from edge_derain.ops import dilation_filter

    n, c, h, w = shape
    dtype = getattr(torch, dtype_name)
    image = torch.rand(shape, device="cuda", generator=gen).to(dtype)
    kernels = torch.randn((n, 9 * c, h, w), device="cuda", generator=gen).to(dtype)  # raw KPN output: signed
    out = torch.full((n, c * len(dilations), h, w), float("nan"), device="cuda", dtype=dtype)

    def run_kernel(stream=None):
        stream = stream if stream is not None else torch.cuda.current_stream()
        kernel_lib.launch_dilation_filter(image.data_ptr(), kernels.data_ptr(), out.data_ptr(), dtype_name,
                                          n, c, h, w, dilations, stream.cuda_stream, lib=ctx.lib)

    # Correctness on a side stream: checks that torch's stream handle works in the library's statically
    # linked CUDA runtime.
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        run_kernel(side)
    side.synchronize()
    # FP32 reference on the same (possibly fp16-rounded) inputs, since the kernel accumulates in FP32.
    expected = dilation_filter(image.float(), kernels.float(), dilations)
    rel_err = ((out.float() - expected).abs().max() / expected.abs().max()).item()
    del expected

    kernel_ms = time_cuda_ms(run_kernel, ctx.warmup, ctx.iters)
    torch_ms = time_cuda_ms(lambda: dilation_filter(image, kernels, dilations), ctx.warmup, ctx.iters)
    nbytes = (image.numel() + kernels.numel() + out.numel()) * image.element_size()
    gbps = nbytes / (kernel_ms * 1e-3) / 1e9
    tolerance = TOLERANCES[dtype_name]
    return dict(status="ok" if rel_err <= tolerance else "FAIL", rel_err=rel_err, tolerance=tolerance,
                kernel_ms=kernel_ms, torch_ms=torch_ms, speedup=torch_ms / kernel_ms, mbytes_per_call=nbytes / 1e6,
                gbps=gbps, pct_of_copy=100 * gbps / ctx.copy_gbps)


def dilation_filter_check(ctx: Context) -> list[dict]:
    """The fused CUDA dilation filter against ``edge_derain.ops.dilation_filter``, fp32 and fp16."""
    import torch

    rows = []
    gen = torch.Generator(device="cuda").manual_seed(0)
    for shape, dilations in ctx.cases:
        for dtype_name in TOLERANCES:
            row = {"case": f"{'x'.join(map(str, shape))} d={','.join(map(str, dilations))}", "dtype": dtype_name}
            try:
                row.update(_dilation_filter_case(ctx, shape, dilations, dtype_name, gen))
            except torch.cuda.OutOfMemoryError:
                row["status"] = "skipped (out of GPU memory)"
            torch.cuda.empty_cache()
            rows.append(row)
    return rows


@dataclasses.dataclass
class AttentionCall:
    """Random inputs of one attention case and what it takes to launch the kernels on them."""
    q: object
    k: object
    v: object
    temperature: object
    weights: object
    heads: int
    mode: str
    topk: list | None
    out: object
    workspace: object

    def torch_args(self) -> tuple:
        return (self.q, self.k, self.v, self.temperature, self.heads, self.mode, self.topk, self.weights)

    def launch(self, lib, stream=None) -> None:
        import torch

        from edge_derain.engine import kernel_lib

        stream = stream if stream is not None else torch.cuda.current_stream()
        n, c, h, w = self.q.shape
        kernel_lib.launch_transposed_attention(
            self.q.data_ptr(), self.k.data_ptr(), self.v.data_ptr(), self.temperature.data_ptr(),
            None if self.weights is None else self.weights.data_ptr(), self.out.data_ptr(),
            str(self.q.dtype).removeprefix("torch."), "float32", n, c, h, w, self.heads, self.mode, self.topk, 1e-12,
            self.workspace.data_ptr(), self.workspace.numel(), stream.cuda_stream, lib=lib)


def attention_call(lib, case: tuple, dtype_name: str, gen) -> AttentionCall:
    """Inputs for ``case`` (N, heads, C_h, H, W, mode, top-k ratios): k correlated with q and a wide
    temperature range, so attention rows are peaked and non-uniform (never zeros)."""
    import torch

    from edge_derain.ops import topk_from_ratios

    n, heads, per_head, h, w, mode, ratios = case
    c = heads * per_head
    dtype = getattr(torch, dtype_name)
    q = torch.randn((n, c, h, w), device="cuda", generator=gen)
    k = 0.8 * q + 0.6 * torch.randn((n, c, h, w), device="cuda", generator=gen)
    v = torch.randn((n, c, h, w), device="cuda", generator=gen)
    q, k, v = (t.to(dtype) for t in (q, k, v))
    temperature = torch.rand(heads, device="cuda", generator=gen) * 9 + 1
    topk = topk_from_ratios(per_head, ratios) if ratios else None
    branches = {"dense": 1, "sparse": 1, "dual": 2}.get(mode, len(topk or ()))
    weights = None if mode in ("dense", "sparse") else torch.rand(branches, device="cuda", generator=gen) + 0.25
    # The library's own answer, so a --lib built from another revision gets the workspace it expects.
    workspace = torch.empty(lib.edr_transposed_attention_workspace_size(n, c, h, w, heads), dtype=torch.uint8,
                            device="cuda")
    return AttentionCall(q, k, v, temperature, weights, heads, mode, topk, torch.full_like(q, float("nan")), workspace)


def _attention_case(ctx: Context, case: tuple, dtype_name: str, gen) -> dict:
    import torch

    from edge_derain.ops import transposed_attention, transposed_attention_reference

    call = attention_call(ctx.lib, case, dtype_name, gen)
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        call.launch(ctx.lib, side)
    side.synchronize()
    q, k, v, temperature, heads, mode, topk, weights = call.torch_args()
    expected = transposed_attention(q.float(), k.float(), v.float(), temperature, heads, mode, topk, weights)
    rel_err = ((call.out.float() - expected).abs().max() / expected.abs().max()).item()
    del expected

    kernel_ms = time_cuda_ms(lambda: call.launch(ctx.lib), ctx.warmup, ctx.iters)
    torch_ms = time_cuda_ms(lambda: transposed_attention(*call.torch_args()), ctx.warmup, ctx.iters)
    chain_ms = time_cuda_ms(lambda: transposed_attention_reference(*call.torch_args()), ctx.warmup, ctx.iters)
    nbytes = 4 * q.numel() * q.element_size()  # q, k, v read once, the output written once
    gbps = nbytes / (kernel_ms * 1e-3) / 1e9
    tolerance = ATTENTION_TOLERANCES[dtype_name]
    return dict(status="ok" if rel_err <= tolerance else "FAIL", rel_err=rel_err, tolerance=tolerance,
                kernel_ms=kernel_ms, torch_ms=torch_ms, speedup=torch_ms / kernel_ms, chain_ms=chain_ms,
                chain_speedup=chain_ms / kernel_ms, mbytes_per_call=nbytes / 1e6, gbps=gbps,
                pct_of_copy=100 * gbps / ctx.copy_gbps, workspace_mb=call.workspace.numel() / 1e6)


def transposed_attention_check(ctx: Context) -> list[dict]:
    """The four-stage CUDA transposed attention against ``edge_derain.ops.transposed_attention``."""
    import torch

    rows = []
    gen = torch.Generator(device="cuda").manual_seed(0)
    for case in ATTENTION_CASES:
        n, heads, per_head, h, w, mode, ratios = case
        for dtype_name in ATTENTION_TOLERANCES:
            row = {"case": f"{n}x{heads}x{per_head}x{h}x{w} {mode}", "dtype": dtype_name}
            try:
                row.update(_attention_case(ctx, case, dtype_name, gen))
            except torch.cuda.OutOfMemoryError:
                row["status"] = "skipped (out of GPU memory)"
            torch.cuda.empty_cache()
            rows.append(row)
    return rows


CHECKS = [Check("dilation_filter", dilation_filter_check), Check("transposed_attention", transposed_attention_check),
          Check("engine", lambda ctx: gpu_engines.engine_check(ctx.warmup, ctx.iters))]

COLUMNS = (  # (row key, header, format)
    ("case", "case", "{}"), ("dtype", "dtype", "{}"), ("status", "status", "{}"), ("rel_err", "rel err", "{:.2e}"),
    ("kernel_ms", "kernel ms", "{:.4f}"), ("torch_ms", "torch ms", "{:.4f}"), ("speedup", "x torch", "{:.1f}"),
    ("chain_ms", "chain ms", "{:.4f}"), ("chain_speedup", "x chain", "{:.1f}"),
    ("mbytes_per_call", "MB/call", "{:.1f}"), ("gbps", "GB/s", "{:.0f}"), ("pct_of_copy", "% copy", "{:.0f}"),
)


def format_table(rows: list[dict]) -> str:
    cells = [[header for _, header, _ in COLUMNS]]
    cells += [[fmt.format(row[key]) if key in row else "-" for key, _, fmt in COLUMNS] for row in rows]
    widths = [max(len(line[i]) for line in cells) for i in range(len(COLUMNS))]
    lines = ["  ".join(cell.ljust(width) for cell, width in zip(line, widths)) for line in cells]
    lines.insert(1, "  ".join("-" * width for width in widths))
    return "\n".join(lines)


def parse_case(text: str) -> tuple[tuple[int, int, int, int], tuple[int, ...]]:
    """'4x3x1080x1920' or '4x3x1080x1920:1,2,3,4' -> ((4, 3, 1080, 1920), dilations)."""
    shape_text, _, dil_text = text.partition(":")
    try:
        shape = tuple(int(v) for v in shape_text.lower().split("x"))
        dilations = tuple(int(v) for v in dil_text.split(",")) if dil_text else DILATIONS
    except ValueError:
        shape, dilations = (), ()
    if len(shape) != 4 or min(shape) < 1 or not dilations or min(dilations) < 1:
        raise argparse.ArgumentTypeError(f"case {text!r} must look like NxCxHxW or NxCxHxW:d1,d2 with positive ints")
    return shape, dilations


PARTS = [check.name for check in CHECKS] + ["sanitizer", "nsight"]
NAME = "gpu_check"


def _fmt(value, spec: str) -> str:
    return "—" if value is None else format(value, spec)


def markdown_sections(report: dict) -> dict[str, str]:
    """BENCHMARKS.md tables of a report: one per part it holds, keyed by marker name."""
    from reporting import markdown_table

    dates = report.get("dates", {})
    head = (f"{report['device']} (sm_{report['compute_capability'].replace('.', '')}), torch {report['torch']}, "
            f"kernels {report['kernels_version']} (sources {report['kernels_sha256'][:12]})")
    sections = {}
    checks = report.get("checks", {})
    if "dilation_filter" in checks:
        rows = [[r["case"], r["dtype"], r["status"], _fmt(r.get("rel_err"), ".1e"), _fmt(r.get("kernel_ms"), ".3f"),
                 _fmt(r.get("torch_ms"), ".3f"), _fmt(r.get("speedup"), ".1f"), _fmt(r.get("gbps"), ".0f"),
                 _fmt(r.get("pct_of_copy"), ".0f")] for r in checks["dilation_filter"]]
        sections["gpu_check_dilation_filter"] = (
            f"`python benchmarks/gpu_check.py --only dilation_filter` ([JSON](benchmarks/results/gpu_check.json)), "
            f"{dates.get('dilation_filter', '?')}, {head}; D2D copy {report['copy_bandwidth_gbps']:.0f} GB/s; "
            f"medians of {report['iters']} calls after {report['warmup']} warm-ups.\n\n"
            + markdown_table(["case (N×C×H×W, dilations)", "dtype", "status", "rel err", "kernel ms", "torch ms",
                              "× torch", "GB/s", "% copy"], rows))
    if "transposed_attention" in checks:
        rows = [[r["case"], r["dtype"], r["status"], _fmt(r.get("rel_err"), ".1e"), _fmt(r.get("kernel_ms"), ".3f"),
                 _fmt(r.get("torch_ms"), ".3f"), _fmt(r.get("speedup"), ".1f"), _fmt(r.get("chain_ms"), ".3f"),
                 _fmt(r.get("chain_speedup"), ".1f"), _fmt(r.get("gbps"), ".0f")]
                for r in checks["transposed_attention"]]
        sections["gpu_check_transposed_attention"] = (
            f"`python benchmarks/gpu_check.py --only transposed_attention` "
            f"([JSON](benchmarks/results/gpu_check.json)), {dates.get('transposed_attention', '?')}, {head}; "
            f"medians of {report['iters']} calls after {report['warmup']} warm-ups.\n\n"
            + markdown_table(["case (N×heads×C_h×H×W, mode)", "dtype", "status", "rel err", "kernel ms", "torch ms",
                              "× torch", "chain ms", "× chain", "GB/s"], rows))
    if "engine" in checks:
        rows = [[r["case"], r["dtype"], r["status"], r.get("tensorrt", "—"), r.get("typing") or "—",
                 _fmt(r.get("max_abs_err"), ".1e"), _fmt(r.get("min_psnr_db"), ".1f"), _fmt(r.get("kernel_ms"), ".2f"),
                 _fmt(r.get("torch_ms"), ".2f"), _fmt(r.get("speedup"), ".1f")] for r in checks["engine"]]
        sections["gpu_check_engine"] = (
            f"`python benchmarks/gpu_check.py --only engine` ([JSON](benchmarks/results/gpu_check.json)), "
            f"{dates.get('engine', '?')}, {head}; engine vs PyTorch on the same GPU, medians of {report['iters']} "
            f"calls at 720p, host copies included.\n\n"
            + markdown_table(["model", "precision", "status", "TensorRT", "typing", "max abs err", "min PSNR dB",
                              "engine ms", "torch ms", "× torch"], rows))
    nsight = report.get("nsight")
    if nsight and "rows" in nsight:
        def profile(stage: dict | None) -> str:
            if not stage:
                return "—"
            return (f"{stage['achieved_occupancy_pct']:.0f} % / {stage['registers_per_thread']:.0f} / "
                    f"{stage['dram_throughput_pct']:.0f} % / {stage['sm_throughput_pct']:.0f} %")
        rows = []
        for r in nsight["rows"]:
            stages = r.get("stages", {})
            rows.append([r["case"], r["dtype"], *(_fmt(stages.get(s, {}).get("time_us"), ".0f")
                                                  for s in ("gram", "reduce", "rows", "apply")),
                         profile(stages.get("gram")), profile(stages.get("apply"))])
        sections["gpu_check_nsight"] = (
            f"`python benchmarks/gpu_check.py --only nsight` ([JSON](benchmarks/results/gpu_check.json)), "
            f"{dates.get('nsight', '?')}, {head}; {nsight['tool']}, {nsight['clock_control']}; medians over "
            f"{nsight['calls_per_case']} calls. Profile = achieved occupancy / registers per thread / DRAM "
            f"throughput / SM throughput (% of peak).\n\n"
            + markdown_table(["case", "dtype", "gram µs", "reduce µs", "rows µs", "apply µs", "gram profile",
                              "apply profile"], rows))
    sanitizer = report.get("sanitizer")
    if sanitizer and "errors" in sanitizer:
        sections["gpu_check_sanitizer"] = (
            f"`python benchmarks/gpu_check.py --only sanitizer` ([JSON](benchmarks/results/gpu_check.json)), "
            f"{dates.get('sanitizer', '?')}, {head}: `compute-sanitizer --tool memcheck` ({sanitizer['tool']}) over "
            f"{sanitizer['cases_launched']} kernel calls (both operators; attention in every mode, C_h 4–96, odd and "
            f"aligned sizes, fp32/fp16): **{sanitizer['errors']} errors**, "
            f"{sanitizer['cases_outside_tolerance']} outputs outside tolerance.")
    return sections


def merge_reports(previous: dict, current: dict) -> dict:
    """``current`` plus the parts of ``previous`` (same device) that this run did not measure."""
    if previous.get("device") != current["device"] or previous.get("kernels_sha256") != current["kernels_sha256"]:
        return current
    merged = {**previous, **{k: v for k, v in current.items() if k not in ("checks", "dates")}}
    merged["checks"] = {**previous.get("checks", {}), **current.get("checks", {})}
    merged["dates"] = {**previous.get("dates", {}), **current.get("dates", {})}
    for part in ("nsight", "sanitizer"):
        if part not in current and part in previous:
            merged[part] = previous[part]
    return merged


def archive_name(report: dict, date: str) -> str:
    """``gpu_check-<device>-<date>.json``: one committed file per device and day, so later runs (new kernels,
    other GPUs) sit beside the old ones instead of replacing them."""
    import re

    device = re.sub(r"[^a-z0-9]+", "-", report["device"].lower()).strip("-")
    return f"{NAME}-{device}-{date}.json"


def failures(report: dict) -> list[str]:
    failed = [f"{name} {row['case']} {row['dtype']}" for name, rows in report.get("checks", {}).items() for row in rows
              if row["status"] == "FAIL"]
    failed += [part for part in ("nsight", "sanitizer") if report.get(part, {}).get("status") == "FAIL"]
    return failed


def publish_report(report: dict, out: Path) -> None:
    from reporting import RESULTS, replace_section, write_results

    write_results(out, report)
    if out.resolve() == (RESULTS / f"{NAME}.json").resolve():
        for name, table in markdown_sections(report).items():
            replace_section(name, table)


def main(argv: Sequence[str] | None = None) -> int:
    from reporting import RESULTS, load_results, write_results

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=RESULTS / f"{NAME}.json",
                        help="results JSON (default: %(default)s, which also renders the gpu_check tables of "
                             "BENCHMARKS.md); parts not run this time are kept from it")
    parser.add_argument("--render", action="store_true",
                        help="measure nothing: re-render the BENCHMARKS.md tables from the --out JSON")
    parser.add_argument("--lib", type=Path, help="use this built libedge_derain_kernels.so instead of compiling")
    parser.add_argument("--case", dest="cases", type=parse_case, action="append",
                        help="NxCxHxW[:d1,d2,...] dilation-filter case to run instead of the defaults (repeatable)")
    parser.add_argument("--only", choices=PARTS, action="append",
                        help="run only this part (repeatable); default: the two operator checks, the engine path, then "
                             "compute-sanitizer memcheck and Nsight Compute stage times where those tools exist")
    parser.add_argument("--warmup", type=int, default=10)
    parser.add_argument("--iters", type=int, default=50)
    args = parser.parse_args(argv)
    if args.render:
        publish_report(load_results(args.out), args.out)
        return 0

    import torch

    if not torch.cuda.is_available():
        print("no CUDA GPU visible to torch: nothing to check (run this on a machine with an NVIDIA GPU)")
        return 0

    import gpu_profile
    from edge_derain.engine import kernel_lib
    from reporting import environment

    major, minor = torch.cuda.get_device_capability()
    arch = f"{major}{minor}"
    parts = args.only or PARTS
    with tempfile.TemporaryDirectory(prefix="edge_derain_gpu_check_") as build_dir:
        if args.lib is not None:
            lib_path = args.lib
        else:
            try:
                nvcc = kernel_lib.find_nvcc()
            except FileNotFoundError as exc:
                print(f"cannot build the kernels: {exc}", file=sys.stderr)
                return 1
            started = time.perf_counter()
            lib_path = kernel_lib.build_kernel_library(build_dir, archs=[arch], nvcc=nvcc)
            print(f"built {kernel_lib.LIBRARY_NAME} for sm_{arch} in {time.perf_counter() - started:.1f} s")
        lib = kernel_lib.load_kernel_library(lib_path)

        copy_gbps = copy_bandwidth_gbps(args.warmup, args.iters)
        ctx = Context(lib=lib, copy_gbps=copy_gbps, warmup=args.warmup, iters=args.iters,
                      cases=args.cases or DEFAULT_CASES)
        props = torch.cuda.get_device_properties(0)
        print(f"{props.name} (sm_{arch}, {props.total_memory / 2**30:.0f} GiB): "
              f"D2D copy {copy_gbps:.0f} GB/s (read + write)")
        date = environment()["date"]
        report = {
            "device": props.name, "compute_capability": f"{major}.{minor}", "total_memory_bytes": props.total_memory,
            "torch": torch.__version__, "torch_cuda": torch.version.cuda, "host": platform.node(),
            "kernels_version": lib.edr_kernels_version().decode(), "kernels_sha256": kernel_lib.kernel_sources_hash(),
            "copy_bandwidth_gbps": copy_gbps, "warmup": args.warmup, "iters": args.iters, "checks": {}, "dates": {},
        }
        for check in CHECKS:
            if check.name in parts:
                report["checks"][check.name] = rows = check.run(ctx)
                report["dates"][check.name] = date
                print(f"\n{check.name}\n{format_table(rows)}")
        for part, run in (("sanitizer", gpu_profile.sanitizer_memcheck), ("nsight", gpu_profile.nsight_stage_times)):
            if part in parts:
                report[part] = run(lib_path)
                report["dates"][part] = date
                print(f"\n{part}: {report[part]['status']}")

    previous = load_results(args.out) if args.out.is_file() else {}
    write_results(args.out.parent / archive_name(report, date), {**report, "passed": not failures(report)})
    report = merge_reports(previous, report)
    report["passed"] = not failures(report)
    publish_report(report, args.out)
    failed = failures(report)
    if failed:
        print("FAILED: " + "; ".join(failed), file=sys.stderr)
        return 1
    print("all checks passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
