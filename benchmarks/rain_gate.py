"""How well the rain gate's score tells dry frames from rain, and what the default thresholds do.

    OMP_NUM_THREADS=1 python benchmarks/rain_gate.py --data ../shared/data

For ``--images`` clean backgrounds of ``DATA/clean_bsd`` (spread evenly over the sorted folder, so the
pick is fixed) and the shipped sample image, every rain preset of ``edge_derain.data.synthetic``
(drizzle ... dense) is rendered with a fixed seed; dry and rainy frames go through the weights
(``--weights``, default: the shipped default model; PyTorch on the CPU) with the derain element's uint8
round trip, and :func:`edge_derain.gst.gating.rain_score` scores each (input, output) pair. Per condition
it reports the median and 90th-percentile score, the share of frames at or above the gate's
on-threshold and at or below its off-threshold, and the ROC area of dry frames against each preset.

Writes ``benchmarks/results/rain_gate.json`` and the ``rain_gate`` table of ``BENCHMARKS.md``; the
figures quoted in ``edge_derain/gst/gating.py`` come from that JSON. The scores depend on the network:
rerun this after shipping new weights.
"""
from __future__ import annotations

import argparse
from pathlib import Path
from typing import Sequence

import numpy as np

from reporting import add_output_options, describe_machine, environment, load_results, markdown_table, publish

NAME = "rain_gate"


def roc_auc(negatives: Sequence[float], positives: Sequence[float]) -> float:
    """P(positive score > negative score) + P(tie) / 2: the area under the ROC curve (Mann-Whitney U)."""
    neg, pos = np.asarray(negatives, np.float64), np.asarray(positives, np.float64)
    if neg.size == 0 or pos.size == 0:
        raise ValueError("the ROC area needs at least one score on each side")
    greater = (pos[:, None] > neg[None, :]).sum()
    ties = (pos[:, None] == neg[None, :]).sum()
    return float((greater + 0.5 * ties) / (pos.size * neg.size))


def condition_stats(scores: Sequence[float], on: float, off: float) -> dict:
    s = np.asarray(scores, np.float64)
    return {"count": int(s.size), "median": float(np.median(s)), "p90": float(np.percentile(s, 90)),
            "at_or_above_on": float(np.mean(s >= on)), "at_or_below_off": float(np.mean(s <= off)),
            "scores": [round(float(v), 4) for v in s]}


def pick_images(folder: Path, count: int) -> list[Path]:
    from edge_derain.data.io import list_images

    files = list_images(folder)
    if count >= len(files):
        return files
    return [files[i] for i in np.linspace(0, len(files) - 1, count).round().astype(int)]


def score_frames(backend, clean: np.ndarray, presets: Sequence[str], seed: int) -> dict[str, float]:
    """Score of ``clean`` (uint8 HxWx3) dry and with each preset's rain, rendered with a fixed seed."""
    from edge_derain.data.synthetic import RainRenderer
    from edge_derain.detect.base import to_uint8
    from edge_derain.gst.gating import rain_score

    def score(rgb: np.ndarray) -> float:
        batch = rgb.transpose(2, 0, 1)[None].astype(np.float32) * np.float32(1.0 / 255.0)
        return rain_score(rgb, to_uint8(backend.run(batch)[0].transpose(1, 2, 0)))

    out = {"dry": score(clean)}
    base = clean.astype(np.float32) / 255.0
    for index, preset in enumerate(presets):
        rainy, _ = RainRenderer.preset(preset).render(base, np.random.default_rng([seed, index]))
        out[preset] = score(to_uint8(rainy))
    return out


def measure(args) -> dict:
    import torch
    from tqdm import tqdm

    from edge_derain.backends import TorchBackend
    from edge_derain.checkpoint import DEFAULT_WEIGHTS, load_model
    from edge_derain.data.io import read_image_uint8
    from edge_derain.data.synthetic import PRESETS
    from edge_derain.demo import SAMPLE_IMAGE
    from edge_derain.gst.gating import DEFAULT_OFF, DEFAULT_ON

    torch.set_num_threads(args.threads)
    weights = args.weights or DEFAULT_WEIGHTS
    backend = TorchBackend(load_model(weights))
    presets = list(PRESETS)
    images = pick_images(Path(args.data) / "clean_bsd", args.images)
    per_image = []
    for index, path in enumerate(tqdm(images, desc="rain gate", unit="image")):
        per_image.append(score_frames(backend, read_image_uint8(path), presets, seed=args.seed + index))
    conditions = ["dry", *presets]
    stats = {c: condition_stats([s[c] for s in per_image], DEFAULT_ON, DEFAULT_OFF) for c in conditions}
    auc = {p: roc_auc(stats["dry"]["scores"], stats[p]["scores"]) for p in presets}
    sample = score_frames(backend, read_image_uint8(SAMPLE_IMAGE), presets, seed=args.seed)
    return {"weights": str(weights), "on_threshold": DEFAULT_ON, "off_threshold": DEFAULT_OFF,
            "backgrounds": [p.name for p in images], "seed": args.seed, "conditions": stats,
            "roc_auc_dry_vs": auc, "sample_image": sample, "environment": environment(args.threads)}


def markdown(results: dict) -> str:
    on, off = results["on_threshold"], results["off_threshold"]
    rows = []
    for name, s in results["conditions"].items():
        auc = results["roc_auc_dry_vs"].get(name)
        rows.append([name, f"{s['median']:.1f}", f"{s['p90']:.1f}", f"{100 * s['at_or_above_on']:.0f} %",
                     f"{100 * s['at_or_below_off']:.0f} %", "—" if auc is None else f"{auc:.2f}",
                     f"{results['sample_image'][name]:.1f}"])
    count = results["conditions"]["dry"]["count"]
    return (f"`python benchmarks/rain_gate.py --data ../shared/data` ([JSON](benchmarks/results/rain_gate.json)): "
            f"`{results['weights']}`, {count} `clean_bsd/` backgrounds and the shipped sample image "
            f"(`edge_derain/assets/sample.jpg`, last column), {describe_machine(results['environment'])}.\n\n"
            + markdown_table(["frames", "median score", "p90 score", f"≥ on ({on})", f"≤ off ({off})",
                              "ROC area vs dry", "sample image score"], rows))


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, help="data directory with clean_bsd/ (../shared/data)")
    parser.add_argument("--images", type=int, default=35, help="clean backgrounds to use")
    parser.add_argument("--weights", default=None, help="checkpoint or shipped name (default: the shipped default)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1, help="PyTorch CPU threads")
    add_output_options(parser, NAME)
    args = parser.parse_args(argv)
    if args.data is None and not args.render:
        parser.error("--data DIR is required (the data directory with clean_bsd/, e.g. ../shared/data)")
    if args.images < 2:
        parser.error(f"--images must be at least 2, got {args.images}")
    results = load_results(args.out) if args.render else measure(args)
    publish(NAME, args.out, results, markdown(results), rendered_only=args.render)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
