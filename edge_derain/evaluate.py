"""``edge-derain eval``: per-image and mean PSNR/SSIM (Y and RGB) and time per image on a paired set.

The rainy input's own PSNR/SSIM are reported beside the model's, so every report shows the gain the
model brings, not just an absolute number that means little across data sets.
"""
from __future__ import annotations

import csv
import time
from pathlib import Path

import numpy as np

from torch.utils.data import Dataset

from .backends import Backend
from .data import PairedFolderDataset, to_image
from .metrics import MetricAccumulator, psnr, ssim
from .utils import atomic_path, atomic_write_json, console

METRIC_KEYS = ("psnr_y", "ssim_y", "psnr_rgb", "ssim_rgb", "input_psnr_y", "input_ssim_y", "time_ms")


def evaluate(backend: Backend, data_dir: str | Path | Dataset, limit: int | None = None, progress: bool = True,
             detector=None, label: str | None = None) -> dict:
    """Run ``backend`` on every pair of ``data_dir`` (a ``rain/`` + ``clean/`` folder, or a dataset of
    full-size pairs such as ``edge_derain.data.open_eval_set``, named by ``label`` in the report);
    return rows and means.

    With a ``detector`` (``edge_derain.detect.Detector``) the report also says how deraining serves the
    detector downstream: its detections on the clean image are the reference (the paired sets have no
    box labels), and the detections on the derained and on the rainy image are scored against them.
    """
    from tqdm import tqdm

    dataset = data_dir if isinstance(data_dir, Dataset) else PairedFolderDataset(data_dir)
    count = len(dataset) if limit is None else min(limit, len(dataset))
    scores = MetricAccumulator()
    detections = DetectionScores() if detector is not None else None
    failed = []
    for i in tqdm(range(count), desc=f"eval {backend.name}", disable=not progress, unit="img"):
        try:  # an unreadable pair or one the backend cannot take is reported at the end; the rest still count
            item = dataset[i]
            rain = item["rain"].numpy()[None]
            start = time.perf_counter()
            pred = np.clip(backend.run(rain)[0], 0.0, 1.0)
        except (ValueError, OSError, RuntimeError) as exc:
            failed.append({"name": _item_name(dataset, i), "error": str(exc)})
            continue
        elapsed = (time.perf_counter() - start) * 1e3
        clean, rainy = to_image(item["clean"]), to_image(item["rain"])
        row = scores.add_pair(item["name"], pred.transpose(1, 2, 0), clean, time_ms=elapsed,
                              input_psnr_y=psnr(rainy, clean, "y"), input_ssim_y=ssim(rainy, clean, "y"))
        row.update(height=rain.shape[2], width=rain.shape[3])
        if detections is not None:
            detections.add(detector, pred.transpose(1, 2, 0), rainy, clean)
    if not len(scores):
        raise ValueError(f"no image of {label or data_dir} could be evaluated; the first failure: "
                         f"{failed[0]['name']}: {failed[0]['error']}" if failed else f"{label or data_dir} is empty")
    mean = scores.means()
    # The first image pays for lazy initialisation; the median is the honest per-image time.
    mean["median_time_ms"] = float(np.median([r["time_ms"] for r in scores.rows]))
    mean["gain_psnr_y"] = mean["psnr_y"] - mean["input_psnr_y"]
    report = {"backend": backend.name, "precision": backend.precision, "data": label or str(data_dir),
              "count": len(scores), "mean": mean, "images": scores.rows, "failed": failed}
    if detections is not None:
        report["detection"] = {"detector": detector.name, **detections.summary()}
    return report


def _item_name(dataset, index: int) -> str:
    """The rainy file of pair ``index`` where the dataset lists its pairs, else the index."""
    try:
        return Path(dataset.pairs[index][0]).name
    except (AttributeError, IndexError, TypeError):
        return f"item {index}"


def evaluate_sets(backend: Backend, data_dir: str | Path, progress: bool = False,
                  names: tuple[str, ...] | None = None) -> dict:
    """Mean metrics on every evaluation set that ``data_dir`` has (``edge_derain.data.EVAL_SETS``, or those of
    them in ``names``), each with ``losses``: how many images came out worse (PSNR-Y) than the input."""
    from .data import EVAL_SETS, open_eval_set

    results = {}
    for name in (n for n in EVAL_SETS if names is None or n in names):
        try:
            dataset = open_eval_set(data_dir, name)
        except FileNotFoundError:
            continue
        report = evaluate(backend, dataset, progress=progress, label=name)
        mean = dict(report["mean"])
        if name == "dry":   # input == target: its own PSNR is infinite, there is no gain to speak of
            mean = {k: v for k, v in mean.items() if not k.startswith("input_") and k != "gain_psnr_y"}
            results[name] = {"count": report["count"], **mean}
            continue
        results[name] = {"count": report["count"], **mean,
                         "losses": sum(r["psnr_y"] < r["input_psnr_y"] for r in report["images"])}
    return results


class DetectionScores:
    """Detections on derained and rainy frames against those on the clean frame, summed over images."""

    def __init__(self, iou: float = 0.5):
        self.iou = iou
        self.frames = {"derained": [], "rainy": []}
        self.references = []

    def add(self, detector, derained, rainy, clean) -> None:
        self.references.append(detector.detect(clean))
        self.frames["derained"].append(detector.detect(derained))
        self.frames["rainy"].append(detector.detect(rainy))

    def summary(self) -> dict:
        from .detect import average_precision, match_detections

        out = {"reference": "detections on the clean images", "iou": self.iou,
               "reference_boxes": sum(len(r) for r in self.references)}
        for kind, preds in self.frames.items():
            total = None
            for pred, ref in zip(preds, self.references):
                match = match_detections(pred, ref, iou=self.iou)
                total = match if total is None else total + match
            out[kind] = {"precision": total.precision, "recall": total.recall, "f1": total.f1,
                         "ap50": average_precision(preds, self.references, iou=self.iou)}
        return out


def write_report(report: dict, out_dir: str | Path) -> tuple[Path, Path]:
    """Write ``eval.json`` and ``eval.csv`` (per image + a MEAN row) into ``out_dir``."""
    out_dir = Path(out_dir)
    json_path, csv_path = out_dir / "eval.json", out_dir / "eval.csv"
    atomic_write_json(json_path, report)
    fields = ["name", "height", "width", *METRIC_KEYS]
    with atomic_path(csv_path) as tmp, open(tmp, "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=fields, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(report["images"])
        writer.writerow({"name": "MEAN", **report["mean"]})
    return json_path, csv_path


def print_report(report: dict) -> None:
    from rich.table import Table

    table = Table(title=f"{report['backend']} ({report['precision']}) on {report['data']}")
    for col in ("image", "PSNR-Y", "SSIM-Y", "PSNR-RGB", "SSIM-RGB", "rainy PSNR-Y", "ms"):
        table.add_column(col, justify="left" if col == "image" else "right")

    def fmt(r, name):
        return (name, f"{r['psnr_y']:.2f}", f"{r['ssim_y']:.4f}", f"{r['psnr_rgb']:.2f}", f"{r['ssim_rgb']:.4f}",
                f"{r['input_psnr_y']:.2f}", f"{r['time_ms']:.1f}")

    for row in report["images"]:
        table.add_row(*fmt(row, row["name"]))
    table.add_row(*fmt(report["mean"], "[bold]mean"), end_section=True)
    out = console()
    out.print(table)
    m = report["mean"]
    if "detection" in report:
        d = report["detection"]
        out.print(f"detector {d['detector']} vs its {d['reference_boxes']} boxes on the clean images: "
                        f"derained F1 {d['derained']['f1']:.3f} (AP50 {d['derained']['ap50']:.3f}), "
                        f"rainy F1 {d['rainy']['f1']:.3f} (AP50 {d['rainy']['ap50']:.3f})")
    out.print(f"PSNR-Y {m['input_psnr_y']:.2f} dB (rainy) -> {m['psnr_y']:.2f} dB (derained): "
                    f"{m['gain_psnr_y']:+.2f} dB; median {m['median_time_ms']:.1f} ms/image")
