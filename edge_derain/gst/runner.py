"""Run a composed pipeline: :class:`PipelineRunner` and :func:`run_pipeline`.

Bus errors become one-line messages, SIGINT/SIGTERM send EOS so a recording is finalised (a second signal
stops at once; :mod:`.signals`), a watchdog ends a pipeline that does not reach EOS within ``eos_timeout``
seconds, a live source that delivers no frame for ``stall_timeout`` seconds counts as failed (a non-live
pipeline in which no frame moves for that long stops: a deadlock never hangs the caller; the watchdog waits
while a stage loads its model; :mod:`.watchdog`), and a failed live source is optionally reconnected with
exponential back-off (each attempt records to a new file part). ``rtsp:`` sinks are served by
:mod:`.rtsp_server`.
"""
from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from . import register_elements, require_gst
from .pipeline import (ComposedPipeline, PipelineOptions, check_display, compose, describe_error,
                       finish_recording, free_udp_port)
from .rtsp_server import RtspServer
from .signals import StopOnSignals
from .stats import STATS_MESSAGE, PipelineStats
from .watchdog import Reconnection, Watchdog

log = logging.getLogger(__name__)


@dataclass
class RunResult:
    status: str                 # eos, interrupted, frames, duration, error, timeout
    error: str | None = None    # the one-line error, if any
    restarts: int = 0
    frames_in: int = 0          # frames that entered the processing stages
    frames_out: int = 0         # frames that left them (what --frames counts)
    stats: dict | None = None


class PipelineRunner:
    """Run a composed pipeline until EOS, a signal, an error, a frame/time limit or the watchdog.

    ``build(segment, udp_port)`` returns the :class:`ComposedPipeline` for each (re)connection (segment 0,
    1, ...); ``setup(pipeline)`` runs after parsing and before PLAYING (inject backends, feed appsrc, add
    probes); ``on_message(message)`` sees every bus message after the runner's own handling. Reconnection
    (``reconnect``) applies to failures of a live source: up to ``max_retries`` consecutive attempts, the
    delay doubling from ``backoff[0]`` to at most ``backoff[1]`` seconds; :data:`.watchdog.RETRY_RESET_S`
    seconds of frames reset the count.
    """

    def __init__(self, build: Callable[[int, int], ComposedPipeline] | ComposedPipeline, *,
                 stats: PipelineStats | None = None, max_frames: int | None = None, duration: float | None = None,
                 eos_timeout: float = 10.0, stall_timeout: float | None = None, reconnect: bool = False,
                 max_retries: int = 5, backoff: tuple[float, float] = (1.0, 30.0),
                 setup: Callable | None = None, on_message: Callable | None = None,
                 on_stats: Callable[[dict], None] | None = None, handle_signals: bool = True):
        self.build = build if callable(build) else (lambda segment, udp_port: build)
        self.stats = stats if stats is not None else PipelineStats()
        self.max_frames = max_frames
        self.watchdog = Watchdog(eos_timeout, stall_timeout, duration)
        self.reconnection = Reconnection(reconnect, max_retries, backoff)
        self.setup, self.on_message, self.on_stats = setup, on_message, on_stats
        self.handle_signals = handle_signals
        self.pipeline = None
        self.composed: ComposedPipeline | None = None
        self._lock = threading.Lock()

    # ---- lifecycle -------------------------------------------------------------------------------
    def run(self) -> RunResult:
        require_gst()
        register_elements()
        from gi.repository import GLib

        self._GLib = GLib
        self._loop = GLib.MainLoop()
        self._result = RunResult("eos")
        self._segment = self.reconnection.retries = 0
        self._finishing: str | None = None   # why EOS was requested
        self._then_restart = False
        self._timers: list[int] = []
        self._frames_in = self._frames_out = 0
        self._limit_reached = False
        self._udp_port = free_udp_port()
        self._rtsp = None
        self._start()
        if self.pipeline is not None:
            with StopOnSignals(lambda: self._begin_finish("interrupted", False), self.handle_signals):
                self._loop.run()
        self._teardown()
        if self._rtsp is not None:
            self._rtsp.close()
            self._rtsp = None
        self._result.frames_in, self._result.frames_out = self._frames_in, self._frames_out
        self._result.stats = self.stats.summary()
        if self.on_stats is not None:  # the last live line shows the final numbers
            self.on_stats(self.stats.numbers())
        return self._result

    def _start(self) -> None:
        Gst = require_gst()
        composed = self.build(self._segment, self._udp_port)
        try:
            pipeline = Gst.parse_launch(composed.description)
        except Exception as exc:  # GLib.Error: no such element, bad property, bad link
            self._fail(f"cannot build the pipeline: {getattr(exc, 'message', exc)}")
            return
        if composed.rtsp_launch and self._rtsp is None:
            problem = self._start_rtsp(composed)
            if problem:
                self._fail(problem)
                return
        self.composed, self.pipeline = composed, pipeline
        bus = pipeline.get_bus()
        bus.add_signal_watch()
        bus.connect("message", self._on_bus)
        ingress = pipeline.get_by_name(composed.ingress)
        ingress.get_static_pad("src").add_probe(Gst.PadProbeType.BUFFER, self._ingress_probe)
        # Added before the stats' probe: a frame over the --frames limit is dropped before anything counts it.
        pipeline.get_by_name(composed.egress).get_static_pad("src").add_probe(Gst.PadProbeType.BUFFER,
                                                                              self._egress_probe)
        self.stats.attach(pipeline, egress=composed.egress, queues=list(composed.queues))
        if self.setup is not None:
            self.setup(pipeline)
        self.watchdog.start_segment(time.monotonic())
        self._segment_frames = self._segment_out = 0
        self._eos_reached = False
        self._source_warning: str | None = None
        if pipeline.set_state(Gst.State.PLAYING) == Gst.StateChangeReturn.FAILURE:
            # A refusing element has usually posted an ERROR, which the bus handler reports first (idle
            # callbacks run after pending bus messages); this covers one that did not.
            self._GLib.idle_add(lambda: self._fail("the pipeline could not start; run with GST_DEBUG=3 for "
                                                   "GStreamer's reason") and False)
        self._timers.append(self._GLib.timeout_add(250, self._tick))

    def _start_rtsp(self, composed: ComposedPipeline) -> str | None:
        """Serve the pipeline's RTP at rtsp://HOST:PORT/MOUNT; returns a one-line problem or None."""
        server = RtspServer(composed.sink.port, composed.sink.mount, composed.rtsp_launch)
        if not server.serving:
            return (f"cannot serve RTSP on port {composed.sink.port} (in use?); pick another with "
                    f"--sink rtsp:PORT{composed.sink.mount}")
        self._rtsp = server
        return None

    def _teardown(self) -> None:
        Gst = require_gst()
        for timer in self._timers:
            self._GLib.source_remove(timer)
        self._timers.clear()
        if self.pipeline is not None:
            self.stats.detach()
            self.pipeline.get_bus().remove_signal_watch()
            self.pipeline.set_state(Gst.State.NULL)
            self.pipeline = None
            kept = finish_recording(self.composed.sink, self._segment_out, self._eos_reached)
            if kept is not None:
                log.warning("the recording did not finish; what was written is kept as %s", kept)
                if self._result.error is not None:
                    self._result.error += f"; the unfinished recording is kept as {kept}"

    # ---- stopping --------------------------------------------------------------------------------
    def request_stop(self, reason: str = "interrupted") -> None:
        """Send EOS so sinks finish their files; safe from any thread while :meth:`run` runs."""
        self._GLib.idle_add(self._begin_finish, reason, False)

    def _begin_finish(self, reason: str, via_ingress: bool) -> bool:
        """Send EOS and arm the watchdog (returns False: also a one-shot GLib idle callback)."""
        Gst = require_gst()
        if self.pipeline is None:  # waiting to reconnect: an interrupt ends the wait
            if reason == "interrupted":
                self._result.status = "interrupted"
                self._loop.quit()
            return False
        if self._finishing is not None:
            if reason == "interrupted":
                log.warning("second interrupt: stopping without waiting for EOS")
                self._result.status = "interrupted"
                self._loop.quit()
            return False
        self._finishing = reason
        self.watchdog.eos_requested(time.monotonic())
        if via_ingress:
            if self._segment_frames == 0:  # nothing was recorded: no file to finish
                self._finished()
                return False
            # The source may be dead: inject EOS right after it so the rest of the pipeline finishes.
            ingress = self.pipeline.get_by_name(self.composed.ingress)
            ingress.get_static_pad("sink").send_event(Gst.Event.new_eos())
        else:
            self.pipeline.send_event(Gst.Event.new_eos())
        return False

    def _finished(self) -> None:
        """EOS reached (or the watchdog gave up): restart or quit."""
        reason, self._finishing = self._finishing, None
        if self._then_restart:
            self._then_restart = False
            self._teardown()
            log.warning("%s", self.reconnection.announcement())
            self._timers.append(self._GLib.timeout_add(int(self.reconnection.delay() * 1000), self._restart))
            return
        if reason and self._result.status == "eos":
            self._result.status = reason
        self._loop.quit()

    def _restart(self) -> bool:
        self._timers.clear()
        self._segment += 1
        self._result.restarts += 1
        self._start()
        return False

    def _fail(self, text: str, reconnectable: bool = False, drained: bool = False) -> None:
        """A one-line failure: reconnect (a live source) or finish the recording and report it.
        ``drained``: EOS already went through the pipeline (a live source ended its stream)."""
        if self._result.error is not None or self._then_restart:
            return  # the first failure of an attempt is the one that matters
        if reconnectable and self._finishing is None and self.reconnection.try_again():
            log.warning("%s", text)
            self._then_restart = True
        else:
            self._result.status, self._result.error = "error", text
        if self.pipeline is None or drained:
            self._finished()
        elif self._finishing is None:
            self._begin_finish("error", via_ingress=True)

    # ---- callbacks -------------------------------------------------------------------------------
    def _ingress_probe(self, pad, info):
        Gst = require_gst()
        with self._lock:
            self.watchdog.frame(time.monotonic())
            # --frames counts processed frames: admit frames until that many are in the stages or done (a frame
            # a leaky queue drops makes room for another), so no stage works on a frame beyond the limit.
            dropped = sum(self.stats.dropped().values()) if self.composed.leaky else 0
            if self._limit_reached or (self.max_frames is not None and
                                       self._frames_in - dropped >= self.max_frames):
                return Gst.PadProbeReturn.DROP
            self._frames_in += 1
            self._segment_frames += 1
        pts = info.get_buffer().pts
        self.stats.on_ingress(None if pts == Gst.CLOCK_TIME_NONE else pts)
        return Gst.PadProbeReturn.OK

    def _egress_probe(self, pad, info):
        """Count processed frames; the ``max_frames``-th one requests EOS, later ones (in flight) are dropped."""
        Gst = require_gst()
        with self._lock:
            if self.max_frames is not None and self._frames_out >= self.max_frames:
                return Gst.PadProbeReturn.DROP
            self._frames_out += 1
            self._segment_out += 1
            if self.max_frames is not None and self._frames_out >= self.max_frames:
                self._limit_reached = True
                self._GLib.idle_add(self._begin_finish, "frames", False)
        return Gst.PadProbeReturn.OK

    def _tick(self) -> bool:
        now, watchdog = time.monotonic(), self.watchdog
        if self._finishing is not None:
            if watchdog.eos_overdue(now):
                text = (f"the pipeline did not finish within {watchdog.eos_timeout:g} s of EOS ({self._finishing}); "
                        f"stopped it, a recording may be incomplete")
                log.warning("%s", text)
                if self._result.error is None:
                    self._result.status, self._result.error = "timeout", text
                self._finished()
            return True
        self.reconnection.note_progress(now, watchdog.started, self._segment_frames)
        if watchdog.duration_over(now):
            self._begin_finish("duration", False)
        elif watchdog.stalled(now, self.stats.last_out, self.stats.loading):
            self._stalled()
        return True

    def _stalled(self) -> None:
        stall_timeout = self.watchdog.stall_timeout
        if self.composed.live:
            where = f" {self.composed.source_location}" if self.composed.source_location else ""
            self._fail(f"source{where} delivered no frame for {stall_timeout:g} s (camera unplugged or "
                       f"stream stalled)", reconnectable=True)
        else:
            self._fail(f"no frame moved through the pipeline for {stall_timeout:g} s; raise the stall "
                       f"timeout if a stage is that slow")

    def _on_bus(self, bus, message) -> None:
        Gst = require_gst()
        kind = message.type
        if kind == Gst.MessageType.EOS:
            self._eos_reached = True  # every sink has it: recordings are finalised
            if self._finishing is None and self.composed.live:
                # Nobody asked a camera or a stream to end: it dropped (an RTSP server went away, ...).
                where = f" {self.composed.source_location}" if self.composed.source_location else ""
                why = f": {self._source_warning}" if self._source_warning else ""
                self._fail(f"source{where} ended its stream{why}", reconnectable=True, drained=True)
            else:
                self._finished()
        elif kind == Gst.MessageType.ERROR:
            from_source = self._in_source_part(message.src)
            self._fail(describe_error(message, (self.composed.source_location or "") if from_source else None),
                       reconnectable=from_source and self.composed.live)
        elif kind == Gst.MessageType.WARNING:
            warning, _ = message.parse_warning()
            log.warning("%s: %s", message.src.get_name(), warning.message)
            if self._in_source_part(message.src):
                self._source_warning = f"{message.src.get_name()}: {warning.message.rstrip('.')}"
        elif kind == Gst.MessageType.ELEMENT:
            self.stats.on_message(message)
        elif kind == Gst.MessageType.APPLICATION and self.on_stats is not None:
            structure = message.get_structure()
            if structure is not None and structure.get_name() == STATS_MESSAGE:
                self.on_stats(_structure_dict(structure))
        if self.on_message is not None:
            self.on_message(message)

    def _top_level(self, element):
        """The pipeline child that is or contains ``element`` (e.g. rtspsrc for its internal udpsrc)."""
        while element is not None and element.get_parent() is not None and element.get_parent() != self.pipeline:
            element = element.get_parent()
        return element

    def _in_source_part(self, element) -> bool:
        """Whether ``element`` is a source (nothing feeds it) or feeds the ingress: the part a reconnect
        rebuilds."""
        Gst = require_gst()
        if self.pipeline is None or not isinstance(element, Gst.Element):
            return False
        top = self._top_level(element)
        if top is None or not top.sinkpads:
            return True
        seen, frontier = set(), [self.pipeline.get_by_name(self.composed.ingress)]
        while frontier:
            for pad in frontier.pop().sinkpads:
                peer = pad.get_peer()
                upstream = self._top_level(peer.get_parent_element()) if peer is not None else None
                if upstream is None or upstream in seen:
                    continue
                if upstream == top:
                    return True
                seen.add(upstream)
                frontier.append(upstream)
        return False


def _structure_dict(structure) -> dict:
    return {structure.nth_field_name(i): structure.get_value(structure.nth_field_name(i))
            for i in range(structure.n_fields())}


def run_pipeline(options: PipelineOptions, *, max_frames: int | None = None, duration: float | None = None,
                 stats_path: str | Path | None = None, stats_interval: float = 1.0, reconnect: bool = False,
                 max_retries: int = 5, eos_timeout: float = 10.0, stall_timeout: float | None = 10.0,
                 on_stats: Callable[[dict], None] | None = None, setup: Callable | None = None) -> RunResult:
    """Compose ``options`` and run it; write the stats JSON to ``stats_path`` if given."""
    composed = compose(options)  # fail on bad options before anything starts
    if composed.sink.kind == "display":
        check_display()
    device = composed.source_location or ""
    if device.startswith("/dev/") and not Path(device).exists():
        cameras = ", ".join(sorted(str(p) for p in Path("/dev").glob("video*"))) or "none"
        raise FileNotFoundError(f"camera {device} does not exist (cameras here: {cameras}); check the cable or pass "
                                f"another --source")
    stats = PipelineStats(interval=stats_interval)
    runner = PipelineRunner(lambda segment, udp_port: compose(options, segment, udp_port), stats=stats,
                            max_frames=max_frames,
                            duration=duration, eos_timeout=eos_timeout, stall_timeout=stall_timeout,
                            reconnect=reconnect, max_retries=max_retries, on_stats=on_stats, setup=setup)
    result = runner.run()
    if stats_path:
        stats.write_json(stats_path, {"pipeline": runner.composed.description if runner.composed else None,
                                      "status": result.status, "error": result.error, "restarts": result.restarts})
    return result
