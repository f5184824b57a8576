"""Many cameras, one model: N sources muxed into one batched derain call per step, split back per stream.

Each stream is two small GStreamer pipelines joined by a Python batcher thread::

    source_i ▶ to-RGB ▶ scale to W×H ▶ appsink "frames" ──┐
                                                          ├─ batcher: stack the newest frame of every
    source_j ▶ ...                         ▶ appsink ─────┘  ready stream ▶ ONE backend.run(N×3×H×W)
                                                             ▶ per stream: gate, detect, draw, events
    appsrc ▶ queue ▶ sink_i (file / RTSP / fake / display) ◀─┘  (or one tiled mosaic view)

* **Real time without coupling**: a live stream's appsink keeps only its newest frames (``drop``), so a
  camera the batcher cannot keep up with loses frames in its own queue (counted per stream) and never
  stalls the others; file sources are not dropped (back-pressure: every frame is processed).
* **A failing stream is reported and the rest go on**: each stream's pipelines have their own bus; an
  error or an unexpected end of a live stream is one line, and with ``reconnect`` the stream's ingest
  pipeline is rebuilt with exponential back-off while the others keep running (its recording goes on in
  the same file, its frames resume).
* **Batches**: every step stacks the newest frame of each stream that has one (1..N frames) into one
  call, so the engine sees one launch per step instead of N; the stats record the batch sizes.

Frames are scaled to one size (``width`` x ``height``) so they batch; engines need a profile whose batch
dimension covers the stream count (``edge-derain build --shapes 1x3xHxW:NX3xHxW:NX3xHxW``).
"""
from __future__ import annotations

import collections
import logging
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from . import register_elements, require_gst
from .pipeline import (PipelineDefinition, SinkSpec, check_display, element, finish_recording, gst_value,
                       infer_pipeline, platform_fragments, resolve_platform, sink_fragment)
from .signals import StopOnSignals
from .stats import LatencySeries
from .watchdog import Reconnection

log = logging.getLogger(__name__)

MOSAIC_PREFIX = "mosaic:"


@dataclass
class MultiStreamOptions:
    """What ``edge-derain run --source A --source B ...`` runs."""

    sources: list[str]
    sink: str = "fake"               # per stream: file:OUT_{stream}.mp4, rtsp:8554/{stream}, fake, display;
                                     # or mosaic:SINK for one tiled view of all streams
    width: int = 640
    height: int = 384
    fps: int = 30
    derain: object | None = None     # a BackendRequest (edge_derain.gst.select); None: no derain stage
    detector: str = "none"
    overlay: bool = True
    gate: dict | None = None         # RainGate keyword arguments (one gate per stream); None: no gating
    reconnect: bool = False
    max_retries: int = 5
    backoff: tuple[float, float] = (1.0, 30.0)
    bitrate_kbps: int = 2000
    names: list[str] = field(default_factory=list)   # stream ids (default cam0, cam1, ...)

    def stream_names(self) -> list[str]:
        names = self.names or [f"cam{i}" for i in range(len(self.sources))]
        if len(names) != len(self.sources) or len(set(names)) != len(names):
            raise ValueError(f"give one distinct name per source ({len(self.sources)} sources, names {names})")
        return names


def read_streams(path: str | Path) -> tuple[list[str], list[str]]:
    """(sources, names) of a streams file: ``[[stream]]`` tables with ``source`` and optional ``name``::

        [[stream]]
        name = "gate"
        source = "rtsp://10.0.0.11/stream1"
    """
    from .pipeline import _read_toml

    streams = _read_toml(Path(path)).get("stream")
    if not isinstance(streams, list) or not streams or not all(isinstance(s, dict) and s.get("source") for s in streams):
        raise ValueError(f"{path} lists no streams; write [[stream]] tables with source = \"...\" (and name)")
    unknown = sorted({key for s in streams for key in s} - {"name", "source"})
    if unknown:
        raise ValueError(f"{path}: unknown stream key(s) {', '.join(unknown)}; allowed: name, source")
    names = [str(s.get("name") or f"cam{i}") for i, s in enumerate(streams)]
    return [str(s["source"]) for s in streams], names


# ---- composition --------------------------------------------------------------------------------
def ingest_description(source: str, width: int, height: int, fps: int = 30) -> tuple[str, bool, str | None]:
    """(gst-launch description ending in ``appsink name=frames``, live, location) for one ``--source``."""
    name, location = infer_pipeline(source)
    definition = PipelineDefinition.load(name)
    location = location or definition.location
    if definition.location_is_uri and location and "://" not in location:
        location = Path(location).resolve().as_uri()
    values = {**definition.params, "location": gst_value(location) if location else "", "width": width,
              "height": height, "fps": fps}
    fragments = platform_fragments(definition.platform)
    source_part = definition.source.format_map(values)
    # A live stream keeps only its newest frames (the batcher takes the latest); a file is not dropped.
    sink = element("appsink", "frames", sync=False, emit_signals=True, max_buffers=4 if definition.live else 2,
                   drop=definition.live)
    parts = [source_part, fragments["to_rgb"],
             element("capsfilter", None, caps=f"video/x-raw,format={fragments['rgb_format']},width={width},"
                                             f"height={height}"),
             "videoconvert", element("capsfilter", None, caps="video/x-raw,format=RGB"), sink]
    return " ! ".join(parts), definition.live, location


def egress_description(sink: SinkSpec, width: int, height: int, fps: int, udp_port: int,
                       bitrate_kbps: int) -> tuple[str, str | None]:
    """(description starting at ``appsrc name=frames``, RTSP server launch line or None) for one sink."""
    caps = f"video/x-raw,format=RGB,width={width},height={height},framerate={fps}/1"
    appsrc = element("appsrc", "frames", is_live=True, format="time", caps=caps, block=False)
    sink_part, server = sink_fragment(sink, resolve_platform("auto"), udp_port, bitrate_kbps)
    return " ! ".join([appsrc, element("queue", None, max_size_buffers=8), "videoconvert", sink_part]), server


def mosaic_shape(count: int) -> tuple[int, int]:
    """(rows, columns) of the tiled view of ``count`` streams: as square as possible, wider than tall."""
    columns = int(np.ceil(np.sqrt(count)))
    return int(np.ceil(count / columns)), columns


def tile(frames: list[np.ndarray], rows: int, columns: int) -> np.ndarray:
    """Frames (H x W x 3 uint8, one size) laid out row by row; empty cells black."""
    height, width = frames[0].shape[:2]
    canvas = np.zeros((rows * height, columns * width, 3), np.uint8)
    for i, frame in enumerate(frames):
        r, c = divmod(i, columns)
        canvas[r * height:(r + 1) * height, c * width:(c + 1) * width] = frame
    return canvas


# ---- per-stream state -----------------------------------------------------------------------------
class Stream:
    """One camera: its ingest pipeline, its counters, the newest processed frame."""

    def __init__(self, name: str, source: str, width: int, height: int, fps: int, reconnection: Reconnection):
        self.name, self.source = name, source
        self.description, self.live, self.location = ingest_description(source, width, height, fps)
        self.reconnection = reconnection   # consulted for live sources only: a file that fails stays failed
        self.pipeline = self.appsink = None
        self.status = "starting"          # running, finished (file ended), failed, reconnecting
        self.error: str | None = None
        self.frames_in = self.pulled = self.processed = self.restarts = 0
        self.segment_started, self.segment_frames = 0.0, 0   # the current (re)connection, for the retry reset
        self.first_pts: int | None = None
        self.pts_offset = 0               # keeps output timestamps increasing across reconnects
        self.last_pts = 0
        self.last_output: np.ndarray | None = None
        self.gate = None
        self.detections = self.reported_drops = 0
        self.out_times: collections.deque[float] = collections.deque(maxlen=120)

    @property
    def dropped(self) -> int:
        """Frames that reached the stream's appsink but were never processed: replaced by newer ones before
        the batcher took them; once the stream stopped, also those the appsink itself dropped or still held."""
        stale = self.pulled - self.processed
        return stale if self.appsink is not None else max(stale, self.frames_in - self.processed)

    def fps(self, span: float = 2.0) -> float:
        now = time.monotonic()
        recent = [t for t in self.out_times if now - t <= span]
        return (len(recent) - 1) / (recent[-1] - recent[0]) if len(recent) > 1 and recent[-1] > recent[0] else 0.0

    def summary(self) -> dict:
        out = {"source": self.source, "status": self.status, "frames_in": self.frames_in,
               "processed": self.processed, "dropped": self.dropped, "restarts": self.restarts,
               "detections": self.detections}
        if self.error:
            out["error"] = self.error
        if self.gate is not None:
            out["gate"] = {**self.gate.stats.to_dict(), "on_threshold": self.gate.on_threshold,
                           "off_threshold": self.gate.off_threshold}
        return out


@dataclass
class MultiStreamResult:
    status: str                      # eos (every stream ended), interrupted, frames, duration, error
    streams: dict[str, dict]
    stats: dict
    error: str | None = None


# ---- the runner -----------------------------------------------------------------------------------
class MultiStreamRunner:
    """Run N streams through one backend until every stream ended, a limit, or a signal.

    ``backend`` is any :class:`edge_derain.backends.Backend` (it sees (n, 3, H, W) batches, 1 <= n <= N);
    ``detector`` an :class:`edge_derain.detect.Detector` or None. ``metrics`` (a
    :class:`edge_derain.fleet.PipelineMetrics`) and ``events`` (an :class:`edge_derain.fleet.EventPublisher`)
    are fed as frames are processed.
    """

    def __init__(self, options: MultiStreamOptions, backend=None, detector=None, *, metrics=None, events=None,
                 max_frames: int | None = None, duration: float | None = None, eos_timeout: float = 10.0,
                 stall_timeout: float | None = 10.0):
        self.options, self.backend, self.detector = options, backend, detector
        self.metrics, self.events = metrics, events
        self.max_frames, self.duration = max_frames, duration
        self.eos_timeout, self.stall_timeout = eos_timeout, stall_timeout
        names = options.stream_names()
        self.streams = [Stream(n, s, options.width, options.height, options.fps,
                               Reconnection(options.reconnect, options.max_retries, options.backoff))
                        for n, s in zip(names, options.sources)]
        if options.gate is not None:
            from .gating import RainGate

            weights = options.derain.weights if options.derain is not None else None
            for stream in self.streams:
                stream.gate = RainGate(weights=weights, **options.gate)
        self.mosaic = options.sink.startswith(MOSAIC_PREFIX)
        sink_text = options.sink[len(MOSAIC_PREFIX):] if self.mosaic else options.sink
        self.sinks = self._sinks(sink_text, names)
        self.batch_sizes: collections.Counter[int] = collections.Counter()
        self.derain_latency, self.detect_latency = LatencySeries(), LatencySeries()
        self.end_to_end = LatencySeries()
        self._wake = threading.Event()
        self._stop_reason: str | None = None
        self._lock = threading.Lock()
        self._egress: dict[str, object] = {}
        self._pushed: collections.Counter[str] = collections.Counter()  # frames into each output
        self._finalised: set[str] = set()  # outputs whose EOS reached the sink: recordings are whole
        self._rtsp: list = []
        self._processed_total = 0

    def _sinks(self, text: str, names: list[str]) -> dict[str, SinkSpec]:
        """One sink per output: ``{stream}`` in a file name or RTSP mount is replaced by the stream id."""
        if self.mosaic:
            sinks = {"mosaic": SinkSpec.parse(text.replace("{stream}", "mosaic"))}
        else:
            sinks = {name: SinkSpec.parse(text.replace("{stream}", name)) for name in names}
            kinds = {spec.kind for spec in sinks.values()}
            if len(names) > 1 and kinds & {"file", "rtsp"} and "{stream}" not in text:
                raise ValueError(f"--sink {text} would be shared by {len(names)} streams; put {{stream}} in it "
                                 f"(e.g. file:out_{{stream}}.mp4 or rtsp:8554/{{stream}}) or use mosaic:{text}")
        if any(spec.kind == "display" for spec in sinks.values()):
            check_display()
        return sinks

    # ---- lifecycle ---------------------------------------------------------------------------------
    def run(self) -> MultiStreamResult:
        require_gst()
        register_elements()
        from gi.repository import GLib

        self._GLib, self._loop = GLib, GLib.MainLoop()
        self._started = time.monotonic()
        try:
            self._start_egress()
        except Exception as exc:  # GLib.Error from parse_launch: a missing element or bad property
            self._teardown()
            raise RuntimeError(f"cannot build the output pipelines: {getattr(exc, 'message', exc)}") from None
        for stream in self.streams:
            self._start_ingest(stream)
        worker = threading.Thread(target=self._batch_loop, name="edge-derain-batcher", daemon=True)
        worker.start()
        self._timer = GLib.timeout_add(200, self._tick)
        with StopOnSignals(lambda: self.request_stop("interrupted")):
            self._loop.run()
        worker.join(timeout=30)
        self._finish_egress()
        self._teardown()
        status = self._stop_reason or "eos"
        failed = [s for s in self.streams if s.status == "failed"]
        error = "; ".join(f"{s.name}: {s.error}" for s in failed) or None
        if failed and len(failed) == len(self.streams):
            status = "error"
        return MultiStreamResult(status, {s.name: s.summary() for s in self.streams}, self.summary(), error)

    def _start_egress(self) -> None:
        Gst = require_gst()
        from .pipeline import free_udp_port

        rows, columns = mosaic_shape(len(self.streams)) if self.mosaic else (1, 1)
        width, height = self.options.width * columns, self.options.height * rows
        for key, sink in self.sinks.items():
            description, server = egress_description(sink, width, height, self.options.fps, free_udp_port(),
                                                     self.options.bitrate_kbps)
            pipeline = Gst.parse_launch(description)
            if server:
                self._serve_rtsp(sink, server)
            bus = pipeline.get_bus()
            bus.add_signal_watch()
            bus.connect("message", self._on_egress_message, key)
            pipeline.set_state(Gst.State.PLAYING)
            self._egress[key] = pipeline

    def _serve_rtsp(self, sink: SinkSpec, launch: str) -> None:
        from .rtsp_server import RtspServer

        server = RtspServer(sink.port, sink.mount, launch)
        if not server.serving:
            raise RuntimeError(f"cannot serve RTSP on port {sink.port} (in use?); pick another with --sink rtsp:PORT/...")
        self._rtsp.append(server)

    def _start_ingest(self, stream: Stream) -> bool:
        Gst = require_gst()
        try:
            pipeline = Gst.parse_launch(stream.description)
        except Exception as exc:
            self._stream_failed(stream, f"cannot build its pipeline: {getattr(exc, 'message', exc)}")
            return False
        stream.pipeline, stream.appsink = pipeline, pipeline.get_by_name("frames")
        stream.appsink.connect("new-sample", self._on_sample_ready)
        stream.appsink.get_static_pad("sink").add_probe(Gst.PadProbeType.BUFFER, self._count_in, stream)
        bus = pipeline.get_bus()
        bus.add_signal_watch()
        bus.connect("message", self._on_ingest_message, stream)
        stream.status, stream.last_frame = "running", time.monotonic()
        stream.segment_started, stream.segment_frames = stream.last_frame, 0
        if pipeline.set_state(Gst.State.PLAYING) == Gst.StateChangeReturn.FAILURE:
            self._GLib.idle_add(lambda: self._stream_failed(stream, "could not start (GST_DEBUG=3 says why)") and False)
        if self.metrics is not None:
            self.metrics.up.labels(stream=stream.name).set(1)
        return False

    def _count_in(self, pad, info, stream: Stream):
        Gst = require_gst()
        with self._lock:
            stream.frames_in += 1
            stream.segment_frames += 1
            stream.last_frame = time.monotonic()
        return Gst.PadProbeReturn.OK

    def _on_sample_ready(self, appsink):
        Gst = require_gst()
        self._wake.set()
        return Gst.FlowReturn.OK

    # ---- stream failures and endings ---------------------------------------------------------------
    def _on_ingest_message(self, bus, message, stream: Stream) -> None:
        Gst = require_gst()
        if message.type == Gst.MessageType.EOS:
            if stream.live:
                self._stream_failed(stream, f"{stream.location or stream.source} ended its stream")
            else:
                self._stop_ingest(stream, "finished")
        elif message.type == Gst.MessageType.ERROR:
            from .pipeline import describe_error

            self._stream_failed(stream, describe_error(message, stream.location or stream.source))

    def _stream_failed(self, stream: Stream, text: str) -> None:
        if stream.status in ("failed", "reconnecting", "finished"):
            return
        log.warning("stream %s: %s", stream.name, text)
        stream.error = text
        if self.metrics is not None:
            self.metrics.up.labels(stream=stream.name).set(0)
        if stream.live and stream.reconnection.try_again():
            self._stop_ingest(stream, "reconnecting")
            log.warning("stream %s: %s", stream.name, stream.reconnection.announcement())
            self._GLib.timeout_add(int(stream.reconnection.delay() * 1000), self._reconnect, stream)
        else:
            self._stop_ingest(stream, "failed")

    def _reconnect(self, stream: Stream) -> bool:
        if self._stop_reason is None:
            stream.restarts += 1
            stream.pts_offset = stream.last_pts
            stream.first_pts = None
            self._start_ingest(stream)
        return False

    def _stop_ingest(self, stream: Stream, status: str) -> None:
        Gst = require_gst()
        stream.status = status
        if stream.pipeline is not None:
            pipeline, stream.pipeline = stream.pipeline, None
            pipeline.get_bus().remove_signal_watch()
            # Setting NULL from a bus handler is safe: it runs on the main loop, not a streaming thread.
            pipeline.set_state(Gst.State.NULL)
        stream.appsink = None
        self._wake.set()

    def _tick(self) -> bool:
        now = time.monotonic()
        if self._stop_reason is None:
            if self.duration is not None and now - self._started >= self.duration:
                self.request_stop("duration")
            elif all(s.status in ("finished", "failed") for s in self.streams):
                self.request_stop("eos")
            else:
                for stream in self.streams:
                    if stream.status != "running" or not stream.live:
                        continue
                    stream.reconnection.note_progress(now, stream.segment_started, stream.segment_frames)
                    if self.stall_timeout is not None and now - stream.last_frame > self.stall_timeout:
                        self._stream_failed(stream, f"delivered no frame for {self.stall_timeout:g} s")
        if self.metrics is not None:
            for stream in self.streams:
                self.metrics.fps.labels(stream=stream.name).set(stream.fps())
        return True

    def request_stop(self, reason: str = "interrupted") -> None:
        """Stop taking frames and finish every output (safe from any thread)."""
        if self._stop_reason is None:
            self._stop_reason = reason
            self._wake.set()
            self._GLib.idle_add(self._loop.quit)

    # ---- the batcher -------------------------------------------------------------------------------
    def _take_ready(self) -> list[tuple[Stream, object]]:
        """The newest sample of every running stream that has one (older queued ones are dropped)."""
        ready = []
        for stream in self.streams:
            appsink = stream.appsink
            if appsink is None or stream.status != "running":
                continue
            sample = _try_pull(appsink)
            if sample is None:
                continue
            stream.pulled += 1
            if stream.live:   # a camera: only the newest frame matters, the rest count as dropped
                while (newer := _try_pull(appsink)) is not None:
                    sample = newer
                    stream.pulled += 1
            ready.append((stream, sample))
        return ready

    def _batch_loop(self) -> None:
        # Any failure here (backend, detector, GStreamer) ends the run with one line: a batcher that died
        # silently would leave the main loop waiting for frames nobody takes.
        try:
            while self._stop_reason is None:
                ready = self._take_ready()
                if not ready:
                    self._wake.wait(0.05)
                    self._wake.clear()
                    continue
                self._process(ready)
        except Exception as exc:
            log.error("processing failed: %s", exc)
            for stream in self.streams:
                stream.error = stream.error or f"processing failed: {exc}"
                stream.status = "failed" if stream.status == "running" else stream.status
            self._GLib.idle_add(lambda: self.request_stop("error") and False)

    def _process(self, ready: list[tuple[Stream, object]]) -> None:
        from .elements import buffer_to_rgb

        started = time.monotonic()
        frames = [buffer_to_rgb(sample.get_buffer(), sample.get_caps()) for _, sample in ready]
        run = [stream.gate.begin_frame() if stream.gate else True for stream, _ in ready]
        outputs = list(frames)
        chosen = [i for i, r in enumerate(run) if r]
        if self.backend is not None and chosen:
            batch = np.stack([frames[i] for i in chosen]).transpose(0, 3, 1, 2).astype(np.float32) / 255.0
            t = time.perf_counter()
            result = self.backend.run(batch)
            elapsed = time.perf_counter() - t
            self.derain_latency.add(elapsed)
            self.batch_sizes[len(chosen)] += 1
            if self.metrics is not None:
                self.metrics.batch.observe(len(chosen))
                self.metrics.latency.labels(stage="derain").observe(elapsed)
            derained = np.clip(result.transpose(0, 2, 3, 1) * 255.0 + 0.5, 0, 255).astype(np.uint8)
            for k, i in enumerate(chosen):
                stream = ready[i][0]
                use = True
                if stream.gate is not None:
                    from .gating import rain_score

                    use = stream.gate.update(rain_score(frames[i], derained[k]))
                if use:
                    outputs[i] = derained[k]
        for (stream, sample), output in zip(ready, outputs):
            self._finish_frame(stream, sample, output, started)
        if self.max_frames is not None and self._processed_total >= self.max_frames:
            self._GLib.idle_add(lambda: self.request_stop("frames") and False)
        if self.mosaic:
            self._push("mosaic", tile([s.last_output if s.last_output is not None else
                                       np.zeros((self.options.height, self.options.width, 3), np.uint8)
                                       for s in self.streams], *mosaic_shape(len(self.streams))),
                       int((time.monotonic() - self._started) * 1e9))

    def _finish_frame(self, stream: Stream, sample, output: np.ndarray, started: float) -> None:
        Gst = require_gst()
        detections = []
        if self.detector is not None:
            t = time.perf_counter()
            detections = self.detector.detect(output)
            elapsed = time.perf_counter() - t
            self.detect_latency.add(elapsed)
            if self.metrics is not None:
                self.metrics.latency.labels(stage="detect").observe(elapsed)
                for d in detections:
                    self.metrics.detections.labels(label=d.label).inc()
            if self.options.overlay and detections:
                from ..detect.draw import draw_detections

                output = draw_detections(output.copy(), detections)
        pts = sample.get_buffer().pts
        pts = 0 if pts == Gst.CLOCK_TIME_NONE else pts
        if stream.first_pts is None:
            stream.first_pts = pts
        out_pts = stream.pts_offset + max(0, pts - stream.first_pts)
        stream.last_pts = out_pts + int(1e9 / max(1, self.options.fps))
        with self._lock:
            stream.processed += 1
            self._processed_total += 1
        stream.detections += len(detections)
        stream.last_output = output
        stream.out_times.append(time.monotonic())
        self.end_to_end.add(time.monotonic() - started)
        if self.metrics is not None:
            self.metrics.frames.labels(stream=stream.name).inc()
            drops = stream.dropped
            if drops > stream.reported_drops:   # counters only grow: report what is new since last time
                self.metrics.dropped.labels(stream=stream.name).inc(drops - stream.reported_drops)
                stream.reported_drops = drops
            if stream.gate is not None:
                self.metrics.gate.labels(stream=stream.name).set(int(stream.gate.raining))
        if self.events is not None:
            gate = stream.gate
            self.events.publish(stream.name, stream.processed - 1, detections, pts_ns=out_pts,
                                rain_score=gate.last_score if gate else None,
                                derained=self.backend is not None and (gate is None or gate.raining))
        if not self.mosaic:
            self._push(stream.name, output, out_pts)

    def _push(self, key: str, frame: np.ndarray, pts: int) -> None:
        from .elements import frame_to_buffer

        pipeline = self._egress.get(key)
        if pipeline is None:
            return
        buffer = frame_to_buffer(np.ascontiguousarray(frame))
        buffer.pts, buffer.duration = pts, int(1e9 / max(1, self.options.fps))
        pipeline.get_by_name("frames").emit("push-buffer", buffer)
        self._pushed[key] += 1

    # ---- finishing ---------------------------------------------------------------------------------
    def _on_egress_message(self, bus, message, key: str) -> None:
        Gst = require_gst()
        if message.type == Gst.MessageType.ERROR:
            from .pipeline import describe_error

            text = describe_error(message)
            log.error("output %s: %s", key, text)
            for stream in self.streams:
                if key in (stream.name, "mosaic") and stream.status == "running":
                    stream.error, stream.status = f"output failed: {text}", "failed"
            if all(s.status != "running" for s in self.streams):
                self.request_stop("error")

    def _finish_egress(self) -> None:
        """EOS into every output and wait (bounded) until it reached the sinks, so recordings are whole."""
        Gst = require_gst()
        for stream in self.streams:
            if stream.pipeline is not None:
                self._stop_ingest(stream, stream.status if stream.status != "running" else "stopped")
        deadline = time.monotonic() + self.eos_timeout
        for key, pipeline in self._egress.items():
            pipeline.get_by_name("frames").emit("end-of-stream")
            bus = pipeline.get_bus()
            bus.remove_signal_watch()
            remaining = max(0.0, deadline - time.monotonic())
            message = bus.timed_pop_filtered(int(remaining * Gst.SECOND), Gst.MessageType.EOS | Gst.MessageType.ERROR)
            if message is None:
                log.warning("output %s did not finish within %g s; its recording may be incomplete", key,
                            self.eos_timeout)
            elif message.type == Gst.MessageType.EOS:
                self._finalised.add(key)

    def _teardown(self) -> None:
        Gst = require_gst()
        if getattr(self, "_timer", None):
            self._GLib.source_remove(self._timer)
            self._timer = None
        for stream in self.streams:
            if stream.pipeline is not None:
                self._stop_ingest(stream, stream.status)
        for key, pipeline in self._egress.items():
            pipeline.set_state(Gst.State.NULL)
            kept = finish_recording(self.sinks[key], self._pushed[key], key in self._finalised)
            if kept is not None:
                log.warning("output %s: the unfinished recording is kept as %s", key, kept)
        self._egress.clear()
        for server in self._rtsp:
            server.close()
        self._rtsp.clear()

    def summary(self) -> dict:
        elapsed = time.monotonic() - self._started
        total = sum(self.batch_sizes.values())
        return {
            "streams": {s.name: s.summary() for s in self.streams},
            "frames": self._processed_total, "elapsed_s": round(elapsed, 3),
            "fps_total": round(self._processed_total / elapsed, 3) if elapsed > 0 else 0.0,
            "batches": {"count": total, "sizes": {str(k): v for k, v in sorted(self.batch_sizes.items())},
                        "mean_size": round(sum(k * v for k, v in self.batch_sizes.items()) / total, 3) if total else 0},
            "stages": {"derain_batch": self.derain_latency.summary(), "detect": self.detect_latency.summary(),
                       "end_to_end": self.end_to_end.summary()},
        }


def _try_pull(appsink):
    """The next sample of an appsink, or None. The action signal works whatever Python class the element
    was wrapped in: an appsink first seen before ``GstApp`` was imported has no ``try_pull_sample``."""
    return appsink.emit("try-pull-sample", 0)


def format_multistream_summary(summary: dict) -> str:
    """A few lines for the terminal: per-stream counts, batch sizes, stage latencies."""
    lines = []
    for name, s in summary["streams"].items():
        line = f"{name}: {s['processed']} frames processed, {s['dropped']} dropped, status {s['status']}"
        if s.get("restarts"):
            line += f", {s['restarts']} reconnect(s)"
        if s.get("error"):
            line += f" ({s['error']})"
        lines.append(line)
    b = summary["batches"]
    lines.append(f"{summary['frames']} frames in {b['count']} batched derain calls (mean batch {b['mean_size']}, "
                 f"sizes {b['sizes']}); {summary['fps_total']:.1f} frames/s over all streams")
    stage = summary["stages"]["derain_batch"]
    if stage.get("count"):
        lines.append(f"derain per batch: p50 {stage['p50_ms']:.1f} ms, p99 {stage['p99_ms']:.1f} ms")
    return "\n".join(lines)
