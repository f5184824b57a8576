"""Whole-model GPU latency of the Transformer models (ELF-LW, ELF, DDSA) in PyTorch, with their
attention computed by PyTorch (``edge_derain.ops.transposed_attention``, cuBLAS GEMMs) and by our CUDA
kernels (the code the TensorRT plugins run), and how far the two outputs differ.

    python benchmarks/gpu_models.py [--res 720x1280] [--models elf_lw ddsa]

This is what the attention plugin buys a whole network before TensorRT fuses the rest; engines need
TensorRT on the GPU machine. Needs an NVIDIA GPU visible to torch and nvcc (or --lib). Without a CUDA
GPU it prints "no CUDA GPU" and exits 0. Writes ``benchmarks/results/gpu_models.json`` and the
``gpu_models`` table of ``BENCHMARKS.md``.
"""
from __future__ import annotations

import argparse
import contextlib
import sys
from pathlib import Path
from typing import Sequence
from unittest import mock

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))  # runnable from a checkout without `pip install -e .`

from gpu_check import time_cuda_ms  # noqa: E402  (same folder; puts the folder on sys.path for reporting)

# Where the models look the operator up (each imports it by name).
ATTENTION_CALL_SITES = ("edge_derain.models.blocks", "edge_derain.models.elf", "edge_derain.models.ddsa")


def kernel_attention(lib):
    """A drop-in for ``transposed_attention`` that runs the CUDA kernels (inference only)."""
    import torch

    from edge_derain.engine import kernel_lib

    names = {torch.float32: "float32", torch.float16: "float16"}

    def attention(q, k, v, temperature, num_heads, mode="dense", topk=None, branch_weights=None, eps=1e-12):
        q, k, v = (t.contiguous() for t in (q, k, v))
        temperature = temperature.reshape(-1).contiguous()
        weights = None if branch_weights is None else branch_weights.to(temperature.dtype).contiguous()
        n, c, h, w = q.shape
        out = torch.empty_like(q)
        size = kernel_lib.transposed_attention_workspace_size(n, c, h, w, num_heads)
        workspace = torch.empty(size, dtype=torch.uint8, device=q.device)
        kernel_lib.launch_transposed_attention(
            q.data_ptr(), k.data_ptr(), v.data_ptr(), temperature.data_ptr(),
            None if weights is None else weights.data_ptr(), out.data_ptr(), names[q.dtype], names[temperature.dtype],
            n, c, h, w, num_heads, mode, topk, eps, workspace.data_ptr(), size,
            torch.cuda.current_stream().cuda_stream, lib=lib)
        return out

    return attention


@contextlib.contextmanager
def attention_from_kernels(lib):
    replacement = kernel_attention(lib)
    with contextlib.ExitStack() as stack:
        for module in ATTENTION_CALL_SITES:
            stack.enter_context(mock.patch(f"{module}.transposed_attention", replacement))
        yield


def run(models: Sequence[str], resolutions: Sequence[tuple[int, int]], lib, warmup: int, iters: int) -> list[dict]:
    import torch

    from edge_derain.checkpoint import list_shipped_weights, load_model
    from edge_derain.models import create_model

    rows = []
    for name in models:
        torch.manual_seed(0)
        model = load_model(name) if name in list_shipped_weights() else create_model(name)
        weights = "shipped" if name in list_shipped_weights() else "random init"
        for dtype in (torch.float32, torch.float16):
            net = model.to("cuda", dtype).eval()
            for h, w in resolutions:
                x = torch.rand(1, 3, h, w, device="cuda", generator=torch.Generator("cuda").manual_seed(1)).to(dtype)
                row = {"model": name, "weights": weights, "dtype": str(dtype).removeprefix("torch."),
                       "res": f"{h}x{w}"}
                try:
                    with torch.no_grad():
                        reference = net(x).float()
                        torch_ms = time_cuda_ms(lambda: net(x), warmup, iters)
                        with attention_from_kernels(lib):
                            got = net(x).float()
                            kernel_ms = time_cuda_ms(lambda: net(x), warmup, iters)
                    row.update(torch_ms=torch_ms, kernel_ms=kernel_ms, speedup=torch_ms / kernel_ms,
                               max_abs_diff=(got - reference).abs().max().item())
                except torch.cuda.OutOfMemoryError:
                    row["status"] = "skipped (out of GPU memory)"
                torch.cuda.empty_cache()
                rows.append(row)
                print("  ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in row.items()),
                      flush=True)
    return rows


def markdown(results: dict) -> str:
    from reporting import markdown_table

    rows = [[f"`{r['model']}`", r["weights"], r["dtype"], r["res"], f"{r['torch_ms']:.1f}", f"{r['kernel_ms']:.1f}",
             f"{r['speedup']:.2f}", f"{r['max_abs_diff']:.1e}"] if "torch_ms" in r else
            [f"`{r['model']}`", r["weights"], r["dtype"], r["res"], r.get("status", "—"), "—", "—", "—"]
            for r in results["rows"]]
    return (f"`python benchmarks/gpu_models.py --res {' '.join(sorted({r['res'] for r in results['rows']}))}` "
            f"([JSON](benchmarks/results/gpu_models.json)), {results.get('date', '?')}, {results['device']}, "
            f"torch {results['torch']}, kernels {results['kernels_version']}; medians of {results['iters']} calls "
            f"after {results['warmup']} warm-ups.\n\n"
            + markdown_table(["model", "weights", "dtype", "input", "PyTorch attention ms", "our kernels ms",
                              "speedup", "max abs diff"], rows))


def main(argv: Sequence[str] | None = None) -> int:
    from reporting import add_output_options, environment, load_results, publish

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_output_options(parser, "gpu_models")
    parser.add_argument("--lib", type=Path, help="use this built libedge_derain_kernels.so instead of compiling")
    parser.add_argument("--models", nargs="+", default=["elf_lw", "elf", "ddsa"])
    parser.add_argument("--res", nargs="+", default=["720x1280"], help="HxW input sizes")
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--iters", type=int, default=20)
    args = parser.parse_args(argv)
    if args.render:
        results = load_results(args.out)
        publish("gpu_models", args.out, results, markdown(results), rendered_only=True)
        return 0

    import torch

    if not torch.cuda.is_available():
        print("no CUDA GPU visible to torch: nothing to measure (run this on a machine with an NVIDIA GPU)")
        return 0

    from edge_derain.engine import kernel_lib

    lib = kernel_lib.load_kernel_library(args.lib)
    resolutions = [tuple(int(v) for v in r.lower().split("x")) for r in args.res]
    rows = run(args.models, resolutions, lib, args.warmup, args.iters)
    props = torch.cuda.get_device_properties(0)
    results = {"device": props.name, "torch": torch.__version__, "kernels_version": lib.edr_kernels_version().decode(),
               "date": environment()["date"], "warmup": args.warmup, "iters": args.iters, "rows": rows}
    publish("gpu_models", args.out, results, markdown(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
