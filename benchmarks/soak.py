"""Soak run of the file pipeline: resident memory sampled while it runs for minutes, which must stay flat.

    python benchmarks/soak.py                      # 10 minutes, RSS every 10 s -> benchmarks/results/soak.json
    python benchmarks/soak.py --minutes 1 --out /tmp/soak.json   # a quick check (BENCHMARKS.md untouched)

A clip as long as the run (videotestsrc, H.264 MP4) goes through ``uridecodebin ! derain (ONNX Runtime on the
shipped weights' portable graph) ! detect (HOG, boxes drawn) ! H.264 recording``, the pipeline of
``edge-derain run --source clip.mp4 --detector hog --sink file:out.mp4``, paced at the clip's frame rate
(``identity sync=true``, a pipeline definition passed as a file) so that it runs for the whole time like
a camera would, instead of racing through the file; it stops after ``--minutes`` (on a machine slower
than the clip's frame rate, before the clip ends). The process's resident set (``VmRSS``) is sampled
every ``--interval`` seconds; after ``--warmup`` seconds (model load, allocator pools, first frames) it
must stay within ``--tolerance`` percent of its value at the end of the warm-up. The recording is checked
to hold every frame.

Writes ``benchmarks/results/soak.json`` and the ``soak`` table of ``BENCHMARKS.md``.
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Sequence

from reporting import add_output_options, describe_machine, environment, load_results, markdown_table, publish

PACED_FILE_PIPELINE = '''description = "video file paced at its frame rate (soak runs)"
platform = "auto"
live = false
location_is_uri = true
source = 'uridecodebin uri={location} caps="video/x-raw(ANY)" ! identity sync=true'
'''


def rss_mib() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS in /proc/self/status (Linux only)")


def make_clip(path: Path, seconds: float, fps: int, size: tuple[int, int]) -> Path:
    from edge_derain.gst import require_gst

    Gst = require_gst()
    frames = int(seconds * fps)
    pipeline = Gst.parse_launch(
        f"videotestsrc num-buffers={frames} pattern=ball ! video/x-raw,width={size[1]},height={size[0]},"
        f"framerate={fps}/1 ! videoconvert ! video/x-raw,format=I420 ! x264enc speed-preset=ultrafast "
        f"key-int-max={fps} ! h264parse ! mp4mux ! filesink location={path}")
    pipeline.set_state(Gst.State.PLAYING)
    message = pipeline.get_bus().timed_pop_filtered(3600 * Gst.SECOND, Gst.MessageType.EOS | Gst.MessageType.ERROR)
    pipeline.set_state(Gst.State.NULL)
    if message is None or message.type != Gst.MessageType.EOS:
        raise SystemExit(f"could not write the soak clip {path}")
    return path


def soak(minutes: float, interval: float, warmup: float, fps: int, size: tuple[int, int], tolerance: float) -> dict:
    import cv2

    from edge_derain.checkpoint import load_model
    from edge_derain.export import export_model
    from edge_derain.gst.pipeline import PipelineOptions
    from edge_derain.gst.runner import run_pipeline

    env = environment()
    seconds = minutes * 60
    with tempfile.TemporaryDirectory() as work:
        work = Path(work)
        clip = make_clip(work / "clip.mp4", seconds, fps, size)
        portable = export_model(load_model(), work / "default").portable_path
        (work / "paced.toml").write_text(PACED_FILE_PIPELINE)
        out = work / "out.mp4"
        options = PipelineOptions(pipeline=str(work / "paced.toml"), source=str(clip),
                                  derain={"backend": "ort", "model": str(portable)}, detector="hog",
                                  sink=f"file:{out}")
        frames, samples, done = [0], [], threading.Event()
        start = time.monotonic()

        def sample() -> None:
            while True:
                samples.append({"t_s": round(time.monotonic() - start, 1), "rss_mib": round(rss_mib(), 1),
                                "frames": frames[0]})
                print(f"{samples[-1]}", flush=True)
                if done.wait(interval):
                    return

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        result = run_pipeline(options, duration=seconds, eos_timeout=60, stall_timeout=120,
                              on_stats=lambda numbers: frames.__setitem__(0, numbers["frames"]))
        done.set()
        sampler.join()
        after_run = round(rss_mib(), 1)  # the pipeline is torn down: not part of the flatness check
        if result.error:
            raise SystemExit(f"the soak pipeline failed: {result.error}")
        capture, recorded = cv2.VideoCapture(str(out)), 0
        while capture.read()[0]:
            recorded += 1
        capture.release()
    after = [s for s in samples if s["t_s"] >= warmup]
    base = after[0]["rss_mib"] if after else samples[-1]["rss_mib"]
    peak = max(s["rss_mib"] for s in after) if after else base
    growth = 100.0 * (samples[-1]["rss_mib"] - base) / base  # the last sample taken while running
    spread = 100.0 * (peak - min(s["rss_mib"] for s in after)) / base if after else 0.0
    return {"minutes": minutes, "interval_s": interval, "warmup_s": warmup, "fps": fps, "size": list(size),
            "frames_in_clip": int(seconds * fps), "frames_processed": result.frames_out, "frames_recorded": recorded,
            "status": result.status,
            "stats": {k: result.stats[k] for k in ("fps", "latency", "dropped")},
            "rss_after_warmup_mib": base, "rss_end_mib": samples[-1]["rss_mib"], "rss_peak_after_warmup_mib": peak,
            "rss_after_teardown_mib": after_run,
            "growth_pct": round(growth, 2), "spread_pct": round(spread, 2), "tolerance_pct": tolerance,
            "flat": abs(growth) <= tolerance and spread <= tolerance, "samples": samples, "environment": env}


def markdown(results: dict) -> str:
    env = results["environment"]
    h, w = results["size"]
    verdict = "flat" if results["flat"] else "NOT flat"
    row = [f"{results['minutes']:g} min, {w}×{h} at {results['fps']} frames/s",
           f"{results['frames_processed']:,} / {results['frames_recorded']:,}",
           f"{results['rss_after_warmup_mib']:.0f} MiB", f"{results['rss_end_mib']:.0f} MiB",
           f"{results['rss_peak_after_warmup_mib']:.0f} MiB",
           f"{results['growth_pct']:+.2f} % (spread {results['spread_pct']:.2f} %): {verdict}"]
    return (f"`{results.get('command', 'python benchmarks/soak.py')}` ([JSON](benchmarks/results/soak.json), "
            f"{len(results['samples'])} samples, one every {results['interval_s']:g} s): file → derain (ONNX Runtime, "
            f"shipped weights) → detect (HOG) → H.264 recording, paced at the clip's frame rate; resident memory "
            f"of the process after {results['warmup_s']:g} s of warm-up must stay within "
            f"±{results['tolerance_pct']:g} %; {describe_machine(env)}.\n\n"
            + markdown_table(["run", "frames processed / recorded", "RSS after warm-up", "RSS at the end",
                              "peak after warm-up", "change"], [row]))


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--interval", type=float, default=10.0, help="seconds between RSS samples")
    parser.add_argument("--warmup", type=float, default=60.0, help="seconds before memory must be flat")
    parser.add_argument("--fps", type=int, default=10)
    parser.add_argument("--size", default="144x192", help="HxW of the clip")
    parser.add_argument("--tolerance", type=float, default=5.0, help="allowed RSS change after warm-up, percent")
    add_output_options(parser, "soak")
    args = parser.parse_args(argv)
    if args.render:
        results = load_results(args.out)
    else:
        size = tuple(int(v) for v in args.size.lower().split("x"))
        results = soak(args.minutes, args.interval, args.warmup, args.fps, size, args.tolerance)
        results["command"] = " ".join(["python benchmarks/soak.py", *(sys.argv[1:] if argv is None else argv)])
    publish("soak", args.out, results, markdown(results), rendered_only=args.render)
    return 0 if results["flat"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
