"""The GStreamer elements: ``derain``, ``detect``, ``rainrender`` and ``caption`` (Python ``GstBase.BaseTransform``s).

All four work in place (``transform_ip``) on packed 8-bit RGB-family frames of any size (``RGB``,
``BGR``, ``RGBA``, ``RGBx``, ``BGRA``, ``BGRx``; put ``videoconvert``/``nvvidconv`` in front for NV12
and friends); alpha/padding bytes pass through untouched. Each posts one element message per frame
(:data:`~edge_derain.gst.stats.FRAME_MESSAGE`: ``stage`` = the element's name, ``pts``, ``latency-ms``
and its own fields) that :class:`~edge_derain.gst.stats.PipelineStats` turns into FPS and latency
percentiles; ``messages=false`` turns them off.

Models (the derain backend, the detector) are created lazily on the first buffer, in the streaming
thread, not in ``start``: every CUDA call of a TensorRT backend (context, stream, engine execution) then
happens on the one thread that runs inference, which is what CUDA's per-thread current context and
TensorRT's execution contexts expect; the frame size is known there, so an engine can be built for it;
and the state change that starts the pipeline is not blocked by a model load. The load (with one
warm-up run) is timed separately (:data:`~edge_derain.gst.stats.LOAD_MESSAGE`) and is not counted as
frame latency. ``start`` still validates the properties, so a missing file fails the state change with a
one-line error instead of failing on the first frame.

Importing this module imports and initialises GStreamer (:func:`edge_derain.gst.require_gst`).
"""
from __future__ import annotations

import contextlib
import time
from typing import Iterator

import numpy as np

from . import require_gst

require_gst()  # pins the gi versions and initialises GStreamer before the imports below
from gi.repository import GLib, GObject, Gst, GstBase, GstVideo  # noqa: E402

from .gating import DEFAULT_MIN_FRAMES, DEFAULT_PROBE_INTERVAL, RainGate, rain_score  # noqa: E402
from .stats import FRAME_MESSAGE, LOAD_MESSAGE  # noqa: E402

#: format -> (bytes per pixel, slice of the R, G, B bytes within a pixel)
FORMATS = {"RGB": (3, slice(0, 3)), "RGBA": (4, slice(0, 3)), "RGBx": (4, slice(0, 3)),
           "BGR": (3, slice(2, None, -1)), "BGRA": (4, slice(2, None, -1)), "BGRx": (4, slice(2, None, -1))}
_CAPS = Gst.Caps.from_string(
    f"video/x-raw, format=(string){{ {', '.join(FORMATS)} }}, width=(int)[ 1, 32767 ], height=(int)[ 1, 32767 ], "
    "framerate=(fraction)[ 0/1, 2147483647/1 ]")
_TEMPLATES = (Gst.PadTemplate.new("sink", Gst.PadDirection.SINK, Gst.PadPresence.ALWAYS, _CAPS),
              Gst.PadTemplate.new("src", Gst.PadDirection.SRC, Gst.PadPresence.ALWAYS, _CAPS))
_RW = GObject.ParamFlags.READWRITE


def _quiet_floating_warning() -> None:
    """PyGObject (< 3.47) sinks the floating reference of a Python-implemented element when the element
    factory creates it, and GStreamer >= 1.22 says so with a CRITICAL on every creation. The element is
    still finalised normally; drop exactly that message and pass every other one to GLib's handler."""
    def handler(domain, level, message, *_):
        if "The created element should be floating" not in message:
            GLib.log_default_handler(domain, level, message, None)

    GLib.log_set_handler("GStreamer", GLib.LogLevelFlags.LEVEL_CRITICAL, handler, None)


def to_uint8(image: np.ndarray) -> np.ndarray:
    """Float RGB in [0, 1] -> uint8, rounding half up (the elements' one quantisation)."""
    return (np.clip(image, 0.0, 1.0) * np.float32(255.0) + np.float32(0.5)).astype(np.uint8)


def derain_frame(backend, rgb: np.ndarray, tile: int = 0) -> np.ndarray:
    """HxWx3 uint8 RGB -> the backend's derained HxWx3 uint8 (one batch of one frame); frames larger than
    ``tile`` px run in overlapping tiles (0: whole frames)."""
    from ..backends.tiling import run_tiled

    batch = rgb.transpose(2, 0, 1)[None].astype(np.float32) * np.float32(1.0 / 255.0)
    out = run_tiled(backend, batch, tile) if tile else backend.run(batch)
    return to_uint8(out[0].transpose(1, 2, 0))


class FrameGeometry:
    """What negotiation fixed about a packed RGB-family frame: size, bytes per pixel, where R, G, B are."""

    def __init__(self, caps):
        info = GstVideo.VideoInfo.new_from_caps(caps)
        fmt = caps.get_structure(0).get_string("format")
        if fmt not in FORMATS:
            raise ValueError(f"video format {fmt} is not packed 8-bit RGB; convert with videoconvert to one of "
                             f"{', '.join(FORMATS)}")
        self.height, self.width = info.height, info.width
        self.bpp, self.channels = FORMATS[fmt]
        self.stride, self.offset = info.stride[0], info.offset[0]

    @contextlib.contextmanager
    def rgb_view(self, buf, write: bool = False) -> Iterator[np.ndarray]:
        """The frame's R, G, B bytes as an HxWx3 uint8 view into ``buf`` (valid inside the block)."""
        meta = GstVideo.buffer_get_video_meta(buf)  # upstream pools may pad rows differently than the caps say
        stride, offset = (meta.stride[0], meta.offset[0]) if meta else (self.stride, self.offset)
        ok, mapping = buf.map(Gst.MapFlags.READ | (Gst.MapFlags.WRITE if write else 0))
        if not ok:
            raise RuntimeError(f"cannot map a {self.width}x{self.height} buffer for {'writing' if write else 'reading'}")
        try:
            pixels = np.ndarray((self.height, self.width, self.bpp), np.uint8, buffer=mapping.data, offset=offset,
                                strides=(stride, self.bpp, 1))
            yield pixels[:, :, self.channels]
        finally:
            buf.unmap(mapping)


def frame_to_buffer(frame: np.ndarray, fmt: str = "RGB"):
    """An HxWxC uint8 frame as a ``Gst.Buffer`` laid out as GStreamer expects ``fmt`` (rows padded to
    the format's stride: 4 bytes for packed 24-bit RGB)."""
    height, width, channels = frame.shape
    if FORMATS.get(fmt, (None,))[0] != channels or frame.dtype != np.uint8:
        raise ValueError(f"a {fmt} frame needs HxWx{FORMATS.get(fmt, ('?',))[0]} uint8 pixels, got "
                         f"{frame.shape} {frame.dtype}")
    info = GstVideo.VideoInfo.new_from_caps(Gst.Caps.from_string(
        f"video/x-raw,format={fmt},width={width},height={height}"))
    rows = np.zeros((height, info.stride[0]), np.uint8)
    rows[:, :width * channels] = frame.reshape(height, width * channels)
    return Gst.Buffer.new_wrapped(rows.tobytes())


def buffer_to_rgb(buf, caps) -> np.ndarray:
    """A copy of a video buffer's pixels as HxWx3 uint8 RGB (for probes and appsinks)."""
    with FrameGeometry(caps).rgb_view(buf) as view:
        return np.array(view)


class _VideoStage(GstBase.BaseTransform):
    """Shared plumbing: caps -> frame geometry, buffer -> numpy view, per-frame messages, errors."""

    __gtype_name__ = "EdgeDerainVideoStage"
    __gsttemplates__ = _TEMPLATES

    def __init__(self):
        super().__init__()
        self.set_in_place(True)
        self.set_passthrough(False)
        self.messages = True
        self.geometry: FrameGeometry | None = None

    def do_set_caps(self, incaps, outcaps):
        self.geometry = FrameGeometry(incaps)
        self.caps_changed()
        return True

    def caps_changed(self) -> None:
        """Hook: the frame size or format may have changed."""

    def rgb_view(self, buf, write: bool):
        return self.geometry.rgb_view(buf, write)

    # ---- messages --------------------------------------------------------------------------------
    def post_frame(self, buf, seconds: float, fields: str = "") -> None:
        if not self.messages:
            return
        pts = f", pts=(guint64){buf.pts}" if buf.pts != Gst.CLOCK_TIME_NONE else ""
        text = f"{FRAME_MESSAGE}, stage=(string){self.get_name()}{pts}, latency-ms=(double){1e3 * seconds:.4f}"
        self.post_message(Gst.Message.new_element(self, Gst.Structure.new_from_string(text + fields)))

    @contextlib.contextmanager
    def loading(self, what: str) -> Iterator[list[str]]:
        """Time a model load; post :data:`LOAD_MESSAGE` before (``done=false``: the runner's stall
        watchdog waits while a stage loads, e.g. builds an engine) and after it. The block may replace
        the yielded ``[what]``'s item with a better description of what it loaded."""
        name = self.get_name()
        self.post_message(Gst.Message.new_element(self, Gst.Structure.new_from_string(
            f"{LOAD_MESSAGE}, stage=(string){name}, done=(boolean)false")))
        start = time.perf_counter()
        described = [what]
        failed = True  # a load that raised is reported as failed, never as "loaded in 0.00 s"
        try:
            yield described
            failed = False
        finally:
            text = (f"{LOAD_MESSAGE}, stage=(string){name}, done=(boolean)true, what=(string){_quoted(described[0])}, "
                    f"load-s=(double){time.perf_counter() - start:.4f}, failed=(boolean){str(failed).lower()}")
            self.post_message(Gst.Message.new_element(self, Gst.Structure.new_from_string(text)))

    def fail(self, exc: BaseException) -> Gst.FlowReturn:
        """Post an ERROR (the exception's message; the bus names the element) and stop the stream."""
        error = GLib.Error.new_literal(Gst.LibraryError.quark(), str(exc), Gst.LibraryError.FAILED)
        self.post_message(Gst.Message.new_error(self, error, f"{type(exc).__name__}: {exc}"))
        return Gst.FlowReturn.ERROR

    def do_start(self):
        try:
            self.start_stage()
        except Exception as exc:  # invalid settings: fail the state change with a one-line ERROR
            self.fail(exc)
            return False
        return True

    def do_stop(self):
        self.stop_stage()
        return True

    def start_stage(self) -> None:
        """Hook: validate the properties (raise a one-line exception) and reset per-run state."""

    def stop_stage(self) -> None:
        """Hook: release what the stage holds."""

    def do_transform_ip(self, buf):
        try:
            return self.process(buf)
        except Exception as exc:  # an exception must not escape into GStreamer's C streaming thread
            return self.fail(exc)

    def process(self, buf) -> Gst.FlowReturn:
        raise NotImplementedError


def _quoted(text: str) -> str:
    """A string value for ``Gst.Structure.new_from_string``."""
    return '"' + str(text).replace("\\", "\\\\").replace('"', '\\"') + '"'


_DERAIN_PROPERTIES = {
    "backend": (str, "backend", "auto, trt, ort or torch (auto: TensorRT, else ONNX Runtime, else PyTorch)",
                "auto", _RW),
    "engine": (str, "engine", "TensorRT engine file (edge-derain build)", None, _RW),
    "model": (str, "model", "ONNX graph (portable for ort; plugin or portable for a trt build)", None, _RW),
    "weights": (str, "weights", ".safetensors checkpoint or shipped name (default: shipped)", None, _RW),
    "precision": (str, "precision", "fp32, fp16 or int8 (engines built on the fly)", "fp32", _RW),
    "device": (str, "device", "PyTorch device: auto, cpu or cuda", "auto", _RW),
    "tile": (int, "tile", "derain frames larger than this in overlapping tiles of this many pixels (0: whole "
                          "frames)", 0, 32767, 0, _RW),
    "gate": (bool, "gate", "skip the network while it is not raining (edge_derain.gst.gating)", False, _RW),
    "gate-on": (float, "gate-on", "rain score that turns deraining on; 0: calibrated for the weights", 0.0, 1e6,
                0.0, _RW),
    "gate-off": (float, "gate-off", "rain score that turns deraining off; 0: calibrated for the weights", 0.0, 1e6,
                 0.0, _RW),
    "gate-min-frames": (int, "gate-min-frames", "consecutive scores needed to switch", 1, 10_000,
                        DEFAULT_MIN_FRAMES, _RW),
    "gate-interval": (int, "gate-interval", "while off, run the network on one frame in N to measure rain",
                      1, 10_000, DEFAULT_PROBE_INTERVAL, _RW),
    "messages": (bool, "messages", "post a per-frame latency message", True, _RW),
}


def _default(spec: tuple):
    """The default of a ``__gproperties__`` entry (numbers carry min and max before it)."""
    return spec[5] if spec[0] in (int, float) else spec[3]


class DerainElement(_VideoStage):
    """Derain every frame with a :class:`~edge_derain.backends.Backend` (see the module docstring)."""

    __gtype_name__ = "GstDerain"  # default element names derain0, derain1, ... (GStreamer strips "Gst")
    __gstmetadata__ = ("Derain", "Filter/Effect/Video",
                       "Removes rain streaks with an edge_derain network (TensorRT, ONNX Runtime or PyTorch)",
                       "edge_derain")
    __gproperties__ = dict(_DERAIN_PROPERTIES)  # PyGObject consumes the class attribute

    def __init__(self):
        super().__init__()
        self.props_ = {name: _default(spec) for name, spec in _DERAIN_PROPERTIES.items()}
        self.backend = None
        self._injected = False
        self.gate: RainGate | None = None

    def do_get_property(self, prop):
        if prop.name == "messages":
            return self.messages
        return self.props_[prop.name]

    def do_set_property(self, prop, value):
        if prop.name == "messages":
            self.messages = value
        self.props_[prop.name] = value

    def use_backend(self, backend) -> None:
        """Run this backend object instead of opening one from the properties (in-process use)."""
        self.backend, self._injected = backend, backend is not None

    def request(self):
        from .select import BackendRequest

        p = self.props_
        return BackendRequest(kind=p["backend"], engine=p["engine"] or None, model=p["model"] or None,
                              weights=p["weights"] or None, precision=p["precision"], device=p["device"])

    def start_stage(self):
        p = self.props_
        if not self._injected:
            self.request().validate()
        self.gate = RainGate(p["gate-on"] or None, p["gate-off"] or None, p["gate-min-frames"], p["gate-interval"],
                             weights=p["weights"] or None) if p["gate"] else None

    def stop_stage(self):
        if not self._injected and self.backend is not None:
            # Released here, on the state-change thread: the CUDA runtime's primary context is shared by
            # every thread of the process, so the engine's stream and buffers may be freed from any of
            # them. A restart loads the backend again on its streaming thread.
            close = getattr(self.backend, "close", None)
            if close is not None:
                close()
            self.backend = None

    def caps_changed(self):
        # An engine built on the fly has a static profile for the old frame size.
        if not self._injected and self.backend is not None and getattr(self.backend, "name", "") == "tensorrt" \
                and not self.props_["engine"]:
            self.backend = None

    def _load(self, rgb: np.ndarray) -> None:
        from .select import open_backend_for

        with self.loading("derain backend") as described:
            tile = self.props_["tile"]
            # An engine built on the fly is sized for what it runs: the frame, or its tiles (whose side is the
            # tile rounded down to the input multiple; 16 is a multiple of every registered model's).
            size = tuple(min(side, tile - tile % 16) for side in rgb.shape[:2]) if tile else rgb.shape[:2]
            self.backend = open_backend_for(self.request(), size)
            derain_frame(self.backend, rgb, tile)  # warm-up: first runs allocate and tune
            described[0] = repr(self.backend)

    def process(self, buf):
        with self.rgb_view(buf, write=True) as view:
            if self.backend is None:
                self._load(np.array(view))
            start = time.perf_counter()
            run = self.gate.begin_frame() if self.gate else True
            used = False
            if run:
                rgb = np.array(view)
                out = derain_frame(self.backend, rgb, self.props_["tile"])
                used = self.gate.update(rain_score(rgb, out)) if self.gate else True
                if used:
                    view[...] = out
        fields = ""
        if self.gate:  # the numbers behind the gating report (frames skipped, probes, time saved)
            score = self.gate.last_score if run else -1.0
            fields = (f", model-ran=(boolean){str(run).lower()}, derained=(boolean){str(used).lower()}, "
                      f"score=(double){score:.4f}")
        self.post_frame(buf, time.perf_counter() - start, fields)
        return Gst.FlowReturn.OK


class DetectElement(_VideoStage):
    """Run a detector (``edge_derain.detect``) on each frame; attach its boxes as
    ``GstVideoRegionOfInterestMeta`` (one per box: ``roi_type`` = label, ``id`` = index, param structure
    ``detection`` with ``score`` and ``class-id``), post them in the frame message (``count``, and
    ``boxes`` = flattened x1,y1,x2,y2, ``scores``, ``labels``, ``class-ids`` arrays), and draw them when
    ``overlay`` is set."""

    __gtype_name__ = "GstDetect"
    __gstmetadata__ = ("Detect", "Filter/Analyzer/Video",
                       "Object detection (HOG people detector or a YOLO ONNX/TensorRT model) with ROI metadata "
                       "and an optional overlay", "edge_derain")
    __gproperties__ = {
        "detector": (str, "detector", "hog, yolo:MODEL.onnx or none", "hog", _RW),
        "overlay": (bool, "overlay", "draw the boxes into the frame", False, _RW),
        "roi-meta": (bool, "roi-meta", "attach GstVideoRegionOfInterestMeta per box", True, _RW),
        "messages": (bool, "messages", "post a per-frame message with the boxes and latency", True, _RW),
    }

    def __init__(self):
        super().__init__()
        self.detector_uri, self.overlay, self.roi_meta = "hog", False, True
        self.detector, self._injected = None, False

    def do_get_property(self, prop):
        return {"detector": self.detector_uri, "overlay": self.overlay, "roi-meta": self.roi_meta,
                "messages": self.messages}[prop.name]

    def do_set_property(self, prop, value):
        attribute = {"detector": "detector_uri", "overlay": "overlay", "roi-meta": "roi_meta",
                     "messages": "messages"}[prop.name]
        setattr(self, attribute, value)

    def use_detector(self, detector) -> None:
        """Run this detector object instead of creating one from ``detector`` (in-process use: the caller
        built it before the pipeline started, so a bad model failed there)."""
        self.detector, self._injected = detector, detector is not None

    def start_stage(self):
        if not self.detector_uri:
            raise ValueError("detector is empty; use hog, yolo:MODEL.onnx or none")

    def stop_stage(self):
        if not self._injected:
            self.detector = None

    def _load(self) -> None:
        from ..detect import create_detector

        with self.loading(f"{self.detector_uri} detector"):
            self.detector = create_detector(self.detector_uri)

    def process(self, buf):
        if self.detector is None:
            self._load()
        start = time.perf_counter()
        with self.rgb_view(buf, write=self.overlay) as view:
            rgb = np.ascontiguousarray(view)
            detections = list(self.detector.detect(rgb))
            if self.overlay and detections:
                from ..detect import draw_detections

                view[...] = draw_detections(rgb, detections)
        if self.roi_meta:
            for index, det in enumerate(detections):
                x1, y1, x2, y2 = (int(round(v)) for v in (det.x1, det.y1, det.x2, det.y2))
                meta = GstVideo.buffer_add_video_region_of_interest_meta(buf, det.label, x1, y1, max(0, x2 - x1),
                                                                        max(0, y2 - y1))
                meta.id = index
                meta.add_param(Gst.Structure.new_from_string(
                    f"detection, score=(double){float(det.score)}, class-id=(int){int(det.class_id)}"))
        self.post_frame(buf, time.perf_counter() - start, _detection_fields(detections))
        return Gst.FlowReturn.OK


def _array(gtype: str, values) -> str:
    return f"({gtype})< {', '.join(values)} >" if values else f"({gtype})< >"


def _detection_fields(detections) -> str:
    boxes = [str(int(round(v))) for d in detections for v in (d.x1, d.y1, d.x2, d.y2)]
    return (f", count=(int){len(detections)}, boxes={_array('int', boxes)}, "
            f"scores={_array('double', [f'{float(d.score):.4f}' for d in detections])}, "
            f"labels={_array('string', [_quoted(d.label) for d in detections])}, "
            f"class-ids={_array('int', [str(int(d.class_id)) for d in detections])}")


def read_roi_meta(buf) -> list[dict]:
    """The boxes a ``detect`` element attached to ``buf``: dicts with x, y, w, h, label, score, class_id."""
    count = buf.get_n_meta(GstVideo.VideoRegionOfInterestMeta.get_info().api)
    boxes = []
    for index in range(count):
        meta = GstVideo.buffer_get_video_region_of_interest_meta_id(buf, index)
        if meta is None:
            continue
        param = meta.get_param("detection")
        boxes.append({"x": meta.x, "y": meta.y, "w": meta.w, "h": meta.h,
                      "label": GLib.quark_to_string(meta.roi_type),
                      "score": param.get_value("score") if param else None,
                      "class_id": param.get_value("class-id") if param else None})
    return boxes


class RainRenderElement(_VideoStage):
    """Render synthetic rain (``edge_derain.data.RainRenderer``) into each frame: a rainy test source.
    One shower per run: its look (density, streak size, angle, haze) is drawn once from the preset with
    ``seed``, and frame ``n`` gets new drops from ``default_rng([seed, n])``, so a run is reproducible,
    independent of drops, and its rain does not flicker between frames."""

    __gtype_name__ = "GstRainRender"
    __gstmetadata__ = ("Rain renderer", "Filter/Effect/Video",
                       "Renders synthetic rain streaks into frames (test source for deraining)", "edge_derain")
    __gproperties__ = {
        "intensity": (str, "intensity", "a RainRenderer preset: drizzle, light, medium, heavy, storm, dense, ...",
                      "heavy", _RW),
        "seed": (int, "seed", "random seed", 0, 2**31 - 1, 0, _RW),
        "messages": (bool, "messages", "post a per-frame latency message", True, _RW),
    }

    def __init__(self):
        super().__init__()
        self.intensity, self.seed = "heavy", 0
        self.renderer = None
        self.frame_index = 0

    def do_get_property(self, prop):
        return {"intensity": self.intensity, "seed": self.seed, "messages": self.messages}[prop.name]

    def do_set_property(self, prop, value):
        setattr(self, prop.name, value)

    def start_stage(self):
        from ..data import RainRenderer

        self.renderer = RainRenderer.preset(self.intensity).sample_look(np.random.default_rng([self.seed, 2**31]))
        self.frame_index = 0

    def process(self, buf):
        start = time.perf_counter()
        rng = np.random.default_rng([self.seed, self.frame_index])
        self.frame_index += 1
        with self.rgb_view(buf, write=True) as view:
            clean = view.astype(np.float32) * np.float32(1.0 / 255.0)
            view[...] = to_uint8(self.renderer.render(clean, rng)[0])
        self.post_frame(buf, time.perf_counter() - start)
        return Gst.FlowReturn.OK


def draw_caption(frame: np.ndarray, text: str) -> int:
    """Draw ``text`` (``\\n`` separates lines) in white on a darkened band across the top of ``frame``
    (HxWx3 uint8, any strides), in place; the font shrinks until the longest line fits the width.
    Returns the band's height in pixels (0 for an empty text)."""
    import cv2

    lines = [line for line in text.split("\n") if line.strip()]
    if not lines:
        return 0
    height, width = frame.shape[:2]
    font = cv2.FONT_HERSHEY_SIMPLEX
    scale = float(np.clip(width / 900.0, 0.35, 1.2))
    margin = max(3, round(8 * scale))
    widest = max(cv2.getTextSize(line, font, scale, 1)[0][0] for line in lines)
    if widest > width - 2 * margin:  # Hershey glyphs scale linearly, so one correction fits
        scale *= (width - 2 * margin) / widest
    thickness = 2 if scale >= 0.8 else 1
    (_, text_h), baseline = cv2.getTextSize("Ag", font, scale, thickness)
    step = text_h + baseline + margin // 2
    band_h = min(height, margin + step * len(lines))
    # cv2 draws on contiguous arrays only: draw on a copy of the band and write it back.
    band = (np.asarray(frame[:band_h], dtype=np.float32) * 0.3).astype(np.uint8)
    for index, line in enumerate(lines):
        cv2.putText(band, line, (margin, margin // 2 + text_h + index * step), font, scale, (255, 255, 255),
                    thickness, cv2.LINE_AA)
    frame[:band_h] = band
    return band_h


class CaptionElement(_VideoStage):
    """Caption every frame with ``text`` (see :func:`draw_caption`): labels for side-by-side panels.

    ``text`` may change between frames: a pad probe on the element's sink pad runs in the streaming thread
    just before the frame is drawn, so an application can set each frame's own caption there (the demo
    writes each panel's PSNR and detection count that way). The frame message carries the drawn ``caption``.
    """

    __gtype_name__ = "GstCaption"
    __gstmetadata__ = ("Caption", "Filter/Editor/Video", "Draws a text caption on a dark band across the top of "
                       "each frame", "edge_derain")
    __gproperties__ = {
        "text": (str, "text", "the caption (\\n separates lines); empty: frames pass unchanged", "", _RW),
        "messages": (bool, "messages", "post a per-frame message with the caption and latency", True, _RW),
    }

    def __init__(self):
        super().__init__()
        self.text = ""

    def do_get_property(self, prop):
        return {"text": self.text, "messages": self.messages}[prop.name]

    def do_set_property(self, prop, value):
        if prop.name == "text":
            self.text = value or ""  # None: the property was cleared
        else:
            self.messages = value

    def process(self, buf):
        start = time.perf_counter()
        text = self.text
        if text.strip():
            with self.rgb_view(buf, write=True) as view:
                draw_caption(view, text)
        self.post_frame(buf, time.perf_counter() - start, f", caption=(string){_quoted(text)}")
        return Gst.FlowReturn.OK


ELEMENTS = {"derain": DerainElement, "detect": DetectElement, "rainrender": RainRenderElement,
            "caption": CaptionElement}
_quiet_floating_warning()


def register() -> None:
    """Register the elements with this process's GStreamer (idempotent)."""
    for name, cls in ELEMENTS.items():
        if Gst.ElementFactory.find(name) is None:
            Gst.Element.register(None, name, Gst.Rank.NONE, cls)
