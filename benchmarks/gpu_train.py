"""Train both shipped models on one GPU at once, inside a wall-clock budget, from a training pack.

The recipe for a lent GPU machine (no data folder, no installs, a few minutes of device time):

1. here, pack the training data into one file that travels with the tree (<= 64 MiB)::

       .venv/bin/edge-derain pack --data ../shared/data --out .gpu/train_pack.npz   # .gpu/ in .git/info/exclude

2. on the GPU machine, in one call (the device tool's ``run`` with ``carry: [".gpu"]``)::

       PYTHONUNBUFFERED=1 python3 benchmarks/gpu_train.py --pack .gpu/train_pack.npz --minutes 9 --out $OUT

   It starts one ``python -m edge_derain train`` per model at the same time (they share the GPU; each
   takes the biggest batch that fits its share, mixed precision, channels-last), each starting from
   the shipped weights (``--init``) so the run adds to them, and writes ``OUT/<name>/last.safetensors``
   with sidecar, model card and log, plus ``OUT/gpu_train.json`` (exit codes, wall times).

3. back here, measure and ship each::

       .venv/bin/edge-derain ship OUT/efderain_w025/last.safetensors --name efderain_w025 --data ../shared/data

The script also runs on the CPU (``--device cpu``) to check the recipe end to end before device time
is spent (tests/test_gpu_train.py does that with a tiny budget).
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

# name -> train arguments: the shipped models' own recipes (EfDeRain's Adam betas (0.5, 0.999), ELF's (0.9, 0.999)).
MODELS = {
    "efderain_w025": ["--model", "efderain", "--width", "0.25", "--init", "efderain_w025", "--betas", "0.5", "0.999",
                      "--lr", "5e-4", "--crop", "128"],
    "elf_lw": ["--model", "elf_lw", "--init", "elf_lw", "--betas", "0.9", "0.999", "--lr", "5e-4", "--crop", "128"],
}


def command(name: str, args: argparse.Namespace) -> list[str]:
    return [sys.executable, "-m", "edge_derain", "train", *MODELS[name], "--pack", str(args.pack),
            "--out", str(args.out / name), "--time-limit", str(args.minutes), "--iters", "10000000",
            "--decay-start", "0.5", "--batch", str(args.batch), "--device", args.device,
            "--epoch-iters", str(args.epoch_iters), "--quiet",
            # The runs share one GPU: each sizes its batch within its share of the memory and of the CPUs.
            "--gpu-share", f"{1.0 / len(args.models):.3f}", "--workers", str(args.workers)]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pack", type=Path, required=True, help="training pack from 'edge-derain pack'")
    parser.add_argument("--out", type=Path, required=True, help="folder for both models' checkpoints")
    parser.add_argument("--minutes", type=float, default=9.0, help="wall-clock budget of each training run")
    parser.add_argument("--models", nargs="+", default=list(MODELS), choices=list(MODELS))
    parser.add_argument("--batch", type=int, default=0, help="0 = the biggest batch that fits (GPU)")
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--epoch-iters", type=int, default=1000, help="iterations between checkpoints")
    parser.add_argument("--workers", type=int, default=6, help="data loader workers per run")
    args = parser.parse_args(argv)
    if not args.pack.is_file():
        parser.error(f"--pack {args.pack} does not exist; build it with 'edge-derain pack --data DIR --out {args.pack}'")
    args.out.mkdir(parents=True, exist_ok=True)

    started, procs = time.perf_counter(), {}
    for name in args.models:
        (args.out / name).mkdir(parents=True, exist_ok=True)
        log = open(args.out / name / "train.log", "w")
        procs[name] = (subprocess.Popen(command(name, args), cwd=ROOT, stdout=log, stderr=subprocess.STDOUT), log)
        print(f"started {name}: {' '.join(command(name, args)[1:])}", flush=True)
    summary = {}
    for name, (proc, log) in procs.items():
        # Each run stops itself at its budget; the final evaluation and checkpoint come after it.
        code = proc.wait()
        log.close()
        weights = args.out / name / "last.safetensors"
        summary[name] = {"exit_code": code, "weights": str(weights) if weights.exists() else None,
                         "wall_s": round(time.perf_counter() - started, 1)}
        if weights.exists():
            summary[name]["sidecar"] = json.loads(weights.with_suffix(".json").read_text())["lineage"][-1]
        print(f"{name}: exit {code}, {summary[name]['weights'] or 'no checkpoint'}", flush=True)
    (args.out / "gpu_train.json").write_text(json.dumps(summary, indent=2) + "\n")
    return 0 if all(s["exit_code"] == 0 and s["weights"] for s in summary.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
