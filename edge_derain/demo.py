"""``edge-derain demo``: rain rendered on a clean clip, derained and detected in a GStreamer pipeline.

The pipeline (a :class:`~edge_derain.gst.pipeline.PipelineRunner` run, so it reports what ``edge-derain
run`` reports)::

    clean frames ─ tee ─┬────────────────────────────────────────────────── clean ──────┐
                        └ rainrender ─ tee ─┬ detect (overlay) ─────────────── rainy ───┤ compositor ─ mp4/png
                                            └ derain ─ detect (overlay) ───── derained ─┘

Clean frames come from the shipped sample (one frame, or a ``clip`` of N frames panned across it), an
image or video file, or ``test`` (videotestsrc). The output shows rainy | derained (with the detector's
boxes on both) | clean side by side: ``demo_side_by_side.mp4`` (``demo_side_by_side.png`` for a single
frame), with ``demo_stats.json`` (FPS, per-stage latency). Pad probes compare the rainy and derained
frames with the clean ones (PSNR on Y). The queues do not leak: the demo processes every frame.
"""
from __future__ import annotations

import threading
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .backends import Backend
from .data import read_image
from .video import VIDEO_SUFFIXES

SAMPLE_IMAGE = Path(__file__).resolve().parent / "assets" / "sample.jpg"
DEMO_FPS = 24
TEST_SIZE = (320, 480)  # (H, W) of the ``test`` source
_GAP = 4  # black pixels between the panels


@dataclass
class DemoResult:
    output: Path
    frames: int
    psnr_rainy: float
    psnr_derained: float
    fps: float
    stats: dict = field(default_factory=dict)
    stats_path: Path | None = None

    def summary(self) -> str:
        from .gst.stats import format_summary

        lines = [f"PSNR-Y {self.psnr_rainy:.2f} dB (rainy) -> {self.psnr_derained:.2f} dB (derained), "
                 f"{self.psnr_derained - self.psnr_rainy:+.2f} dB over {self.frames} frame(s); "
                 f"{self.fps:.1f} frames/s through the pipeline; wrote {self.output}"]
        if self.stats:
            lines.append(format_summary(self.stats))
        if self.stats_path:
            lines.append(f"stats: {self.stats_path}")
        return "\n".join(lines)


def pan_clip(image: np.ndarray, frames: int, crop_frac: float = 0.85):
    """A slow left-to-right pan across ``image``: a video from a still, for the camera-like demo."""
    h, w = image.shape[:2]
    ch, cw = int(h * crop_frac) // 2 * 2, int(w * crop_frac) // 2 * 2
    for i in range(frames):
        x = round((w - cw) * i / max(1, frames - 1))
        y = (h - ch) // 2
        yield image[y:y + ch, x:x + cw]


class _FrameFeeder:
    """Pushes uint8 RGB frames into an appsrc when it asks for data (its ``need-data`` signal)."""

    def __init__(self, appsrc, frames, fps: int):
        self.appsrc, self.frames, self.fps, self.index = appsrc, iter(frames), fps, 0
        appsrc.connect("need-data", self.need_data)

    def need_data(self, appsrc, length):
        from gi.repository import Gst

        from .gst.elements import frame_to_buffer

        frame = next(self.frames, None)
        if frame is None:
            appsrc.emit("end-of-stream")
            return
        buf = frame_to_buffer(frame)
        buf.pts = self.index * Gst.SECOND // self.fps
        buf.duration = Gst.SECOND // self.fps
        self.index += 1
        appsrc.emit("push-buffer", buf)


class _QualityProbe:
    """PSNR (Y) of the rainy and the derained frames against the clean frame with the same PTS."""

    def __init__(self):
        self.clean: dict[int, np.ndarray] = {}
        self.rainy: list[float] = []
        self.derained: list[float] = []
        self._lock = threading.Lock()

    def attach(self, pipeline, clean: str, rainy: str, derained: str) -> None:
        for name, sink in ((clean, None), (rainy, self.rainy), (derained, self.derained)):
            pad = pipeline.get_by_name(name).get_static_pad("src")
            pad.add_probe(_buffer_probe(), self._probe(sink))

    def _probe(self, sink: list | None):
        from gi.repository import Gst

        from .gst.elements import buffer_to_rgb
        from .metrics import psnr

        def probe(pad, info):
            buf = info.get_buffer()
            frame = buffer_to_rgb(buf, pad.get_current_caps()).astype(np.float32) / 255.0
            with self._lock:
                if sink is None:
                    self.clean[buf.pts] = frame
                else:
                    clean = self.clean[buf.pts] if sink is self.rainy else self.clean.pop(buf.pts)
                    sink.append(psnr(frame, clean, "y"))
            return Gst.PadProbeReturn.OK

        return probe


def _buffer_probe():
    from gi.repository import Gst

    return Gst.PadProbeType.BUFFER


def _demo_description(source: str, size: tuple[int, int], out: str, derain: dict, detector: str,
                      intensity: str, seed: int) -> tuple[str, str]:
    """The demo pipeline (see the module docstring) and the name of its last processing stage."""
    from .gst.pipeline import element, queue

    height, width = size
    # The clean and rainy panels wait (unbounded) for the derained one at the compositor; the bounded queue
    # in front of rainrender throttles the source to the derain branch, which bounds them in turn.
    unbounded = "max-size-buffers=0 max-size-bytes=0 max-size-time=0"
    detect = detector and detector != "none"

    def detected(name: str, queued: bool) -> str:
        """`` ! [queue !] detect`` drawing its boxes, or nothing without a detector."""
        if not detect:
            return ""
        return (f" ! {queue(f'q_{name}', 2, False)}" if queued else "") + " ! " + element(
            "detect", name, detector=detector, overlay=True)

    return (f"compositor name=comp background=black sink_0::xpos=0 sink_1::xpos={width + _GAP} "
            f"sink_2::xpos={2 * (width + _GAP)} ! {out}  "
            f"{source} ! videoconvert ! videoscale ! "
            + element("capsfilter", "ingress", caps=f"video/x-raw,format=RGB,width={width},height={height}")
            + f" ! tee name=clean  "
            f"clean. ! queue name=q_clean {unbounded} ! comp.sink_2  "
            "clean. ! " + queue("q_rain", 2, False) + " ! "
            + element("rainrender", "rain", intensity=intensity, seed=seed) + " ! tee name=rainy  "
            f"rainy. ! queue name=q_rainy {unbounded}" + detected("detect_rainy", queued=False) + " ! comp.sink_0  "
            "rainy. ! " + queue("q_derain", 2, False) + " ! " + element("derain", "derain", **derain)
            + detected("detect", queued=True) + " ! comp.sink_1",
            "detect" if detect else "derain")


def run_demo(backend: Backend | "BackendRequest" | None = None, out_dir: str | Path = "demo_out",
             source: str | Path | None = None, clip: int = 0, intensity: str = "heavy", seed: int = 0,
             max_frames: int | None = None, detector: str = "hog", size: tuple[int, int] | None = None,
             stall_timeout: float = 120.0) -> DemoResult:
    """Render rain on ``source`` (default: the shipped sample), derain and detect in a GStreamer pipeline.

    ``backend``: a :class:`Backend` object (injected into the ``derain`` element), a
    :class:`~edge_derain.gst.select.BackendRequest` (element properties) or None (auto: TensorRT, else
    ONNX Runtime on the shipped weights' portable graph, else PyTorch). ``source``: an image (one frame,
    or ``clip`` frames panned across it), a video (its first ``max_frames`` frames) or ``"test"``
    (``clip`` or 48 videotestsrc frames). ``size`` (H, W) scales the frames; default: the image's size,
    the video's size, or 320x480 for ``test``.
    """
    from .gst import register_elements, require_gst
    from .gst.pipeline import ComposedPipeline, PipelineRunner, SinkSpec, element, sink_fragment
    from .gst.select import BackendRequest
    from .gst.stats import PipelineStats

    require_gst()
    register_elements()
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    source = str(source) if source else str(SAMPLE_IMAGE)
    frames, feeder_frames = None, None
    if source == "test":
        count = clip or 48
        size = size or TEST_SIZE
        source_part = element("videotestsrc", "source", pattern="ball", num_buffers=count) + \
            f" ! video/x-raw,framerate={DEMO_FPS}/1"
    elif not Path(source).exists():
        raise FileNotFoundError(f"demo input {source} does not exist; pass an image or video path, 'test', or "
                                f"omit it to use the shipped sample")
    elif Path(source).suffix.lower() in VIDEO_SUFFIXES:
        count = max_frames
        source_part = element("filesrc", "source", location=source) + " ! decodebin"
    else:
        image = read_image(source)
        size = size or image.shape[:2]
        stills = pan_clip(image, clip) if clip > 0 else [image]
        feeder_frames = [(np.clip(f, 0, 1) * 255 + 0.5).astype(np.uint8) for f in stills]
        count = len(feeder_frames)
        source_part = element("appsrc", "source", format="time", is_live=False, block=True,
                              caps=f"video/x-raw,format=RGB,width={feeder_frames[0].shape[1]},"
                                   f"height={feeder_frames[0].shape[0]},framerate={DEMO_FPS}/1")
    if size is None:  # a video: probe its size with OpenCV, which the rest of the project reads videos with
        import cv2

        capture = cv2.VideoCapture(source)
        size = (int(capture.get(cv2.CAP_PROP_FRAME_HEIGHT)), int(capture.get(cv2.CAP_PROP_FRAME_WIDTH)))
        capture.release()
        if min(size) <= 0:
            raise ValueError(f"cannot open video {source}: unreadable file or unsupported codec "
                             f"(re-encode it to H.264 MP4, e.g. ffmpeg -i in -c:v libx264 out.mp4)")
    single = count == 1
    output = out_dir / ("demo_side_by_side.png" if single else "demo_side_by_side.mp4")
    if single:
        out_part = "videoconvert ! pngenc ! " + element("filesink", location=str(output))
    else:
        out_part = sink_fragment(SinkSpec("file", str(output)), "auto")[0]

    request = backend if isinstance(backend, BackendRequest) else BackendRequest()
    derain_props = {} if isinstance(backend, Backend) else {
        "backend": request.kind, "engine": request.engine, "model": request.model, "weights": request.weights,
        "precision": request.precision, "device": request.device}
    description, egress = _demo_description(source_part, size, out_part, derain_props, detector, intensity, seed)
    composed = ComposedPipeline(description, live=False, sink=SinkSpec("file", str(output)), ingress="ingress",
                                egress=egress, queues=("q_rain", "q_derain") + (("q_detect",) if egress == "detect" else ()),
                                stages=("derain", egress) if egress == "detect" else ("derain",))
    quality = _QualityProbe()

    def setup(pipeline):
        if isinstance(backend, Backend):
            pipeline.get_by_name("derain").use_backend(backend)
        if feeder_frames is not None:
            _FrameFeeder(pipeline.get_by_name("source"), feeder_frames, DEMO_FPS)
        quality.attach(pipeline, clean="ingress", rainy="rain", derained="derain")

    stats = PipelineStats()
    runner = PipelineRunner(composed, stats=stats, max_frames=count if source_part.endswith("decodebin") else None,
                            stall_timeout=stall_timeout, setup=setup)
    result = runner.run()
    if result.error:
        raise RuntimeError(f"demo pipeline failed: {result.error}")
    stats_path = stats.write_json(out_dir / "demo_stats.json", {"pipeline": description, "status": result.status})
    summary = stats.summary()
    if not quality.derained:
        raise RuntimeError(f"the demo pipeline produced no frames from {source}; check the input")
    return DemoResult(output, len(quality.derained), float(np.mean(quality.rainy)), float(np.mean(quality.derained)),
                      summary["fps"], summary, stats_path)
