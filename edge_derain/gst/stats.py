"""Pipeline statistics: FPS, per-stage latency p50/p99, end-to-end latency, dropped frames, gating savings.

Sources of numbers:

* the ``derain``/``detect``/``rainrender`` elements post one element message per frame
  (:data:`FRAME_MESSAGE`: ``stage``, ``pts``, ``latency-ms`` and stage fields) and one when their model is
  loaded (:data:`LOAD_MESSAGE`); :meth:`PipelineStats.on_message` consumes them from the bus;
* pad probes (:meth:`PipelineStats.attach`): at the *ingress* (frames entering the processing chain,
  stamped with a monotonic time by PTS), at the *egress* (frames leaving the last stage: FPS, and
  end-to-end latency = egress time - ingress time of the same PTS, queue waiting included) and on both
  pads of each queue (a queue's drops = buffers in - buffers out - buffers still queued).

While running, :meth:`PipelineStats.attach` posts an application message :data:`STATS_MESSAGE` every
``interval`` seconds; :meth:`PipelineStats.summary` / :meth:`write_json` give the final report.
Percentiles are over the last :data:`WINDOW` frames of each stage, counts and means over the whole run.
"""
from __future__ import annotations

import collections
import threading
import time
from pathlib import Path

import numpy as np

FRAME_MESSAGE = "edge-derain-frame"
LOAD_MESSAGE = "edge-derain-load"
STATS_MESSAGE = "edge-derain-stats"
WINDOW = 10_000
_PENDING_LIMIT = 512  # ingress stamps kept for frames not yet out (drops leave theirs behind)


class LatencySeries:
    """Latencies of one stage in seconds: count and sum over the run, percentiles over a window."""

    def __init__(self, window: int = WINDOW):
        self.recent: collections.deque[float] = collections.deque(maxlen=window)
        self.count, self.total = 0, 0.0

    def add(self, seconds: float) -> None:
        self.recent.append(seconds)
        self.count += 1
        self.total += seconds

    def summary(self) -> dict:
        if not self.count:
            return {"count": 0}
        p50, p99 = np.percentile(np.asarray(self.recent), [50, 99])
        return {"count": self.count, "mean_ms": round(1e3 * self.total / self.count, 3),
                "p50_ms": round(1e3 * float(p50), 3), "p99_ms": round(1e3 * float(p99), 3),
                "max_ms": round(1e3 * max(self.recent), 3)}


class PipelineStats:
    """Thread-safe accumulator; probes call it from streaming threads, the bus handler from the main loop."""

    def __init__(self, interval: float = 1.0):
        self.interval = float(interval)
        self._lock = threading.Lock()
        self.stages: dict[str, LatencySeries] = collections.defaultdict(LatencySeries)
        self.end_to_end = LatencySeries()
        self.loads: dict[str, dict] = {}
        self.loading: set[str] = set()  # stages loading their model right now
        self.gate: dict[str, int] = collections.Counter()
        self.model_runs: dict[str, LatencySeries] = collections.defaultdict(LatencySeries)
        self.detections = collections.Counter()
        self.ingress_frames = 0
        self.egress_frames = 0
        self.first_out: float | None = None
        self.last_out: float | None = None
        self._recent_out: collections.deque[float] = collections.deque(maxlen=512)
        self._pending: collections.OrderedDict[int, float] = collections.OrderedDict()
        self._queues: dict[str, dict] = {}
        self._last_post = 0.0
        self._probes: list[tuple] = []

    # ---- element messages ------------------------------------------------------------------------
    def on_message(self, message) -> bool:
        """Consume an element message of ours; return whether it was one."""
        structure = message.get_structure()
        if structure is None:
            return False
        name = structure.get_name()
        if name == FRAME_MESSAGE:
            self.record_frame(structure)
            return True
        if name == LOAD_MESSAGE:
            stage = structure.get_string("stage")
            with self._lock:
                if structure.get_value("done"):
                    self.loading.discard(stage)
                    # Frames that waited for a model load would report the load as latency.
                    self._pending.clear()
                    if not (structure.has_field("failed") and structure.get_value("failed")):
                        self.loads[stage] = {"what": structure.get_string("what"),
                                             "load_s": round(structure.get_value("load-s"), 3)}
                else:
                    self.loading.add(stage)
            return True
        return False

    def record_frame(self, structure) -> None:
        stage = structure.get_string("stage")
        latency = structure.get_value("latency-ms") / 1e3
        with self._lock:
            self.stages[stage].add(latency)
            if structure.has_field("model-ran"):  # derain: gating fields
                ran, used = structure.get_value("model-ran"), structure.get_value("derained")
                self.gate["frames"] += 1
                self.gate["derained"] += int(used)
                self.gate["skipped"] += int(not ran)
                self.gate["probes"] += int(ran and not used)
                if ran:
                    self.model_runs[stage].add(latency)
            if structure.has_field("count"):  # detect
                count = structure.get_value("count")
                self.detections["frames"] += 1
                self.detections["boxes"] += count
                self.detections["frames_with_boxes"] += int(count > 0)

    # ---- probes ----------------------------------------------------------------------------------
    def on_ingress(self, pts: int | None) -> None:
        now = time.monotonic()
        with self._lock:
            self.ingress_frames += 1
            if pts is not None:
                self._pending[pts] = now
                while len(self._pending) > _PENDING_LIMIT:
                    self._pending.popitem(last=False)

    def on_egress(self, pts: int | None) -> None:
        now = time.monotonic()
        with self._lock:
            self.egress_frames += 1
            self.first_out = self.first_out if self.first_out is not None else now
            self.last_out = now
            self._recent_out.append(now)
            start = self._pending.pop(pts, None) if pts is not None else None
            if start is not None:
                self.end_to_end.add(now - start)

    def queue_counts(self) -> dict[str, int]:
        """Frames each queue dropped so far (in - out - still queued)."""
        with self._lock:
            queues = dict(self._queues)
        return {name: max(0, q["in"] - q["out"] - int(q["element"].get_property("current-level-buffers")))
                for name, q in queues.items()}

    def attach(self, pipeline, egress: str, queues: list[str], ingress: str | None = None) -> None:
        """Add the probes: buffers leaving element ``egress`` (and ``ingress``, unless the caller reports
        ingress frames itself with :meth:`on_ingress`), and both pads of every queue (by name). The stats
        message is posted on ``pipeline``'s bus from the egress probe."""
        from . import require_gst

        Gst = require_gst()
        buffer_probe = Gst.PadProbeType.BUFFER

        def pts_of(info):
            pts = info.get_buffer().pts
            return None if pts == Gst.CLOCK_TIME_NONE else pts

        def ingress_probe(pad, info):
            self.on_ingress(pts_of(info))
            return Gst.PadProbeReturn.OK

        def egress_probe(pad, info):
            self.on_egress(pts_of(info))
            if time.monotonic() - self._last_post >= self.interval:
                self._last_post = time.monotonic()
                pipeline.post_message(Gst.Message.new_application(pipeline, self.structure(Gst)))
            return Gst.PadProbeReturn.OK

        def counter(name, key):
            def probe(pad, info):
                with self._lock:
                    self._queues[name][key] += 1
                return Gst.PadProbeReturn.OK
            return probe

        if ingress is not None:
            self._add_probe(_pad(pipeline, ingress, "src"), buffer_probe, ingress_probe)
        self._add_probe(_pad(pipeline, egress, "src"), buffer_probe, egress_probe)
        for name in queues:
            element = _pad(pipeline, name, "sink").get_parent_element()
            with self._lock:
                self._queues.setdefault(name, {"in": 0, "out": 0})["element"] = element
            self._add_probe(element.get_static_pad("sink"), buffer_probe, counter(name, "in"))
            self._add_probe(element.get_static_pad("src"), buffer_probe, counter(name, "out"))

    def _add_probe(self, pad, kind, callback) -> None:
        self._probes.append((pad, pad.add_probe(kind, callback)))

    def detach(self) -> None:
        """Remove the probes (before a pipeline is rebuilt; counts are kept)."""
        for pad, probe_id in self._probes:
            pad.remove_probe(probe_id)
        self._probes.clear()
        with self._lock:
            for q in self._queues.values():
                q["dropped_before"] = q.get("dropped_before", 0) + max(
                    0, q["in"] - q["out"] - int(q["element"].get_property("current-level-buffers")))
                q["in"] = q["out"] = 0

    # ---- reports ---------------------------------------------------------------------------------
    def fps(self) -> float:
        """Frames out per second from the first to the last frame out; for a single frame, the inverse of
        its processing time in all stages (model loads excluded), 0 before any frame."""
        with self._lock:
            if self.egress_frames >= 2 and self.last_out > self.first_out:
                return (self.egress_frames - 1) / (self.last_out - self.first_out)
            busy = sum(series.total for series in self.stages.values())
            return 1.0 / busy if self.egress_frames == 1 and busy > 0 else 0.0

    def recent_fps(self, span: float = 2.0) -> float:
        with self._lock:
            if not self._recent_out:
                return 0.0
            times = [t for t in self._recent_out if t >= self._recent_out[-1] - span]
        return (len(times) - 1) / (times[-1] - times[0]) if len(times) > 1 and times[-1] > times[0] else 0.0

    def dropped(self) -> dict[str, int]:
        counts = self.queue_counts()
        with self._lock:
            return {name: counts[name] + q.get("dropped_before", 0) for name, q in self._queues.items()}

    def summary(self) -> dict:
        dropped = self.dropped()
        fps = self.fps()
        with self._lock:
            report = {
                "frames_in": self.ingress_frames, "frames_out": self.egress_frames,
                "duration_s": round((self.last_out or 0.0) - (self.first_out or 0.0), 3),
                "fps": round(fps, 3),
                "dropped": {**dropped, "total": sum(dropped.values())},
                "latency": {**{stage: s.summary() for stage, s in sorted(self.stages.items())},
                            "end_to_end": self.end_to_end.summary()},
                "loads": dict(self.loads),
            }
            if self.gate:
                runs = [s for s in self.model_runs.values() if s.count]
                per_run = sum(s.total for s in runs) / max(1, sum(s.count for s in runs))
                report["gating"] = {**dict(self.gate), "saved_s": round(self.gate["skipped"] * per_run, 3),
                                    "skipped_fraction": round(self.gate["skipped"] / max(1, self.gate["frames"]), 4)}
            if self.detections:
                report["detections"] = dict(self.detections)
        return report

    def numbers(self) -> dict:
        """The running numbers (frames out, FPS over the last seconds, dropped, per-stage p50/p99 ms, frames
        the gate skipped): the payload of :data:`STATS_MESSAGE`, and the final line of a live display."""
        numbers = {"frames": self.egress_frames, "fps": round(self.recent_fps(), 3),
                   "dropped": sum(self.dropped().values())}
        with self._lock:
            for stage, series in sorted(self.stages.items()):
                summary = series.summary()
                if summary["count"]:
                    numbers[f"{stage}-p50-ms"], numbers[f"{stage}-p99-ms"] = summary["p50_ms"], summary["p99_ms"]
            if self.gate:
                numbers["skipped"] = self.gate["skipped"]
        return numbers

    def structure(self, Gst):
        """:meth:`numbers` as a ``Gst.Structure`` for :data:`STATS_MESSAGE`."""
        fields = [f"{key}=({'double' if isinstance(value, float) else 'guint64'}){value}"
                  for key, value in self.numbers().items()]
        return Gst.Structure.new_from_string(f"{STATS_MESSAGE}, " + ", ".join(fields))

    def write_json(self, path: str | Path, extra: dict | None = None) -> Path:
        from ..utils import atomic_write_json

        path = Path(path)
        atomic_write_json(path, {**(extra or {}), **self.summary()})
        return path


def format_summary(summary: dict) -> str:
    """A few human-readable lines: FPS, per-stage latency, drops, gating savings."""
    count = summary["frames_out"]
    lines = [f"{count} frame{'' if count == 1 else 's'} in {summary['duration_s']:.1f} s: {summary['fps']:.2f} frames/s"
             + (f", {summary['dropped']['total']} dropped by leaky queues" if summary["dropped"]["total"] else "")]
    for stage, s in summary["latency"].items():
        if s["count"]:
            lines.append(f"  {stage:<12} p50 {s['p50_ms']:8.1f} ms   p99 {s['p99_ms']:8.1f} ms   "
                         f"mean {s['mean_ms']:8.1f} ms   ({s['count']} frames)")
    gate = summary.get("gating")
    if gate:
        lines.append(f"  gating: {gate['skipped']} of {gate['frames']} frames skipped "
                     f"({100 * gate['skipped_fraction']:.0f}%), {gate['probes']} probes, ~{gate['saved_s']:.1f} s saved")
    for stage, load in summary.get("loads", {}).items():
        lines.append(f"  {stage} loaded {load['what']} in {load['load_s']:.2f} s")
    return "\n".join(lines)


def _pad(pipeline, element_name: str, pad_name: str):
    element = pipeline.get_by_name(element_name)
    if element is None:
        raise ValueError(f"the pipeline has no element named {element_name!r} to measure; name it "
                         f"({element_name}) in the pipeline description")
    return element.get_static_pad(pad_name)
