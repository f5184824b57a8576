"""Sub-commands that derain: ``derain`` (files), ``demo`` (rain rendered on a clip) and ``run`` (a camera
pipeline, or several cameras batched into one derain call)."""
from __future__ import annotations

import sys

from .common import (add_detector, add_device, add_quiet, add_seed, add_weights, derain_request, detector,
                     open_args_backend, parse_kv, report_failures)


def cmd_derain(args) -> int:
    from ..inference import derain_paths

    failed = []
    for item in derain_paths(open_args_backend(args), args.inputs, args.out, tile=args.tile or None,
                             overlap=args.overlap, progress=not args.quiet):
        if item.error:
            failed.append((item.source, item.error))
            print(f"{item.source}: skipped: {item.error}", file=sys.stderr)
        else:
            print(f"{item.source} -> {item.output}")
    return report_failures(failed, "input")


def cmd_demo(args) -> int:
    from ..demo import run_demo
    from ..gst.select import BACKEND_KINDS

    # a kind is resolved by the derain element (it knows the frame size); a file is opened here
    backend = derain_request(args) if args.backend in BACKEND_KINDS else open_args_backend(args)
    if args.backend in BACKEND_KINDS:
        backend.validate()
    detector(args)  # a missing or broken detector model fails now, not after the pipeline started
    result = run_demo(backend, args.out, source=args.input, clip=args.clip, intensity=args.intensity,
                      seed=args.seed, max_frames=args.max_frames, detector=args.detector)
    print(result.summary())
    return 0


def _gate_settings(args) -> dict:
    """The ``--gate-*`` options that were given, as RainGate keyword arguments."""
    names = {"gate_on": "on_threshold", "gate_off": "off_threshold", "gate_min_frames": "min_frames",
             "gate_interval": "probe_interval"}
    return {key: getattr(args, flag) for flag, key in names.items() if getattr(args, flag) is not None}


def _run_streams(args) -> int:
    """``run`` with several sources (or --streams, --metrics-port, --events): the batched fleet runner."""
    from ..gst.multistream import MultiStreamOptions, MultiStreamRunner, format_multistream_summary, read_streams
    from ..utils import atomic_write_json

    sources, names = read_streams(args.streams) if args.streams else (list(args.source or ["test"]), [])
    request = None if args.no_derain else derain_request(args)
    if request is not None:
        request.validate()
    options = MultiStreamOptions(sources=sources, names=names, sink=args.sink, width=args.width or 640,
                                 height=args.height or 360, fps=args.fps, derain=request, detector=args.detector,
                                 overlay=not args.no_overlay, gate=_gate_settings(args) if args.gate else None,
                                 reconnect=args.reconnect, max_retries=args.max_retries, bitrate_kbps=args.bitrate)
    options.stream_names()
    runner = MultiStreamRunner(options, max_frames=args.frames, duration=args.duration,
                               eos_timeout=args.eos_timeout, stall_timeout=args.stall_timeout or None)
    with _fleet_outputs(args) as (metrics, events):
        runner.metrics, runner.events = metrics, events
        if request is not None:
            from ..gst.select import open_backend_for

            runner.backend = open_backend_for(request, (options.height, options.width), max_batch=len(sources))
        detector_ = detector(args)
        if detector_ is not None:
            runner.detector = detector_
        result = runner.run()
    print(format_multistream_summary(result.stats))
    if args.stats:
        atomic_write_json(args.stats, {"status": result.status, "error": result.error, **result.stats})
        print(f"stats: {args.stats}")
    if result.status == "error":
        raise RuntimeError(result.error or "every stream failed")
    return 0


class _fleet_outputs:
    """The metrics endpoint and the event publisher a run asked for (None when not), closed at the end."""

    def __init__(self, args):
        self.args, self.metrics, self.events = args, None, None

    def __enter__(self):
        from ..fleet import EventPublisher, PipelineMetrics

        if self.args.metrics_port is not None:
            self.metrics = PipelineMetrics(self.args.metrics_port)
            print(f"metrics: http://0.0.0.0:{self.metrics.port}/metrics", file=sys.stderr)
        if self.args.events:
            self.events = EventPublisher(self.args.events)
        return self.metrics, self.events

    def __exit__(self, *exc):
        if self.events is not None:
            unacked = self.events.close()
            if unacked:
                print(f"warning: the broker did not acknowledge {unacked} event(s)", file=sys.stderr)
        if self.metrics is not None:
            self.metrics.close()


def _pipeline_options(args):
    """``run``'s arguments (one source) as PipelineOptions."""
    from ..gst.pipeline import PipelineOptions

    request = derain_request(args)
    request.validate()
    derain = None if args.no_derain else {
        "backend": request.kind, "engine": request.engine, "model": request.model, "weights": request.weights,
        "precision": request.precision, "device": request.device, "tile": args.tile or None, **({
            "gate": True, "gate_on": args.gate_on, "gate_off": args.gate_off, "gate_min_frames": args.gate_min_frames,
            "gate_interval": args.gate_interval} if args.gate else {})}
    return PipelineOptions(source=args.source, pipeline=args.pipeline, platform=args.platform, width=args.width,
                           height=args.height, derain=derain, detector=args.detector, overlay=not args.no_overlay,
                           sink=args.sink, queue_size=args.queue_size, leaky=args.leaky,
                           bitrate_kbps=args.bitrate, params=parse_kv(args.param))


def _print_progress(numbers: dict) -> None:
    stages = "  ".join(f"{key[:-7]} p50 {value:.0f} ms" for key, value in numbers.items() if key.endswith("-p50-ms"))
    print(f"\r{numbers['frames']} frames  {numbers['fps']:.1f} fps  {numbers['dropped']} dropped  {stages}   ",
          end="", file=sys.stderr, flush=True)


def cmd_run(args) -> int:
    from ..gst.pipeline import compose
    from ..gst.runner import run_pipeline
    from ..gst.stats import format_summary

    if len(args.source or []) > 1 or args.streams or args.metrics_port is not None or args.events:
        return _run_streams(args)
    args.source = args.source[0] if args.source else None
    options = _pipeline_options(args)
    if args.print_pipeline:
        print(compose(options, partial=False).gst_launch_command())
        return 0
    compose(options)  # a bad source, sink or pipeline file fails here, before any model loads
    detector_ = detector(args)  # built now: a missing or broken model fails before the pipeline starts

    def setup(pipeline) -> None:
        if detector_ is not None:
            pipeline.get_by_name("detect").use_detector(detector_)

    result = run_pipeline(options, max_frames=args.frames, duration=args.duration, stats_path=args.stats,
                          reconnect=args.reconnect, max_retries=args.max_retries, eos_timeout=args.eos_timeout,
                          stall_timeout=args.stall_timeout or None, on_stats=None if args.quiet else _print_progress,
                          setup=setup)
    if not args.quiet:
        print(file=sys.stderr)
    print(format_summary(result.stats))
    if args.stats:
        print(f"stats: {args.stats}")
    if result.error:
        raise RuntimeError(result.error)
    return 0


def _register_derain_and_demo(sub) -> None:
    p = sub.add_parser("derain", help="derain images or videos")
    add_weights(p)
    p.add_argument("inputs", nargs="+", help="image/video files or folders")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--tile", type=int, default=1024,
                   help="derain larger images and frames in overlapping tiles of this many pixels (rounded down to "
                        "the model's input multiple; bounds memory); 0: whole images")
    p.add_argument("--overlap", type=int, default=None,
                   help="pixels shared by neighbouring tiles (default: twice the model's receptive radius)")
    add_quiet(p, help="no progress bars")
    p.set_defaults(func=cmd_derain)

    p = sub.add_parser("demo", help="GStreamer pipeline: rain rendered on a clip -> derain -> detect -> mp4, "
                                     "PSNR, FPS and per-stage latency")
    p.add_argument("--weights", default=None,
                   help="a .safetensors checkpoint (with its .json sidecar) or a shipped name; default: shipped")
    add_device(p, default="auto")
    p.add_argument("--backend", default="auto",
                   help="auto (TensorRT where it builds for this GPU, else ONNX Runtime on the exported portable "
                        "graph, else PyTorch; edge-derain info says which), trt, ort, torch, or a .onnx/.engine file")
    p.add_argument("--input", default=None,
                   help="clean image or video, or 'test' (videotestsrc); default: the shipped sample image")
    p.add_argument("--out", default="demo_out")
    p.add_argument("--clip", type=int, default=48, help="frames panned across an image (0: the image alone)")
    p.add_argument("--intensity", default="medium",
                   help="rain preset: light, medium, heavy or another `edge-derain presets` shows (default: medium)")
    add_detector(p, default="hog")
    p.add_argument("--max-frames", type=int, default=None, help="stop a video after N frames")
    add_seed(p)
    p.set_defaults(func=cmd_demo)


def _add_run_source_args(p) -> None:
    p.add_argument("--source", action="append", default=None,
                   help="test, test:PATTERN, /dev/videoN, csi:N, rtsp://..., a video file or URI (default: the "
                        "pipeline's default); repeat it for several cameras batched into one derain call")
    p.add_argument("--streams", default=None, metavar="FILE.toml",
                   help="the cameras of a multi-stream run: [[stream]] tables with name and source")
    p.add_argument("--fps", type=int, default=30, help="frame rate of multi-stream outputs (and test sources)")
    p.add_argument("--metrics-port", type=int, default=None,
                   help="serve Prometheus metrics (per-stream FPS, stage latency, drops, gate) on this port")
    p.add_argument("--events", default=None, metavar="mqtt://HOST[:PORT]/TOPIC",
                   help="publish one JSON message per frame (detections, rain score) to an MQTT broker")
    p.add_argument("--pipeline", default=None,
                   help="a named definition in pipelines/ (webcam, jetson-csi, file, rtsp, test) or a .toml file; "
                        "default: chosen from --source")
    p.add_argument("--platform", default=None, choices=["auto", "desktop", "jetson"],
                   help="conversion/encoder fragments (default: the pipeline's)")
    p.add_argument("--width", type=int, default=None, help="scale frames to this width before deraining")
    p.add_argument("--height", type=int, default=None, help="scale frames to this height before deraining")
    p.add_argument("--param", action="append", default=[], metavar="KEY=VALUE",
                   help="override a pipeline parameter, e.g. rain=light or latency_ms=500")


def _add_run_derain_args(p) -> None:
    p.add_argument("--backend", default="auto", choices=["auto", "trt", "ort", "torch"],
                   help="auto: TensorRT where the installed flavour builds for this GPU, else ONNX Runtime, else "
                        "PyTorch (edge-derain info says which and why)")
    p.add_argument("--engine", default=None, help="TensorRT engine (edge-derain build)")
    p.add_argument("--model", default=None, help="ONNX graph (portable for ort; built into an engine for trt)")
    p.add_argument("--weights", default=None, help="checkpoint or shipped name (default: shipped)")
    p.add_argument("--precision", default="fp32", choices=["fp32", "fp16", "int8"],
                   help="precision of an engine built on the fly")
    add_device(p, default="auto")
    p.add_argument("--no-derain", action="store_true", help="no derain stage (baseline)")
    p.add_argument("--tile", type=int, default=0,
                   help="derain frames larger than this in overlapping tiles of this many pixels (bounds memory, "
                        "fits large frames into an engine's profile); 0: whole frames")
    p.add_argument("--gate", action="store_true", help="skip deraining while it is not raining")
    p.add_argument("--gate-on", type=float, default=None,
                   help="rain score that turns deraining on (default: calibrated for the weights, BENCHMARKS.md)")
    p.add_argument("--gate-off", type=float, default=None,
                   help="rain score that turns deraining off (default: calibrated for the weights)")
    p.add_argument("--gate-min-frames", type=int, default=None, help="consecutive scores needed to switch (3)")
    p.add_argument("--gate-interval", type=int, default=None, help="while off, measure rain every N frames (15)")


def _add_run_output_args(p) -> None:
    add_detector(p, default="none")
    p.add_argument("--no-overlay", action="store_true", help="do not draw the detections")
    p.add_argument("--sink", default="display", help="file:OUT.mp4, display, rtsp:8554/derain or fake")
    p.add_argument("--bitrate", type=int, default=4000, help="H.264 bitrate in kbit/s (file and rtsp sinks)")
    p.add_argument("--queue-size", type=int, default=2, help="buffers per stage queue")
    leaky = p.add_mutually_exclusive_group()
    leaky.add_argument("--leaky", dest="leaky", action="store_true", default=None,
                       help="drop the oldest queued frame when a stage is busy (default for live sources)")
    leaky.add_argument("--no-leaky", dest="leaky", action="store_false", help="process every frame")


def _add_run_control_args(p) -> None:
    p.add_argument("--frames", type=int, default=None, help="stop after N frames")
    p.add_argument("--duration", type=float, default=None, help="stop after N seconds")
    p.add_argument("--stats", default=None, help="write the stats (FPS, latency p50/p99, drops) to this JSON file")
    p.add_argument("--reconnect", action="store_true", help="reconnect a failed live source with back-off")
    p.add_argument("--max-retries", type=int, default=5, help="consecutive reconnection attempts")
    p.add_argument("--eos-timeout", type=float, default=10.0, help="seconds to wait for EOS before stopping hard")
    p.add_argument("--stall-timeout", type=float, default=10.0,
                   help="seconds without a frame before the source counts as failed (0: never)")
    p.add_argument("--print-pipeline", action="store_true", help="print the gst-launch-1.0 command and exit")
    add_quiet(p, help="no progress line")


def register(sub) -> None:
    _register_derain_and_demo(sub)
    p = sub.add_parser("run", help="run a camera pipeline: source -> derain -> detect -> sink (GStreamer)")
    _add_run_source_args(p)
    _add_run_derain_args(p)
    _add_run_output_args(p)
    _add_run_control_args(p)
    p.set_defaults(func=cmd_run)
