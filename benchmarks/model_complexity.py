"""Size of every registered model: parameters and conv-only multiply-accumulates (the papers' convention).

    OMP_NUM_THREADS=1 python benchmarks/model_complexity.py

Each registered model at its default config (``create_model(name)``) plus the shipped EfficientDeRain
width (0.25): parameters (all, and thop-style without LayerNorm γ/β and attention τ, as the papers
count them), conv/linear GMACs at 256x256 and 512x512 (``edge_derain.models.conv_macs``; attention
products, norms and element-wise ops are not counted) and the custom operator nodes of its ONNX export.
The model docstrings quote these numbers.

Writes ``benchmarks/results/model_complexity.json`` and the ``model_complexity`` tables of
``BENCHMARKS.md`` and ``docs/models.md``.
"""
from __future__ import annotations

import argparse
import tempfile
from pathlib import Path
from typing import Sequence

from reporting import (ROOT, RESULTS, add_output_options, environment, load_results, markdown_table, publish,
                       replace_section)

NAME = "model_complexity"
SIZES = ((256, 256), (512, 512))
# (label, registry name, config): every registered model at its defaults, and the shipped EfficientDeRain width.
EXTRA_CONFIGS = (("efderain_w025", "efderain", {"width": 0.25}),)
# What each paper reports, cited for comparison (not measured here): parameters, GMACs at 512x512.
PAPER_REPORTED = {
    "efderain": "not reported (the released code builds 27.40 M)",
    "elf": "1.532 M, 66.39 G",
    "elf_lw": "0.566 M, 21.53 G",
    "ddsa": "not reported",
    "danet_plus": "2.943 M, 130.91 G",
    "danet": "1.547 M, 49.11 G",
    "recanet": "2.883 M",
}


def measure(label: str, name: str, config: dict) -> dict:
    import torch

    from edge_derain.export import export_model
    from edge_derain.models import conv_macs, create_model, parameter_count, thop_parameter_count

    torch.manual_seed(0)
    model = create_model(name, **config)
    row = {"label": label, "model": name, "config": model.model_config, "parameters": parameter_count(model),
           "parameters_thop": thop_parameter_count(model)}
    for h, w in SIZES:
        row[f"gmacs_{h}x{w}"] = conv_macs(model, h, w) / 1e9
    with tempfile.TemporaryDirectory() as work:
        row["custom_nodes"] = export_model(model, Path(work) / label, portable=False).custom_nodes
    print(f"{label}: {row['parameters']:,} parameters, {row['gmacs_512x512']:.2f} GMACs at 512x512", flush=True)
    return row


def markdown(results: dict) -> str:
    rows = []
    for r in results["models"]:
        thop = "" if r["parameters_thop"] == r["parameters"] else f" ({r['parameters_thop']:,} thop-style)"
        rows.append([f"`{r['label']}`", f"{r['parameters']:,}{thop}", f"{r['gmacs_256x256']:.2f}",
                     f"{r['gmacs_512x512']:.2f}", r["custom_nodes"] or "none", PAPER_REPORTED.get(r["label"], "—")])
    return (f"`python benchmarks/model_complexity.py` ([JSON](benchmarks/results/model_complexity.json)), "
            f"{results['environment']['date']}. The last column is what each paper reports, cited for comparison.\n\n"
            + markdown_table(["model", "parameters", "GMACs @256²", "GMACs @512²", "custom ONNX nodes",
                              "paper reports"], rows))


def publish_everywhere(out: Path, results: dict, rendered_only: bool = False) -> None:
    table = markdown(results)
    publish(NAME, out, results, table, rendered_only)
    if out.resolve() == (RESULTS / f"{NAME}.json").resolve():
        replace_section(NAME, table.replace("](benchmarks/", "](../benchmarks/"), ROOT / "docs" / "models.md")


def main(argv: Sequence[str] | None = None) -> int:
    from edge_derain.models import list_models

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", default=None, help="labels to measure (default: all)")
    add_output_options(parser, NAME)
    args = parser.parse_args(argv)
    if args.render:
        publish_everywhere(args.out, load_results(args.out), rendered_only=True)
        return 0
    configs = [(entry.name, entry.name, {}) for entry in list_models()] + list(EXTRA_CONFIGS)
    if args.models:
        unknown = sorted(set(args.models) - {label for label, _, _ in configs})
        if unknown:
            parser.error(f"unknown model {unknown[0]!r}; choose from {', '.join(label for label, _, _ in configs)}")
        configs = [c for c in configs if c[0] in args.models]
    results = {"sizes": [f"{h}x{w}" for h, w in SIZES], "models": [measure(*c) for c in configs],
               "environment": environment()}
    publish_everywhere(args.out, results)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
