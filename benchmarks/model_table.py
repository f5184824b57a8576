"""Quality/speed table of every shipped model, and the default chosen from it by a stated rule.

    python benchmarks/model_table.py --data ../shared/data

For each shipped weight: PSNR/SSIM-Y gain on ``val/`` and on the held-out Rain800 scenes, light-rain gain
and dry-frame fidelity (``edge_derain.evaluate.evaluate_sets``, as ``edge-derain ship`` recorded them in the
sidecar; ``--remeasure`` evaluates again), CPU latency at 480x640 (median, PyTorch
and ONNX Runtime on the portable graph, measured side by side in one run) and conv GMACs at 720p.

Writes ``benchmarks/results/model_table.json`` and ``.png`` (quality vs latency, the frontier marked),
and rewrites the table between the ``model_table`` markers of ``BENCHMARKS.md``.

The default rule (``choose_default``): among the models on the quality/latency frontier that fit the
real-time budget (``REALTIME_GMACS_720P`` conv GMACs per 720p frame: about 30 frames/s in FP16 on a
Jetson Orin NX at a typical 30 % of its tensor-core peak) and never lose on light rain on average, the
one with the best mean gain over ``val/`` and the Rain800 hold-out. ``tests/test_model_table.py``
checks that ``edge_derain.checkpoint.DEFAULT_WEIGHTS`` is that model in the committed results.
"""
from __future__ import annotations

import argparse
import json
import re
import tempfile
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
REALTIME_GMACS_720P = 100.0
MARKERS = ("<!-- model_table:begin -->", "<!-- model_table:end -->")


def quality_score(row: dict) -> float:
    return (row["val"]["gain_psnr_y"] + row["rain800-holdout"]["gain_psnr_y"]) / 2


def frontier(rows: list[dict]) -> list[str]:
    """Names of the models no other model beats on both quality and latency (ONNX Runtime, 480p)."""
    out = []
    for row in rows:
        dominated = any(quality_score(o) >= quality_score(row) and o["ort_ms_480p"] <= row["ort_ms_480p"]
                        and (quality_score(o), o["ort_ms_480p"]) != (quality_score(row), row["ort_ms_480p"])
                        for o in rows)
        if not dominated:
            out.append(row["name"])
    return out


def choose_default(rows: list[dict]) -> str:
    """The rule in the module docstring."""
    on_frontier = set(frontier(rows))
    eligible = [r for r in rows if r["name"] in on_frontier and r["gmacs_720p"] <= REALTIME_GMACS_720P
                and r["light"]["gain_psnr_y"] >= 0]
    if not eligible:   # nothing meets every condition: fall back to the best real-time model
        eligible = [r for r in rows if r["gmacs_720p"] <= REALTIME_GMACS_720P] or rows
    return max(eligible, key=quality_score)["name"]


def shipped_quality(meta: dict, data_dir: Path, model, remeasure: bool) -> dict:
    """The eval sets' metrics: those ``edge-derain ship`` measured on the shipped (FP16) weights and wrote to
    the sidecar (pinned to the weights by ``tests/test_train_eval_demo.py``), unless ``remeasure`` or the
    sidecar lacks a set; then measured here."""
    from edge_derain.backends import TorchBackend
    from edge_derain.data import EVAL_SETS
    from edge_derain.evaluate import evaluate_sets

    recorded = meta.get("eval", {})
    if not remeasure and set(EVAL_SETS) <= set(recorded):
        return recorded
    return evaluate_sets(TorchBackend(model), data_dir, progress=True)


def measure(name: str, data_dir: Path, iters: int, remeasure: bool = False) -> dict:
    import torch

    from edge_derain.backends import TorchBackend
    from edge_derain.backends.ort_backend import OnnxRuntimeBackend
    from edge_derain.bench import run_benchmark
    from edge_derain.checkpoint import load_model, read_sidecar, resolve_weights
    from edge_derain.export import export_model
    from edge_derain.model_card import lineage_of, lineage_totals
    from edge_derain.models.complexity import conv_macs

    model = load_model(name)
    meta = read_sidecar(resolve_weights(name))
    quality = shipped_quality(meta, data_dir, model, remeasure)
    with tempfile.TemporaryDirectory() as work:
        portable = export_model(model, Path(work) / name).portable_path
        backends = {"torch": TorchBackend(model), "ort": OnnxRuntimeBackend(portable, providers=["CPUExecutionProvider"])}
        speed = run_benchmark(backends, [(480, 640)], warmup=2, iters=iters)
    medians = {r["backend"]: r["median_ms"] for r in speed["results"]}
    return {"name": name, "model": meta["model"], "config": meta.get("config", {}),
            "parameters": sum(p.numel() for p in model.parameters()),
            "gmacs_720p": conv_macs(model, 720, 1280) / 1e9, "torch_ms_480p": medians["torch"],
            "ort_ms_480p": medians["ort"], "training": lineage_totals(lineage_of(meta)),
            "torch_threads": torch.get_num_threads(),
            **{k: {m: v for m, v in quality[k].items() if m in ("count", "psnr_y", "ssim_y", "input_psnr_y",
                                                                 "input_ssim_y", "gain_psnr_y", "losses")}
               for k in quality}}


def markdown(results: dict) -> str:
    rows = results["models"]
    lines = [f"Measured {results['date']} on {results['machine']} by `python benchmarks/model_table.py --data "
             f"../shared/data` ([JSON](benchmarks/results/model_table.json), "
             f"[plot](benchmarks/results/model_table.png)). Gains are PSNR-Y over the rainy input; "
             f"dry = PSNR-Y of the output against a clean input.", "",
             "| model | params | GMACs @720p | CPU ms @480p torch / ORT | val/ gain | Rain800 hold-out gain "
             "| light-rain gain (worse images) | dry frames | frontier | training |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        t = r["training"]
        mark = ("**default**" if r["name"] == results["default"] else "yes") if r["name"] in results["frontier"] else "no"
        lines.append(f"| `{r['name']}` | {r['parameters']:,} | {r['gmacs_720p']:.1f} | {r['torch_ms_480p']:.0f} / "
                     f"{r['ort_ms_480p']:.0f} | {r['val']['gain_psnr_y']:+.2f} dB | "
                     f"{r['rain800-holdout']['gain_psnr_y']:+.2f} dB | {r['light']['gain_psnr_y']:+.2f} dB "
                     f"({r['light']['losses']}/{r['light']['count']}) | {r['dry']['psnr_y']:.1f} dB | {mark} | "
                     f"{t['iters']:,} it: {t['gpu_minutes']:.1f} GPU min, {t['cpu_hours']:.2f} CPU h |")
    lines += ["", f"Default rule: on the frontier, at most {REALTIME_GMACS_720P:.0f} conv GMACs per 720p frame, "
                  f"no average loss on light rain, then the best mean of the val/ and hold-out gains "
                  f"(`benchmarks/model_table.py`). Chosen: `{results['default']}`."]
    return "\n".join(lines)


def plot(results: dict, path: Path) -> None:
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib is not installed: no plot (pip install matplotlib)")
        return
    fig, ax = plt.subplots(figsize=(6, 4))
    for r in results["models"]:
        ax.scatter(r["ort_ms_480p"], quality_score(r), s=60, marker="*" if r["name"] == results["default"] else "o")
        ax.annotate(r["name"], (r["ort_ms_480p"], quality_score(r)), textcoords="offset points", xytext=(5, 5))
    ax.set_xlabel("CPU latency at 480x640, ONNX Runtime (ms, median)")
    ax.set_ylabel("mean PSNR-Y gain, val/ + Rain800 hold-out (dB)")
    ax.set_title(f"shipped models, {results['date']}")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def update_benchmarks_md(table: str, path: Path = ROOT / "BENCHMARKS.md") -> None:
    text = path.read_text()
    block = f"{MARKERS[0]}\n{table}\n{MARKERS[1]}"
    if MARKERS[0] in text:
        text = re.sub(re.escape(MARKERS[0]) + ".*?" + re.escape(MARKERS[1]), lambda _: block, text, flags=re.S)
    else:
        text += f"\n## Shipped models: quality and speed\n\n{block}\n"
    path.write_text(text)


def main(argv: list[str] | None = None) -> int:
    import platform

    from edge_derain.checkpoint import DEFAULT_WEIGHTS, list_shipped_weights

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, required=True, help="data directory (../shared/data layout)")
    parser.add_argument("--iters", type=int, default=10, help="timed runs per backend")
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--remeasure", action="store_true",
                        help="evaluate every set here instead of reading what 'edge-derain ship' recorded")
    args = parser.parse_args(argv)
    rows = [measure(name, args.data, args.iters, args.remeasure) for name in list_shipped_weights()]
    results = {"date": datetime.now(timezone.utc).strftime("%Y-%m-%d"),
               "machine": f"{platform.machine()} CPU, {rows[0]['torch_threads']} threads", "models": rows,
               "frontier": frontier(rows), "default": choose_default(rows),
               "realtime_gmacs_720p": REALTIME_GMACS_720P}
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "model_table.json").write_text(json.dumps(results, indent=2) + "\n")
    plot(results, args.out / "model_table.png")
    table = markdown(results)
    if args.out == RESULTS:
        update_benchmarks_md(table)
    print(table)
    if results["default"] != DEFAULT_WEIGHTS:
        print(f"\nthe rule picks {results['default']}, but edge_derain.checkpoint.DEFAULT_WEIGHTS is "
              f"{DEFAULT_WEIGHTS}: change it")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
