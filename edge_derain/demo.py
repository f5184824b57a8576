"""``edge-derain demo``: rain rendered on a clean clip, derained and detected in a GStreamer pipeline.

The pipeline (a :class:`~edge_derain.gst.runner.PipelineRunner` run, so it reports what ``edge-derain
run`` reports)::

    clean frames ─ tee ─┬───────────────────────────── detect ─ caption ─── clean ─────┐
                        └ rainrender ─ tee ─┬───────── detect ─ caption ─── rainy ─────┤ compositor ─ mp4/png
                                            └ derain ─ detect ─ caption ─── derained ──┘

Clean frames come from the shipped sample (pedestrians, so the default HOG people detector has something
to find; one frame, or a ``clip`` of N frames panned across it), an image, a video (decoded with OpenCV
like every video the tool reads; stills and videos enter through an appsrc), or ``test`` (videotestsrc).
The rain is a :class:`~edge_derain.data.RainRenderer` preset (``medium`` by default). The output shows
rainy | derained | clean side by side, each panel with the detector's boxes and a caption: its name, its
PSNR-Y against the clean frame and its detection count, for that frame. ``demo_side_by_side.mp4`` is
H.264 4:2:0 in MP4 (the recordings' encoder, ``pipelines/platforms.toml``), ``demo_side_by_side.png``
for a single frame; ``demo_stats.json`` holds the per-frame and mean PSNR-Y, the detections per panel,
the captions, FPS and per-stage latency. Pad probes compare the rainy and derained frames with the clean
ones before any box is drawn. The queues do not leak: the demo processes every frame. Outputs get their
names only when the run succeeded.
"""
from __future__ import annotations

import itertools
import os
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import numpy as np

from .backends import Backend
from .data import RainRenderer, read_image
from .video import VIDEO_SUFFIXES, read_video, video_info

ASSETS = Path(__file__).resolve().parent / "assets"
DEMO_IMAGE = ASSETS / "market_street_1906.jpg"  # the demo's default input: pedestrians (assets/README.md)
SAMPLE_IMAGE = ASSETS / "sample.jpg"  # a colour still: the rain preset grid, the rain-gate test and benchmark
DEMO_FPS = 12  # a slow pan, so each frame's caption can be read
DEFAULT_INTENSITY = "medium"
PANELS = ("rainy", "derained", "clean")  # left to right
TEST_SIZE = (320, 480)  # (H, W) of the ``test`` source
_GAP = 4  # black pixels between the panels


@dataclass
class DemoResult:
    output: Path
    frames: int
    psnr_rainy: float
    psnr_derained: float
    fps: float
    detections: dict[str, int] | None = None  # boxes per panel over the run; None without a detector
    stats: dict = field(default_factory=dict)
    stats_path: Path | None = None

    def summary(self) -> str:
        from .gst.stats import format_summary

        lines = [f"PSNR-Y {self.psnr_rainy:.2f} dB (rainy) -> {self.psnr_derained:.2f} dB (derained), "
                 f"{self.psnr_derained - self.psnr_rainy:+.2f} dB over {self.frames} frame(s); "
                 f"{self.fps:.1f} frames/s through the pipeline; wrote {self.output}"]
        if self.detections is not None:
            lines.append("detections: " + ", ".join(f"{self.detections[panel]} {panel}" for panel in PANELS)
                         + f" (boxes over {self.frames} frame(s))")
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

    def __init__(self, appsrc, frames, fps: float):
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
        buf.pts = round(self.index * Gst.SECOND / self.fps)
        buf.duration = round(Gst.SECOND / self.fps)
        self.index += 1
        appsrc.emit("push-buffer", buf)


class _PanelProbes:
    """Per frame (by PTS): PSNR-Y of the rainy and the derained frame against the clean one (pad probes on
    the stages' outputs, before boxes are drawn), each panel's detection count (the ROI metas its detect
    element attached) and its caption, set on the panel's ``caption`` element just before it draws."""

    def __init__(self, titles: dict[str, str], detections: bool):
        self.titles, self.count_detections = titles, detections
        self.clean: dict[int, np.ndarray] = {}
        self.psnr: dict[str, dict[int, float]] = {"rainy": {}, "derained": {}}
        self.detections: dict[str, dict[int, int]] = {panel: {} for panel in PANELS}
        self.captions: dict[str, dict[int, str]] = {panel: {} for panel in PANELS}
        self._lock = threading.Lock()

    def attach(self, pipeline, clean: str, rainy: str, derained: str) -> None:
        """``clean``, ``rainy``, ``derained``: the elements whose outputs are the three frames."""
        for name, panel in ((clean, None), (rainy, "rainy"), (derained, "derained")):
            pipeline.get_by_name(name).get_static_pad("src").add_probe(_buffer_probe(), self._quality(panel))
        for panel in PANELS:
            caption = pipeline.get_by_name(f"caption_{panel}")
            caption.get_static_pad("sink").add_probe(_buffer_probe(), self._caption(panel, caption))

    def _quality(self, panel: str | None):
        from gi.repository import Gst

        from .gst.elements import buffer_to_rgb
        from .metrics import psnr

        def probe(pad, info):
            buf = info.get_buffer()
            frame = buffer_to_rgb(buf, pad.get_current_caps())
            with self._lock:
                if panel is None:
                    self.clean[buf.pts] = frame
                    return Gst.PadProbeReturn.OK
                # the derained frame comes last: its clean frame is done with
                clean = self.clean[buf.pts] if panel == "rainy" else self.clean.pop(buf.pts)
            value = psnr(frame.astype(np.float32) / 255.0, clean.astype(np.float32) / 255.0, "y")
            with self._lock:
                self.psnr[panel][buf.pts] = value
            return Gst.PadProbeReturn.OK

        return probe

    def _caption(self, panel: str, caption):
        from gi.repository import Gst

        from .gst.elements import read_roi_meta

        def probe(pad, info):
            buf = info.get_buffer()
            numbers = []
            with self._lock:
                if panel in self.psnr:
                    numbers.append(f"PSNR-Y {self.psnr[panel][buf.pts]:.2f} dB")
                if panel == "derained":
                    numbers[-1] += f" ({self.psnr['derained'][buf.pts] - self.psnr['rainy'][buf.pts]:+.2f})"
            count = len(read_roi_meta(buf)) if self.count_detections else None
            if count is not None:
                numbers.append(f"{count} detection{'' if count == 1 else 's'}")
            text = "\n".join([self.titles[panel], " | ".join(numbers)])
            caption.set_property("text", text)
            with self._lock:
                self.captions[panel][buf.pts] = text
                if count is not None:
                    self.detections[panel][buf.pts] = count
            return Gst.PadProbeReturn.OK

        return probe

    def report(self) -> dict:
        """Per-frame numbers in presentation order, and per-panel means and totals."""
        frames = []
        for index, pts in enumerate(sorted(self.psnr["derained"])):
            frame = {"index": index, "pts_s": round(pts / 1e9, 6),
                     "psnr_y": {panel: self.psnr[panel][pts] for panel in self.psnr}}
            if self.count_detections:
                frame["detections"] = {panel: self.detections[panel][pts] for panel in PANELS}
            frame["captions"] = {panel: self.captions[panel][pts] for panel in PANELS}
            frames.append(frame)
        panels = {}
        for panel in PANELS:
            entry = {"title": self.titles[panel]}
            if panel in self.psnr:
                entry["psnr_y_mean"] = float(np.mean(list(self.psnr[panel].values())))
            if self.count_detections:
                counts = list(self.detections[panel].values())
                entry.update(detections=int(sum(counts)), frames_with_detections=sum(c > 0 for c in counts))
            panels[panel] = entry
        return {"panels": panels, "frames": frames}


def _buffer_probe():
    from gi.repository import Gst

    return Gst.PadProbeType.BUFFER


def _demo_description(source: str, size: tuple[int, int], out: str, derain: dict, detector: str | None,
                      intensity: str, seed: int) -> str:
    """The demo pipeline (see the module docstring); its derained panel ends in ``caption_derained``."""
    from .gst.pipeline import element, queue

    height, width = size
    # The clean and rainy panels wait (unbounded) for the derained one at the compositor; the bounded queue
    # in front of rainrender throttles the source to the derain branch, which bounds them in turn.
    unbounded = "max-size-buffers=0 max-size-bytes=0 max-size-time=0"

    def panel(name: str, detect_name: str, queued: bool) -> str:
        """`` ! [queue !] detect ! caption ! comp.sink_N``: boxes (with a detector) and the caption of a panel."""
        stages = []
        if detector:
            stages += [queue(f"q_{detect_name}", 2, False)] if queued else []
            stages.append(element("detect", detect_name, detector=detector, overlay=True))
        stages.append(element("caption", f"caption_{name}"))
        return " ! " + " ! ".join(stages) + f" ! comp.sink_{PANELS.index(name)}  "

    positions = " ".join(f"sink_{i}::xpos={i * (width + _GAP)}" for i in range(len(PANELS)))
    return (f"compositor name=comp background=black {positions} ! {out}  "
            f"{source} ! videoconvert ! videoscale ! "
            # square pixels: after an odd size was rounded to even, videoscale would otherwise keep the display
            # aspect ratio through the pixel aspect ratio, and the compositor would narrow the panels
            + element("capsfilter", "ingress",
                      caps=f"video/x-raw,format=RGB,width={width},height={height},pixel-aspect-ratio=1/1")
            + " ! tee name=clean  "
            f"clean. ! queue name=q_clean {unbounded}" + panel("clean", "detect_clean", queued=False)
            + "clean. ! " + queue("q_rain", 2, False) + " ! "
            + element("rainrender", "rain", intensity=intensity, seed=seed) + " ! tee name=rainy  "
            f"rainy. ! queue name=q_rainy {unbounded}" + panel("rainy", "detect_rainy", queued=False)
            + "rainy. ! " + queue("q_derain", 2, False) + " ! " + element("derain", "derain", **derain)
            + panel("derained", "detect", queued=True)).rstrip()


def run_demo(backend: Backend | "BackendRequest" | None = None, out_dir: str | Path = "demo_out",
             source: str | Path | None = None, clip: int = 0, intensity: str = DEFAULT_INTENSITY, seed: int = 0,
             max_frames: int | None = None, detector: str = "hog", size: tuple[int, int] | None = None,
             stall_timeout: float = 120.0) -> DemoResult:
    """Render rain on ``source`` (default: the shipped sample), derain and detect in a GStreamer pipeline.

    ``backend``: a :class:`Backend` object (injected into the ``derain`` element), a
    :class:`~edge_derain.gst.select.BackendRequest` (element properties) or None (auto: TensorRT, else
    ONNX Runtime on the shipped weights' portable graph, else PyTorch). ``source``: an image (one frame,
    or ``clip`` frames panned across it), a video (its first ``max_frames`` frames, at its frame rate) or
    ``"test"`` (``clip`` or 48 videotestsrc frames). ``intensity``: a :class:`~edge_derain.data.RainRenderer` preset.
    ``detector``: hog, yolo:MODEL.onnx or none. ``size`` (H, W) scales the frames; default: the image's
    size, the video's size, or 320x480 for ``test``.
    """
    from .gst import register_elements, require_gst
    from .gst.pipeline import ComposedPipeline
    from .gst.select import BackendRequest

    RainRenderer.preset(intensity)  # an unknown preset fails here, naming the known ones
    detector = None if detector in (None, "", "none") else detector
    Gst = require_gst()
    register_elements()
    source = str(source) if source else str(DEMO_IMAGE)
    demo_input = _DemoInput.open(source, clip, max_frames, size, Gst)
    output = _DemoOutput.create(Path(out_dir), single=demo_input.count == 1)

    request = backend if isinstance(backend, BackendRequest) else BackendRequest()
    derain_props = {} if isinstance(backend, Backend) else {
        "backend": request.kind, "engine": request.engine, "model": request.model, "weights": request.weights,
        "precision": request.precision, "device": request.device}
    description = _demo_description(demo_input.part, demo_input.size, output.part, derain_props, detector,
                                    intensity, seed)
    composed = ComposedPipeline(description, live=False, sink=output.sink, ingress="ingress",
                                egress="caption_derained",
                                queues=("q_rain", "q_derain") + (("q_detect",) if detector else ()),
                                stages=("rain", "derain") + (("detect",) if detector else ()) + ("caption_derained",))
    titles = {"rainy": f"RAINY ({intensity} synthetic rain)", "derained": "DERAINED", "clean": "CLEAN (reference)"}
    probes = _PanelProbes(titles, detections=detector is not None)

    def setup(pipeline):
        if isinstance(backend, Backend):
            pipeline.get_by_name("derain").use_backend(backend)
        if demo_input.frames is not None:
            _FrameFeeder(pipeline.get_by_name("source"), demo_input.frames, demo_input.fps)
        probes.attach(pipeline, clean="ingress", rainy="rain", derained="derain")

    result, stats = output.run(composed, probes, setup, stall_timeout, source)
    report = probes.report()
    stats_path = stats.write_json(Path(out_dir) / "demo_stats.json", {
        "input": source, "intensity": intensity, "seed": seed, "detector": detector or "none",
        "output": str(output.path), **report, "pipeline": description, "status": result.status})
    summary = stats.summary()
    panels = report["panels"]
    detections = {panel: panels[panel]["detections"] for panel in PANELS} if detector else None
    return DemoResult(output.path, len(report["frames"]), panels["rainy"]["psnr_y_mean"],
                      panels["derained"]["psnr_y_mean"], summary["fps"], detections, summary, stats_path)


@dataclass
class _DemoInput:
    """The demo's source fragment, frame size, frame count (None: unknown), and, for files, the frames the
    appsrc is fed at ``fps``."""

    part: str
    size: tuple[int, int]
    count: int | None
    frames: Iterator[np.ndarray] | None = None
    fps: float = DEMO_FPS

    @classmethod
    def open(cls, source: str, clip: int, max_frames: int | None, size: tuple[int, int] | None, Gst) -> "_DemoInput":
        from .gst.elements import to_uint8
        from .gst.pipeline import element

        if source == "test":
            count = clip or 48
            part = element("videotestsrc", "source", pattern="ball", num_buffers=count) + \
                f" ! video/x-raw,framerate={DEMO_FPS}/1"
            return cls(part, _even(size or TEST_SIZE), count)
        if not Path(source).exists():
            raise FileNotFoundError(f"demo input {source} does not exist; pass an image or video path, 'test', or "
                                    f"omit it to use the shipped sample")
        fps = DEMO_FPS
        if Path(source).suffix.lower() in VIDEO_SUFFIXES:
            # Decoded here, like every video the tool reads, and fed frame by frame: the source ends after
            # max_frames, so all three panels get the same frames.
            fps, total = video_info(Path(source))
            known = [n for n in (max_frames, total) if n]  # a total of 0: the container does not say
            count = min(known) if known else None
            frames = (to_uint8(frame) for frame in read_video(Path(source), max_frames))
        else:
            image = read_image(source)
            stills = [to_uint8(frame) for frame in (pan_clip(image, clip) if clip > 0 else [image])]
            count, frames = len(stills), iter(stills)
        first = next(frames, None)
        if first is None:
            raise ValueError(f"demo input {source} has no frames; pass another video")
        num, den = Gst.util_double_to_fraction(fps)
        part = element("appsrc", "source", format="time", is_live=False, block=True,
                       caps=f"video/x-raw,format=RGB,width={first.shape[1]},height={first.shape[0]},"
                            f"framerate={num}/{den}")
        return cls(part, _even(size or first.shape[:2]), count, itertools.chain([first], frames), fps)


def _even(size: tuple[int, int]) -> tuple[int, int]:
    return size[0] // 2 * 2, size[1] // 2 * 2  # H.264 4:2:0 needs even sizes


@dataclass
class _DemoOutput:
    """The side-by-side output (a PNG for one frame, else an MP4), written under a partial name and renamed
    once the run succeeded."""

    path: Path
    partial: Path
    sink: "SinkSpec"
    part: str

    @classmethod
    def create(cls, out_dir: Path, single: bool) -> "_DemoOutput":
        from .gst.pipeline import SinkSpec, element, partial_path, sink_fragment

        out_dir.mkdir(parents=True, exist_ok=True)
        path = out_dir / ("demo_side_by_side.png" if single else "demo_side_by_side.mp4")
        partial = partial_path(path)  # what the pipeline writes; it gets the output's name once the run succeeded
        sink = SinkSpec("file", str(partial))
        if single:
            part = "videoconvert ! pngenc ! " + element("filesink", location=str(partial))
        else:
            part = sink_fragment(sink, "auto", partial=False)[0]
        return cls(path, partial, sink, part)

    def run(self, composed, probes: "_PanelProbes", setup, stall_timeout: float, source: str):
        """Run the pipeline; (its result, its stats) when it wrote frames, else no output is left behind."""
        from .gst.runner import PipelineRunner
        from .gst.stats import PipelineStats

        stats = PipelineStats()
        runner = PipelineRunner(composed, stats=stats, stall_timeout=stall_timeout, setup=setup)
        try:
            result = runner.run()
            if result.error:
                raise RuntimeError(f"demo pipeline failed: {result.error}")
            if not probes.psnr["derained"] or not self.partial.exists():
                raise RuntimeError(f"the demo pipeline produced no frames from {source}; check the input")
        except BaseException:
            self.partial.unlink(missing_ok=True)  # a demo that failed leaves no output behind
            raise
        os.replace(self.partial, self.path)
        return result, stats
