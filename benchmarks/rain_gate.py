"""How well the rain gate's score tells dry frames from rain, and the thresholds of each shipped weight.

    OMP_NUM_THREADS=1 python benchmarks/rain_gate.py --data ../shared/data

For ``--images`` clean backgrounds of ``DATA/clean_bsd`` (spread evenly over the sorted folder, so the
pick is fixed) and the shipped sample image, every rain preset of ``edge_derain.data.synthetic``
(drizzle ... mist) is rendered with a fixed seed; dry and rainy frames go through each network
(``--weights``, default: every shipped weight; PyTorch on the CPU) with the derain element's uint8
round trip, and :func:`edge_derain.gst.gating.rain_score` scores each (input, output) pair. The scores
depend on the network, so each gets its own thresholds from its dry scores
(:func:`edge_derain.gst.gating.calibrate_thresholds`). Per network and condition it reports the median
and 90th-percentile score, the share of frames at or above the on-threshold and at or below the
off-threshold, and the ROC area of dry frames against each preset.

Writes ``benchmarks/results/rain_gate.json`` and the ``rain_gate`` table of ``BENCHMARKS.md``;
``CALIBRATED_THRESHOLDS`` in ``edge_derain/gst/gating.py`` are the thresholds of that JSON (a test checks
it): rerun this after shipping new weights and copy them there.
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


def measure_weights(weights: str, images: Sequence[Path], seed: int, threads: int) -> dict:
    """Scores of one network on every background (dry and with each preset) and on the sample image,
    with the thresholds :func:`~edge_derain.gst.gating.calibrate_thresholds` sets from its dry scores and the
    SHA-256 of the weight file measured (so a re-shipped weight of the same name shows as unmeasured)."""
    from tqdm import tqdm

    from edge_derain.backends import TorchBackend
    from edge_derain.checkpoint import load_model, resolve_weights
    from edge_derain.data.io import read_image_uint8
    from edge_derain.data.synthetic import PRESETS
    from edge_derain.demo import SAMPLE_IMAGE
    from edge_derain.gst.gating import calibrate_thresholds
    from edge_derain.utils import file_sha256

    backend = TorchBackend(load_model(weights))
    presets = list(PRESETS)
    per_image = [score_frames(backend, read_image_uint8(path), presets, seed=seed + index)
                 for index, path in enumerate(tqdm(images, desc=f"rain gate {weights}", unit="image"))]
    conditions = ["dry", *presets]
    on, off = calibrate_thresholds([s["dry"] for s in per_image])
    stats = {c: condition_stats([s[c] for s in per_image], on, off) for c in conditions}
    return {"weights_sha256": file_sha256(resolve_weights(weights)),
            "thresholds": {"on": on, "off": off}, "conditions": stats, "environment": environment(threads),
            "roc_auc_dry_vs": {p: roc_auc(stats["dry"]["scores"], stats[p]["scores"]) for p in presets},
            "sample_image": score_frames(backend, read_image_uint8(SAMPLE_IMAGE), presets, seed=seed)}


def measure(args) -> dict:
    """Measure ``--weights`` (default: every shipped one); the other networks of an earlier run on the
    same backgrounds stay in the results, so re-shipping one weight means measuring only that one."""
    import torch

    from edge_derain.checkpoint import DEFAULT_WEIGHTS, list_shipped_weights

    torch.set_num_threads(args.threads)
    images = pick_images(Path(args.data) / "clean_bsd", args.images)
    shipped = list_shipped_weights()
    results = {"default_weights": DEFAULT_WEIGHTS, "backgrounds": [p.name for p in images], "seed": args.seed,
               "weights": {}}
    if args.out.is_file():
        earlier = load_results(args.out)
        if isinstance(earlier.get("weights"), dict) and (earlier.get("backgrounds"), earlier.get("seed")) == (
                results["backgrounds"], args.seed):
            results["weights"] = {w: r for w, r in earlier["weights"].items() if w in shipped}
    for weights in args.weights or shipped:
        results["weights"][str(weights)] = measure_weights(weights, images, args.seed, args.threads)
    results["weights"] = dict(sorted(results["weights"].items()))
    return results


def markdown(results: dict) -> str:
    rows = []
    for weights, result in results["weights"].items():
        label = f"`{weights}`" + (" (default)" if weights == results["default_weights"] else "")
        for name, s in result["conditions"].items():
            auc = result["roc_auc_dry_vs"].get(name)
            rows.append([label if name == "dry" else "", name, f"{s['median']:.1f}", f"{s['p90']:.1f}",
                         f"{100 * s['at_or_above_on']:.0f} %", f"{100 * s['at_or_below_off']:.0f} %",
                         "—" if auc is None else f"{auc:.2f}", f"{result['sample_image'][name]:.1f}"])
    thresholds = "; ".join(f"`{w}`: on {r['thresholds']['on']}, off {r['thresholds']['off']} "
                           f"(measured {describe_machine(r['environment'])})" for w, r in results["weights"].items())
    count = len(results["backgrounds"])
    return (f"`python benchmarks/rain_gate.py --data ../shared/data` ([JSON](benchmarks/results/rain_gate.json)): "
            f"{count} `clean_bsd/` backgrounds and the shipped sample image (`edge_derain/assets/sample.jpg`, "
            f"last column). Thresholds set by `edge_derain.gst.gating.calibrate_thresholds` from each network's "
            f"dry scores: {thresholds}.\n\n"
            + markdown_table(["weights", "frames", "median score", "p90 score", "≥ on", "≤ off", "ROC area vs dry",
                              "sample image score"], rows))


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, help="data directory with clean_bsd/ (../shared/data)")
    parser.add_argument("--images", type=int, default=35, help="clean backgrounds to use")
    parser.add_argument("--weights", nargs="+", default=None,
                        help="checkpoints or shipped names (default: every shipped weight)")
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
