"""The GStreamer camera pipeline on the CPU: frames per second and per-stage latency, from a file and live.

    python benchmarks/pipeline_cpu.py

Runs the ``edge-derain run`` commands a user runs (shipped default weights, ONNX Runtime on the portable
graph, fp32) and gathers their ``--stats`` JSON:

1. records a rainy H.264 clip from the test source (``--source test --no-derain --sink file:rain480.mp4``,
   640x480 with the ``rainrender`` element's heavy rain);
2. runs that file through ``--sink fake`` at 640x480 and scaled to 1280x720, with the HOG people detector
   and without (``--frames N``): a file is not live, so no frame is dropped and FPS is what the stages
   sustain;
3. runs the live 30 fps test source for ``--live-seconds`` at 640x480 with HOG: the leaky queues drop
   what the stages cannot take and end-to-end latency stays bounded.

Writes ``benchmarks/results/pipeline_cpu.json`` and the ``pipeline_cpu`` table of ``BENCHMARKS.md``.
Needs GStreamer with PyGObject (``install.sh`` installs them).
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Sequence

from reporting import ROOT, add_output_options, describe_machine, environment, load_results, markdown_table, publish

NAME = "pipeline_cpu"
SIZES = ((640, 480), (1280, 720))
DETECTORS = ("hog", "none")


def run_pipeline(*args: str) -> None:
    # No stall timeout: on a small, busy CPU one 720p frame can take longer than the default 10 s.
    args = ("--quiet", "--stall-timeout", "0", *args)
    command = [sys.executable, "-m", "edge_derain", "run", *args]
    print("$ edge-derain run " + " ".join(args), flush=True)
    subprocess.run(command, cwd=ROOT, check=True)


def stage_summary(stats: dict) -> dict:
    """The numbers of one run's ``--stats`` JSON that the table shows."""
    latency = stats["latency"]
    return {"fps": stats["fps"], "frames_in": stats["frames_in"], "frames_out": stats["frames_out"],
            "dropped": stats["dropped"]["total"],
            **{stage: {k: latency[stage][k] for k in ("p50_ms", "p99_ms") if k in latency[stage]}
               for stage in ("derain", "detect", "end_to_end") if stage in latency and latency[stage].get("count")}}


def measure(frames: int, live_seconds: float) -> dict:
    runs = []
    with tempfile.TemporaryDirectory(prefix="edge_derain_pipeline_") as scratch:
        work = Path(scratch)
        clip = work / "rain480.mp4"
        run_pipeline("--source", "test", "--no-derain", "--detector", "none", "--no-overlay",
                     "--sink", f"file:{clip}", "--frames", str(frames + 15))
        for width, height in SIZES:
            for detector in DETECTORS:
                stats_path = work / f"file_{width}x{height}_{detector}.json"
                size = [] if (width, height) == SIZES[0] else ["--width", str(width), "--height", str(height)]
                run_pipeline("--source", str(clip), "--sink", "fake", "--backend", "ort", "--detector", detector,
                             "--frames", str(frames), "--stats", str(stats_path), *size)
                runs.append({"source": "file", "width": width, "height": height, "detector": detector,
                             **stage_summary(json.loads(stats_path.read_text()))})
        stats_path = work / "live.json"
        run_pipeline("--source", "test", "--sink", "fake", "--backend", "ort", "--detector", "hog",
                     "--duration", str(live_seconds), "--stats", str(stats_path))
        live = {"source": "test (live, 30 frames/s)", "width": 640, "height": 480, "detector": "hog",
                "seconds": live_seconds, **stage_summary(json.loads(stats_path.read_text()))}
    from edge_derain.checkpoint import DEFAULT_WEIGHTS

    return {"weights": DEFAULT_WEIGHTS, "frames": frames, "runs": runs, "live": live, "environment": environment()}


def _ms(entry: dict | None) -> str:
    return "—" if not entry else f"{entry['p50_ms']:.0f} / {entry['p99_ms']:.0f}"


def markdown(results: dict) -> str:
    rows = [[f"{r['width']}×{r['height']}", "derain + HOG" if r["detector"] == "hog" else "derain only",
             f"{r['fps']:.2f}", _ms(r.get("derain")), _ms(r.get("detect"))] for r in results["runs"]]
    live = results["live"]
    # Results from before the weights were recorded in the JSON were measured with the default of then.
    weights = results.get("weights", "efderain_w025")
    return (f"`python benchmarks/pipeline_cpu.py` ([JSON](benchmarks/results/pipeline_cpu.json)): "
            f"`edge-derain run --source rain480.mp4 --sink fake --backend ort --detector hog|none "
            f"--frames {results['frames']}`, the shipped default weights of that day (`{weights}`), portable graph on ONNX Runtime fp32; "
            f"{describe_machine(results['environment'])}.\n\n"
            + markdown_table(["resolution", "stages", "FPS", "derain p50 / p99 ms", "HOG p50 / p99 ms"], rows)
            + "\n\nLive 30 frames/s test camera at 640×480 with HOG "
              f"(`--source test --duration {live['seconds']:g}`): "
              f"{live['fps']:.2f} frames/s processed, the leaky stage queues dropped {live['dropped']} of "
              f"{live['frames_in']} camera frames, end-to-end latency p50 / p99 {_ms(live.get('end_to_end'))} ms.")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--frames", type=int, default=30, help="frames per file run")
    parser.add_argument("--live-seconds", type=float, default=15.0, help="length of the live run")
    add_output_options(parser, NAME)
    args = parser.parse_args(argv)
    if args.frames < 2 or args.live_seconds <= 0:
        parser.error("--frames must be >= 2 and --live-seconds > 0")
    results = load_results(args.out) if args.render else measure(args.frames, args.live_seconds)
    publish(NAME, args.out, results, markdown(results), rendered_only=args.render)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
